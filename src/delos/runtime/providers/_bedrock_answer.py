"""Bedrock's Converse answers, sans-IO: whole answers, stream events and HTTP errors.

Nothing here does I/O: :func:`parse_converse` reads a Converse answer into a :class:`Completion`;
:class:`ConverseStreamReader` turns decoded event-stream messages into stream events and decides
when a stream is complete; :func:`error_from_response` maps an HTTP error (``x-amzn-ErrorType``
and the status) to ours. How each setting is written, and what is refused, is listed in
:mod:`._bedrock_request`'s docstring.

Facts of the answer: calls are assistant ``toolUse`` blocks; thinking is a ``reasoningContent``
block (``reasoningText`` with its signature, or ``redactedContent``); structured output is the
input of the forced ``output`` tool (:data:`~._bedrock_request.OUTPUT_TOOL`), returned as JSON
text; ``usage.inputTokens`` leaves out the cache reads and writes, which come apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import (
    ProviderError,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.providers._bedrock_request import OUTPUT_TOOL
from delos.runtime.providers._http import clip_detail, error_from_status, parse_retry_after
from delos.runtime.providers._parts import ToolCallAssembler
from delos.runtime.values import (
    ChatRequest,
    Completion,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    Usage,
)
from delos.runtime.wire import EventStreamMessage

__all__ = [
    "ConverseStreamReader",
    "error_from_response",
    "error_type_of",
    "finish_reason",
    "parse_converse",
    "parse_usage",
]

_STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    # The answer was cut because prompt and answer filled the context window.
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}


def finish_reason(stop_reason: str, *, structured: bool) -> str:
    """Our finish reason for a Converse ``stopReason``.

    With structured output the forced tool call *is* the answer, so ``tool_use`` means the
    answer is complete: ``stop``, as for every other provider's structured output.
    """
    if structured and stop_reason == "tool_use":
        return "stop"
    return _STOP_REASONS.get(stop_reason, stop_reason.lower())


def parse_usage(payload: Any) -> Usage | None:
    """``usage``: ``inputTokens`` (the uncached input), ``outputTokens``, and the cache reads and
    writes, which Bedrock counts apart and we count in the prompt. None when the input or output
    count is missing."""
    if not isinstance(payload, Mapping):
        return None
    uncached, completion = payload.get("inputTokens"), payload.get("outputTokens")
    if not isinstance(uncached, int) or not isinstance(completion, int):
        return None
    read = payload.get("cacheReadInputTokens")
    written = payload.get("cacheWriteInputTokens")
    read = read if isinstance(read, int) else 0
    written = written if isinstance(written, int) else 0
    return Usage(
        uncached + read + written, completion, cache_read_tokens=read, cache_write_tokens=written
    )


def _arguments_text(value: Any) -> str:
    # Converse gives a call's input as a JSON value: compact, as Bedrock writes it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_converse(provider: str, payload: Any, request: ChatRequest) -> Completion:
    """A Converse answer as a :class:`Completion`: text blocks joined, tool calls, thinking.

    For structured output the content is the ``output`` tool's input as JSON text.

    Raises:
        UpstreamProtocolError: the answer lacks ``output.message.content`` or ``stopReason``,
            or a block has an unexpected shape.
    """
    structured = request.output_schema is not None
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[Thinking] = []
    tool_input: Any = None
    try:
        blocks = payload["output"]["message"]["content"]
        stop_reason = payload["stopReason"]
        if not isinstance(blocks, list) or not isinstance(stop_reason, str):
            raise TypeError
        for block in blocks:
            if "text" in block:
                texts.append(str(block["text"]))
            elif "toolUse" in block:
                tool = block["toolUse"]
                if structured:
                    if tool_input is None and tool.get("name") == OUTPUT_TOOL:
                        tool_input = tool.get("input")
                    continue
                name, call_id = tool["name"], tool["toolUseId"]
                if not isinstance(name, str) or not isinstance(call_id, str):
                    raise TypeError
                calls.append(ToolCall(call_id, name, _arguments_text(tool.get("input", {}))))
            elif "reasoningContent" in block:
                thinking.append(_thinking_of(provider, block["reasoningContent"]))
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None
    content = _arguments_text(tool_input) if tool_input is not None else "".join(texts)
    return Completion(
        content=content,
        model=request.model,
        finish_reason=finish_reason(stop_reason, structured=structured),
        usage=parse_usage(payload.get("usage")),
        tool_calls=tuple(calls),
        thinking=tuple(thinking),
    )


def _thinking_of(provider: str, block: Any) -> Thinking:
    """A ``reasoningContent`` block. Raises TypeError or KeyError for a malformed one."""
    if "redactedContent" in block:
        data = block["redactedContent"]
        if not isinstance(data, str):
            raise TypeError
        return Thinking(redacted_data=data, provider=provider)
    reasoning = block["reasoningText"]
    text, signature = reasoning.get("text", ""), reasoning.get("signature", "")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise TypeError
    return Thinking(text, signature, provider=provider)


@dataclass
class _ThinkingBlock:
    texts: list[str] = field(default_factory=list)
    signature: str = ""
    redacted: list[str] = field(default_factory=list)

    def thinking(self, provider: str) -> Thinking:
        if self.redacted:
            return Thinking(redacted_data="".join(self.redacted), provider=provider)
        return Thinking("".join(self.texts), self.signature, provider=provider)


class ConverseStreamReader:
    """Decoded ConverseStream messages in, stream events out; knows when a stream is complete.

    Bedrock sends ``messageStart``, per content block an optional ``contentBlockStart`` (a tool
    call's id and name), ``contentBlockDelta``\\* and ``contentBlockStop``, then
    ``messageStop`` (the stop reason) and, last, ``metadata`` (usage). The stream is finished
    at ``metadata`` after ``messageStop``; a stream that ends after ``messageStop`` without
    ``metadata`` is complete with no usage; one that ends before ``messageStop`` is truncated.

    Text deltas become :class:`TextDelta`; a tool call's start and each fragment of its input
    a :class:`ToolCallDelta` (its ordinal among this answer's calls); reasoning text a
    :class:`ThinkingDelta`, its signature and redacted content kept for :class:`StreamFinished`.
    For structured output the ``output`` tool's input fragments are the answer's
    :class:`TextDelta` events. Events of unknown types are ignored, as are padding fields.
    """

    def __init__(self, provider: str, model: str, *, structured: bool) -> None:
        self._provider = provider
        self._model = model
        self._structured = structured
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._metadata_seen = False
        self._calls = ToolCallAssembler()
        #: Reasoning blocks by content-block index, in the order they began.
        self._thinking: dict[int, _ThinkingBlock] = {}
        #: True once :class:`StreamFinished` has been produced; later messages are ignored.
        self.finished = False

    def feed(self, message: EventStreamMessage) -> list[StreamEvent]:
        """The events ``message`` produces.

        Raises:
            UpstreamProtocolError: an exception or error message, an event whose payload is
                not a JSON object, a tool input fragment for a block that never started, or a
                ``messageStop`` without a stop reason.
        """
        if self.finished:
            return []
        kind = message.message_type
        if kind == "exception":
            raise UpstreamProtocolError(self._provider, self._exception_text(message))
        if kind == "error":
            raise UpstreamProtocolError(
                self._provider,
                f"stream failed with error {message.error_code or 'unknown'}: "
                f"{clip_detail(message.error_message or 'no message')}",
            )
        if kind != "event":
            raise UpstreamProtocolError(
                self._provider, f"stream carried a message of unknown type {kind!r}"
            )
        event_type = message.event_type
        if event_type not in ("contentBlockStart", "contentBlockDelta", "messageStop", "metadata"):
            return []  # messageStart, contentBlockStop and future event types
        payload = self._payload(message)
        if event_type == "contentBlockStart":
            return self._start(payload)
        if event_type == "contentBlockDelta":
            return self._delta(payload)
        if event_type == "messageStop":
            reason = payload.get("stopReason")
            if not isinstance(reason, str):
                raise UpstreamProtocolError(self._provider, "messageStop has no stopReason")
            self._stop_reason = reason
        else:
            self._usage = parse_usage(payload.get("usage"))
            self._metadata_seen = True
        if self._stop_reason is not None and self._metadata_seen:
            return [self._finish()]
        return []

    def end(self) -> list[StreamEvent]:
        """The events due at end of input.

        Raises:
            UpstreamProtocolError: the stream ended before ``messageStop``.
        """
        if self.finished:
            return []
        if self._stop_reason is None:
            raise UpstreamProtocolError(
                self._provider, "stream ended before messageStop: the answer is truncated"
            )
        return [self._finish()]

    def _finish(self) -> StreamFinished:
        self.finished = True
        assert self._stop_reason is not None
        reason = finish_reason(self._stop_reason, structured=self._structured)
        thinking = tuple(block.thinking(self._provider) for block in self._thinking.values())
        return StreamFinished(reason, self._usage, self._model, self._calls.calls(), thinking)

    def _payload(self, message: EventStreamMessage) -> dict[str, Any]:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            raise UpstreamProtocolError(
                self._provider, f"{message.event_type} event is not valid JSON"
            ) from None
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(
                self._provider, f"{message.event_type} event is not a JSON object"
            )
        return payload

    def _start(self, payload: dict[str, Any]) -> list[StreamEvent]:
        start = payload.get("start")
        tool = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool, dict) or self._structured:
            return []  # the output tool's start says nothing the answer needs
        call_id, name = tool.get("toolUseId"), tool.get("name")
        index = payload.get("contentBlockIndex")
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(index, int):
            raise UpstreamProtocolError(self._provider, "a toolUse start has no id, name or index")
        return [self._calls.start(index, call_id, name)]

    def _delta(self, payload: dict[str, Any]) -> list[StreamEvent]:
        delta = payload.get("delta")
        index = payload.get("contentBlockIndex")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError(self._provider, "contentBlockDelta has no delta")
        text = delta.get("text")
        if isinstance(text, str):
            return [TextDelta(text)] if text else []
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            partial = tool.get("input")
            if not isinstance(partial, str) or not partial:
                return []
            if self._structured:
                return [TextDelta(partial)]
            if not self._calls.known(index):
                raise UpstreamProtocolError(
                    self._provider, "a toolUse input fragment came for a block that never started"
                )
            return [self._calls.arguments(index, partial)]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(index, int):
            return self._reasoning(index, reasoning)
        return []  # citations and future delta kinds

    def _reasoning(self, index: int, reasoning: dict[str, Any]) -> list[StreamEvent]:
        block = self._thinking.setdefault(index, _ThinkingBlock())
        text, signature = reasoning.get("text"), reasoning.get("signature")
        redacted = reasoning.get("redactedContent")
        if isinstance(signature, str):
            block.signature += signature
        if isinstance(redacted, str):
            block.redacted.append(redacted)
        if isinstance(text, str) and text:
            block.texts.append(text)
            return [ThinkingDelta(text)]
        return []

    def _exception_text(self, message: EventStreamMessage) -> str:
        name = message.exception_type or "unknown exception"
        detail = "no message"
        try:
            payload = json.loads(message.payload)
            if isinstance(payload, dict) and payload.get("message"):
                detail = str(payload["message"])
        except ValueError:
            pass
        if name == "throttlingException":
            # Throttled after the answer began: not a rate limit to wait out, a failed stream.
            return f"stream failed: throttled mid-stream ({name}): {clip_detail(detail)}"
        return f"stream failed with {name}: {clip_detail(detail)}"


# -- HTTP errors ---------------------------------------------------------------------------------

_AUTH = (UpstreamAuthenticationError, "rejected the gateway's credentials")
_UNAVAILABLE = (UpstreamUnavailable, "unavailable")
_BY_ERROR_TYPE: Final[dict[str, tuple[type[ProviderError], str]]] = {
    "ValidationException": (UpstreamRejected, "rejected the request"),
    "ConflictException": (UpstreamRejected, "rejected the request"),
    "SerializationException": (UpstreamRejected, "rejected the request"),
    "AccessDeniedException": _AUTH,
    "UnrecognizedClientException": _AUTH,
    "InvalidSignatureException": _AUTH,
    "IncompleteSignatureException": _AUTH,
    "MissingAuthenticationTokenException": _AUTH,
    "ExpiredTokenException": _AUTH,
    "ResourceNotFoundException": (UpstreamModelNotFound, "not found"),
    "ModelTimeoutException": (UpstreamTimeout, "timed out"),
    "ModelErrorException": (UpstreamUnavailable, "model failed"),
    "ModelNotReadyException": (UpstreamUnavailable, "model not ready"),
    "ThrottlingException": (UpstreamRateLimited, "rate limited"),
    # An account quota (tokens or requests per minute): waiting helps, as for throttling.
    "ServiceQuotaExceededException": (UpstreamRateLimited, "over its service quota"),
    "InternalServerException": _UNAVAILABLE,
    "ServiceUnavailableException": _UNAVAILABLE,
}


def error_type_of(headers: Mapping[str, str], payload: Any) -> str | None:
    """The AWS error code: ``x-amzn-ErrorType`` before its ``:``, else the body's ``__type``.

    ``headers``: looked up by lower-case name (httpx's headers, or a dict of lower-case names).
    """
    raw = headers.get("x-amzn-errortype")
    if not raw and isinstance(payload, Mapping):
        raw = payload.get("__type") or payload.get("code")
    if not raw:
        return None
    name = str(raw).split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name or None


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> ProviderError:
    """The error for a non-2xx Bedrock answer of ``status``; the message names the AWS
    exception. ``headers``: as for :func:`error_type_of`."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    error_type = error_type_of(headers, payload)

    def message_of(value: Any) -> str | None:
        message = value.get("message") or value.get("Message")
        if not message:
            return error_type
        return f"{error_type}: {message}" if error_type else str(message)

    known = _BY_ERROR_TYPE.get(error_type or "")
    if known is None:
        return error_from_status(provider, status, headers, body, message_of=message_of)
    error_class, label = known
    detail = message_of(payload) if isinstance(payload, Mapping) else error_type
    text = f"HTTP {status}: {clip_detail(str(detail or error_type))}"
    retry_after = parse_retry_after(headers)
    return error_class(provider, f"{label} ({text})", http_status=status, retry_after=retry_after)
