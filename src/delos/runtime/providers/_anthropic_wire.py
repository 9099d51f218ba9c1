"""The Anthropic Messages wire format, sans-IO: request bodies, answers and stream events.

Nothing here does I/O. :func:`messages_body` builds a request body, :func:`parse_message` reads a
non-streamed answer and :class:`MessageStreamReader` turns the named events of a streamed answer
into :class:`~delos.runtime.values.TextDelta` and :class:`~delos.runtime.values.StreamFinished`.
The same format serves the direct API and Claude on Vertex AI; only the transport differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._http import decode_event_object
from delos.runtime.values import (
    ChatRequest,
    Completion,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "OUTPUT_TOOL_NAME",
    "MessageStreamReader",
    "OutputTool",
    "error_message",
    "messages_body",
    "parse_message",
]

#: ``max_tokens`` sent when a request sets none, tokens. The API requires the field; 4096 is the
#: largest value every catalog model accepts (Claude 3 Opus and Haiku cap their output there).
DEFAULT_MAX_TOKENS: Final = 4096
#: The tool forced for structured output; its input is the answer.
OUTPUT_TOOL_NAME: Final = "output"

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}
_CACHE_FIELDS: Final = ("cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass(frozen=True, slots=True)
class OutputTool:
    """Structured output as a forced tool call.

    A tool's ``input_schema`` must describe an object, so any other schema is wrapped as the
    ``value`` property of one (``wrapped``) and unwrapped from the answer.
    """

    schema: Mapping[str, Any]
    wrapped: bool

    @classmethod
    def for_schema(cls, schema: Mapping[str, Any]) -> OutputTool:
        if schema.get("type") == "object":
            return cls(schema, wrapped=False)
        inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}
        wrapper: dict[str, Any] = {
            "type": "object",
            "properties": {"value": inner},
            "required": ["value"],
        }
        # "#/$defs/..." references resolve against the root, so definitions move up with it.
        for key in ("$defs", "definitions"):
            if key in schema:
                wrapper[key] = schema[key]
        return cls(wrapper, wrapped=True)

    def answer(self, tool_input: Any) -> str:
        """The JSON text of the answer carried by the tool's input."""
        if self.wrapped:
            if not isinstance(tool_input, dict) or "value" not in tool_input:
                return json.dumps(tool_input, ensure_ascii=False)
            tool_input = tool_input["value"]
        return json.dumps(tool_input, ensure_ascii=False)


def messages_body(
    request: ChatRequest, *, output_tool: OutputTool | None, stream: bool
) -> dict[str, Any]:
    """The Messages API body for ``request``, without transport fields (``model`` and the like).

    System messages become the top-level ``system`` field. Anthropic requires user and assistant
    turns to alternate, so consecutive messages of one role are merged, blank-line separated.
    Sampling parameters go as asked: the router never sends a Claude model a temperature above
    its catalog range (it skips the candidate instead), so nothing is clamped here.
    """
    messages: list[dict[str, Any]] = []
    for message in request.conversation:
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"] += "\n\n" + message.content
        else:
            messages.append({"role": message.role, "content": message.content})
    body: dict[str, Any] = {
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    system = request.system_prompt
    if system is not None:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if output_tool is not None:
        body["tools"] = [
            {
                "name": OUTPUT_TOOL_NAME,
                "description": "Give the answer as this tool's input, following its schema.",
                "input_schema": dict(output_tool.schema),
            }
        ]
        body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL_NAME}
    if stream:
        body["stream"] = True
    return body


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


def _prompt_tokens(usage: Mapping[str, Any]) -> int | None:
    """Input tokens including those written to and read from the prompt cache."""
    base = usage.get("input_tokens")
    if not isinstance(base, int):
        return None
    return base + sum(v for k in _CACHE_FIELDS if isinstance(v := usage.get(k), int))


def parse_message(
    provider: str, payload: Any, *, model: str, output_tool: OutputTool | None
) -> Completion:
    """A non-streamed Message as a :class:`Completion`.

    Raises:
        UpstreamProtocolError: the answer is an error envelope or has an unexpected shape.
    """
    try:
        if payload.get("type") == "error":
            raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
        blocks = payload["content"]
        text = "".join(str(b["text"]) for b in blocks if b.get("type") == "text")
        tool_inputs = [
            b.get("input")
            for b in blocks
            if b.get("type") == "tool_use" and b.get("name") == OUTPUT_TOOL_NAME
        ]
        forced_tool_used = output_tool is not None and bool(tool_inputs)
        if output_tool is not None and tool_inputs:
            text = output_tool.answer(tool_inputs[0])
        usage_payload = payload.get("usage")
        usage = None
        if isinstance(usage_payload, dict):
            prompt = _prompt_tokens(usage_payload)
            completion = usage_payload.get("output_tokens")
            if prompt is not None and isinstance(completion, int):
                usage = Usage(prompt, completion)
        stop_reason = str(payload.get("stop_reason") or "end_turn")
        return Completion(
            content=text,
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(stop_reason, forced_tool_used=forced_tool_used),
            usage=usage,
        )
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


class MessageStreamReader:
    """Interprets a Messages stream event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. Events are told apart by their SSE ``event:``
    name, as the official SDKs do; unnamed and unknown events are ignored (the API documents that
    new event types may appear). ``message_stop`` ends the stream: after it, :attr:`finished` is
    True and the last event returned was the :class:`StreamFinished`.

    Usage: input tokens (cache included) come with ``message_start``; output tokens only with
    ``message_delta``, whose count is cumulative. ``message_start`` carries a placeholder output
    count, so a stream whose ``message_delta`` has no usage reports ``usage=None``.

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
        self._prompt_tokens: int | None = None
        self._completion_tokens: int | None = None
        self._output_blocks: set[int] = set()
        self._held_text: list[str] = []
        self._held_json: list[str] = []

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
                self._prompt_tokens = _prompt_tokens(usage)
        return []

    def _on_content_block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL_NAME:
            if self._output_tool is not None:
                self._output_blocks.add(_index(data))
            return []
        if block.get("type") == "text" and block.get("text"):
            return self._text(str(block["text"]))
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(str(delta.get("text") or ""))
        if kind == "input_json_delta" and _index(data) in self._output_blocks:
            fragment = str(delta.get("partial_json") or "")
            assert self._output_tool is not None
            if self._output_tool.wrapped:
                self._held_json.append(fragment)
                return []
            return [TextDelta(fragment)] if fragment else []
        return []  # thinking, signature and citations deltas carry no answer text

    def _on_message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._stop_reason = str(delta["stop_reason"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("output_tokens"), int):
                self._completion_tokens = usage["output_tokens"]
            # Newer servers repeat the cumulative input counts here; they are the final word.
            prompt = _prompt_tokens(usage)
            if prompt is not None:
                self._prompt_tokens = prompt
        return []

    def _on_message_stop(self, data: dict[str, Any]) -> list[StreamEvent]:
        if self._stop_reason is None:
            raise UpstreamProtocolError(self._provider, "stream ended without a stop reason")
        self.finished = True
        events: list[StreamEvent] = []
        forced_tool_used = bool(self._output_blocks)
        if self._output_tool is not None:
            if self._held_json:
                events.append(TextDelta(self._unwrap("".join(self._held_json))))
            elif not forced_tool_used and self._held_text:
                events.append(TextDelta("".join(self._held_text)))
        usage = None
        if self._prompt_tokens is not None and self._completion_tokens is not None:
            usage = Usage(self._prompt_tokens, self._completion_tokens)
        finish = _finish_reason(self._stop_reason, forced_tool_used=forced_tool_used)
        events.append(StreamFinished(finish, usage, self.model))
        return events

    # -- helpers ----------------------------------------------------------------------------------

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
