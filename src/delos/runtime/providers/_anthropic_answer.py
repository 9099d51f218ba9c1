"""Anthropic Messages answers, sans-IO: whole Messages and streamed events.

Nothing here does I/O. :func:`parse_message` reads a non-streamed answer,
:class:`MessageStreamReader` turns the named events of a streamed answer into our stream events,
and :func:`error_message` reads an error envelope (Anthropic's, or Google's from the Vertex
platform). Structured output comes back as the input of the forced
:class:`~._anthropic_request.OutputTool` call.

Usage: prompt tokens are ``input_tokens`` plus ``cache_creation_input_tokens`` (the cache write)
and ``cache_read_input_tokens``; reasoning tokens are ``output_tokens_details.thinking_tokens``
where sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._anthropic_request import OUTPUT_TOOL_NAME, OutputTool
from delos.runtime.providers._http import decode_event_object
from delos.runtime.providers._parts import ToolCallAssembler
from delos.runtime.values import (
    Completion,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = ["MessageStreamReader", "error_message", "parse_message"]

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}
_CACHE_WRITE: Final = "cache_creation_input_tokens"
_CACHE_READ: Final = "cache_read_input_tokens"
_INPUT_FIELDS: Final = ("input_tokens", _CACHE_WRITE, _CACHE_READ)


def error_message(payload: Any) -> str | None:
    """``type: message`` of an Anthropic error envelope, or of a Google one (Vertex platform)."""
    error = payload.get("error")
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return None
    kind = error.get("type") or error.get("status")
    message = error.get("message")
    if kind and message:
        return f"{kind}: {message}"
    return str(message or kind) if (message or kind) else None


def _finish_reason(stop_reason: str, *, forced_tool_used: bool) -> str:
    # The forced output tool is our mechanism, not a tool call the client asked for: its use is a
    # normal end of the answer.
    if stop_reason == "tool_use" and forced_tool_used:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, stop_reason.lower())


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


def _int(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) else None


def _reasoning_tokens(usage: Mapping[str, Any]) -> int | None:
    details = usage.get("output_tokens_details")
    return _int(details, "thinking_tokens") if isinstance(details, dict) else None


def _usage(
    counts: Mapping[str, int], completion: int | None, reasoning: int | None
) -> Usage | None:
    """Our usage from Anthropic's counts; None without input or output tokens."""
    base = counts.get("input_tokens")
    if base is None or completion is None:
        return None
    written = counts.get(_CACHE_WRITE, 0)
    read = counts.get(_CACHE_READ, 0)
    return Usage(
        base + written + read,
        completion,
        cache_read_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=reasoning or 0,
    )


def _arguments_json(tool_input: Any) -> str:
    """A non-streamed call's ``input`` object as compact JSON text (the answer carries it parsed;
    a stream carries the text itself)."""
    return json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))


def parse_message(
    provider: str, payload: Any, *, model: str, output_tool: OutputTool | None
) -> Completion:
    """A non-streamed Message as a :class:`Completion`, tool calls and thinking included.

    Raises:
        UpstreamProtocolError: the answer is an error envelope or has an unexpected shape.
    """
    try:
        if payload.get("type") == "error":
            raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
        texts: list[str] = []
        calls: list[ToolCall] = []
        thinking: list[Thinking] = []
        answer: str | None = None
        for block in payload["content"]:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block["text"]))
            elif kind == "thinking":
                thought = str(block.get("thinking") or "")
                signature = str(block.get("signature") or "")
                thinking.append(Thinking(thought, signature, provider=provider))
            elif kind == "redacted_thinking":
                thinking.append(Thinking(redacted_data=str(block["data"]), provider=provider))
            elif kind == "tool_use":
                if output_tool is not None and block.get("name") == OUTPUT_TOOL_NAME:
                    if answer is None:
                        answer = output_tool.answer(block.get("input"))
                    continue
                arguments = _arguments_json(block.get("input") or {})
                calls.append(ToolCall(str(block["id"]), str(block["name"]), arguments))
        usage = None
        usage_payload = payload.get("usage")
        if isinstance(usage_payload, dict):
            counts = {k: v for k in _INPUT_FIELDS if (v := _int(usage_payload, k)) is not None}
            completion = _int(usage_payload, "output_tokens")
            usage = _usage(counts, completion, _reasoning_tokens(usage_payload))
        stop_reason = str(payload.get("stop_reason") or "end_turn")
        forced_tool_used = answer is not None and not calls
        return Completion(
            content=answer if answer is not None else "".join(texts),
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(stop_reason, forced_tool_used=forced_tool_used),
            usage=usage,
            tool_calls=tuple(calls),
            thinking=tuple(thinking),
        )
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


# -- streams --------------------------------------------------------------------------------------


@dataclass
class _ThinkingBlock:
    texts: list[str] = field(default_factory=list)
    signature: str = ""
    redacted_data: str = ""


class MessageStreamReader:
    """Interprets a Messages stream event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. Events are told apart by their SSE ``event:``
    name, as the official SDKs do; unnamed and unknown events are ignored (the API documents that
    new event types may appear). ``message_stop`` ends the stream: after it, :attr:`finished` is
    True and the last event returned was the :class:`StreamFinished`.

    Content blocks are told apart by their ``content_block_start``: text gives
    :class:`TextDelta`, ``thinking`` gives :class:`ThinkingDelta` (its ``signature_delta`` and
    any ``redacted_thinking`` block go into the finish), ``tool_use`` gives one
    :class:`ToolCallDelta` with the id and name, then one per non-empty ``input_json_delta``
    fragment, byte for byte; calls are numbered 0, 1, … whatever their block index.

    Usage: input tokens (cache included) come with ``message_start``; output tokens only with
    ``message_delta``, whose counts are cumulative. ``message_start`` carries a placeholder
    output count, so a stream whose ``message_delta`` has no usage reports ``usage=None``.

    With an :class:`OutputTool`, the forced tool's ``input_json_delta`` fragments are the text.
    Text blocks are then held back and sent only if the model never called the tool (a refusal,
    say), as :func:`parse_message` does; a wrapped schema's JSON is sent whole at the end, once
    it can be unwrapped.

    Raises (from :meth:`feed`):
        UpstreamProtocolError: an ``error`` event, an event that is not JSON, or a
            ``message_stop`` before any stop reason.
    """

    def __init__(self, provider: str, *, model: str, output_tool: OutputTool | None) -> None:
        self._provider = provider
        self._output_tool = output_tool
        self.model = model
        self.finished = False
        self._stop_reason: str | None = None
        self._input_counts: dict[str, int] = {}
        self._completion_tokens: int | None = None
        self._reasoning_tokens: int | None = None
        self._output_blocks: set[int] = set()
        self._held_text: list[str] = []
        self._held_json: list[str] = []
        self._calls = ToolCallAssembler()
        self._thinking: dict[int, _ThinkingBlock] = {}  # in block order

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        if self.finished or event.event is None or event.event == "ping":
            return []
        name = event.event
        if name == "error":
            data = decode_event_object(self._provider, event.data)
            raise UpstreamProtocolError(self._provider, self._describe_error(data))
        handlers = {
            "message_start": self._on_message_start,
            "content_block_start": self._on_content_block_start,
            "content_block_delta": self._on_content_block_delta,
            "message_delta": self._on_message_delta,
            "message_stop": self._on_message_stop,
        }
        handler = handlers.get(name)
        if handler is None:
            return []  # content_block_stop, and event types newer than this reader
        return handler(decode_event_object(self._provider, event.data))

    # -- events -----------------------------------------------------------------------------------

    def _on_message_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        message = data.get("message")
        if isinstance(message, dict):
            self.model = str(message.get("model") or self.model)
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._absorb_input_counts(usage)
        return []

    def _on_content_block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return []
        index = _index(data)
        match block.get("type"):
            case "tool_use":
                name = str(block.get("name") or "")
                if self._output_tool is not None and name == OUTPUT_TOOL_NAME:
                    self._output_blocks.add(index)
                    return []
                return [self._calls.start(index, str(block.get("id") or ""), name)]
            case "text" if block.get("text"):
                return self._text(str(block["text"]))
            case "thinking":
                thought = self._thinking_at(index)
                thought.signature = str(block.get("signature") or "")
                return self._thought(thought, str(block.get("thinking") or ""))
            case "redacted_thinking":
                self._thinking_at(index).redacted_data = str(block.get("data") or "")
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return []
        index = _index(data)
        match delta.get("type"):
            case "text_delta":
                return self._text(str(delta.get("text") or ""))
            case "thinking_delta":
                return self._thought(self._thinking_at(index), str(delta.get("thinking") or ""))
            case "signature_delta":
                self._thinking_at(index).signature = str(delta.get("signature") or "")
            case "input_json_delta":
                return self._arguments(index, str(delta.get("partial_json") or ""))
        return []  # citations and newer delta types carry no answer text

    def _on_message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._stop_reason = str(delta["stop_reason"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            if (output := _int(usage, "output_tokens")) is not None:
                self._completion_tokens = output
            if (reasoning := _reasoning_tokens(usage)) is not None:
                self._reasoning_tokens = reasoning
            # Newer servers repeat the cumulative input counts here; they are the final word.
            self._absorb_input_counts(usage)
        return []

    def _on_message_stop(self, data: dict[str, Any]) -> list[StreamEvent]:
        if self._stop_reason is None:
            raise UpstreamProtocolError(self._provider, "stream ended without a stop reason")
        self.finished = True
        events: list[StreamEvent] = []
        calls = self._calls.calls()
        forced_tool_used = bool(self._output_blocks) and not calls
        if self._output_tool is not None:
            if self._held_json:
                events.append(TextDelta(self._unwrap("".join(self._held_json))))
            elif not self._output_blocks and self._held_text:
                events.append(TextDelta("".join(self._held_text)))
        usage = _usage(self._input_counts, self._completion_tokens, self._reasoning_tokens)
        finish = _finish_reason(self._stop_reason, forced_tool_used=forced_tool_used)
        thinking = tuple(
            Thinking("".join(t.texts), t.signature, t.redacted_data, provider=self._provider)
            for t in self._thinking.values()
        )
        events.append(StreamFinished(finish, usage, self.model, calls, thinking))
        return events

    # -- helpers ----------------------------------------------------------------------------------

    def _absorb_input_counts(self, usage: Mapping[str, Any]) -> None:
        for key in _INPUT_FIELDS:
            if (value := _int(usage, key)) is not None:
                self._input_counts[key] = value

    def _thinking_at(self, index: int) -> _ThinkingBlock:
        return self._thinking.setdefault(index, _ThinkingBlock())

    @staticmethod
    def _thought(block: _ThinkingBlock, text: str) -> list[StreamEvent]:
        if not text:
            return []
        block.texts.append(text)
        return [ThinkingDelta(text)]

    def _arguments(self, index: int, fragment: str) -> list[StreamEvent]:
        if index in self._output_blocks:
            assert self._output_tool is not None
            if self._output_tool.wrapped:
                self._held_json.append(fragment)
                return []
            return [TextDelta(fragment)] if fragment else []
        if not fragment or not self._calls.known(index):
            return []  # the empty first fragment adds nothing to the arguments
        return [self._calls.arguments(index, fragment)]

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        if self._output_tool is not None:
            self._held_text.append(text)
            return []
        return [TextDelta(text)]

    def _unwrap(self, text: str) -> str:
        assert self._output_tool is not None
        try:
            value = json.loads(text)
        except ValueError:
            return text  # left for schema validation to reject, like any malformed answer
        return self._output_tool.answer(value)

    @staticmethod
    def _describe_error(data: dict[str, Any]) -> str:
        error = data.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = f"{kind or 'unknown_error'}: {message or 'no message'}"
        if kind == "overloaded_error":
            return f"overloaded, error in the stream ({detail})"
        return f"error in the stream ({detail})"
