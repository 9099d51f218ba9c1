"""The SDK's typed values: what calls take and answer with, frozen dataclasses.

Calls take messages, tools and reasoning as these values (:class:`Message`, :class:`Tool`,
:class:`Reasoning`; parts :class:`Image`, :class:`Document`, :class:`Thinking`; tool calls
:class:`ToolCall`), as dicts of their fields, or as their protobuf messages. They answer with a
:class:`CompletionResult`, or :class:`StreamChunk` values, carrying typed tool calls, thinking and
:class:`Usage`. Nothing here converts: ``delos._sdk_wire`` turns these values into protobuf and
back, nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from delos.runtime.v1 import runtime_pb2 as pb

__all__ = [
    "CompletionResult",
    "Document",
    "Image",
    "Message",
    "Part",
    "Reasoning",
    "StreamChunk",
    "Thinking",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Image:
    """An image by ``url`` (https, or a ``data:`` URL) or by ``data`` (raw bytes, with their
    ``media_type``: image/png, image/jpeg, image/gif or image/webp)."""

    url: str = ""
    data: bytes = field(default=b"", repr=False)
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class Document:
    """A document's bytes, ``application/pdf`` or ``text/plain`` (UTF-8); ``name`` is what the
    model is told it is."""

    data: bytes = field(repr=False)
    media_type: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Thinking:
    """A model's thinking as its provider returned it, to be sent back verbatim in the assistant
    turn (:attr:`CompletionResult.message` does). ``signature`` and ``redacted_data`` are the
    provider's opaque values; ``provider`` the endpoint that made them, the only one to take them
    back."""

    text: str = ""
    signature: str = ""
    redacted_data: str = ""
    provider: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made. ``arguments_json`` is a JSON object as text, as the provider sent
    it; ``signature`` an opaque value (Gemini's) that goes back with the call."""

    id: str
    name: str
    arguments_json: str = "{}"
    signature: str = ""

    @property
    def arguments(self) -> dict[str, Any]:
        """``arguments_json`` parsed (a new dict each time; ``{}`` when empty). Raises
        ``ValueError`` when it is not a JSON object."""
        if not self.arguments_json.strip():
            return {}
        arguments = json.loads(self.arguments_json)
        if not isinstance(arguments, dict):
            raise ValueError(f"the arguments of tool call {self.id!r} are not a JSON object")
        return arguments


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call. ``index`` is the call's 0-based ordinal in the answer;
    its first delta carries ``id`` and ``name``, and its ``arguments_delta`` pieces concatenate to
    its ``arguments_json``."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. ``parameters`` is a JSON Schema of an object (``None``: the
    tool takes no arguments)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reasoning:
    """How much a reasoning model thinks: ``effort`` (minimal, low, medium, high; "" leaves it to
    the provider) or ``budget_tokens`` (tokens; 0: none given). ``include_thoughts`` asks for the
    thinking text where the provider returns it."""

    effort: str = ""
    budget_tokens: int = 0
    include_thoughts: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of an answer. ``cache_read_tokens`` and ``cache_write_tokens``: prompt tokens
    read from and written to the provider's prompt cache; ``reasoning_tokens``: completion tokens
    spent thinking; ``estimated``: the provider reported none, these are estimates."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False


#: A content part; a ``str`` is a text part.
Part = str | Image | Document | Thinking


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation. ``role``: system, user, assistant or tool. ``content`` is
    text; ``parts`` follow it. ``tool_calls``: an assistant turn that called tools;
    ``tool_call_id``: a tool message, the call it answers; ``cache_breakpoint``: cache the prompt
    up to and including this message.

    Calls take a message as this, as the protobuf ``Message``, or as a dict with these keys:
    ``{"role": "user", "content": "…", "parts": [{"image": {"url": "https://…"}}]}``. A dict's
    parts are ``str``, :class:`Image`, :class:`Document`, :class:`Thinking`, or one-key dicts
    ``{"text": "…"}``, ``{"image": {…}}``, ``{"document": {…}}``, ``{"thinking": {…}}``; its tool
    calls are :class:`ToolCall` or ``{"id", "name", "arguments"}``, the arguments a dict or a
    JSON string.
    """

    role: str
    content: str = ""
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    cache_breakpoint: bool = False


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """One answer. ``prompt_tokens`` and ``completion_tokens`` repeat ``usage``'s; ``cost_usd``
    is in USD, ``latency_ms`` in milliseconds; ``raw`` is the protobuf answer (attempts, request
    id, …)."""

    content: str
    provider: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool
    raw: pb.CompleteResponse
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    usage: Usage = Usage()
    #: From :meth:`RuntimeClient.run_tools`: the whole conversation, its last message this
    #: answer's (:attr:`message`). Empty from :meth:`RuntimeClient.complete`.
    messages: tuple[Message, ...] = ()

    @property
    def message(self) -> Message:
        """This answer as the assistant turn to append to the conversation: its thinking first
        and verbatim (signed thinking must go back as it came, before the text), then its text,
        and its tool calls."""
        if not self.thinking:
            return Message("assistant", self.content, tool_calls=self.tool_calls)
        parts: tuple[Part, ...] = (*self.thinking, self.content) if self.content else self.thinking
        return Message("assistant", parts=parts, tool_calls=self.tool_calls)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    delta: str
    #: Set on the last chunk only, with usage and cost.
    finish_reason: str
    raw: pb.StreamChunk
    #: A piece of a tool call (one per chunk), or None.
    tool_call: ToolCallDelta | None = None
    thinking_delta: str = ""
    #: On the last chunk: the answer's tool calls and thinking, whole, and its usage.
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    usage: Usage | None = None
