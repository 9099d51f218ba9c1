"""The OpenAI chat-completions and embeddings wire format, sans-IO: bodies in, parsed answers out.

Shared by OpenAI, Together AI and OpenRouter; the dialect's differences arrive as arguments.
Nothing here does I/O: :func:`chat_body` builds a request body, :func:`parse_completion` reads a
whole answer, :class:`ChatStreamReader` turns the SSE events of a streamed answer into
:class:`~delos.runtime.values.TextDelta` and :class:`~delos.runtime.values.StreamFinished`, and
:func:`parse_embeddings` reads an embeddings answer.

Facts of the format this module encodes:

- a stream ends with the literal event ``data: [DONE]``; a stream without it was cut short;
- usage arrives wherever the dialect puts it: a last chunk with no choices (OpenAI with
  ``stream_options.include_usage``, OpenRouter always) or the finishing chunk (Together);
- errors are ``{"error": {"message": ...}}`` or ``{"error": "..."}``, in a body or in a stream;
- embeddings come as float lists, or base64 little-endian float32 (what we ask for).
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._http import decode_event_object
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = [
    "ChatStreamReader",
    "chat_body",
    "embeddings_body",
    "error_message",
    "parse_completion",
    "parse_embeddings",
]

_FINISH_REASONS: Final = {
    "eos": "stop",
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def error_message(payload: Any) -> str | None:
    """The message of an error envelope, ``{"error": {"message": ...}}`` or ``{"error": "..."}``."""
    error = payload.get("error")
    if isinstance(error, str):
        return error
    return str(error.get("message")) if isinstance(error, dict) else None


def _usage(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    prompt, completion = payload.get("prompt_tokens"), payload.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def _finish_reason(reason: Any) -> str:
    return _FINISH_REASONS.get(reason, str(reason))


def chat_body(
    request: ChatRequest, *, max_tokens_field: str, stream_usage_option: bool, stream: bool
) -> dict[str, Any]:
    """The ``/chat/completions`` body for ``request``.

    ``max_tokens_field``: the dialect's name for the limit (OpenAI's ``max_completion_tokens``);
    ``stream_usage_option``: ask for usage in streams with ``stream_options.include_usage``.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "output",
                "schema": dict(request.output_schema),
                "strict": False,
            },
        }
    if stream:
        body["stream"] = True
        if stream_usage_option:
            body["stream_options"] = {"include_usage": True}
    return body


def parse_completion(provider: str, payload: Any, *, model: str) -> Completion:
    """A ``chat.completion`` object as a :class:`Completion`; ``model`` when it names none.

    Raises:
        UpstreamProtocolError: the answer is an error envelope or has an unexpected shape.
    """
    try:
        if payload.get("error"):
            raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
        choice = payload["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is None:
            content = message.get("refusal") or ""
        return Completion(
            content=str(content),
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(str(choice.get("finish_reason") or "stop")),
            usage=_usage(payload.get("usage")),
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


class ChatStreamReader:
    """Interprets a streamed chat completion event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. ``[DONE]`` ends the stream: :attr:`finished`
    is then True and the last event returned was the :class:`StreamFinished`; later events are
    ignored. Call :meth:`end` when the input ends.

    Raises (from :meth:`feed`):
        UpstreamProtocolError: an event that is not a JSON object, an error in the stream, or
            ``[DONE]`` before any finish reason.
    """

    def __init__(self, provider: str, *, model: str) -> None:
        self._provider = provider
        self.model = model
        self.finished = False
        self._finish: str | None = None
        self._usage: Usage | None = None

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        if self.finished:
            return []
        if event.data == "[DONE]":
            if self._finish is None:
                raise UpstreamProtocolError(self._provider, "stream ended without a finish")
            self.finished = True
            return [StreamFinished(self._finish, self._usage, self.model)]
        chunk = decode_event_object(self._provider, event.data)
        if chunk.get("error"):
            detail = error_message(chunk) or "unknown error"
            raise UpstreamProtocolError(self._provider, f"error in the stream: {detail}")
        self.model = str(chunk.get("model") or self.model)
        self._usage = _usage(chunk.get("usage")) or self._usage
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events.append(TextDelta(str(text)))
            reason = choice.get("finish_reason")
            if reason and reason != "error":
                self._finish = _finish_reason(reason)
        return events

    def end(self) -> None:
        """The input ended.

        Raises:
            UpstreamProtocolError: before ``[DONE]``: the answer is truncated.
        """
        if not self.finished:
            raise UpstreamProtocolError(
                self._provider, "stream ended before [DONE]: the answer is truncated"
            )


def embeddings_body(request: EmbedRequest) -> dict[str, Any]:
    """The ``/embeddings`` body; vectors are asked for in base64 (4× smaller than JSON floats)."""
    return {"model": request.model, "input": list(request.texts), "encoding_format": "base64"}


def parse_embeddings(provider: str, payload: Any, request: EmbedRequest) -> Embeddings:
    """An embeddings answer: vectors in input order (by ``index``), usage from ``prompt_tokens``.

    Raises:
        UpstreamProtocolError: the answer has an unexpected shape or the wrong number of vectors.
    """
    try:
        items = sorted(payload["data"], key=lambda item: item["index"])
        vectors = [_vector(item["embedding"]) for item in items]
        usage_payload = payload.get("usage") or {}
        tokens = usage_payload.get("prompt_tokens")
        usage = Usage(int(tokens), 0) if isinstance(tokens, int) else None
    except (KeyError, TypeError, ValueError, struct.error):
        raise UpstreamProtocolError(provider, "embeddings answer has an unexpected shape") from None
    if len(vectors) != len(request.texts):
        raise UpstreamProtocolError(provider, "embeddings answer has the wrong count")
    return Embeddings(vectors, str(payload.get("model") or request.model), usage)


def _vector(value: Any) -> list[float]:
    """A float list, or base64 little-endian float32."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in value]
