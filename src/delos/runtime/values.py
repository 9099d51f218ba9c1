"""Provider-neutral values that flow between the service, the router and the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ROLES",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "EmbedRequest",
    "Embeddings",
    "StreamEvent",
    "StreamFinished",
    "TextDelta",
    "Usage",
]

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One upstream chat call: the model is the provider's own model id."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    #: Parsed JSON Schema the answer must conform to, or None.
    output_schema: Mapping[str, Any] | None = None

    @property
    def system_prompt(self) -> str | None:
        """System messages joined, for providers that take the system prompt apart."""
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def conversation(self) -> tuple[ChatMessage, ...]:
        return tuple(m for m in self.messages if m.role != "system")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, meaning the same for every provider. ``estimated`` is True when the provider
    reported none.

    ``prompt_tokens`` counts every input token, cache reads and writes included (Anthropic and
    Bedrock report those apart, OpenAI and Gemini inside); ``cache_read_tokens`` and
    ``cache_write_tokens`` are the parts of it read from and written to the provider's prompt
    cache. ``completion_tokens`` includes reasoning tokens; ``reasoning_tokens`` is that part,
    where the provider reports it apart (OpenAI-style and Gemini), else 0.
    """

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    #: The model the provider says answered (may carry a version suffix).
    model: str
    finish_reason: str
    #: What the provider reported; None when it reported nothing.
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The last event of a well-formed stream."""

    finish_reason: str
    usage: Usage | None
    model: str


StreamEvent = TextDelta | StreamFinished


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]] = field(repr=False)
    model: str
    usage: Usage | None
