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

This module is the server: paths, authentication, faults, model lists and embeddings. The
request checks live in :mod:`delos.testing._gemini_checks`, the model's answer and how it is
written (whole or streamed) in :mod:`delos.testing._gemini_answer`, and Google's error bodies and
headers in :mod:`delos.testing._gemini_errors`.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio

from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens
from delos.testing._gemini_answer import (
    IMPLICIT_CACHE_MIN_TOKENS,
    THOUGHT_TOKENS,
    Answerer,
    content_texts,
)
from delos.testing._gemini_checks import (
    Call,
    Rejection,
    check_conversation,
    check_generate_body,
    parse_body,
)
from delos.testing._gemini_errors import (
    JSON_TYPE,
    error_info,
    error_response,
    json_response,
    not_found_page,
    oversized_body,
    response_headers,
    status_error,
)
from delos.testing._server import FakeRequest, FakeResponse, Handler
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
_EMBEDDING_DIMENSIONS = 8

_GEMINI_PATH = re.compile(r"^/(v1|v1beta)/models(?:/([^/:]+)(?::([A-Za-z]+))?)?$")
_VERTEX_PATH = re.compile(
    r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+)"
    r":([A-Za-z]+)$"
)


def fake_gemini_handler(
    control: FakeControl, *, api_key: str | None = None, access_token: str | None = None
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server` serving both surfaces.

    ``api_key`` None accepts any ``x-goog-api-key``; ``access_token`` None accepts any bearer
    token on the Vertex paths. Configure adapters and SDKs with the server's URL as base URL.
    """
    return _FakeGemini(control, api_key, access_token).handle


class _FakeGemini:
    def __init__(self, control: FakeControl, api_key: str | None, access_token: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self.access_token = access_token
        self.answerer = Answerer(control)

    async def handle(self, request: FakeRequest) -> FakeResponse:
        behaviour = self.control.next_behaviour()
        streaming = ":streamGenerateContent" in request.path
        try:
            call = self._route(request)
            self._check_credentials(request, call)
            if request.method == "GET":
                return self._model_info(call)
            body = parse_body(request)
            early = await self._before_headers(behaviour, streaming)
            if early is not None:
                return early
            self._check_model(call)
            if call.method in ("generateContent", "streamGenerateContent"):
                check_generate_body(body, call.vertex)
                check_conversation(body, call)
                if call.method == "generateContent":
                    return self.answerer.completion(call, body, behaviour)
                sse = parse_qs(request.query).get("alt") == ["sse"]
                return self.answerer.stream(call, body, behaviour, sse)
            return self._embeddings(call, body)
        except Rejection as rejection:
            if rejection.page is not None:
                return rejection.page
            return error_response(
                rejection.status, rejection.message, details=rejection.details, wrap=streaming
            )

    # -- routing and checks -----------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> Call:
        match = _VERTEX_PATH.match(request.path)
        if match and request.method == "POST":
            version, project, location, model, method = match.groups()
            if method in ("generateContent", "streamGenerateContent", "predict"):
                model = unquote(model)
                resource = f"projects/{unquote(project)}/locations/{unquote(location)}"
                resource += f"/publishers/google/models/{model}"
                return Call(True, version, model, method, resource)
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
                return Call(False, version, model, method or "get", f"models/{model}")
        raise Rejection(404, "Not Found", page=not_found_page(request.path))

    def _check_credentials(self, request: FakeRequest, call: Call) -> None:
        if call.vertex:
            authorization = request.header("authorization") or ""
            if not authorization.startswith("Bearer "):
                raise Rejection(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    [error_info("CREDENTIALS_MISSING", "aiplatform")],
                )
            if self.access_token is not None and authorization != f"Bearer {self.access_token}":
                raise Rejection(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    [error_info("ACCESS_TOKEN_EXPIRED", "aiplatform")],
                )
            return
        key = request.header("x-goog-api-key") or (parse_qs(request.query).get("key") or [""])[0]
        if not key:
            raise Rejection(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if self.api_key is not None and key != self.api_key:
            # A wrong key is a 400 INVALID_ARGUMENT, told apart only by ErrorInfo.reason.
            message = "API key not valid. Please pass a valid API key."
            raise Rejection(
                400,
                message,
                [
                    error_info("API_KEY_INVALID", "generativelanguage"),
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": message,
                    },
                ],
            )

    def _check_model(self, call: Call) -> None:
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
        raise Rejection(404, message)

    async def _before_headers(self, behaviour: Behaviour, streaming: bool) -> FakeResponse | None:
        await anyio.sleep(behaviour.latency.draw(self.control.rng))
        match behaviour.fault:
            case Fault.RESET_BEFORE_HEADERS:
                return FakeResponse.reset()
            case Fault.SILENCE_BEFORE_HEADERS:
                await anyio.sleep_forever()
            case Fault.HTTP_ERROR:
                return status_error(behaviour.error_status, behaviour.retry_after, streaming)
            case Fault.INVALID_JSON if not streaming:
                return FakeResponse(
                    200, response_headers(JSON_TYPE), b'{\n  "candidates": [\n    {\n  "'
                )
            case Fault.WRONG_CONTENT_TYPE:
                return FakeResponse(
                    200,
                    [("content-type", "text/html; charset=UTF-8")],
                    b"<html><body>Service temporarily unavailable</body></html>",
                )
            case Fault.OVERSIZED_BODY:
                return FakeResponse(200, response_headers(JSON_TYPE), oversized_body())
        return None

    # -- model listing ----------------------------------------------------------------------------

    def _model_info(self, call: Call) -> FakeResponse:
        if call.model:
            if call.model not in (*GEMINI_MODELS["chat"], *GEMINI_MODELS["embedding"]):
                return error_response(
                    404, f"Model is not found: {call.resource} for api version v1beta"
                )
            return json_response(_model_entry(call.model))
        entries = [_model_entry(m) for m in (*GEMINI_MODELS["chat"], *GEMINI_MODELS["embedding"])]
        return json_response({"models": entries})

    # -- embeddings -------------------------------------------------------------------------------

    def _embeddings(self, call: Call, body: dict[str, Any]) -> FakeResponse:
        if call.method == "predict":
            return self._predict(body)
        if call.method == "embedContent":
            text = " ".join(content_texts([body.get("content") or {}]))
            dimensions = body.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
            return json_response({"embedding": {"values": embedding_of(text, dimensions)}})
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return error_response(
                400, "* BatchEmbedContentsRequest.requests: requests is not specified"
            )
        if len(requests) > 100:
            return error_response(
                400,
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
            )
        embeddings = []
        for index, item in enumerate(requests):
            if not isinstance(item, dict) or item.get("model") != call.resource:
                return error_response(
                    400,
                    f"* BatchEmbedContentsRequest.requests[{index}].model: the model must match "
                    f"the batch's model {call.resource}",
                )
            text = " ".join(content_texts([item.get("content") or {}]))
            dimensions = item.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
            embeddings.append({"values": embedding_of(text, dimensions)})
        return json_response({"embeddings": embeddings})

    def _predict(self, body: dict[str, Any]) -> FakeResponse:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return error_response(400, "Instances field is required.")
        if len(instances) > 250:
            return error_response(400, "A maximum of 250 instances is allowed per request.")
        parameters = body.get("parameters") or {}
        dimensions = parameters.get("outputDimensionality") or _EMBEDDING_DIMENSIONS
        predictions, characters = [], 0
        for item in instances:
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, str):
                return error_response(400, "Invalid instance: content must be a string.")
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
        return json_response(
            {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
        )


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
