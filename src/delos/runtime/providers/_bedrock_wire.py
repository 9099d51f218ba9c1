"""Bedrock's Converse wire format, sans I/O: request bodies, answers, stream events and errors.

- :func:`converse_body` builds a Converse / ConverseStream request body;
- :func:`parse_converse` reads a Converse answer into a :class:`Completion`;
- :class:`ConverseStreamReader` turns decoded event-stream messages into stream events and
  decides when a stream is complete;
- :func:`error_from_response` maps an HTTP error (``x-amzn-ErrorType`` and the status) to ours.

Structured output uses the forced-tool route: one tool named ``output`` whose input schema is the
requested schema, and ``toolChoice`` naming it. The answer is the tool's input, as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
from delos.runtime.providers._http import clip_detail, error_from_status, parse_retry_after
from delos.runtime.values import (
    ChatRequest,
    Completion,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import EventStreamMessage

__all__ = [
    "OUTPUT_TOOL",
    "ConverseStreamReader",
    "converse_body",
    "error_from_response",
    "finish_reason",
    "parse_converse",
    "parse_usage",
]

#: Name of the tool that carries a structured answer.
OUTPUT_TOOL: Final = "output"

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


def converse_body(request: ChatRequest) -> dict[str, Any]:
    """The Converse request body for ``request`` (the model id goes in the URL, not here).

    Consecutive messages of one role are merged into one message of several text blocks:
    Converse requires user and assistant turns to alternate.
    """
    messages: list[dict[str, Any]] = []
    for message in request.conversation:
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"].append({"text": message.content})
        else:
            messages.append({"role": message.role, "content": [{"text": message.content}]})
    body: dict[str, Any] = {"messages": messages}
    # System blocks must not be blank; an empty system message says nothing anyway.
    system = [{"text": m.content} for m in request.messages if m.role == "system" and m.content]
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if config:
        body["inferenceConfig"] = config
    if request.output_schema is not None:
        body["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": OUTPUT_TOOL,
                        "description": "Answer with a value that matches this schema.",
                        "inputSchema": {"json": dict(request.output_schema)},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": OUTPUT_TOOL}},
        }
    return body


def finish_reason(stop_reason: str, *, structured: bool) -> str:
    """Our finish reason for a Converse ``stopReason``.

    With structured output the forced tool call *is* the answer, so ``tool_use`` means the
    answer is complete: ``stop``, as for every other provider's structured output.
    """
    if structured and stop_reason == "tool_use":
        return "stop"
    return _STOP_REASONS.get(stop_reason, stop_reason.lower())


def parse_usage(payload: Any) -> Usage | None:
    """``usage.inputTokens`` / ``outputTokens``; None when either is missing."""
    if not isinstance(payload, Mapping):
        return None
    prompt, completion = payload.get("inputTokens"), payload.get("outputTokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def parse_converse(provider: str, payload: Any, request: ChatRequest) -> Completion:
    """A Converse answer as a :class:`Completion`.

    The content is the text blocks joined, or, for structured output, the ``output`` tool's
    input as JSON text when the model called it.

    Raises:
        UpstreamProtocolError: the answer lacks ``output.message.content`` or ``stopReason``.
    """
    structured = request.output_schema is not None
    try:
        blocks = payload["output"]["message"]["content"]
        stop_reason = payload["stopReason"]
        if not isinstance(blocks, list) or not isinstance(stop_reason, str):
            raise TypeError
        texts: list[str] = []
        tool_input: Any = None
        for block in blocks:
            if "text" in block:
                texts.append(str(block["text"]))
            tool = block.get("toolUse")
            if structured and tool_input is None and isinstance(tool, Mapping):
                if tool.get("name") == OUTPUT_TOOL:
                    tool_input = tool.get("input")
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None
    if tool_input is not None:
        content = json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))
    else:
        content = "".join(texts)
    return Completion(
        content=content,
        model=request.model,
        finish_reason=finish_reason(stop_reason, structured=structured),
        usage=parse_usage(payload.get("usage")),
    )


class ConverseStreamReader:
    """Decoded ConverseStream messages in, stream events out; knows when a stream is complete.

    Bedrock sends ``messageStart``, ``contentBlockDelta``\\*, ``contentBlockStop``,
    ``messageStop`` (the stop reason) and, last, ``metadata`` (usage). The stream is finished
    at ``metadata`` after ``messageStop``; a stream that ends after ``messageStop`` without
    ``metadata`` is complete with no usage; one that ends before ``messageStop`` is truncated.
    Text deltas and, for structured output, the tool's partial JSON input become
    :class:`TextDelta` events. Events of unknown types are ignored, as are padding fields.
    """

    def __init__(self, provider: str, model: str, *, structured: bool) -> None:
        self._provider = provider
        self._model = model
        self._structured = structured
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._metadata_seen = False
        #: True once :class:`StreamFinished` has been produced; later messages are ignored.
        self.finished = False

    def feed(self, message: EventStreamMessage) -> list[StreamEvent]:
        """The events ``message`` produces.

        Raises:
            UpstreamProtocolError: an exception or error message, an event whose payload is
                not a JSON object, or a ``messageStop`` without a stop reason.
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
        if event_type not in ("contentBlockDelta", "messageStop", "metadata"):
            return []  # messageStart, contentBlockStart/Stop and future event types
        payload = self._payload(message)
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
        return StreamFinished(reason, self._usage, self._model)

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

    def _delta(self, payload: dict[str, Any]) -> list[StreamEvent]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError(self._provider, "contentBlockDelta has no delta")
        events: list[StreamEvent] = []
        text = delta.get("text")
        if isinstance(text, str) and text:
            events.append(TextDelta(text))
        tool = delta.get("toolUse")
        if self._structured and isinstance(tool, dict):
            partial = tool.get("input")
            if isinstance(partial, str) and partial:
                events.append(TextDelta(partial))
        return events

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
