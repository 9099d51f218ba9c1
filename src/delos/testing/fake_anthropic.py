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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio

from delos.runtime.wire import encode_sse
from delos.testing._agent import (
    FakeToolCall,
    planned_tool_calls,
    sign,
    signature_valid,
    thought_about,
    tool_reply,
)
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler
from delos.testing._server import Pause as _Pause
from delos.testing._server import ScriptedBody as _Script

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
_SYSTEM_ROLE: Final = (
    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
    'parameter, not "system" as an input message role.'
)
_JSON_PIECE = 8  # characters of structured output per stream delta (and per output token)
#: The API's documented test string that makes the model answer with redacted thinking.
REDACTION_TRIGGER: Final = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
#: Which roles may carry each content block type.
_BLOCK_ROLES: Final = {
    "text": ("user", "assistant"),
    "image": ("user",),
    "document": ("user",),
    "tool_use": ("assistant",),
    "tool_result": ("user",),
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
}
_RESULT_BLOCKS: Final = ("text", "image", "document")
_TOOL_CHOICES: Final = ("auto", "any", "tool", "none")
_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_MIN_BUDGET: Final = 1024
_THINKING_TOP_P: Final = 0.95
_MAX_CACHE_BLOCKS: Final = 4
_THINKING_DOCS: Final = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
#: Model families with extended thinking (among the fake's models).
_THINKING_FAMILIES: Final = ("sonnet-4", "opus-4", "haiku-4", "3-7-sonnet")


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
        body = _json_object(request.body)
        if body is None:
            return self._invalid("Request body is not valid JSON.")
        problem = _problem(body, needs_model=True, vertex=False)
        if problem is not None:
            return self._invalid(problem)
        early = await self._before_headers(behaviour, body, vertex=False)
        if early is not None:
            return early
        model = body["model"]
        if model not in ANTHROPIC_MODELS:
            return self._error(404, "not_found_error", f"model: {model}")
        thinking_problem = _thinking_model_problem(body, model)
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
        vertex_problem = _problem(body, needs_model=False, vertex=True)
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
        thinking_problem = _thinking_model_problem(body, model)
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

    def _plan(self, body: dict[str, Any], behaviour: Behaviour, *, vertex: bool) -> _Plan:
        """What the model answers (see :mod:`delos.testing._agent`) and the prompt's usage."""
        uncached, written, read = self._cache_usage(body)
        messages = body["messages"]
        results = _tool_results(messages[-1])
        blocks: list[_Block] = []
        thinking_tokens = 0
        limit = int(body["max_tokens"])
        if (body.get("thinking") or {}).get("type") == "enabled":
            thought = thought_about(_last_user_text(messages))
            blocks.append(_Block("thinking", _words(thought), signature=sign(thought)))
            if REDACTION_TRIGGER in _last_user_text(messages):
                blocks.append(_Block("redacted_thinking", [], data=_redacted(thought)))
            # A redacted block stands for more thinking, counted like the visible one.
            thinking_tokens = count_tokens([thought]) * len(blocks)
            limit -= thinking_tokens
        calls = [] if results else _planned_calls(body)
        if calls:
            for number, call in enumerate(calls):
                value = (
                    {"unexpected": True}
                    if behaviour.fault is Fault.NONCONFORMING_JSON
                    else call.arguments
                )
                call_id = f"toolu_{'vrtx_' if vertex else ''}01Fake{self.sequence:014d}{number:02d}"
                blocks.append(_Block("tool_use", _json_pieces(value), id=call_id, name=call.name))
                blocks[-1].input = value
            return self._finish(blocks, "tool_use", uncached, written, read, thinking_tokens)
        output_format = (body.get("output_config") or {}).get("format") or {}
        if output_format.get("type") == "json_schema" and not results:
            schema = output_format.get("schema") or {}
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(schema)
            )
            blocks.append(_Block("text", _json_pieces(value)))
            return self._finish(blocks, "end_turn", uncached, written, read, thinking_tokens)
        if results:
            words, stop_reason = tool_reply(results).split(" "), "end_turn"
        elif behaviour.reply is not None:
            words, stop_reason = behaviour.reply.split(" "), "end_turn"
        else:
            last = _message_texts(messages[-1:])
            count = min(behaviour.completion_tokens, limit)
            words = reply_words(last[-1] if last else "", count)
            stop_reason = "max_tokens" if behaviour.completion_tokens > limit else "end_turn"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        text = "".join(pieces)
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
        if not hits:
            blocks.append(_Block("text", pieces))
            return self._finish(blocks, stop_reason, uncached, written, read, thinking_tokens)
        cut, sequence = min(hits)
        kept, used = [], 0
        for piece in pieces:
            if used + len(piece) > cut:
                if cut > used:
                    kept.append(piece[: cut - used])
                break
            kept.append(piece)
            used += len(piece)
        blocks.append(_Block("text", kept))
        plan = self._finish(blocks, "stop_sequence", uncached, written, read, thinking_tokens)
        return replace(plan, stop_sequence=sequence)

    @staticmethod
    def _finish(
        blocks: list[_Block],
        stop_reason: str,
        uncached: int,
        written: int,
        read: int,
        thinking_tokens: int,
    ) -> _Plan:
        output = thinking_tokens + sum(len(b.pieces) for b in blocks if b.kind != "thinking")
        usage = _Usage(uncached, written, read, output, thinking_tokens)
        return _Plan(blocks, usage, stop_reason)

    def _cache_usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(uncached, written, read) input tokens, and the prompt cache updated.

        Like the service: the prompt (tools, system, messages in that order) up to each block
        marked with ``cache_control`` is a prefix; the longest prefix already cached is read, and
        the prompt up to the last marker is written (less what was read). Entries never expire.
        """
        total = 0
        digest = hashlib.sha256(str(body.get("model") or "vertex").encode())
        marks: list[tuple[str, int]] = []
        for entry, tokens, marked in _prompt_entries(body):
            total += tokens
            digest.update(json.dumps(entry, sort_keys=True).encode())
            if marked:
                marks.append((digest.hexdigest(), total))
        read = next((tokens for key, tokens in reversed(marks) if key in self.cache), 0)
        written = 0
        if marks and marks[-1][0] not in self.cache:
            written = marks[-1][1] - read
        self.cache.update(marks)
        return total - written - read, written, read

    def _answer(
        self, body: dict[str, Any], behaviour: Behaviour, model: str, *, vertex: bool
    ) -> FakeResponse:
        plan = self._plan(body, behaviour, vertex=vertex)
        message_id = f"msg_{'vrtx_' if vertex else ''}01Fake{self.sequence:018d}"
        if body.get("stream"):
            events = _Script(self._events(plan, behaviour, message_id, model))
            return FakeResponse(200, self._headers("text/event-stream", vertex=vertex), events)
        payload: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block.whole() for block in plan.blocks],
            "stop_reason": plan.stop_reason,
            "stop_sequence": plan.stop_sequence,
            "usage": plan.usage.start(),
        }
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usage"]
        encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
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
            message["usage"] = plan.usage.start(1)
        yield _event("message_start", {"type": "message_start", "message": message})
        interval = behaviour.token_interval
        sent = 0  # content deltas so far, across blocks: faults come after tokens_before_fault
        for index, block in enumerate(plan.blocks):
            start = {"type": "content_block_start", "index": index, "content_block": block.start()}
            yield _event("content_block_start", start)
            if index == 0:
                # The real service's ping carries a space after the colon, unlike other events.
                yield encode_sse('{"type": "ping"}', event="ping")
                yield _Pause(behaviour.time_to_first_token.draw(rng))
            if block.kind == "tool_use":  # the first fragment of a tool's input is empty
                yield _delta(index, {"type": "input_json_delta", "partial_json": ""})
            for piece in block.pieces:
                if sent == behaviour.tokens_before_fault:
                    fault = _mid_stream_fault(behaviour.fault)
                    if fault is not None:
                        yield from fault
                        return
                if sent and interval:
                    yield _Pause(interval)
                yield _delta(index, block.delta(piece))
                sent += 1
            if block.kind == "thinking":
                yield _delta(index, {"type": "signature_delta", "signature": block.signature})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
        }
        if with_usage:
            message_delta["usage"] = plan.usage.final()
        yield _event("message_delta", message_delta)
        yield _event("message_stop", {"type": "message_stop"})


def _mid_stream_fault(fault: Fault) -> list[BodyItem] | None:
    """The bytes that end a stream broken by ``fault``; None for a fault of another kind."""
    match fault:
        case Fault.RESET_MID_BODY:
            return [RESET]
        case Fault.TRUNCATED:
            return [
                b'event: content_block_delta\ndata: {"type":"content_block_delta","ind',
                HANG_UP,
            ]
        case Fault.STREAM_ERROR_EVENT:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            return [_event("error", {"type": "error", "error": error})]
        case Fault.INVALID_JSON:
            broken = '{"type":"content_block_delta","in'
            return [encode_sse(broken, event="content_block_delta")]
    return None


# -- the model's answer -------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    """One content block of the answer; ``pieces`` are its stream deltas (one token each)."""

    kind: str
    pieces: list[str]
    signature: str = ""
    data: str = ""
    id: str = ""
    name: str = ""
    input: Any = None

    def whole(self) -> dict[str, Any]:
        """The block of a non-streamed answer."""
        match self.kind:
            case "thinking":
                thought = "".join(self.pieces)
                return {"type": "thinking", "thinking": thought, "signature": self.signature}
            case "redacted_thinking":
                return {"type": "redacted_thinking", "data": self.data}
            case "tool_use":
                return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}
        return {"type": "text", "text": "".join(self.pieces)}

    def start(self) -> dict[str, Any]:
        """The block of its ``content_block_start`` event."""
        match self.kind:
            case "thinking":
                return {"type": "thinking", "thinking": "", "signature": ""}
            case "redacted_thinking":
                return {"type": "redacted_thinking", "data": self.data}
            case "tool_use":
                return {"type": "tool_use", "id": self.id, "name": self.name, "input": {}}
        return {"type": "text", "text": ""}

    def delta(self, piece: str) -> dict[str, Any]:
        match self.kind:
            case "thinking":
                return {"type": "thinking_delta", "thinking": piece}
            case "tool_use":
                return {"type": "input_json_delta", "partial_json": piece}
        return {"type": "text_delta", "text": piece}


@dataclass(frozen=True, slots=True)
class _Usage:
    """Token counts of one answer: input ones apart from the cache's, as the API reports them."""

    input: int
    cache_written: int
    cache_read: int
    output: int
    thinking: int

    def start(self, output: int | None = None) -> dict[str, Any]:
        """The usage of a Message; ``message_start`` carries a placeholder ``output`` count."""
        final = output is None
        usage: dict[str, Any] = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_written,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_written,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.output if output is None else output,
            "service_tier": "standard",
        }
        if self.thinking and final:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking}
        return usage

    def final(self) -> dict[str, Any]:
        """The cumulative usage of ``message_delta``."""
        usage: dict[str, Any] = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_written,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        }
        if self.thinking:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking}
        return usage


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the fake model answers, block by block."""

    blocks: list[_Block]
    usage: _Usage
    stop_reason: str
    stop_sequence: str | None = None


def _words(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


def _json_pieces(value: Any) -> list[str]:
    # Streams carry the model's JSON text as it writes it: spaced, in small fragments.
    text = json.dumps(value, ensure_ascii=False)
    return [text[i : i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE)]


def _planned_calls(body: dict[str, Any]) -> list[FakeToolCall]:
    messages = body["messages"]
    if messages[-1].get("role") != "user":
        return []
    tools = [
        (str(t["name"]), t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t
    ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type", "auto")
    return planned_tool_calls(
        tools,
        _last_user_text(messages),
        tool_choice="none"
        if kind == "none"
        else (choice.get("name", "") if kind == "tool" else ""),
        parallel=not choice.get("disable_parallel_tool_use", False),
    )


def _tool_results(message: dict[str, Any]) -> list[str]:
    """The texts of the tool results ``message`` carries, in order."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return []
    return [_result_text(b) for b in content if b.get("type") == "tool_result"]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def _last_user_text(messages: Sequence[Any]) -> str:
    """The text of the latest user message that has some."""
    for message in reversed(messages):
        if message.get("role") == "user":
            texts = _message_texts([message])
            if any(texts):
                return " ".join(t for t in texts if t)
    return ""


def _redacted(thought: str) -> str:
    """Opaque ``redacted_thinking`` data the fake can check when it comes back."""
    return base64.b64encode(thought.encode()).decode() + "." + sign(thought)


def _redacted_valid(data: str) -> bool:
    encoded, _, signature = data.rpartition(".")
    try:
        thought = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        return False
    return signature_valid(thought, signature)


# -- request checks -----------------------------------------------------------------------------


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _problem(body: dict[str, Any], *, needs_model: bool, vertex: bool) -> str | None:
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
    return (
        _tools_problem(body)
        or _messages_problem(messages, vertex=vertex)
        or _thinking_problem(body)
        or _cache_problem(body)
    )


def _tools_problem(body: dict[str, Any]) -> str | None:
    names = []
    for index, tool in enumerate(body.get("tools") or []):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.custom.input_schema.type: Input should be 'object'"
        names.append(tool.get("name"))
    choice = body.get("tool_choice") or {}
    if not isinstance(choice, dict):
        return "tool_choice: Input should be a valid dictionary"
    kind = choice.get("type")
    if choice and kind not in _TOOL_CHOICES:
        return (
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if kind == "tool" and choice.get("name") not in names:
        return f"tool_choice: Tool '{choice.get('name')}' not found in 'tools'"
    if kind == "none" and "disable_parallel_tool_use" in choice:
        return "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"
    return None


def _messages_problem(messages: list[Any], *, vertex: bool) -> str | None:
    """Content blocks, and tool results against the tool calls they answer."""
    calls: list[str] = []  # tool_use ids of the previous (assistant) message
    for index, message in enumerate(messages):
        content = message["content"]
        if not isinstance(content, str | list):
            return f"messages.{index}.content: Input should be a valid string or list"
        blocks = content if isinstance(content, list) else []
        role = message["role"]
        for number, block in enumerate(blocks):
            problem = _block_problem(block, f"messages.{index}.content.{number}", role, vertex)
            if problem is not None:
                return problem
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        for number, block in enumerate(blocks):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in calls:
                return (
                    f"messages.{index}.content.{number}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message."
                )
        if calls:
            missing = [c for c in calls if c not in results]
            if missing:
                return (
                    f"messages.{index - 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(missing)}. Each `tool_use` block must "
                    "have a corresponding `tool_result` block in the next message."
                )
            leading = blocks[: len(calls)]
            if any(b.get("type") != "tool_result" for b in leading):
                return (
                    f"messages.{index}: Did not find {len(calls)} `tool_result` block(s) at the "
                    "beginning of this message. Messages following `tool_use` blocks must begin "
                    "with a matching number of `tool_result` blocks."
                )
        calls = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
    return None


def _block_problem(block: Any, at: str, role: str, vertex: bool) -> str | None:
    if not isinstance(block, dict):
        return f"{at}: Input should be a valid dictionary"
    kind = block.get("type")
    if kind not in _BLOCK_ROLES:
        expected = ", ".join(f"'{k}'" for k in _BLOCK_ROLES)
        return (
            f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected "
            f"tags: {expected}"
        )
    if role not in _BLOCK_ROLES[kind]:
        return f"{at}: `{kind}` blocks are not allowed in `{role}` messages"
    control = block.get("cache_control")
    if control is not None:
        if kind in ("thinking", "redacted_thinking"):
            return f"{at}.{kind}.cache_control: Extra inputs are not permitted"
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            return f"{at}.{kind}.cache_control.type: Input should be 'ephemeral'"
    match kind:
        case "text":
            if not isinstance(block.get("text"), str) or not block["text"]:
                return "messages: text content blocks must be non-empty"
        case "image":
            return _image_problem(block.get("source"), f"{at}.image.source", vertex)
        case "document":
            return _document_problem(block, f"{at}.document")
        case "tool_use":
            if not isinstance(block.get("input"), dict):
                return f"{at}.tool_use.input: Input should be a valid dictionary"
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                return f"{at}.tool_use.id: Field required"
        case "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                return f"{at}.tool_result.tool_use_id: Field required"
            inner = block.get("content", "")
            if isinstance(inner, list):
                for number, part in enumerate(inner):
                    if not isinstance(part, dict) or part.get("type") not in _RESULT_BLOCKS:
                        return f"{at}.tool_result.content.{number}: Input tag is not permitted"
                    problem = _block_problem(part, f"{at}.content.{number}", "user", vertex)
                    if problem is not None:
                        return problem
            elif not isinstance(inner, str):
                return f"{at}.tool_result.content: Input should be a valid string or list"
        case "thinking":
            thought, signature = block.get("thinking"), block.get("signature")
            if not isinstance(thought, str) or not isinstance(signature, str):
                return f"{at}.thinking.signature: Field required"
            if not signature_valid(thought, signature):
                return f"{at}: Invalid `signature` in `thinking` block"
        case "redacted_thinking":
            if not _redacted_valid(str(block.get("data"))):
                return f"{at}: Invalid `data` in `redacted_thinking` block"
    return None


def _image_problem(source: Any, at: str, vertex: bool) -> str | None:
    if not isinstance(source, dict):
        return f"{at}: Field required"
    match source.get("type"):
        case "base64":
            if source.get("media_type") not in _IMAGE_TYPES:
                return (
                    f"{at}.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                    "'image/gif' or 'image/webp'"
                )
            if not _is_base64(source.get("data")):
                return f"{at}.base64.data: The image data is not valid base64"
        case "url":
            if vertex:  # Claude on Vertex AI takes bytes only (its message names base64)
                return f"{at}.base64.data: URL sources are not supported"
            url = source.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                return f"{at}.url.url: Input should be a valid URL"
        case other:
            return f"{at}: Input tag '{other}' found using 'type' does not match 'base64' or 'url'"
    return None


def _document_problem(block: dict[str, Any], at: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{at}.source: Field required"
    if "title" in block and not isinstance(block["title"], str):
        return f"{at}.title: Input should be a valid string"
    match source.get("type"), source.get("media_type"):
        case "base64", "application/pdf":
            if not _is_base64(source.get("data")):
                return f"{at}.source.base64.data: The PDF data is not valid base64"
        case "text", "text/plain":
            if not isinstance(source.get("data"), str):
                return f"{at}.source.text.data: Input should be a valid string"
        case kind, media_type:
            return f"{at}.source: unsupported source {kind!r} of {media_type!r}"
    return None


def _is_base64(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _thinking_problem(body: dict[str, Any]) -> str | None:
    """What extended thinking rules out, as the service words it."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        return "thinking: Input tag found using 'type' does not match 'enabled' or 'disabled'"
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < _MIN_BUDGET:
        return (
            "thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{_MIN_BUDGET}"
        )
    if body["max_tokens"] <= budget:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            f"documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and temperature != 1:
        return (
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            f"documentation at {_THINKING_DOCS}#feature-compatibility"
        )
    if top_p is not None and top_p < _THINKING_TOP_P:
        return (
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. "
            f"Please consult our documentation at {_THINKING_DOCS}#feature-compatibility"
        )
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    messages = body["messages"]
    if len(messages) >= 2 and _tool_results(messages[-1]):
        # The turn that called the tools answered now must open with its thinking.
        index = len(messages) - 2
        first = messages[index]["content"][0]
        if first.get("type") not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                f"but found `{first.get('type')}`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block (preceeding the lastmost "
                "set of `tool_use` and `tool_result` blocks). We recommend you include thinking "
                "blocks from previous turns. To avoid this requirement, disable `thinking`. "
                f"Please consult our documentation at {_THINKING_DOCS}"
            )
    return None


def _thinking_model_problem(body: dict[str, Any], model: str) -> str | None:
    if (body.get("thinking") or {}).get("type") != "enabled":
        return None
    if any(family in model for family in _THINKING_FAMILIES):
        return None
    return f"thinking: '{model}' does not support thinking"


def _cache_problem(body: dict[str, Any]) -> str | None:
    marked = sum(1 for _, _, marked in _prompt_entries(body) if marked)
    if marked > _MAX_CACHE_BLOCKS:
        return (
            f"A maximum of {_MAX_CACHE_BLOCKS} blocks with cache_control may be provided. "
            f"Found {marked}."
        )
    return None


# -- prompt accounting --------------------------------------------------------------------------


def _prompt_entries(body: dict[str, Any]) -> Iterator[tuple[Any, int, bool]]:
    """The prompt in cache order (tools, system, messages) as (block without its marker,
    tokens, whether it carries ``cache_control``)."""
    for tool in body.get("tools") or []:
        yield _unmarked(tool), 0, isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    if isinstance(system, str):
        yield system, count_tokens([system]), False
    elif isinstance(system, list):
        for block in system:
            text = str(block.get("text", "")) if isinstance(block, dict) else ""
            yield _unmarked(block), count_tokens([text]), "cache_control" in block
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            yield [message.get("role"), content], count_tokens([content]), False
            continue
        for block in content or []:
            texts = _block_texts(block)
            tokens = count_tokens(texts) if texts else 0
            yield [message.get("role"), _unmarked(block)], tokens, "cache_control" in block


def _unmarked(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    return {k: v for k, v in block.items() if k != "cache_control"}


def _block_texts(block: dict[str, Any]) -> list[str]:
    """The texts of a block that count as prompt tokens (one per word)."""
    match block.get("type"):
        case "text":
            return [str(block.get("text", ""))]
        case "tool_use":
            return [json.dumps(block.get("input"), ensure_ascii=False)]
        case "tool_result":
            return [_result_text(block)]
        case "document" if (block.get("source") or {}).get("type") == "text":
            return [str(block["source"].get("data", ""))]
    return []


def _message_texts(messages: Sequence[Any]) -> list[str]:
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return texts


# -- encoding -----------------------------------------------------------------------------------


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_sse(json.dumps(payload, separators=(",", ":"), ensure_ascii=False), event=name)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
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
