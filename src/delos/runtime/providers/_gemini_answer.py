"""Gemini ``generateContent`` answers, sans-IO: whole answers, stream chunks and errors.

Shared by the Gemini API and by Gemini on Vertex AI. Nothing here does I/O: :func:`parse_answer`
reads one ``GenerateContentResponse`` (a whole answer or one stream chunk), :class:`AnswerBuilder`
assembles an answer from them and turns each into our stream events, and :func:`error_object`,
:func:`message_of`, :func:`error_status`, :func:`error_reason` and :func:`retry_delay` read
google.rpc error bodies. :mod:`._gemini_request` builds the request bodies.

Facts of the format this module encodes:

- calls come whole, without ids: ours are made deterministically from the answer
  (:func:`~._parts.deterministic_call_id`);
- thinking comes as ``thought: true`` text parts (summaries, when asked for) and as opaque
  ``thoughtSignature`` bytes on whichever part they came with (a ``functionCall``, a text part,
  possibly an empty one);
- ``usageMetadata.promptTokenCount`` includes ``cachedContentTokenCount`` (implicit caching), and
  ``candidatesTokenCount`` excludes ``thoughtsTokenCount``;
- proto3 JSON leaves out zero-valued fields, so a missing token count means zero;
- errors are google.rpc ``Status`` objects, sometimes wrapped in a one-element list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError, UpstreamRejected
from delos.runtime.providers._parts import ToolCallAssembler, deterministic_call_id
from delos.runtime.values import (
    StreamEvent,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "ACCOUNT_STATUS",
    "AUTH_REASONS",
    "AnswerBuilder",
    "CallPiece",
    "GeminiAnswer",
    "TextPiece",
    "ThoughtPiece",
    "error_object",
    "error_reason",
    "error_status",
    "message_of",
    "parse_answer",
    "retry_delay",
]

_FINISH_REASONS: Final[Mapping[str, str]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}

#: ``ErrorInfo.reason`` values that mean the gateway's own key is at fault. Google answers them
#: with HTTP 400 INVALID_ARGUMENT, which would otherwise read as a fault of the caller's request.
AUTH_REASONS: Final = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
#: The google.rpc status of a 400 that is about the gateway's account, not the request: "User
#: location is not supported for the API use", a free tier unavailable in the country.
ACCOUNT_STATUS: Final = "FAILED_PRECONDITION"

_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
# A protobuf Duration in JSON: decimal seconds with up to nine fractional digits, then "s".
_DURATION: Final = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")


@dataclass(frozen=True, slots=True)
class TextPiece:
    """A text part of the answer; ``signature`` a ``thoughtSignature`` it carried."""

    text: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class ThoughtPiece:
    """A ``thought: true`` part: a summary of the model's thinking."""

    text: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class CallPiece:
    """A ``functionCall`` part, its ``args`` as compact JSON text."""

    name: str
    arguments_json: str
    signature: str = ""


Piece = TextPiece | ThoughtPiece | CallPiece


@dataclass(frozen=True, slots=True)
class GeminiAnswer:
    """What one ``GenerateContentResponse`` (a whole answer or one stream chunk) says."""

    #: The parts of ``candidates[0]``, in order.
    pieces: tuple[Piece, ...]
    #: Gemini's finish reason normalised (a call's STOP still reads "stop"); None while a stream
    #: is still going.
    finish_reason: str | None
    #: None when the chunk carries no ``usageMetadata``.
    usage: Usage | None
    #: ``modelVersion``, when present.
    model: str | None
    #: ``responseId``, when present (the key of our deterministic call ids).
    response_id: str | None
    #: ``promptFeedback.blockReason`` of a prompt refused before any candidate was produced.
    block_reason: str | None
    #: Whether the payload held a candidate at all.
    has_candidate: bool


def parse_answer(provider: str, payload: Any) -> GeminiAnswer:
    """Read one ``GenerateContentResponse``.

    Raises:
        UpstreamProtocolError: the payload is an error object or has an unexpected shape.
    """
    payload = _unwrap(payload)
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(provider, "answer is not a JSON object")
    if error_object(payload) is not None:
        raise UpstreamProtocolError(provider, f"error in the answer: {message_of(payload)}")
    try:
        candidates = payload.get("candidates") or []
        pieces: list[Piece] = []
        finish = None
        if candidates:
            candidate = candidates[0]
            for part in (candidate.get("content") or {}).get("parts") or []:
                piece = _piece(part)
                if piece is not None:
                    pieces.append(piece)
            reason = candidate.get("finishReason")
            if reason:
                finish = _FINISH_REASONS.get(str(reason), str(reason).lower())
        feedback = payload.get("promptFeedback") or {}
        block = feedback.get("blockReason")
        model = payload.get("modelVersion")
        response_id = payload.get("responseId")
        return GeminiAnswer(
            pieces=tuple(pieces),
            finish_reason=finish,
            usage=_usage(payload.get("usageMetadata")),
            model=str(model) if model else None,
            response_id=str(response_id) if response_id else None,
            block_reason=str(block) if block and not candidates else None,
            has_candidate=bool(candidates),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


def _piece(part: Any) -> Piece | None:
    signature = part.get("thoughtSignature") or ""
    if not isinstance(signature, str):
        raise TypeError("thoughtSignature is not a string")
    if "functionCall" in part:
        call = part["functionCall"]
        arguments = call.get("args") or {}
        if not isinstance(arguments, dict):
            raise TypeError("functionCall.args is not an object")
        # Compact, key order kept: the JSON text the provider's object stands for.
        text = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        return CallPiece(str(call["name"]), text, signature)
    if "text" in part:
        if part.get("thought"):
            return ThoughtPiece(str(part["text"]), signature)
        return TextPiece(str(part["text"]), signature)
    if signature:
        return TextPiece("", signature)
    # Parts of features this gateway never asks for (code execution, generated media).
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_USAGE_FIELDS: Final = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
)


def _usage(metadata: Any) -> Usage | None:
    """Tokens from ``usageMetadata``: completion = candidates + thoughts (both are billed; the
    candidates count leaves thoughts out); prompt = prompt + tool-use prompt (the results of
    server-side tools, counted apart), cache reads included."""
    if not isinstance(metadata, dict):
        return None
    if not any(name in metadata for name in (*_USAGE_FIELDS, "totalTokenCount")):
        return None
    counts = [metadata.get(name, 0) for name in _USAGE_FIELDS]
    if not all(_is_count(value) for value in counts):
        raise ValueError("token counts are not non-negative integers")
    prompt, tool_prompt, candidates, thoughts, cached = counts
    return Usage(
        prompt + tool_prompt,
        candidates + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


class AnswerBuilder:
    """One answer from its ``GenerateContentResponse`` payloads: the whole answer, or each chunk
    of a stream in order. :meth:`feed` returns the stream events a payload makes; the
    properties hold the answer assembled so far.

    Thought text becomes :class:`~delos.runtime.values.Thinking` (consecutive thought parts are
    one), a signature on a text part a ``Thinking`` with empty text, a signature on a call that
    call's ``signature``. Gemini sends each call whole, so a call is one
    :class:`~delos.runtime.values.ToolCallDelta` carrying id, name and all its arguments.
    """

    def __init__(self, provider: str, model: str) -> None:
        self._provider = provider
        self.model = model
        self._texts: list[str] = []
        self._calls = ToolCallAssembler()
        self._call_count = 0
        self._thinking: list[Thinking] = []
        self._thought_open = False
        self._finish: str | None = None
        self.usage: Usage | None = None
        self._response_id = ""
        self.has_candidate = False

    def feed(self, payload: Any) -> list[StreamEvent]:
        """The events of one payload.

        Raises:
            UpstreamRejected: the prompt was blocked (``promptFeedback.blockReason``).
            UpstreamProtocolError: the payload is an error or malformed.
        """
        answer = parse_answer(self._provider, payload)
        if answer.block_reason is not None:
            # A refused prompt is a 200 with no candidates. Retrying it, here or elsewhere,
            # would only route around a safety decision about the caller's own input.
            raise UpstreamRejected(
                self._provider,
                f"blocked the prompt (promptFeedback.blockReason {answer.block_reason})",
            )
        self.has_candidate = self.has_candidate or answer.has_candidate
        self._response_id = self._response_id or answer.response_id or ""
        events: list[StreamEvent] = []
        for piece in answer.pieces:
            event = self._take(piece)
            if event is not None:
                events.append(event)
        # Running counts: the last report is the total, never a sum of reports.
        self.usage = answer.usage or self.usage
        self.model = answer.model or self.model
        self._finish = answer.finish_reason or self._finish
        return events

    def _take(self, piece: Piece) -> StreamEvent | None:
        if isinstance(piece, ThoughtPiece):
            if self._thought_open:
                last = self._thinking[-1]
                self._thinking[-1] = Thinking(
                    last.text + piece.text, piece.signature or last.signature, "", self._provider
                )
            else:
                self._thinking.append(Thinking(piece.text, piece.signature, "", self._provider))
            self._thought_open = not piece.signature
            return ThinkingDelta(piece.text) if piece.text else None
        self._thought_open = False
        if isinstance(piece, TextPiece):
            if piece.signature:
                self._thinking.append(Thinking("", piece.signature, "", self._provider))
            if not piece.text:
                return None
            self._texts.append(piece.text)
            return TextDelta(piece.text)
        ordinal = self._call_count
        self._call_count += 1
        call_id = deterministic_call_id(
            self._response_id, ordinal, piece.name, piece.arguments_json
        )
        self._calls.start(ordinal, call_id, piece.name)
        self._calls.arguments(ordinal, piece.arguments_json)
        if piece.signature:
            self._calls.sign(ordinal, piece.signature)
        return ToolCallDelta(ordinal, call_id, piece.name, piece.arguments_json)

    @property
    def content(self) -> str:
        return "".join(self._texts)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self._calls.calls()

    @property
    def thinking(self) -> tuple[Thinking, ...]:
        return tuple(self._thinking)

    @property
    def finish_reason(self) -> str | None:
        """The normalised finish reason: "tool_calls" for Gemini's STOP after calls."""
        if self._finish == "stop" and self._call_count:
            return "tool_calls"
        return self._finish


# -- errors ---------------------------------------------------------------------------------------


def _unwrap(payload: Any) -> Any:
    # Errors of streaming calls (and whole streams without alt=sse) come as a JSON array.
    if isinstance(payload, list) and len(payload) == 1:
        return payload[0]
    return payload


def error_object(payload: Any) -> dict[str, Any] | None:
    """The google.rpc ``Status`` in ``{"error": {...}}`` (or ``[{"error": {...}}]``), or None."""
    payload = _unwrap(payload)
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    return error if isinstance(error, dict) else None


def message_of(payload: Any) -> str | None:
    """``STATUS: message`` of an error payload, for error messages; None when there is none."""
    error = error_object(payload)
    if error is None:
        return None
    message, status = error.get("message"), error.get("status")
    if status and message:
        return f"{status}: {message}"
    return str(message or status or "") or None


def _details(payload: Any, kind: str) -> list[dict[str, Any]]:
    error = error_object(payload) or {}
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == kind]


def error_status(payload: Any) -> str | None:
    """The google.rpc status name (``RESOURCE_EXHAUSTED``…) of an error payload, if any."""
    status = (error_object(payload) or {}).get("status")
    return status if isinstance(status, str) else None


def error_reason(payload: Any) -> str | None:
    """``ErrorInfo.reason`` (such as ``API_KEY_INVALID``) of an error payload, if any."""
    for detail in _details(payload, _ERROR_INFO):
        reason = detail.get("reason")
        if isinstance(reason, str):
            return reason
    return None


def retry_delay(payload: Any) -> float | None:
    """Seconds from ``RetryInfo.retryDelay`` (Google sends no Retry-After header), if any."""
    for detail in _details(payload, _RETRY_INFO):
        delay = detail.get("retryDelay")
        match = _DURATION.match(delay) if isinstance(delay, str) else None
        if match:
            return float(match.group(1))
    return None
