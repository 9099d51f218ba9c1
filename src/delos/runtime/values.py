"""Provider-neutral values that flow between the service, the router and the adapters.

A message is a role, its text, and optionally content parts (images, documents, thinking), the
tool calls an assistant turn made, or (role ``tool``) the id of the call it answers. Adapters map
these to each provider's wire format both ways; what a provider cannot express exactly is refused
with :class:`~delos.runtime.errors.UnsupportedByProvider` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REASONING_EFFORTS",
    "ROLES",
    "TOOL_CHOICES",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "ContentPart",
    "DocumentPart",
    "EmbedRequest",
    "Embeddings",
    "ImagePart",
    "Reasoning",
    "StreamEvent",
    "StreamFinished",
    "TextDelta",
    "TextPart",
    "Thinking",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

ROLES = frozenset({"system", "user", "assistant", "tool"})
#: ``tool_choice`` values besides a declared tool's name ("" is the provider's default: auto).
TOOL_CHOICES = frozenset({"", "auto", "none", "required"})
#: ``Reasoning.effort`` values ("" leaves it to the provider).
REASONING_EFFORTS = frozenset({"", "minimal", "low", "medium", "high"})


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by ``url`` (https, or a ``data:`` URL) or by ``data`` (raw bytes, with their
    ``media_type``: image/png, image/jpeg, image/gif or image/webp)."""

    url: str = ""
    data: bytes = field(default=b"", repr=False)
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class DocumentPart:
    """A document's bytes: ``application/pdf``, or ``text/plain`` (UTF-8), which goes as a text
    part to providers without a document form. ``name`` is what the provider is told it is."""

    data: bytes = field(repr=False)
    media_type: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Thinking:
    """A model's reasoning, as the provider returned it, to be sent back verbatim.

    ``signature`` is the provider's opaque signature (Anthropic, Bedrock, a Gemini
    ``thoughtSignature`` on a text part, with empty ``text``); ``redacted_data`` the provider's
    encrypted thinking verbatim (Anthropic ``redacted_thinking.data``, Bedrock
    ``redactedContent`` as its base64 text). ``provider`` names the endpoint that made it: a
    signature is valid only there, so the router drops thinking made elsewhere.
    """

    text: str = ""
    signature: str = ""
    redacted_data: str = ""
    provider: str = ""


ContentPart = TextPart | ImagePart | DocumentPart | Thinking


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made. ``arguments_json`` is a JSON object as text, byte-exact as the
    provider sent it; ``signature`` a Gemini ``thoughtSignature`` that must go back with it."""

    id: str
    name: str
    arguments_json: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call; ``parameters`` is a JSON Schema object (already checked)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reasoning:
    """How much a reasoning model should think: ``effort`` (OpenAI-style levels) or
    ``budget_tokens`` (Anthropic, Gemini, Bedrock); ``include_thoughts`` asks for the thinking
    text where the provider can return it. Adapters map one to the other where they must."""

    effort: str = ""
    budget_tokens: int = 0
    include_thoughts: bool = False


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn. ``content`` is plain text; ``parts`` follow it (a non-empty ``content`` is the
    leading text part). ``tool_calls``: an assistant turn that called tools. ``tool_call_id``:
    role ``tool``, the call this message answers. ``cache_breakpoint``: cache the prompt up to
    and including this message (the provider's default, 5-minute, cache)."""

    role: str
    content: str
    parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    cache_breakpoint: bool = False

    @property
    def all_parts(self) -> tuple[ContentPart, ...]:
        """``content`` as a leading text part (when not empty), then ``parts``."""
        if self.content:
            return (TextPart(self.content), *self.parts)
        return self.parts

    @property
    def text(self) -> str:
        """Every text of the message (content and text parts), for estimates and logs."""
        texts = [self.content] if self.content else []
        texts += [p.text for p in self.parts if isinstance(p, TextPart)]
        return "\n\n".join(texts)


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
    tools: tuple[Tool, ...] = ()
    #: "" (provider default), "auto", "none", "required", or a declared tool's name.
    tool_choice: str = ""
    #: None: the provider's default (parallel calls allowed).
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None

    @property
    def system_prompt(self) -> str | None:
        """System messages joined, for providers that take the system prompt apart."""
        parts = [m.text for m in self.messages if m.role == "system"]
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
    """A whole answer. ``finish_reason``: stop, length, content_filter, or tool_calls when the
    model stopped to call tools."""

    content: str
    #: The model the provider says answered (may carry a version suffix).
    model: str
    finish_reason: str
    #: What the provider reported; None when it reported nothing.
    usage: Usage | None
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of visible thinking text (signatures arrive whole, in :class:`StreamFinished`)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call. ``index`` is the call's 0-based ordinal within this answer (not
    the provider's content-block index); its first delta carries ``id`` and ``name``, later ones
    only ``arguments_delta``. One call's pieces concatenate to its ``arguments_json`` exactly."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The last event of a well-formed stream, with the tool calls and thinking of the whole
    answer assembled (what the deltas carried, plus signatures)."""

    finish_reason: str
    usage: Usage | None
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()


StreamEvent = TextDelta | ThinkingDelta | ToolCallDelta | StreamFinished


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]] = field(repr=False)
    model: str
    usage: Usage | None
