"""Validated, provider-neutral requests, built from the values the edge read off the wire.

Every rule a client can break is checked here, once, with a message that says what is wrong:
the router and the adapters receive only requests that make sense.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from delos.runtime.config import PROVIDER_NAMES
from delos.runtime.errors import InvalidRequest, UnknownProvider
from delos.runtime.schema import check_schema
from delos.runtime.values import (
    REASONING_EFFORTS,
    ROLES,
    ChatMessage,
    DocumentPart,
    ImagePart,
    Reasoning,
    TextPart,
    Thinking,
    Tool,
)

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
    tools: int = 128
    #: An image or document, bytes (the largest any provider takes inline is about 20 MB).
    part_bytes: int = 20 * 1024 * 1024
    session_id_characters: int = 256


LIMITS: Final = _Limits()
#: A reasoning setting that asks for nothing: the same as none.
_NO_REASONING: Final = Reasoning()


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
    tools: tuple[Tool, ...] = ()
    tool_choice: str = ""
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class EmbedInput:
    texts: tuple[str, ...]
    model: str | None
    provider: str | None


def completion_input(
    *,
    messages: Sequence[ChatMessage | tuple[str, str]],
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
    tools: Sequence[tuple[str, str, str]] = (),
    tool_choice: str = "",
    parallel_tool_calls: bool | None = None,
    reasoning: Reasoning | None = None,
    session_id: str = "",
) -> CompletionInput:
    """Validate one completion request. ``messages`` are messages as received (or (role, content)
    pairs); ``routing`` None means unspecified; ``tools`` are (name, description, parameters
    JSON text) triples. Raises :class:`InvalidRequest` or :class:`UnknownProvider`."""
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
    stop = tuple(stop) if stop else ()
    if len(stop) > LIMITS.stop_sequences:
        raise InvalidRequest(
            f"stop: at most {LIMITS.stop_sequences} sequences (the most every provider accepts), "
            f"got {len(stop)}"
        )
    if stop and not all(stop):
        raise InvalidRequest("stop: sequences must not be empty")
    if cache_ttl_seconds < 0 or cache_ttl_seconds > LIMITS.cache_ttl_seconds:
        raise InvalidRequest(
            f"cache_ttl_seconds: must be between 0 and {LIMITS.cache_ttl_seconds}, "
            f"got {cache_ttl_seconds}"
        )
    # Copied (the caller's may be a protobuf map), but only when there is something to copy.
    metadata = dict(metadata) if metadata else {}
    if len(metadata) > LIMITS.metadata_entries:
        raise InvalidRequest(f"metadata: at most {LIMITS.metadata_entries} entries")
    checked_tools = _tools(tools) if tools else ()
    _check_tool_choice(tool_choice, checked_tools)
    _check_reasoning(reasoning)
    if len(session_id) > LIMITS.session_id_characters:
        raise InvalidRequest(
            f"session_id: at most {LIMITS.session_id_characters} characters, got {len(session_id)}"
        )
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
        variables=dict(variables) if variables else {},
        tools=checked_tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        reasoning=None if reasoning == _NO_REASONING else reasoning,
        session_id=session_id or None,
    )


def _provider(name: str) -> str | None:
    provider = name.strip() or None
    if provider is not None and provider not in PROVIDER_NAMES:
        raise UnknownProvider(
            f"provider: unknown provider {provider!r}; known: {', '.join(PROVIDER_NAMES)}"
        )
    return provider


def _messages(received: Sequence[ChatMessage | tuple[str, str]]) -> tuple[ChatMessage, ...]:
    if len(received) > LIMITS.messages:
        raise InvalidRequest(f"messages: at most {LIMITS.messages} messages, got {len(received)}")
    messages = []
    total = 0
    call_ids: set[str] = set()
    for index, raw in enumerate(received):
        message = raw if isinstance(raw, ChatMessage) else ChatMessage(raw[0], raw[1])
        where = f"messages[{index}]"
        role = message.role.strip().lower()
        if role not in ROLES:
            raise InvalidRequest(
                f"{where}.role: unknown role {message.role[:40]!r}; "
                "use system, user, assistant or tool"
            )
        if len(message.content) > LIMITS.message_characters:
            raise InvalidRequest(
                f"{where}.content: longer than {LIMITS.message_characters} characters"
            )
        _check_parts(message, role, where)
        _check_tool_calls(message, role, where, call_ids)
        if role == "tool":
            if not message.tool_call_id:
                raise InvalidRequest(f"{where}.tool_call_id: required for a tool message")
            if message.tool_call_id not in call_ids:
                raise InvalidRequest(
                    f"{where}.tool_call_id: no earlier assistant tool call has id "
                    f"{message.tool_call_id[:64]!r}"
                )
        elif message.tool_call_id:
            raise InvalidRequest(f"{where}.tool_call_id: only a tool message answers a call")
        if role in ("user", "assistant") and _empty(message):
            raise InvalidRequest(f"{where}.content: a {role} message must not be empty")
        total += len(message.text)
        messages.append(replace(message, role=role) if role != message.role else message)
    if total > LIMITS.total_characters:
        raise InvalidRequest(f"messages: longer than {LIMITS.total_characters} characters in all")
    return tuple(messages)


def _empty(message: ChatMessage) -> bool:
    """No text, part or tool call (a message that carries parts or calls is not empty)."""
    if message.content.strip() or message.tool_calls:
        return False
    return not any(not isinstance(p, TextPart) or p.text.strip() for p in message.parts)


_IMAGE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DOCUMENT_TYPES: Final = frozenset({"application/pdf", "text/plain"})


def _check_parts(message: ChatMessage, role: str, where: str) -> None:
    for number, part in enumerate(message.parts):
        at = f"{where}.parts[{number}]"
        if role == "system" and not isinstance(part, TextPart):
            raise InvalidRequest(f"{at}: a system message takes text only")
        if isinstance(part, TextPart):
            if len(part.text) > LIMITS.message_characters:
                raise InvalidRequest(
                    f"{at}.text: longer than {LIMITS.message_characters} characters"
                )
        elif isinstance(part, ImagePart):
            _check_image(part, at)
        elif isinstance(part, DocumentPart):
            if part.media_type not in _DOCUMENT_TYPES:
                raise InvalidRequest(
                    f"{at}.document.media_type: {part.media_type[:40]!r} is not supported; "
                    "use application/pdf or text/plain"
                )
            if not part.data:
                raise InvalidRequest(f"{at}.document.data: must not be empty")
            if len(part.data) > LIMITS.part_bytes:
                raise InvalidRequest(f"{at}.document: larger than {LIMITS.part_bytes} bytes")
            if part.media_type == "text/plain":
                try:
                    part.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidRequest(f"{at}.document: text/plain data is not UTF-8") from None
        elif isinstance(part, Thinking):
            if role != "assistant":
                raise InvalidRequest(f"{at}.thinking: only an assistant message carries thinking")
            if not (part.text or part.signature or part.redacted_data):
                raise InvalidRequest(f"{at}.thinking: empty")


def _check_image(part: ImagePart, at: str) -> None:
    if bool(part.url) == bool(part.data):
        raise InvalidRequest(f"{at}.image: give either url or data")
    if part.data:
        if part.media_type not in _IMAGE_TYPES:
            raise InvalidRequest(
                f"{at}.image.media_type: {part.media_type[:40]!r} is not supported; use "
                + ", ".join(sorted(_IMAGE_TYPES))
            )
        if len(part.data) > LIMITS.part_bytes:
            raise InvalidRequest(f"{at}.image: larger than {LIMITS.part_bytes} bytes")
        return
    if part.url.startswith("data:"):
        media_type = part.url[5:].split(";", 1)[0]
        if media_type not in _IMAGE_TYPES or ";base64," not in part.url[:100]:
            raise InvalidRequest(
                f"{at}.image.url: a data URL must be base64 of " + ", ".join(sorted(_IMAGE_TYPES))
            )
        return
    if not part.url.startswith("https://") or len(part.url) > 8192:
        raise InvalidRequest(f"{at}.image.url: must be an https:// or data: URL")


_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _check_tool_calls(message: ChatMessage, role: str, where: str, call_ids: set[str]) -> None:
    if message.tool_calls and role != "assistant":
        raise InvalidRequest(f"{where}.tool_calls: only an assistant message calls tools")
    for number, call in enumerate(message.tool_calls):
        at = f"{where}.tool_calls[{number}]"
        if not call.id or len(call.id) > 256:
            raise InvalidRequest(f"{at}.id: required (at most 256 characters)")
        if call.id in call_ids:
            raise InvalidRequest(f"{at}.id: {call.id[:64]!r} is used twice")
        if not _TOOL_NAME.fullmatch(call.name):
            raise InvalidRequest(f"{at}.name: 1-64 letters, digits, '_' or '-'")
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except ValueError:
            raise InvalidRequest(f"{at}.arguments_json: not valid JSON") from None
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{at}.arguments_json: must be a JSON object")
        call_ids.add(call.id)


def _tools(received: Sequence[tuple[str, str, str]]) -> tuple[Tool, ...]:
    if len(received) > LIMITS.tools:
        raise InvalidRequest(f"tools: at most {LIMITS.tools} tools, got {len(received)}")
    tools: list[Tool] = []
    for index, (name, description, parameters_json) in enumerate(received):
        at = f"tools[{index}]"
        if not _TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"{at}.name: 1-64 letters, digits, '_' or '-'")
        if any(t.name == name for t in tools):
            raise InvalidRequest(f"{at}.name: {name!r} is declared twice")
        text = parameters_json.strip() or '{"type": "object", "properties": {}}'
        try:
            parameters = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"{at}.parameters_json: not valid JSON ({exc})") from None
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise InvalidRequest(f"{at}.parameters_json: must be a JSON Schema of an object")
        try:
            check_schema(parameters)
        except InvalidRequest as problem:
            raise InvalidRequest(f"{at}.parameters_json: {problem.message}") from None
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def _check_tool_choice(choice: str, tools: tuple[Tool, ...]) -> None:
    if choice in ("", "auto", "none"):
        return
    if not tools:
        raise InvalidRequest(f"tool_choice: {choice[:64]!r} needs tools")
    if choice != "required" and choice not in {t.name for t in tools}:
        raise InvalidRequest(
            f"tool_choice: {choice[:64]!r} is neither auto, none, required nor a declared tool"
        )


def _check_reasoning(reasoning: Reasoning | None) -> None:
    if reasoning is None:
        return
    if reasoning.effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"reasoning.effort: {reasoning.effort[:40]!r} is not one of minimal, low, medium, high"
        )
    if not 0 <= reasoning.budget_tokens <= LIMITS.max_tokens:
        raise InvalidRequest(
            f"reasoning.budget_tokens: must be between 0 and {LIMITS.max_tokens}, "
            f"got {reasoning.budget_tokens}"
        )


def normalized_conversation(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """The one shape every provider receives, whichever the router picks.

    System messages are merged, in order and separated by a blank line, into one system message
    that leads the conversation (providers with a separate system field take it from there).
    The conversation must hold a user message and end with one or with tool results: an
    assistant message last (a "prefill") is honoured by some providers and answered anew by
    others, so it is refused.
    Raises :class:`InvalidRequest`.
    """
    system = [m for m in messages if m.role == "system"]
    conversation = [m for m in messages if m.role != "system"]
    if not any(m.role == "user" for m in conversation):
        raise InvalidRequest("messages: at least one user message is required")
    if conversation[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            "messages: the last message must be the user's or a tool result (an assistant "
            "message last, a prefill, is not supported: providers treat it differently)"
        )
    if not system:
        return tuple(conversation)
    merged = ChatMessage(
        "system",
        "\n\n".join(m.text for m in system),
        cache_breakpoint=any(m.cache_breakpoint for m in system),
    )
    return (merged, *conversation)


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
