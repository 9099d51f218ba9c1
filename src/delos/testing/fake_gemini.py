"""A fake of the Gemini API and of Gemini on Vertex AI (Google's publisher models).

Paths served (``{v}`` is ``v1beta`` or ``v1`` on the Gemini API, ``v1`` or ``v1beta1`` on Vertex):

- ``GET /{v}/models`` and ``GET /{v}/models/{model}``;
- ``POST /{v}/models/{model}:generateContent | :streamGenerateContent | :batchEmbedContents |
  :embedContent`` with ``x-goog-api-key`` (or ``?key=``);
- ``POST /{v}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent |
  :streamGenerateContent | :predict`` with ``Authorization: Bearer``.

Byte-level fidelity: pretty-printed JSON answers as Google sends them, ``data: {...}\\r\\n\\r\\n``
SSE events with no terminator (the body just ends after the chunk carrying ``finishReason``), a
JSON array without ``alt=sse``, running ``usageMetadata`` counts whose last value is the total,
proto3's omission of zero counts, google.rpc error bodies (a list for streaming calls), HTTP 400
``API_KEY_INVALID`` for a wrong key, ``RetryInfo`` on 429, and Google's HTML page for unknown paths.
The request is checked like the real service checks it, unknown JSON field names included.

Agent behaviour follows :mod:`delos.testing._agent`, in Gemini's forms: ``functionCall`` parts
(whole, several in one chunk when parallel; STOP as the finish reason), ``functionResponse``
results answered with "Tool said: …", ``thought: true`` summaries when ``includeThoughts`` is
set, and, whenever a ``gemini-2.5-*`` model thinks (its ``thinkingBudget`` is not 0), a
``thoughtSignature`` signed with :func:`~delos.testing._agent.sign` on the first ``functionCall``
part, or else on the last part of the answer (an empty text part ending a stream). Signatures
sent back are verified (as bytes: SDKs re-encode them URL-safe): a wrong one, or a
``functionCall`` part of the current turn's model steps sent back without its signature, is a
400 INVALID_ARGUMENT, as Gemini answers for thinking models. Call and response turns must pair
up (count and names). Implicit caching: a 2.5 model's prompt that repeats at least
:data:`IMPLICIT_CACHE_MIN_TOKENS` tokens of an earlier prompt's prefix reports them as
``cachedContentTokenCount`` (inside ``promptTokenCount``).

This module is long because it is one service's whole surface: routing, checks and answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio

from delos.runtime.wire import encode_sse
from delos.testing._agent import FakeToolCall, planned_tool_calls, sign, thought_about, tool_reply
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler
from delos.testing._server import ScriptedBody as _Items
from delos.testing.fake_openai import embedding_of

__all__ = [
    "GEMINI_MODELS",
    "IMPLICIT_CACHE_MIN_TOKENS",
    "THOUGHT_TOKENS",
    "VERTEX_MODELS",
    "fake_gemini_handler",
]

#: Chat and embedding models of each surface.
GEMINI_MODELS: Final = {
    "chat": (
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "gemini-1.5-flash-8b",
        "gemini-pro",
        "gemini-2.0-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
    ),
    "embedding": ("text-embedding-004", "gemini-embedding-001"),
}
VERTEX_MODELS: Final = {
    "chat": (
        "gemini-1.5-pro-002",
        "gemini-1.5-flash-002",
        "gemini-2.0-flash-001",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
    ),
    "embedding": ("text-embedding-005", "text-multilingual-embedding-002", "gemini-embedding-001"),
}
#: Thinking tokens a ``gemini-2.5-*`` model reports (``thoughtsTokenCount``) unless its
#: ``thinkingBudget`` is 0.
THOUGHT_TOKENS: Final = 5
#: The shortest repeated prompt prefix (tokens) a ``gemini-2.5-*`` model reads from its implicit
#: cache: Google's documented minimum for 2.5 Flash.
IMPLICIT_CACHE_MIN_TOKENS: Final = 1024
#: Prompts remembered per model for the implicit cache.
_CACHED_PROMPTS = 32
_EMBEDDING_DIMENSIONS = 8
_SERVED_AS = {"gemini-1.5-flash": "gemini-1.5-flash-002", "gemini-1.5-pro": "gemini-1.5-pro-002"}

_GEMINI_PATH = re.compile(r"^/(v1|v1beta)/models(?:/([^/:]+)(?::([A-Za-z]+))?)?$")
_VERTEX_PATH = re.compile(
    r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+)"
    r":([A-Za-z]+)$"
)

# The request fields the real service knows, as proto JSON accepts them (camelCase or snake_case).
_REQUEST_FIELDS = frozenset(
    "contents systemInstruction system_instruction generationConfig generation_config "
    "safetySettings safety_settings tools toolConfig tool_config cachedContent cached_content "
    "labels model".split()
)
_CONFIG_FIELDS = frozenset(
    "temperature topP top_p topK top_k candidateCount candidate_count maxOutputTokens "
    "max_output_tokens stopSequences stop_sequences presencePenalty presence_penalty "
    "frequencyPenalty frequency_penalty seed responseMimeType response_mime_type responseSchema "
    "response_schema responseJsonSchema response_json_schema responseLogprobs response_logprobs "
    "logprobs responseModalities response_modalities thinkingConfig thinking_config "
    "mediaResolution media_resolution speechConfig speech_config".split()
)
_PART_FIELDS = frozenset(
    "text inlineData inline_data fileData file_data functionCall function_call functionResponse "
    "function_response thought thoughtSignature thought_signature executableCode "
    "executable_code codeExecutionResult code_execution_result videoMetadata video_metadata "
    "mediaResolution media_resolution".split()
)
_TOOL_FIELDS = frozenset(
    "functionDeclarations function_declarations googleSearch google_search "
    "googleSearchRetrieval google_search_retrieval codeExecution code_execution urlContext "
    "url_context".split()
)
_DECLARATION_FIELDS = frozenset(
    "name description parameters parametersJsonSchema parameters_json_schema response "
    "responseJsonSchema response_json_schema behavior".split()
)
_CALLING_FIELDS = frozenset("mode allowedFunctionNames allowed_function_names".split())
_THINKING_FIELDS = frozenset(
    "thinkingBudget thinking_budget includeThoughts include_thoughts".split()
)
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
#: Inline media the models read.
_INLINE_TYPES = frozenset(
    "image/png image/jpeg image/webp image/heic image/heif application/pdf text/plain".split()
)
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
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


def fake_gemini_handler(
    control: FakeControl, *, api_key: str | None = None, access_token: str | None = None
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server` serving both surfaces.

    ``api_key`` None accepts any ``x-goog-api-key``; ``access_token`` None accepts any bearer
    token on the Vertex paths. Configure adapters and SDKs with the server's URL as base URL.
    """
    return _FakeGemini(control, api_key, access_token).handle


@dataclass(frozen=True, slots=True)
class _Call:
    """One routed request."""

    vertex: bool
    version: str
    model: str
    method: str
    #: ``projects/p/locations/l/publishers/google/models/m`` or ``models/m``.
    resource: str


@dataclass(frozen=True, slots=True)
class _Answer:
    #: Text pieces, one stream chunk each (none when the answer is calls).
    pieces: list[str]
    prompt_tokens: int
    finish: str
    #: ``thoughtsTokenCount``.
    thoughts: int
    #: The thought summary, when asked for (``includeThoughts``) and the model thinks.
    thought: str | None = None
    #: The ``thoughtSignature`` of the answer, when the model thinks.
    signature: str | None = None
    calls: list[FakeToolCall] = field(default_factory=list)
    #: ``cachedContentTokenCount``.
    cached: int = 0

    @property
    def output_tokens(self) -> int:
        """``candidatesTokenCount`` of the whole answer (one token per word, per call)."""
        if self.calls:
            return count_tokens([call.arguments_json for call in self.calls])
        return len(self.pieces)


class _Rejection(Exception):
    """A request the real service refuses: a google.rpc error, or ``page`` as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        page: FakeResponse | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.page = page


class _FakeGemini:
    def __init__(self, control: FakeControl, api_key: str | None, access_token: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self.access_token = access_token
        self.sequence = 0
        # Implicit cache: recent prompts (as tokens) per (surface, model).
        self.prompts: dict[tuple[bool, str], deque[tuple[str, ...]]] = {}

    async def handle(self, request: FakeRequest) -> FakeResponse:
        behaviour = self.control.next_behaviour()
        streaming = ":streamGenerateContent" in request.path
        try:
            call = self._route(request)
            self._check_credentials(request, call)
            if request.method == "GET":
                return self._model_info(call)
            body = _parse_body(request)
            early = await self._before_headers(behaviour, streaming)
            if early is not None:
                return early
            self._check_model(call)
            if call.method in ("generateContent", "streamGenerateContent"):
                _check_generate_body(body, call.vertex)
                _check_conversation(body, call)
                if call.method == "generateContent":
                    return self._completion(call, body, behaviour)
                sse = parse_qs(request.query).get("alt") == ["sse"]
                return self._stream(call, body, behaviour, sse)
            return self._embeddings(call, body)
        except _Rejection as rejection:
            if rejection.page is not None:
                return rejection.page
            return _error(
                rejection.status, rejection.message, details=rejection.details, wrap=streaming
            )

    # -- routing and checks -----------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> _Call:
        match = _VERTEX_PATH.match(request.path)
        if match and request.method == "POST":
            version, project, location, model, method = match.groups()
            if method in ("generateContent", "streamGenerateContent", "predict"):
                model = unquote(model)
                resource = f"projects/{unquote(project)}/locations/{unquote(location)}"
                resource += f"/publishers/google/models/{model}"
                return _Call(True, version, model, method, resource)
        match = _GEMINI_PATH.match(request.path)
        if match:
            version, model, method = match.groups()
            get_ok = request.method == "GET" and method is None
            post_ok = request.method == "POST" and method in (
                "generateContent",
                "streamGenerateContent",
                "batchEmbedContents",
                "embedContent",
            )
            if get_ok or (post_ok and model):
                model = unquote(model or "")
                return _Call(False, version, model, method or "get", f"models/{model}")
        raise _Rejection(404, "Not Found", page=_not_found_page(request.path))

    def _check_credentials(self, request: FakeRequest, call: _Call) -> None:
        if call.vertex:
            authorization = request.header("authorization") or ""
            if not authorization.startswith("Bearer "):
                raise _Rejection(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    [_error_info("CREDENTIALS_MISSING", "aiplatform")],
                )
            if self.access_token is not None and authorization != f"Bearer {self.access_token}":
                raise _Rejection(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    [_error_info("ACCESS_TOKEN_EXPIRED", "aiplatform")],
                )
            return
        key = request.header("x-goog-api-key") or (parse_qs(request.query).get("key") or [""])[0]
        if not key:
            raise _Rejection(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if self.api_key is not None and key != self.api_key:
            # A wrong key is a 400 INVALID_ARGUMENT, told apart only by ErrorInfo.reason.
            message = "API key not valid. Please pass a valid API key."
            raise _Rejection(
                400,
                message,
                [
                    _error_info("API_KEY_INVALID", "generativelanguage"),
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": message,
                    },
                ],
            )

    def _check_model(self, call: _Call) -> None:
        models = VERTEX_MODELS if call.vertex else GEMINI_MODELS
        kind = "chat" if call.method.endswith("enerateContent") else "embedding"
        if call.model in models[kind]:
            return
        if call.vertex:
            message = (
                f"Publisher Model `{call.resource}` was not found or your project does not have "
                "access to it. Please ensure you are using a valid model version. For more "
                "information, see: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
            )
        else:
            message = (
                f"{call.resource} is not found for API version {call.version}, or is not "
                f"supported for {call.method}. Call ListModels to see the list of available "
                "models and their supported methods."
            )
        raise _Rejection(404, message)

    async def _before_headers(self, behaviour: Behaviour, streaming: bool) -> FakeResponse | None:
        await anyio.sleep(behaviour.latency.draw(self.control.rng))
        match behaviour.fault:
            case Fault.RESET_BEFORE_HEADERS:
                return FakeResponse.reset()
            case Fault.SILENCE_BEFORE_HEADERS:
                await anyio.sleep_forever()
            case Fault.HTTP_ERROR:
                return _status_error(behaviour.error_status, behaviour.retry_after, streaming)
            case Fault.INVALID_JSON if not streaming:
                return FakeResponse(200, _headers(_JSON), b'{\n  "candidates": [\n    {\n  "')
            case Fault.WRONG_CONTENT_TYPE:
                return FakeResponse(
                    200,
                    [("content-type", "text/html; charset=UTF-8")],
                    b"<html><body>Service temporarily unavailable</body></html>",
                )
            case Fault.OVERSIZED_BODY:
                return FakeResponse(200, _headers(_JSON), _oversized())
        return None

    # -- model listing ----------------------------------------------------------------------------

    def _model_info(self, call: _Call) -> FakeResponse:
        if call.model:
            if call.model not in (*GEMINI_MODELS["chat"], *GEMINI_MODELS["embedding"]):
                return _error(404, f"Model is not found: {call.resource} for api version v1beta")
            return _json_response(_model_entry(call.model))
        entries = [_model_entry(m) for m in (*GEMINI_MODELS["chat"], *GEMINI_MODELS["embedding"])]
        return _json_response({"models": entries})

    # -- generation -------------------------------------------------------------------------------

    def _answer(self, call: _Call, body: dict[str, Any], behaviour: Behaviour) -> _Answer:
        system = _texts([body.get("systemInstruction") or body.get("system_instruction") or {}])
        contents = body.get("contents") or []
        turns = _texts(contents)
        words = _words([*system, *turns])
        prompt_tokens = len(words)
        cached = self._cached_tokens(call, words)
        config = _field(body, "generationConfig") or {}
        thinking = _field(config, "thinkingConfig") or {}
        thinks = _thinks(call.model, _field(thinking, "thinkingBudget"))
        user_text = _last_user_text(contents)
        thought = thought_about(user_text)
        base = _Answer(
            [],
            prompt_tokens,
            "STOP",
            THOUGHT_TOKENS if thinks else 0,
            thought=thought if thinks and _field(thinking, "includeThoughts") else None,
            signature=sign(thought) if thinks else None,
            cached=cached,
        )
        last = contents[-1] if contents else {}
        results = _function_results(last)
        asked = last.get("role", "user") == "user" and not results
        calls = _planned_calls(body, user_text) if asked else []
        if calls:
            return replace(base, calls=calls)
        if _field(config, "responseMimeType") == "application/json":
            schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema") or {}
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(_json_schema(schema))
            )
            text = json.dumps(value)
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
            return replace(base, pieces=pieces)
        limit = _field(config, "maxOutputTokens")
        if results:
            words_out = tool_reply(results).split(" ")
            finish = "STOP"
        elif behaviour.reply is not None:
            words_out = behaviour.reply.split(" ")
            finish = "STOP"
        else:
            count = (
                min(behaviour.completion_tokens, limit) if limit else behaviour.completion_tokens
            )
            words_out = reply_words(turns[-1] if turns else "", count)
            finish = "MAX_TOKENS" if limit and behaviour.completion_tokens > limit else "STOP"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words_out)]
        stops = _field(config, "stopSequences") or []
        pieces, stopped = _cut_at_stop(pieces, [str(s) for s in stops])
        return replace(base, pieces=pieces, finish="STOP" if stopped else finish)

    def _cached_tokens(self, call: _Call, words: list[str]) -> int:
        """Tokens of ``words`` an earlier prompt to the same model began with, when enough."""
        if not _generation_25(call.model):  # implicit caching came with the 2.5 models
            return 0
        seen = self.prompts.setdefault((call.vertex, call.model), deque(maxlen=_CACHED_PROMPTS))
        best = max((_common_prefix(words, earlier) for earlier in seen), default=0)
        seen.append(tuple(words))
        return best if best >= IMPLICIT_CACHE_MIN_TOKENS else 0

    def _base(self, call: _Call) -> dict[str, Any]:
        self.sequence += 1
        digest = hashlib.sha256(f"{call.model}/{self.sequence}".encode()).digest()
        base: dict[str, Any] = {
            "modelVersion": _SERVED_AS.get(call.model, call.model),
            "responseId": base64.urlsafe_b64encode(digest).decode()[:23],
        }
        if call.vertex:
            base["createTime"] = "2026-01-01T00:00:00.000000Z"
        return base

    def _completion(self, call: _Call, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        answer = self._answer(call, body, behaviour)
        parts: list[dict[str, Any]] = []
        if answer.thought is not None:
            parts.append({"text": answer.thought, "thought": True})
        if answer.calls:
            parts += _call_parts(answer)
        else:
            # Without calls, the signature rides on the answer's last part.
            parts.append(_signed({"text": "".join(answer.pieces)}, answer.signature))
        payload: dict[str, Any] = {
            "candidates": [_candidate(call, parts, answer.finish)],
            "usageMetadata": _usage(call, answer, answer.output_tokens),
            **self._base(call),
        }
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usageMetadata"]
        encoded = _pretty(payload)
        mid_body: dict[Fault, BodyItem] = {Fault.TRUNCATED: HANG_UP, Fault.RESET_MID_BODY: RESET}
        if behaviour.fault in mid_body:
            return FakeResponse(
                200,
                _headers(_JSON),
                _Items([encoded[: len(encoded) // 2], mid_body[behaviour.fault]]),
            )
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            return FakeResponse(200, _headers(_JSON), _silent_body())
        return FakeResponse(200, _headers(_JSON), encoded)

    def _stream(
        self, call: _Call, body: dict[str, Any], behaviour: Behaviour, sse: bool
    ) -> FakeResponse:
        content_type = "text/event-stream" if sse else _JSON
        headers = [*_headers(content_type), ("content-disposition", "attachment")]
        return FakeResponse(200, headers, self._events(call, body, behaviour, sse))

    async def _events(
        self, call: _Call, body: dict[str, Any], behaviour: Behaviour, sse: bool
    ) -> AsyncIterator[BodyItem]:
        answer = self._answer(call, body, behaviour)
        base = self._base(call)
        send_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
        first = True

        def frame(payload: dict[str, Any]) -> bytes:
            nonlocal first
            text = json.dumps(payload, ensure_ascii=False)
            if sse:
                return encode_sse(text, line_ending="\r\n")
            # Without alt=sse the stream is one JSON array, elements separated by ",\r\n".
            prefix = b"[" if first else b"\r\n,\r\n"
            first = False
            return prefix + text.encode()

        def chunk(parts: list[dict[str, Any]], produced: int, finish: str | None) -> bytes:
            payload: dict[str, Any] = {"candidates": [_candidate(call, parts, finish)]}
            if send_usage:
                # Running counts on every chunk; only the last one is the total.
                payload["usageMetadata"] = _usage(call, answer, produced)
            return frame({**payload, **base})

        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            await anyio.sleep_forever()
        await anyio.sleep(behaviour.time_to_first_token.draw(self.control.rng))
        if answer.thought is not None:
            yield chunk([{"text": answer.thought, "thought": True}], 0, None)
        interval = behaviour.token_interval
        mid_stream = (
            Fault.RESET_MID_BODY,
            Fault.TRUNCATED,
            Fault.STREAM_ERROR_EVENT,
            Fault.INVALID_JSON,
        )
        for index, (parts, produced, finish) in enumerate(_stream_steps(answer)):
            if behaviour.fault in mid_stream and index == behaviour.tokens_before_fault:
                if behaviour.fault is Fault.RESET_MID_BODY:
                    yield RESET
                elif behaviour.fault is Fault.STREAM_ERROR_EVENT:
                    yield frame(_stream_error())
                elif behaviour.fault is Fault.INVALID_JSON:
                    broken = '{"candidates": [{"content": {"parts": [{"text": "tru'
                    if sse:
                        yield encode_sse(broken, line_ending="\r\n")
                    else:
                        yield b"\r\n,\r\n" + broken.encode()
                # TRUNCATED: the body ends cleanly without the finishing chunk, which is all a
                # cut-short Gemini stream looks like (there is no terminator to miss).
                return
            if index and interval:
                await anyio.sleep(interval)
            yield chunk(parts, produced, finish)
        if not sse:
            yield b"]"

    # -- embeddings -------------------------------------------------------------------------------

    def _embeddings(self, call: _Call, body: dict[str, Any]) -> FakeResponse:
        if call.method == "predict":
            return self._predict(body)
        if call.method == "embedContent":
            text = " ".join(_texts([body.get("content") or {}]))
            dimensions = body.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
            return _json_response({"embedding": {"values": embedding_of(text, dimensions)}})
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return _error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        if len(requests) > 100:
            return _error(
                400,
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
            )
        embeddings = []
        for index, item in enumerate(requests):
            if not isinstance(item, dict) or item.get("model") != call.resource:
                return _error(
                    400,
                    f"* BatchEmbedContentsRequest.requests[{index}].model: the model must match "
                    f"the batch's model {call.resource}",
                )
            text = " ".join(_texts([item.get("content") or {}]))
            dimensions = item.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
            embeddings.append({"values": embedding_of(text, dimensions)})
        return _json_response({"embeddings": embeddings})

    def _predict(self, body: dict[str, Any]) -> FakeResponse:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return _error(400, "Instances field is required.")
        if len(instances) > 250:
            return _error(400, "A maximum of 250 instances is allowed per request.")
        parameters = body.get("parameters") or {}
        dimensions = parameters.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
        predictions, characters = [], 0
        for item in instances:
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, str):
                return _error(400, "Invalid instance: content must be a string.")
            characters += len(content)
            statistics = {"token_count": count_tokens([content]), "truncated": False}
            predictions.append(
                {
                    "embeddings": {
                        "values": embedding_of(content, dimensions),
                        "statistics": statistics,
                    }
                }
            )
        return _json_response(
            {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
        )


# -- request checks ------------------------------------------------------------------------------


def _parse_body(request: FakeRequest) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")
    return body


def _check_generate_body(body: dict[str, Any], vertex: bool) -> None:
    for name in body:
        if name not in _REQUEST_FIELDS:
            raise _unknown_field(name, None)
    config = body.get("generationConfig") or body.get("generation_config") or {}
    if not isinstance(config, dict):
        raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for name in config:
        if name not in _CONFIG_FIELDS:
            raise _unknown_field(name, "generation_config")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Rejection(400, "* GenerateContentRequest.contents: contents is not specified\n")
    for index, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        # The Gemini API defaults a missing role to "user"; Vertex AI requires it.
        if role not in ("user", "model") and (vertex or role is not None):
            raise _Rejection(400, "Please use a valid role: user, model.")
        if not isinstance(content, dict) or not content.get("parts"):
            raise _Rejection(
                400,
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be "
                "empty.\n",
            )
        for number, part in enumerate(content["parts"]):
            _check_part(part, f"contents[{index}].parts[{number}]")
    _check_tools(body)
    for name in _field(config, "thinkingConfig") or {}:
        if name not in _THINKING_FIELDS:
            raise _unknown_field(name, "generation_config.thinking_config")
    has_schema = "responseSchema" in config or "response_schema" in config
    has_json_schema = "responseJsonSchema" in config or "response_json_schema" in config
    if has_schema and has_json_schema:
        raise _Rejection(
            400,
            "* GenerateContentRequest.generation_config.response_json_schema: only one of "
            "response_schema and response_json_schema may be set.\n",
        )
    mime = config.get("responseMimeType") or config.get("response_mime_type")
    if (has_schema or has_json_schema) and mime != "application/json":
        raise _Rejection(
            400,
            "* GenerateContentRequest.generation_config.response_mime_type: a response schema "
            "needs response_mime_type application/json.\n",
        )


_DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for name in part:
        if name not in _PART_FIELDS:
            raise _unknown_field(name, where)
    present = [name for name in _DATA_FIELDS if _field(part, name) is not None]
    if len(present) > 1:
        raise _Rejection(
            400,
            f"Invalid value at '{where}.data' (oneof), oneof field 'data' is already set. "
            f"Cannot set '{present[1]}'",
        )
    signature = _field(part, "thoughtSignature")
    if signature is not None:
        _check_bytes(signature, f"{where}.thought_signature")
    inline = _field(part, "inlineData")
    if inline is not None:
        mime = _field(inline, "mimeType")
        if not mime:
            raise _Rejection(400, f"* GenerateContentRequest.{where}.inline_data.mime_type: empty")
        _check_bytes(_field(inline, "data"), f"{where}.inline_data.data")
        if mime not in _INLINE_TYPES:
            raise _Rejection(400, f"Unsupported MIME type: {mime}")
    for name in ("functionCall", "functionResponse"):
        value = _field(part, name)
        if value is None:
            continue
        if not isinstance(value, dict) or not value.get("name"):
            raise _Rejection(
                400, f"* GenerateContentRequest.{where}.{_snake(name)}.name: name is not specified"
            )
        payload = _field(value, "args" if name == "functionCall" else "response")
        if payload is not None and not isinstance(payload, dict):
            raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")


def _check_bytes(value: Any, where: str) -> None:
    """A proto ``bytes`` field in JSON: base64, standard or URL-safe (both are accepted)."""
    if not isinstance(value, str) or _decode_bytes(value) is None:
        raise _Rejection(
            400,
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for "
            f'"{str(value)[:40]}"',
        )


def _decode_bytes(text: str) -> bytes | None:
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _Rejection(400, "Invalid JSON payload received. Unexpected token.")
        for name in tool:
            if name not in _TOOL_FIELDS:
                raise _unknown_field(name, where)
        for number, declaration in enumerate(_field(tool, "functionDeclarations") or []):
            at = f"{where}.function_declarations[{number}]"
            for name in declaration:
                if name not in _DECLARATION_FIELDS:
                    raise _unknown_field(name, at)
            if not _FUNCTION_NAME.match(str(declaration.get("name") or "")):
                raise _Rejection(
                    400,
                    f"* GenerateContentRequest.{at}.name: Invalid function name. Must start with "
                    "a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores "
                    "(_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n",
                )
            has_parameters = _field(declaration, "parameters") is not None
            if has_parameters and _field(declaration, "parametersJsonSchema") is not None:
                raise _Rejection(
                    400,
                    f"* GenerateContentRequest.{at}.parameters_json_schema: only one of "
                    "parameters and parameters_json_schema may be set.\n",
                )
    config = _field(_field(body, "toolConfig"), "functionCallingConfig")
    if config is None:
        return
    for name in config:
        if name not in _CALLING_FIELDS:
            raise _unknown_field(name, "tool_config.function_calling_config")
    mode = config.get("mode", "MODE_UNSPECIFIED")
    if mode not in _MODES:
        raise _Rejection(
            400,
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"',
        )
    if _field(config, "allowedFunctionNames") and mode != "ANY":
        raise _Rejection(
            400,
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "allowed_function_names may be set only when mode is ANY.\n",
        )


def _check_conversation(body: dict[str, Any], call: _Call) -> None:
    """What Gemini checks across turns: thinking settings for the model, calls and responses
    in pairs, and the thought signatures sent back."""
    config = _field(body, "generationConfig") or {}
    thinking = _field(config, "thinkingConfig") or {}
    budget = _field(thinking, "thinkingBudget")
    if thinking and not _generation_25(call.model):
        raise _Rejection(
            400,
            "Unable to submit request because thinking is not supported by this model. Learn "
            "more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini",
        )
    if budget == 0 and call.model.startswith("gemini-2.5-pro"):
        raise _Rejection(400, "Budget 0 is invalid. This model only works in thinking mode.")
    thinks = _thinks(call.model, budget)
    contents: list[dict[str, Any]] = body["contents"]
    turn_start = max(
        (i for i, c in enumerate(contents) if c.get("role", "user") == "user" and _has_text(c)),
        default=0,
    )
    user_text = ""
    previous_calls: list[str] = []
    for index, content in enumerate(contents):
        parts = content["parts"]
        calls = [str(_field(p, "functionCall")["name"]) for p in parts if _field(p, "functionCall")]
        responses = [
            str(_field(p, "functionResponse")["name"])
            for p in parts
            if _field(p, "functionResponse")
        ]
        if content.get("role", "user") == "user":
            if _has_text(content):
                user_text = _last_user_text([content])
            if responses:
                _check_responses(previous_calls, responses)
        elif calls:
            before = contents[index - 1] if index else {"role": "model"}
            if before.get("role", "user") != "user":
                raise _Rejection(
                    400,
                    "Please ensure that function call turn comes immediately after a user turn or "
                    "after a function response turn.",
                )
        if content.get("role") == "model":
            _check_signatures(call, parts, user_text, index, thinks and index > turn_start)
        previous_calls = calls if content.get("role") == "model" else []


def _has_text(content: dict[str, Any]) -> bool:
    return any(isinstance(p, dict) and "text" in p for p in content.get("parts") or [])


def _check_responses(calls: list[str], responses: list[str]) -> None:
    if not calls:
        raise _Rejection(
            400,
            "Please ensure that function response turn comes immediately after a function call "
            "turn.",
        )
    if len(responses) != len(calls):
        raise _Rejection(
            400,
            "Please ensure that the number of function response parts is equal to the number of "
            "function call parts of the function call turn.",
        )
    if sorted(responses) != sorted(calls):
        raise _Rejection(
            400,
            "Please ensure that the name of each function response part matches the name of a "
            "function call part of the function call turn.",
        )


def _check_signatures(
    call: _Call, parts: list[Any], user_text: str, index: int, required: bool
) -> None:
    """Every signature in a model turn must be the one the fake made for it (the thought about
    the user's text then); in the current turn's steps, a thinking model's first call must
    carry its signature."""
    expected = _decode_bytes(sign(thought_about(user_text)))
    for part in parts:
        signature = _field(part, "thoughtSignature")
        if signature is not None and _decode_bytes(signature) != expected:
            message = (
                "Unable to submit request because Thought signature is not valid."
                if call.vertex
                else "Corrupted thought signature."
            )
            raise _Rejection(400, message)
    first_call = next((p for p in parts if _field(p, "functionCall")), None)
    if required and first_call is not None and _field(first_call, "thoughtSignature") is None:
        name = _field(first_call, "functionCall")["name"]
        if call.vertex:
            message = (
                f"Unable to submit request because function call `{name}` in the {index + 1}. "
                "content block is missing a `thought_signature`. Learn more: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures"
            )
        else:
            message = (
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                "to degraded model performance. Additional data, function call "
                f"`default_api:{name}` , position {index + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        raise _Rejection(400, message)


def _unknown_field(name: str, parent: str | None) -> _Rejection:
    where = f" at '{parent}'" if parent else ""
    message = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
    violation = {"field": parent or "", "description": message}
    details = [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    ]
    return _Rejection(400, message, details)


# -- bodies --------------------------------------------------------------------------------------

_JSON = "application/json; charset=UTF-8"


def _headers(content_type: str) -> list[tuple[str, str]]:
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


def _pretty(payload: Any) -> bytes:
    # Google's unary answers are indented JSON with a final newline.
    return json.dumps(payload, indent=2, ensure_ascii=False).encode() + b"\n"


def _json_response(payload: Any) -> FakeResponse:
    return FakeResponse(200, _headers(_JSON), _pretty(payload))


def _texts(contents: Sequence[Any]) -> list[str]:
    """The text of each content: its text parts joined, calls and results as compact JSON, a
    media part as one token; thoughts sent back are left out, as Gemini leaves them out."""
    texts = []
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            continue
        text = ""
        for part in parts:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            if "text" in part:
                text += str(part["text"])
            for name in ("functionCall", "functionResponse"):
                value = _field(part, name)
                if value is not None:
                    text += " " + json.dumps(value, separators=(",", ":")) + " "
            if _field(part, "inlineData") is not None:
                text += " [media] "
        texts.append(text)
    return texts


def _words(texts: Sequence[str]) -> list[str]:
    """A prompt as the fake tokenizer sees it: its count is :func:`count_tokens` of ``texts``."""
    words: list[str] = []
    for text in texts:
        words += text.split() or [""]
    return words


def _common_prefix(words: Sequence[str], earlier: Sequence[str]) -> int:
    length = 0
    for mine, theirs in zip(words, earlier, strict=False):
        if mine != theirs:
            break
        length += 1
    return length


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def _field(message: Any, name: str) -> Any:
    """Field ``name`` (camelCase) of a proto JSON object, or its snake_case spelling: proto JSON
    accepts both, and python-genai passes nested messages unconverted. None when absent."""
    if not isinstance(message, dict):
        return None
    if name in message:
        return message[name]
    return message.get(_snake(name))


def _generation_25(model: str) -> bool:
    return model.startswith("gemini-2.5")


def _thinks(model: str, budget: object) -> bool:
    """Whether ``model`` thinks with ``thinkingBudget`` ``budget`` (None: unset). 2.5 Pro and
    Flash think unless the budget is 0; Flash-Lite only when given a budget."""
    if not _generation_25(model) or budget == 0:
        return False
    return budget is not None or not model.startswith("gemini-2.5-flash-lite")


def _json_schema(schema: Any) -> Any:
    """An OpenAPI-subset schema (``parameters``, ``responseSchema``: upper-case type names) as
    JSON Schema; a JSON Schema passes unchanged."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _json_schema(value) for key, value in schema.items()}
    if isinstance(converted.get("type"), str):
        converted["type"] = converted["type"].lower()
    return converted


def _last_user_text(contents: Sequence[Any]) -> str:
    """The text of the last user turn that has text (not only function results)."""
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            parts = content.get("parts") or []
            texts = [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]
            if texts:
                return "".join(texts)
    return ""


def _function_results(content: Any) -> list[str]:
    """The results of a function response turn, as text (none for any other turn)."""
    if not isinstance(content, dict) or content.get("role", "user") != "user":
        return []
    results = []
    for part in content.get("parts") or []:
        response = _field(part, "functionResponse")
        if response is None:
            continue
        value = _field(response, "response")
        if (
            isinstance(value, dict)
            and set(value) == {"result"}
            and isinstance(value["result"], str)
        ):
            results.append(value["result"])
        else:
            results.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return results


def _declarations(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, JSON Schema) of every declared function."""
    declared = []
    for tool in body.get("tools") or []:
        for declaration in _field(tool, "functionDeclarations") or []:
            schema = _field(declaration, "parametersJsonSchema")
            if schema is None:
                schema = _json_schema(_field(declaration, "parameters") or {})
            declared.append((str(declaration.get("name")), schema))
    return declared


def _planned_calls(body: Mapping[str, Any], user_text: str) -> list[FakeToolCall]:
    """The calls of :func:`~delos.testing._agent.planned_tool_calls` under ``toolConfig``.

    Gemini cannot forbid parallel calls; ANY with one allowed name is that tool's choice, with
    several it narrows the tools, without names it is "required".
    """
    tools = _declarations(body)
    config = _field(_field(body, "toolConfig"), "functionCallingConfig") or {}
    mode = str(config.get("mode") or "AUTO")
    allowed = _field(config, "allowedFunctionNames") or []
    choice = {"NONE": "none", "ANY": "required"}.get(mode, "")
    if mode == "ANY" and len(allowed) == 1:
        choice = allowed[0]
    elif mode == "ANY" and allowed:
        tools = [tool for tool in tools if tool[0] in allowed]
    return planned_tool_calls(tools, user_text, tool_choice=choice)


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """The pieces up to the first stop sequence (excluded), and whether one was met."""
    text = ""
    for index, piece in enumerate(pieces):
        combined = text + piece
        hits = [combined.find(s) for s in stops if s and s in combined]
        if hits:
            kept = combined[: min(hits)][len(text) :]
            return [*pieces[:index], *([kept] if kept else [])], True
        text = combined
    return pieces, False


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    return {**part, "thoughtSignature": signature} if signature else part


def _call_parts(answer: _Answer) -> list[dict[str, Any]]:
    """The answer's calls; only the first carries the signature, as Gemini sends parallel calls."""
    return [
        _signed(
            {"functionCall": {"name": call.name, "args": dict(call.arguments)}},
            answer.signature if index == 0 else None,
        )
        for index, call in enumerate(answer.calls)
    ]


def _stream_steps(answer: _Answer) -> list[tuple[list[dict[str, Any]], int, str | None]]:
    """The chunks of a streamed answer after its thought: (parts, tokens so far, finish).

    Calls come whole, all in one chunk. Text comes a piece a chunk; a signed answer ends with a
    chunk whose only part is an empty text carrying the signature, as Gemini streams it.
    """
    if answer.calls:
        return [(_call_parts(answer), answer.output_tokens, answer.finish)]
    pieces = answer.pieces or [""]
    steps: list[tuple[list[dict[str, Any]], int, str | None]] = [
        ([{"text": piece}], index + 1, None) for index, piece in enumerate(pieces)
    ]
    if answer.signature:
        steps.append(([_signed({"text": ""}, answer.signature)], len(pieces), answer.finish))
    else:
        parts, produced, _ = steps[-1]
        steps[-1] = (parts, produced, answer.finish)
    return steps


def _candidate(call: _Call, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
        if call.vertex:
            candidate["avgLogprobs"] = -0.0625
    if not call.vertex:
        candidate["index"] = 0
    return candidate


def _usage(call: _Call, answer: _Answer, produced: int) -> dict[str, Any]:
    """usageMetadata after ``produced`` pieces; zero counts are left out, as proto3 JSON does."""
    prompt = answer.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if produced:
        usage["candidatesTokenCount"] = produced
    usage["totalTokenCount"] = prompt + produced + answer.thoughts
    if answer.cached:
        # Implicit cache reads are part of promptTokenCount, reported again apart.
        usage["cachedContentTokenCount"] = answer.cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if answer.cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.cached}]
    if answer.thoughts:
        usage["thoughtsTokenCount"] = answer.thoughts
    if call.vertex:
        if produced:
            usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": produced}]
        usage["trafficType"] = "ON_DEMAND"
    return usage


def _model_entry(model: str) -> dict[str, Any]:
    embedding = model in GEMINI_MODELS["embedding"]
    entry: dict[str, Any] = {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model.replace("-", " ").title(),
        "description": f"Fake {model}.",
        "inputTokenLimit": 2048 if embedding else 1048576,
        "outputTokenLimit": 1 if embedding else 8192,
        "supportedGenerationMethods": (
            ["embedContent", "batchEmbedContents"]
            if embedding
            else ["generateContent", "countTokens"]
        ),
    }
    if not embedding:
        entry.update({"temperature": 1, "topP": 0.95, "topK": 40, "maxTemperature": 2})
    return entry


# -- errors --------------------------------------------------------------------------------------


def _error_info(reason: str, service: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": f"{service}.googleapis.com"},
    }


def _error(
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
    return FakeResponse(status, [*_headers(_JSON), *(headers or [])], _pretty(payload))


def _status_error(status: int, retry_after: float | str | None, streaming: bool) -> FakeResponse:
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
    return _error(status, _status_message(status), details=details, wrap=streaming, headers=headers)


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


def _stream_error() -> dict[str, Any]:
    return {"error": {"code": 500, "message": _status_message(500), "status": "INTERNAL"}}


def _not_found_page(path: str) -> FakeResponse:
    # Google's front end answers unknown paths with an HTML page, not a JSON error.
    page = (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1"
        f"</title>\n  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>"
        f"{path}</code> was not found on this server.  <ins>That’s all we know.</ins>\n"
    )
    return FakeResponse(404, [("content-type", "text/html; charset=UTF-8")], page.encode())


def _oversized() -> _Items:
    """About 40 MiB of JSON, past any sane bound on an answer."""
    block = b" " * (1 << 20)
    return _Items([b'{"padding": "', *([block] * 40), b'"}'])


async def _silent_body() -> AsyncIterator[BodyItem]:
    await anyio.sleep_forever()
    yield b""  # pragma: no cover - never reached
