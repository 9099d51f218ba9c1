"""Validated, provider-neutral requests, built from the values the edge read off the wire.

Every rule a client can break is checked here, once, with a message that says what is wrong:
the router and the adapters receive only requests that make sense.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.config import PROVIDER_NAMES
from delos.runtime.errors import InvalidRequest, UnknownProvider
from delos.runtime.schema import check_schema
from delos.runtime.values import ROLES, ChatMessage

__all__ = [
    "LIMITS",
    "CompletionInput",
    "EmbedInput",
    "Routing",
    "completion_input",
    "embed_input",
    "normalized_conversation",
]


class Routing(enum.Enum):
    COST = "cost_optimized"
    LATENCY = "latency_optimized"
    QUALITY = "quality_optimized"
    SPECIFIC = "specific_provider"


@dataclass(frozen=True, slots=True)
class _Limits:
    messages: int = 10_000
    message_characters: int = 4_000_000
    total_characters: int = 16_000_000
    #: The lowest limit among providers (OpenAI, Bedrock), so every provider honours them all.
    stop_sequences: int = 4
    max_tokens: int = 1_000_000
    embed_texts: int = 2_048
    metadata_entries: int = 64
    cache_ttl_seconds: int = 30 * 24 * 3600


LIMITS: Final = _Limits()


@dataclass(frozen=True, slots=True)
class CompletionInput:
    """A Complete/CompleteStream request after validation."""

    messages: tuple[ChatMessage, ...]
    routing: Routing
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    output_schema: Mapping[str, Any] | None = None
    use_cache: bool = False
    cache_ttl_seconds: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    prompt_ref: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbedInput:
    texts: tuple[str, ...]
    model: str | None
    provider: str | None


def completion_input(
    *,
    messages: Sequence[tuple[str, str]],
    routing: Routing | None = None,
    provider: str = "",
    model: str = "",
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    output_schema: str = "",
    use_cache: bool = False,
    cache_ttl_seconds: int = 0,
    metadata: Mapping[str, str] | None = None,
    prompt_ref: str = "",
    variables: Mapping[str, str] | None = None,
) -> CompletionInput:
    """Validate one completion request; ``messages`` are (role, content) pairs as received and
    ``routing`` None means unspecified. Raises :class:`InvalidRequest` or
    :class:`UnknownProvider`."""
    provider_name = _provider(provider)
    if routing is Routing.SPECIFIC and provider_name is None:
        raise InvalidRequest("provider: required with ROUTING_STRATEGY_SPECIFIC_PROVIDER")
    if routing is None:
        # The spec's default is cost-optimized; a named provider alone means that provider.
        routing = Routing.SPECIFIC if provider_name is not None else Routing.COST

    checked = _messages(messages)
    if not checked and not prompt_ref:
        raise InvalidRequest("messages: at least one message is required (or a prompt_ref)")
    if not prompt_ref:  # with a prompt, once its messages joined (resolve_prompt)
        checked = normalized_conversation(checked)
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequest(f"temperature: must be between 0 and 2, got {temperature:g}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidRequest(f"top_p: must be greater than 0 and at most 1, got {top_p:g}")
    if max_tokens is not None and not 1 <= max_tokens <= LIMITS.max_tokens:
        raise InvalidRequest(
            f"max_tokens: must be between 1 and {LIMITS.max_tokens}, got {max_tokens}"
        )
    stop = tuple(stop)
    if len(stop) > LIMITS.stop_sequences:
        raise InvalidRequest(
            f"stop: at most {LIMITS.stop_sequences} sequences (the most every provider accepts), "
            f"got {len(stop)}"
        )
    if any(not s for s in stop):
        raise InvalidRequest("stop: sequences must not be empty")
    if cache_ttl_seconds < 0 or cache_ttl_seconds > LIMITS.cache_ttl_seconds:
        raise InvalidRequest(
            f"cache_ttl_seconds: must be between 0 and {LIMITS.cache_ttl_seconds}, "
            f"got {cache_ttl_seconds}"
        )
    metadata = dict(metadata or {})
    if len(metadata) > LIMITS.metadata_entries:
        raise InvalidRequest(f"metadata: at most {LIMITS.metadata_entries} entries")
    return CompletionInput(
        messages=checked,
        routing=routing,
        provider=provider_name,
        model=model.strip() or None,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        output_schema=_schema(output_schema),
        use_cache=use_cache,
        cache_ttl_seconds=cache_ttl_seconds or None,
        metadata=metadata,
        prompt_ref=prompt_ref.strip() or None,
        variables=dict(variables or {}),
    )


def _provider(name: str) -> str | None:
    provider = name.strip() or None
    if provider is not None and provider not in PROVIDER_NAMES:
        raise UnknownProvider(
            f"provider: unknown provider {provider!r}; known: {', '.join(PROVIDER_NAMES)}"
        )
    return provider


def _messages(received: Sequence[tuple[str, str]]) -> tuple[ChatMessage, ...]:
    if len(received) > LIMITS.messages:
        raise InvalidRequest(f"messages: at most {LIMITS.messages} messages, got {len(received)}")
    messages = []
    total = 0
    for index, (raw_role, content) in enumerate(received):
        role = raw_role.strip().lower()
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{index}].role: unknown role {raw_role[:40]!r}; "
                "use system, user or assistant"
            )
        if len(content) > LIMITS.message_characters:
            raise InvalidRequest(
                f"messages[{index}].content: longer than {LIMITS.message_characters} characters"
            )
        if role != "system" and not content.strip():
            raise InvalidRequest(f"messages[{index}].content: a {role} message must not be empty")
        total += len(content)
        messages.append(ChatMessage(role, content))
    if total > LIMITS.total_characters:
        raise InvalidRequest(f"messages: longer than {LIMITS.total_characters} characters in all")
    return tuple(messages)


def normalized_conversation(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """The one shape every provider receives, whichever the router picks.

    System messages are merged, in order and separated by a blank line, into one system message
    that leads the conversation (providers with a separate system field take it from there).
    The conversation must hold a user message and end with one: an assistant message last
    (a "prefill") is honoured by some providers and answered anew by others, so it is refused.
    Raises :class:`InvalidRequest`.
    """
    system = [m.content for m in messages if m.role == "system"]
    conversation = [m for m in messages if m.role != "system"]
    if not any(m.role == "user" for m in conversation):
        raise InvalidRequest("messages: at least one user message is required")
    if conversation[-1].role != "user":
        raise InvalidRequest(
            "messages: the last message must be the user's (an assistant message last, a "
            "prefill, is not supported: providers treat it differently)"
        )
    if not system:
        return tuple(conversation)
    return (ChatMessage("system", "\n\n".join(system)), *conversation)


def _schema(text: str) -> Mapping[str, Any] | None:
    if not text.strip():
        return None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"output_schema: not valid JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InvalidRequest("output_schema: must be a JSON object (a JSON Schema)")
    check_schema(schema)
    return schema


def embed_input(*, texts: Sequence[str], model: str = "", provider: str = "") -> EmbedInput:
    """Validate one embeddings request. Raises :class:`InvalidRequest` or
    :class:`UnknownProvider`."""
    texts = tuple(texts)
    if not texts:
        raise InvalidRequest("texts: at least one text is required")
    if len(texts) > LIMITS.embed_texts:
        raise InvalidRequest(f"texts: at most {LIMITS.embed_texts} texts, got {len(texts)}")
    for index, text in enumerate(texts):
        if not text.strip():
            raise InvalidRequest(f"texts[{index}]: must not be empty")
        if len(text) > LIMITS.message_characters:
            raise InvalidRequest(
                f"texts[{index}]: longer than {LIMITS.message_characters} characters"
            )
    return EmbedInput(texts, model.strip() or None, _provider(provider))
