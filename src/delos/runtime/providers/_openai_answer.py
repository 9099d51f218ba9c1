"""OpenAI chat-completions and embeddings answers, sans-IO: whole answers and streams.

Shared by OpenAI, Together AI and OpenRouter. Nothing here does I/O: :func:`parse_completion`
reads a whole answer, :class:`ChatStreamReader` turns the SSE events of a streamed answer into
our stream events, :func:`parse_embeddings` reads an embeddings answer and :func:`error_message`
an error envelope. How each setting is written, and how usage and thinking come back, is listed
in :mod:`._openai_request`'s docstring.

Facts of the stream: it ends with the literal event ``data: [DONE]``; usage arrives in a last
chunk with no choices (OpenAI with ``stream_options.include_usage``, OpenRouter always) or on the
finishing chunk (Together); a tool call arrives as ``tool_calls[].index`` fragments, the first with
``id`` and ``function.name``; errors are ``{"error": {"message": ...}}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._http import decode_event_object
from delos.runtime.providers._parts import ToolCallAssembler, deterministic_call_id
from delos.runtime.values import (
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = [
    "ChatStreamReader",
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


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _usage(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    prompt, completion = payload.get("prompt_tokens"), payload.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    prompt_details = payload.get("prompt_tokens_details")
    completion_details = payload.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return Usage(
        prompt,
        completion,
        cache_read_tokens=_count(prompt_details.get("cached_tokens")),
        cache_write_tokens=_count(prompt_details.get("cache_write_tokens")),
        reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
    )


def _finish_reason(reason: Any, *, called_tools: bool) -> str:
    finish = _FINISH_REASONS.get(reason, str(reason))
    # Some OpenAI-compatible servers say "stop" (or Together's "eos") after calling tools.
    return "tool_calls" if called_tools and finish == "stop" else finish


def _arguments_text(value: Any) -> str:
    """A call's arguments as sent: a JSON string, kept byte-exact (an object some servers send
    instead is written compactly)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
        calls = []
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call["function"]
            name = str(function["name"])
            arguments = _arguments_text(function.get("arguments")) or "{}"
            call_id = call.get("id") or deterministic_call_id(
                str(payload.get("id", "")), index, name, arguments
            )
            calls.append(ToolCall(str(call_id), name, arguments))
        thinking = _ThinkingBuilder(provider)
        thinking.feed(message)
        reason = str(choice.get("finish_reason") or "stop")
        return Completion(
            content=str(content),
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(reason, called_tools=bool(calls)),
            usage=_usage(payload.get("usage")),
            tool_calls=tuple(calls),
            thinking=thinking.blocks(),
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


@dataclass
class _Block:
    text: list[str] = field(default_factory=list)
    signature: str = ""
    redacted_data: str = ""


class _ThinkingBuilder:
    """Thinking of one answer, from a message or from stream deltas: OpenRouter's
    ``reasoning_details`` (kept apart by their ``index``, a signature or encrypted data joining
    its block), else the plain ``reasoning`` text (Together, OpenRouter, DeepSeek-style
    ``reasoning_content``)."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._blocks: dict[object, _Block] = {}

    def feed(self, delta: Mapping[str, Any]) -> list[StreamEvent]:
        """Take the thinking of ``delta`` (a message, or a stream delta); the text it adds."""
        details = delta.get("reasoning_details")
        if isinstance(details, list) and details:
            events: list[StreamEvent] = []
            for position, detail in enumerate(details):
                if isinstance(detail, dict):
                    events += self._detail(position, detail)
            return events
        text = delta.get("reasoning") or delta.get("reasoning_content")
        if not isinstance(text, str) or not text:
            return []
        self._blocks.setdefault("reasoning", _Block()).text.append(text)
        return [ThinkingDelta(text)]

    def _detail(self, position: int, detail: Mapping[str, Any]) -> list[StreamEvent]:
        index = detail.get("index")
        block = self._blocks.setdefault(
            ("detail", index if index is not None else position), _Block()
        )
        kind = detail.get("type")
        if kind == "reasoning.encrypted":
            block.redacted_data += str(detail.get("data") or "")
            return []
        text = detail.get("summary") if kind == "reasoning.summary" else detail.get("text")
        signature = detail.get("signature")
        if isinstance(signature, str) and signature:
            block.signature = signature
        if isinstance(text, str) and text:
            block.text.append(text)
            return [ThinkingDelta(text)]
        return []

    def blocks(self) -> tuple[Thinking, ...]:
        return tuple(
            Thinking(
                text="".join(b.text),
                signature=b.signature,
                redacted_data=b.redacted_data,
                provider=self._provider,
            )
            for b in self._blocks.values()
            if b.text or b.signature or b.redacted_data
        )


class ChatStreamReader:
    """Interprets a streamed chat completion event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. ``[DONE]`` ends the stream: :attr:`finished`
    is then True and the last event returned was the :class:`StreamFinished`, with the tool calls
    and thinking assembled; later events are ignored. Call :meth:`end` when the input ends.

    Tool calls arrive as ``delta.tool_calls[]`` fragments keyed by their ``index``; each becomes
    one :class:`ToolCallDelta` (a chunk that carries several calls gives several deltas).

    Raises (from :meth:`feed`):
        UpstreamProtocolError: an event that is not a JSON object, an error in the stream, a tool
            call fragment of an unexpected shape, or ``[DONE]`` before any finish reason.
    """

    def __init__(self, provider: str, *, model: str) -> None:
        self._provider = provider
        self.model = model
        self.finished = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._response_id = ""
        self._calls = ToolCallAssembler()
        self._call_count = 0
        self._thinking = _ThinkingBuilder(provider)

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        if self.finished:
            return []
        if event.data == "[DONE]":
            return [self._finished()]
        chunk = decode_event_object(self._provider, event.data)
        if chunk.get("error"):
            detail = error_message(chunk) or "unknown error"
            raise UpstreamProtocolError(self._provider, f"error in the stream: {detail}")
        self.model = str(chunk.get("model") or self.model)
        self._response_id = self._response_id or str(chunk.get("id") or "")
        self._usage = _usage(chunk.get("usage")) or self._usage
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            events += self._thinking.feed(delta)
            text = delta.get("content")
            if text:
                events.append(TextDelta(str(text)))
            for position, fragment in enumerate(delta.get("tool_calls") or ()):
                events += self._tool_fragment(choice.get("index", 0), position, fragment)
            reason = choice.get("finish_reason")
            if reason and reason != "error":
                self._finish = str(reason)
        return events

    def _tool_fragment(self, choice: Any, position: int, fragment: Any) -> list[ToolCallDelta]:
        if not isinstance(fragment, dict):
            raise UpstreamProtocolError(self._provider, "a tool call fragment is not an object")
        key = (choice, fragment.get("index", position))
        function = fragment.get("function") or {}
        arguments = _arguments_text(function.get("arguments"))
        deltas = []
        if not self._calls.known(key):
            name = str(function.get("name") or "")
            call_id = fragment.get("id") or deterministic_call_id(
                self._response_id, self._call_count, name, ""
            )
            self._call_count += 1
            deltas.append(self._calls.start(key, str(call_id), name))
        if arguments:
            deltas.append(self._calls.arguments(key, arguments))
        return deltas

    def _finished(self) -> StreamFinished:
        if self._finish is None:
            raise UpstreamProtocolError(self._provider, "stream ended without a finish")
        self.finished = True
        calls = self._calls.calls()
        return StreamFinished(
            _finish_reason(self._finish, called_tools=bool(calls)),
            self._usage,
            self.model,
            tool_calls=calls,
            thinking=self._thinking.blocks(),
        )

    def end(self) -> None:
        """The input ended.

        Raises:
            UpstreamProtocolError: before ``[DONE]``: the answer is truncated.
        """
        if not self.finished:
            raise UpstreamProtocolError(
                self._provider, "stream ended before [DONE]: the answer is truncated"
            )


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
