"""The Gemini ``generateContent`` wire format, without I/O: request bodies in, parsed answers out.

Shared by the Gemini API and by Gemini on Vertex AI, whose bodies are the same. Everything here is
a pure function of JSON values; :mod:`delos.runtime.providers.gemini` does the HTTP.

Facts of the format this module encodes:

- the system prompt travels apart, in ``systemInstruction``; turns have roles ``user``/``model``;
- the answer is ``candidates[0].content.parts[].text`` without the ``thought: true`` parts;
- proto3 JSON leaves out zero-valued fields, so a missing token count means zero;
- errors are google.rpc ``Status`` objects, sometimes wrapped in a one-element list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.values import ChatRequest, Usage

__all__ = [
    "ACCOUNT_STATUS",
    "AUTH_REASONS",
    "GeminiAnswer",
    "error_object",
    "error_reason",
    "error_status",
    "generate_body",
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


def generate_body(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` / ``streamGenerateContent`` body for ``request`` (camelCase).

    Structured output uses ``responseJsonSchema``: the schema is the caller's JSON Schema as
    parsed, sent unchanged. ``responseSchema`` would need a lossy translation to Google's OpenAPI
    subset (no ``const``, ``$ref``, ``additionalProperties`` or type lists), and the answer is
    validated against the original JSON Schema anyway.
    """
    system = request.system_prompt
    turns = request.conversation
    body: dict[str, Any] = {}
    if turns:
        body["contents"] = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in turns
        ]
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
    else:
        # ``contents`` may not be empty: a request made of system messages alone is sent as the
        # user's turn, which is what other providers do with it.
        body["contents"] = [{"role": "user", "parts": [{"text": system or ""}]}]
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.output_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = dict(request.output_schema)
    if config:
        body["generationConfig"] = config
    return body


@dataclass(frozen=True, slots=True)
class GeminiAnswer:
    """What one ``GenerateContentResponse`` (a whole answer or one stream chunk) says."""

    text: str
    #: Normalised finish reason; None while a stream is still going.
    finish_reason: str | None
    #: None when the chunk carries no ``usageMetadata``.
    usage: Usage | None
    #: ``modelVersion``, when present.
    model: str | None
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
    error = error_object(payload)
    if error is not None:
        raise UpstreamProtocolError(provider, f"error in the answer: {message_of(payload)}")
    try:
        candidates = payload.get("candidates") or []
        text, finish = "", None
        if candidates:
            candidate = candidates[0]
            parts = (candidate.get("content") or {}).get("parts") or []
            text = "".join(
                str(part["text"]) for part in parts if "text" in part and not part.get("thought")
            )
            reason = candidate.get("finishReason")
            if reason:
                finish = _FINISH_REASONS.get(str(reason), str(reason).lower())
        feedback = payload.get("promptFeedback") or {}
        block = feedback.get("blockReason")
        model = payload.get("modelVersion")
        return GeminiAnswer(
            text=text,
            finish_reason=finish,
            usage=_usage(payload.get("usageMetadata")),
            model=str(model) if model else None,
            block_reason=str(block) if block and not candidates else None,
            has_candidate=bool(candidates),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _usage(metadata: Any) -> Usage | None:
    """Tokens from ``usageMetadata``: completion = candidates + thoughts (both are billed)."""
    if not isinstance(metadata, dict):
        return None
    names = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount")
    if not any(name in metadata for name in names):
        return None
    counts = [metadata.get(name, 0) for name in names[:3]]
    if not all(_is_count(value) for value in counts):
        raise ValueError("token counts are not non-negative integers")
    prompt, candidates, thoughts = counts
    return Usage(prompt, candidates + thoughts)


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
