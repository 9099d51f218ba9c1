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
failures (authentication, quota). Requests are checked as the service checks them: a missing
``max_tokens`` or a ``system`` message role is a 400 ``invalid_request_error``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio

from delos.runtime.wire import encode_sse
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler
from delos.testing._server import Pause as _Pause
from delos.testing._server import ScriptedBody as _Script

__all__ = ["ANTHROPIC_MODELS", "VERTEX_CLAUDE_MODELS", "fake_anthropic_handler"]

_DISPLAY_NAMES: Final = {
    "claude-sonnet-4-20250514": "Claude Sonnet 4",
    "claude-opus-4-20250514": "Claude Opus 4",
    "claude-3-5-sonnet-20241022": "Claude Sonnet 3.5 (New)",
    "claude-3-5-haiku-20241022": "Claude Haiku 3.5",
    "claude-3-opus-20240229": "Claude Opus 3",
}
ANTHROPIC_MODELS: Final = tuple(_DISPLAY_NAMES)
VERTEX_CLAUDE_MODELS: Final = (
    "claude-sonnet-4@20250514",
    "claude-opus-4@20250514",
    "claude-3-5-sonnet-v2@20241022",
    "claude-3-5-haiku@20241022",
    "claude-3-opus@20240229",
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
_SYSTEM_ROLE: Final = (
    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
    'parameter, not "system" as an input message role.'
)
_JSON_PIECE = 8  # characters of structured output per stream delta (and per output token)


def fake_anthropic_handler(
    control: FakeControl, *, api_key: str | None = None, access_token: str | None = None
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server`.

    ``api_key`` is the ``x-api-key`` the direct API accepts and ``access_token`` the bearer token
    the Vertex paths accept; None accepts any non-empty value.
    """
    return _FakeAnthropic(control, api_key, access_token).handle


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the fake model answers: the pieces (one stream delta and one token each)."""

    pieces: list[str]
    input_tokens: int
    stop_reason: str
    stop_sequence: str | None = None
    #: The forced tool's name and input, when the answer is a tool call.
    tool: tuple[str, Any] | None = None


class _FakeAnthropic:
    def __init__(self, control: FakeControl, api_key: str | None, access_token: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self.access_token = access_token
        self.sequence = 0

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
        body = _json_object(request.body)
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        problem = _problem(body, needs_model=True)
        if problem is not None:
            return self._invalid(problem)
        early = await self._before_headers(behaviour, body, vertex=False)
        if early is not None:
            return early
        model = body["model"]
        if model not in ANTHROPIC_MODELS:
            return self._error(404, "not_found_error", f"model: {model}")
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
        body = _json_object(request.body)
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        version = body.get("anthropic_version")
        if version is None:
            return self._invalid("anthropic_version: Field required")
        if not _VERSION.match(str(version)):
            return self._invalid(f"anthropic_version: Input should be '{_VERTEX_VERSION}'")
        if "model" in body:
            return self._invalid("model: Extra inputs are not permitted")
        vertex_problem = _problem(body, needs_model=False)
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
                return FakeResponse(200, headers, _oversized(stream))
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

    def _plan(self, body: dict[str, Any], behaviour: Behaviour) -> _Plan:
        input_tokens = count_tokens(_prompt_texts(body))
        tool = _forced_tool(body)
        output_format = (body.get("output_config") or {}).get("format") or {}
        if tool is not None or output_format.get("type") == "json_schema":
            name, schema = tool if tool is not None else ("", output_format.get("schema") or {})
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(schema)
            )
            text = json.dumps(value)
            pieces = [text[i : i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE)]
            if tool is None:
                return _Plan(pieces, input_tokens, "end_turn")
            return _Plan(pieces, input_tokens, "tool_use", tool=(name, value))
        limit = int(body["max_tokens"])
        if behaviour.reply is not None:
            words, stop_reason = behaviour.reply.split(" "), "end_turn"
        else:
            last = _message_texts(body["messages"][-1:])
            words = reply_words(last[-1] if last else "", min(behaviour.completion_tokens, limit))
            stop_reason = "max_tokens" if behaviour.completion_tokens > limit else "end_turn"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        text = "".join(pieces)
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
        if not hits:
            return _Plan(pieces, input_tokens, stop_reason)
        cut, sequence = min(hits)
        kept, used = [], 0
        for piece in pieces:
            if used + len(piece) > cut:
                if cut > used:
                    kept.append(piece[: cut - used])
                break
            kept.append(piece)
            used += len(piece)
        return _Plan(kept, input_tokens, "stop_sequence", stop_sequence=sequence)

    def _answer(
        self, body: dict[str, Any], behaviour: Behaviour, model: str, *, vertex: bool
    ) -> FakeResponse:
        plan = self._plan(body, behaviour)
        message_id = f"msg_{'vrtx_' if vertex else ''}01Fake{self.sequence:018d}"
        if body.get("stream"):
            events = _Script(self._events(plan, behaviour, message_id, model))
            return FakeResponse(200, self._headers("text/event-stream", vertex=vertex), events)
        if plan.tool is not None:
            name, value = plan.tool
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_01Fake{self.sequence:014d}",
                "name": name,
                "input": value,
            }
        else:
            block = {"type": "text", "text": "".join(plan.pieces)}
        payload: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": plan.stop_reason,
            "stop_sequence": plan.stop_sequence,
            "usage": _usage(plan.input_tokens, len(plan.pieces)),
        }
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usage"]
        encoded = json.dumps(payload, separators=(",", ":")).encode()
        headers = self._headers("application/json", vertex=vertex)
        match behaviour.fault:
            case Fault.TRUNCATED:
                return FakeResponse(200, headers, _Script([encoded[: len(encoded) // 2], HANG_UP]))
            case Fault.RESET_MID_BODY:
                return FakeResponse(200, headers, _Script([encoded[: len(encoded) // 2], RESET]))
            case Fault.HEADERS_THEN_SILENCE:
                return FakeResponse(200, headers, _Script([_FOREVER]))
        return FakeResponse(200, headers, encoded)

    def _events(
        self, plan: _Plan, behaviour: Behaviour, message_id: str, model: str
    ) -> Iterator[BodyItem | _Pause]:
        rng = self.control.rng
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            yield _FOREVER
        with_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if with_usage:
            message["usage"] = _usage(plan.input_tokens, 1)
        yield _event("message_start", {"type": "message_start", "message": message})
        if plan.tool is not None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_01Fake{self.sequence:014d}",
                "name": plan.tool[0],
                "input": {},
            }
        else:
            block = {"type": "text", "text": ""}
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        # The real service's ping carries a space after the colon, unlike every other event.
        yield encode_sse('{"type": "ping"}', event="ping")
        yield _Pause(behaviour.time_to_first_token.draw(rng))
        if plan.tool is not None:  # the first fragment of a tool's input is empty
            yield _delta({"type": "input_json_delta", "partial_json": ""})
        interval = behaviour.token_interval
        for index, piece in enumerate(plan.pieces):
            if index == behaviour.tokens_before_fault:
                if behaviour.fault is Fault.RESET_MID_BODY:
                    yield RESET
                    return
                if behaviour.fault is Fault.TRUNCATED:
                    yield b'event: content_block_delta\ndata: {"type":"content_block_delta","ind'
                    yield HANG_UP
                    return
                if behaviour.fault is Fault.STREAM_ERROR_EVENT:
                    error = {"type": "overloaded_error", "message": "Overloaded"}
                    yield _event("error", {"type": "error", "error": error})
                    return
                if behaviour.fault is Fault.INVALID_JSON:
                    broken = '{"type":"content_block_delta","in'
                    yield encode_sse(broken, event="content_block_delta")
                    return
            if index and interval:
                yield _Pause(interval)
            if plan.tool is not None:
                yield _delta({"type": "input_json_delta", "partial_json": piece})
            else:
                yield _delta({"type": "text_delta", "text": piece})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
        }
        if with_usage:
            message_delta["usage"] = {"output_tokens": len(plan.pieces)}
        yield _event("message_delta", message_delta)
        yield _event("message_stop", {"type": "message_stop"})


# -- request checks -----------------------------------------------------------------------------


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _problem(body: dict[str, Any], *, needs_model: bool) -> str | None:
    """The service's message for the first thing wrong with ``body``, or None."""
    if needs_model and not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required"
    if not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return _SYSTEM_ROLE
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if message.get("content") in ("", []):
            return "messages: text content blocks must be non-empty"
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 1
    ):
        return "temperature: Input should be less than or equal to 1"
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        return "stop_sequences: Input should be a valid list of strings"
    names = []
    for index, tool in enumerate(body.get("tools") or []):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.custom.input_schema.type: Input should be 'object'"
        names.append(tool.get("name"))
    choice = body.get("tool_choice") or {}
    if not isinstance(choice, dict):
        return "tool_choice: Input should be a valid dictionary"
    if choice.get("type") == "tool" and choice.get("name") not in names:
        return f"tool_choice: Tool '{choice.get('name')}' not found in 'tools'"
    return None


def _message_texts(messages: Sequence[Any]) -> list[str]:
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return texts


def _prompt_texts(body: dict[str, Any]) -> list[str]:
    system = body.get("system")
    texts = _message_texts(body["messages"])
    if isinstance(system, str):
        texts.insert(0, system)
    elif isinstance(system, list):
        texts[:0] = [str(b.get("text", "")) for b in system if isinstance(b, dict)]
    return texts


def _forced_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    choice = body.get("tool_choice") or {}
    if choice.get("type") != "tool":
        return None
    for tool in body.get("tools") or []:
        if tool.get("name") == choice.get("name"):
            return str(tool["name"]), tool.get("input_schema") or {}
    return None


# -- encoding -----------------------------------------------------------------------------------


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_sse(json.dumps(payload, separators=(",", ":"), ensure_ascii=False), event=name)


def _delta(delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    )


_FOREVER: Final = _Pause(math.inf)


def _oversized(stream: bool) -> _Script:
    """80 MiB of padding in one JSON document or one stream event."""
    return _Script(_padding(stream))


def _padding(stream: bool) -> Iterator[BodyItem]:
    block = b" " * (1 << 20)
    if stream:
        yield b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"pad":"'
    else:
        yield b'{"padding": "'
    for _ in range(80):
        yield block
    yield b'"}\n\n' if stream else b'"}'
