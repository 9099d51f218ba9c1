"""How the fake Gemini service writes what is not an answer, and the framing all responses share.

google.rpc ``Status`` error bodies as Google sends them (:func:`error_response`, wrapped in a
one-element list for streaming calls; :func:`status_error` for an injected HTTP error, with
``RetryInfo`` on 429; :func:`stream_error` for an error inside a stream), the HTML page of its
front end for unknown paths, the fault bodies (oversized, silent), and what every response
carries: Google's headers (:func:`response_headers`) and indented JSON (:func:`pretty_json`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio

from delos.testing._server import BodyItem, FakeResponse, ScriptedBody

__all__ = [
    "JSON_TYPE",
    "error_info",
    "error_response",
    "json_response",
    "not_found_page",
    "oversized_body",
    "pretty_json",
    "response_headers",
    "silent_body",
    "status_error",
    "stream_error",
]

#: The content type of Google's JSON answers.
JSON_TYPE = "application/json; charset=UTF-8"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def response_headers(content_type: str) -> list[tuple[str, str]]:
    """The headers Google's front end sends with every response."""
    return [
        ("content-type", content_type),
        ("vary", "Origin"),
        ("vary", "X-Origin"),
        ("vary", "Referer"),
        ("server", "scaffolding on HTTPServer2"),
        ("x-xss-protection", "0"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-content-type-options", "nosniff"),
        ("server-timing", "gfet4t7; dur=1"),
    ]


def pretty_json(payload: Any) -> bytes:
    # Google's unary answers are indented JSON with a final newline.
    return json.dumps(payload, indent=2, ensure_ascii=False).encode() + b"\n"


def json_response(payload: Any) -> FakeResponse:
    """A 200 answer of ``payload`` as Google writes it."""
    return FakeResponse(200, response_headers(JSON_TYPE), pretty_json(payload))


def error_info(reason: str, service: str) -> dict[str, Any]:
    """A google.rpc ``ErrorInfo`` detail: ``reason`` told by ``service``.googleapis.com."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": f"{service}.googleapis.com"},
    }


def error_response(
    status: int,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    wrap: bool = False,
    headers: list[tuple[str, str]] | None = None,
) -> FakeResponse:
    """A google.rpc ``Status`` body; streaming calls get it wrapped in a one-element list."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    payload: Any = [{"error": error}] if wrap else {"error": error}
    return FakeResponse(
        status, [*response_headers(JSON_TYPE), *(headers or [])], pretty_json(payload)
    )


def status_error(status: int, retry_after: float | str | None, streaming: bool) -> FakeResponse:
    """The service's answer of HTTP ``status`` (an injected fault), with its quota details on
    429 and ``retry_after`` (seconds) as ``RetryInfo``; a text ``retry_after`` goes as a header."""
    details: list[dict[str, Any]] = []
    headers: list[tuple[str, str]] = []
    if status == 429:
        details += [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_paid_tier_input_token_count",
                        "quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute",
                        "quotaDimensions": {"location": "global", "model": "gemini-1.5-flash"},
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
        ]
    if isinstance(retry_after, int | float):
        # Google's retry hint is RetryInfo in the body, a protobuf Duration; no header.
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        )
    elif retry_after is not None:
        headers.append(("retry-after", retry_after))
    return error_response(
        status, _status_message(status), details=details, wrap=streaming, headers=headers
    )


def _status_message(status: int) -> str:
    return {
        400: "Request contains an invalid argument.",
        401: "Request had invalid authentication credentials.",
        403: "The caller does not have permission",
        404: "Requested entity was not found.",
        429: "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        503: "The model is overloaded. Please try again later.",
        504: "Deadline expired before operation could complete.",
    }.get(status, "Unknown error.")


def stream_error() -> dict[str, Any]:
    """The error object a stream carries in place of a chunk when the model fails mid-way."""
    return {"error": {"code": 500, "message": _status_message(500), "status": "INTERNAL"}}


def not_found_page(path: str) -> FakeResponse:
    """The 404 for an unknown ``path``."""
    # Google's front end answers unknown paths with an HTML page, not a JSON error.
    page = (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1"
        f"</title>\n  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>"
        f"{path}</code> was not found on this server.  <ins>That’s all we know.</ins>\n"
    )
    return FakeResponse(404, [("content-type", "text/html; charset=UTF-8")], page.encode())


def oversized_body() -> ScriptedBody:
    """About 40 MiB of JSON, past any sane bound on an answer."""
    block = b" " * (1 << 20)
    return ScriptedBody([b'{"padding": "', *([block] * 40), b'"}'])


async def silent_body() -> AsyncIterator[BodyItem]:
    """A body that never comes: the response stops after its headers."""
    await anyio.sleep_forever()
    yield b""  # pragma: no cover - never reached
