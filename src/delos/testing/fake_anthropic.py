"""A fake of the Anthropic Messages API, direct and as Claude on Vertex AI.

Direct API (base URL = the server's URL, no path): ``POST /v1/messages`` with ``x-api-key`` and
``anthropic-version``, and ``GET /v1/models``. Vertex AI (base URL = the server's URL, the
adapter adds ``/v1``; the SDK's base URL is ``url + "/v1"``):
``POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict`` and
``:streamRawPredict`` with a bearer token and ``"anthropic_version": "vertex-2023-10-16"`` in a
body that has no ``model``.

Answers are byte-exact: Message objects, named SSE events in the real order (with a ``ping``),
the error envelope and statuses (529 ``overloaded_error``), ``request-id`` and
``anthropic-ratelimit-*`` headers with RFC 3339 resets, Google-shaped errors for Vertex platform
failures (authentication, quota). Requests are checked as the service checks them, with its
400 ``invalid_request_error`` messages: a missing ``max_tokens``, a ``system`` message role, an
unknown content block type or a block in the wrong role, an image type the API does not read
(or an image URL on Vertex), a ``tool_result`` whose ``tool_use_id`` matches no ``tool_use`` of
the previous message, ``tool_use`` ids left unanswered or results not first in their turn, a
thinking signature the fake did not make (:func:`~delos.testing._agent.signature_valid`), a
tool-calling turn sent back without its thinking while thinking is on, a thinking budget under
1024 or not below ``max_tokens``, thinking with a temperature but 1, a top_p under 0.95, a forced
tool or a model without thinking, more than four ``cache_control`` blocks.

The model behaves as :mod:`delos.testing._agent` describes: ``tool_use`` blocks (ids
``toolu_01…``, ``toolu_vrtx_01…`` on Vertex) with ``stop_reason: "tool_use"``, ``Tool said: …``
after tool results, a signed ``thinking`` block first when thinking is enabled (streamed as
``thinking_delta`` then one ``signature_delta``), and a ``redacted_thinking`` block too when the
user's text holds the API's documented test string :data:`REDACTION_TRIGGER`. Tool inputs stream
as ``input_json_delta`` fragments of spaced JSON after an empty one.

The prompt cache works as the service's: the prompt up to each ``cache_control`` block (tools,
system, then messages) is a prefix; the longest prefix seen before is read
(``cache_read_input_tokens``), the prompt up to the last marker is written
(``cache_creation_input_tokens``), and ``input_tokens`` is the rest. Unlike the service it has no
minimum cacheable length and entries never expire. Thinking tokens are reported in
``output_tokens`` and in ``output_tokens_details.thinking_tokens``.

This module is the server: paths, authentication, faults, errors and headers. The request checks
and the prompt-cache accounting live in :mod:`delos.testing._anthropic_checks`, the model's
answer and how it is written (whole or streamed) in :mod:`delos.testing._anthropic_answer`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio

from delos.testing._anthropic_answer import (
    FOREVER,
    REDACTION_TRIGGER,
    oversized,
    plan_answer,
    stream_events,
    whole_message,
)
from delos.testing._anthropic_checks import (
    cache_usage,
    json_object,
    request_problem,
    thinking_model_problem,
)
from delos.testing._behaviour import Behaviour, FakeControl, Fault
from delos.testing._server import HANG_UP, RESET, FakeRequest, FakeResponse, Handler, ScriptedBody

__all__ = [
    "ANTHROPIC_MODELS",
    "REDACTION_TRIGGER",
    "VERTEX_CLAUDE_MODELS",
    "fake_anthropic_handler",
]

_DISPLAY_NAMES: Final = {
    "claude-sonnet-4-20250514": "Claude Sonnet 4",
    "claude-opus-4-20250514": "Claude Opus 4",
    "claude-3-5-sonnet-20241022": "Claude Sonnet 3.5 (New)",
    "claude-3-5-haiku-20241022": "Claude Haiku 3.5",
    "claude-3-opus-20240229": "Claude Opus 3",
    "claude-opus-4-5-20251101": "Claude Opus 4.5",
    "claude-sonnet-4-5-20250929": "Claude Sonnet 4.5",
    "claude-haiku-4-5-20251001": "Claude Haiku 4.5",
    "claude-opus-4-1-20250805": "Claude Opus 4.1",
}
ANTHROPIC_MODELS: Final = tuple(_DISPLAY_NAMES)
VERTEX_CLAUDE_MODELS: Final = (
    "claude-sonnet-4@20250514",
    "claude-opus-4@20250514",
    "claude-3-5-sonnet-v2@20241022",
    "claude-3-5-haiku@20241022",
    "claude-3-opus@20240229",
    "claude-opus-4-5@20251101",
    "claude-sonnet-4-5@20250929",
    "claude-haiku-4-5@20251001",
    "claude-opus-4-1@20250805",
)
_VERTEX_VERSION: Final = "vertex-2023-10-16"
# Recent official SDKs send their own dated API version in the body instead of the documented
# "vertex-2023-10-16"; both are accepted.
_VERSION: Final = re.compile(r"^(?:vertex-)?\d{4}-\d{2}-\d{2}$")
_VERTEX_PATH: Final = re.compile(
    r"^/v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/anthropic/models/(?P<model>[^/]+?):(?P<method>rawPredict|streamRawPredict)$"
)
_ERRORS: Final = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
_GOOGLE_ERRORS: Final = {
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "Permission denied on resource project."),
    429: ("RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."),
}


def fake_anthropic_handler(
    control: FakeControl, *, api_key: str | None = None, access_token: str | None = None
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server`.

    ``api_key`` is the ``x-api-key`` the direct API accepts and ``access_token`` the bearer token
    the Vertex paths accept; None accepts any non-empty value.
    """
    return _FakeAnthropic(control, api_key, access_token).handle


class _FakeAnthropic:
    def __init__(self, control: FakeControl, api_key: str | None, access_token: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self.access_token = access_token
        self.sequence = 0
        #: The prompt cache: a prefix's digest -> its tokens.
        self.cache: dict[str, int] = {}

    async def handle(self, request: FakeRequest) -> FakeResponse:
        behaviour = self.control.next_behaviour()
        self.sequence += 1
        vertex = _VERTEX_PATH.match(request.path)
        if vertex is not None and request.method == "POST":
            return await self._vertex(request, behaviour, vertex)
        if request.path not in ("/v1/messages", "/v1/models"):
            return self._error(404, "not_found_error", "Not Found")
        # The API key comes as ``x-api-key``; newer official SDKs send it as a bearer token.
        bearer = (request.header("authorization") or "").removeprefix("Bearer ")
        key = request.header("x-api-key") or bearer
        if not key or (self.api_key is not None and key != self.api_key):
            message = "x-api-key header is required" if not key else "invalid x-api-key"
            return self._error(401, "authentication_error", message)
        if request.path == "/v1/models" and request.method == "GET":
            return self._models(request.query)
        if request.method != "POST" or request.path != "/v1/messages":
            return self._error(405, "invalid_request_error", "Method Not Allowed")
        if request.header("anthropic-version") is None:
            return self._invalid("anthropic-version: header is required")
        body = json_object(request.body)
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        problem = request_problem(body, needs_model=True, vertex=False)
        if problem is not None:
            return self._invalid(problem)
        early = await self._before_headers(behaviour, body, vertex=False)
        if early is not None:
            return early
        model = body["model"]
        if model not in ANTHROPIC_MODELS:
            return self._error(404, "not_found_error", f"model: {model}")
        thinking_problem = thinking_model_problem(body, model)
        if thinking_problem is not None:
            return self._invalid(thinking_problem)
        return self._answer(body, behaviour, model, vertex=False)

    async def _vertex(
        self, request: FakeRequest, behaviour: Behaviour, match: re.Match[str]
    ) -> FakeResponse:
        authorization = request.header("authorization") or ""
        token = authorization.removeprefix("Bearer ")
        if (
            token == authorization
            or not token
            or (self.access_token is not None and token != self.access_token)
        ):
            return self._google_error(401)
        body = json_object(request.body)
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        version = body.get("anthropic_version")
        if version is None:
            return self._invalid("anthropic_version: Field required")
        if not _VERSION.match(str(version)):
            return self._invalid(f"anthropic_version: Input should be '{_VERTEX_VERSION}'")
        if "model" in body:
            return self._invalid("model: Extra inputs are not permitted")
        vertex_problem = request_problem(body, needs_model=False, vertex=True)
        if vertex_problem is not None:
            return self._invalid(vertex_problem)
        early = await self._before_headers(behaviour, body, vertex=True)
        if early is not None:
            return early
        model = unquote(match["model"])
        if model not in VERTEX_CLAUDE_MODELS:
            name = f"projects/{match['project']}/locations/{match['location']}"
            return self._google_error(
                404, f"Publisher Model `{name}/publishers/anthropic/models/{model}` not found."
            )
        thinking_problem = thinking_model_problem(body, model)
        if thinking_problem is not None:
            return self._invalid(thinking_problem)
        return self._answer(body, behaviour, model, vertex=True)

    # -- faults and errors ----------------------------------------------------------------------

    async def _before_headers(
        self, behaviour: Behaviour, body: dict[str, Any], *, vertex: bool
    ) -> FakeResponse | None:
        await anyio.sleep(behaviour.latency.draw(self.control.rng))
        stream = bool(body.get("stream"))
        content_type = "text/event-stream" if stream else "application/json"
        headers = self._headers(content_type, vertex=vertex)
        match behaviour.fault:
            case Fault.RESET_BEFORE_HEADERS:
                return FakeResponse.reset()
            case Fault.SILENCE_BEFORE_HEADERS:
                await anyio.sleep_forever()
            case Fault.HTTP_ERROR:
                status = behaviour.error_status
                if vertex and status in _GOOGLE_ERRORS:
                    return self._google_error(status, retry_after=behaviour.retry_after)
                kind, message = _ERRORS.get(status, ("api_error", "Internal server error"))
                return self._error(status, kind, message, retry_after=behaviour.retry_after)
            case Fault.INVALID_JSON if not stream:
                return FakeResponse(200, headers, b'{"id":"msg_01')
            case Fault.WRONG_CONTENT_TYPE:
                html = [("content-type", "text/html")]
                return FakeResponse(200, html, b"<html>502 Bad Gateway</html>")
            case Fault.OVERSIZED_BODY:
                return FakeResponse(200, headers, oversized(stream))
        return None

    def _error(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        retry_after: float | str | None = None,
    ) -> FakeResponse:
        headers = [("request-id", self._request_id())]
        if status == 429:
            headers += self._rate_limit_headers(exhausted=True)
        if retry_after is not None:
            headers.append(("retry-after", str(retry_after)))
        payload = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": self._request_id(),
        }
        return FakeResponse.json(payload, status, headers)

    def _invalid(self, message: str) -> FakeResponse:
        return self._error(400, "invalid_request_error", message)

    def _google_error(
        self, status: int, message: str | None = None, *, retry_after: float | str | None = None
    ) -> FakeResponse:
        code, default = _GOOGLE_ERRORS.get(status, ("NOT_FOUND", "Not found."))
        payload = {"error": {"code": status, "message": message or default, "status": code}}
        headers = [("retry-after", str(retry_after))] if retry_after is not None else []
        return FakeResponse.json(payload, status, headers)

    def _request_id(self) -> str:
        return f"req_011CFake{self.sequence:016d}"

    def _rate_limit_headers(self, *, exhausted: bool = False) -> list[tuple[str, str]]:
        reset = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = []
        for name, limit in (
            ("requests", 4000),
            ("tokens", 480000),
            ("input-tokens", 400000),
            ("output-tokens", 80000),
        ):
            remaining = 0 if exhausted else limit - min(limit, self.sequence)
            headers += [
                (f"anthropic-ratelimit-{name}-limit", str(limit)),
                (f"anthropic-ratelimit-{name}-remaining", str(remaining)),
                (f"anthropic-ratelimit-{name}-reset", reset),
            ]
        return headers

    def _headers(self, content_type: str, *, vertex: bool = False) -> list[tuple[str, str]]:
        headers = [("content-type", content_type)]
        if content_type == "text/event-stream":
            headers[0] = ("content-type", "text/event-stream; charset=utf-8")
            headers.append(("cache-control", "no-cache"))
        if not vertex:
            headers += [
                ("request-id", self._request_id()),
                ("anthropic-organization-id", "5f1d6c3e-0000-4000-8000-00000000fa4e"),
                *self._rate_limit_headers(),
            ]
        return headers

    # -- answers --------------------------------------------------------------------------------

    def _models(self, query: str) -> FakeResponse:
        params = parse_qs(query)
        limit_text = params.get("limit", ["20"])[0]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return self._invalid("limit: Input should be between 1 and 1000")
        limit = int(limit_text)
        ids = list(ANTHROPIC_MODELS)
        after = params.get("after_id", [None])[0]
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        page, more = ids[:limit], len(ids) > limit
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": _DISPLAY_NAMES[m],
                "created_at": f"{m[-8:-4]}-{m[-4:-2]}-{m[-2:]}T00:00:00Z",
            }
            for m in page
        ]
        payload = {
            "data": data,
            "has_more": more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        return FakeResponse.json(payload, headers=[("request-id", self._request_id())])

    def _answer(
        self, body: dict[str, Any], behaviour: Behaviour, model: str, *, vertex: bool
    ) -> FakeResponse:
        plan = plan_answer(
            body,
            behaviour,
            prompt_tokens=cache_usage(self.cache, body),
            call_id_prefix=f"toolu_{'vrtx_' if vertex else ''}01Fake{self.sequence:014d}",
        )
        message_id = f"msg_{'vrtx_' if vertex else ''}01Fake{self.sequence:018d}"
        if body.get("stream"):
            events = stream_events(
                plan, behaviour, message_id=message_id, model=model, rng=self.control.rng
            )
            headers = self._headers("text/event-stream", vertex=vertex)
            return FakeResponse(200, headers, ScriptedBody(events))
        payload = whole_message(plan, message_id, model)
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usage"]
        encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = self._headers("application/json", vertex=vertex)
        half = encoded[: len(encoded) // 2]
        match behaviour.fault:
            case Fault.TRUNCATED:
                return FakeResponse(200, headers, ScriptedBody([half, HANG_UP]))
            case Fault.RESET_MID_BODY:
                return FakeResponse(200, headers, ScriptedBody([half, RESET]))
            case Fault.HEADERS_THEN_SILENCE:
                return FakeResponse(200, headers, ScriptedBody([FOREVER]))
        return FakeResponse(200, headers, encoded)
