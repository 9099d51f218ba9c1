"""A fake of AWS Bedrock Runtime: Converse, ConverseStream and InvokeModel for embeddings.

Byte-level fidelity: SigV4 ``Authorization`` headers are checked like AWS checks them (scope,
signed headers, session token, and the signature itself when the secret is known), answers and
errors carry ``x-amzn-RequestId`` and ``x-amzn-ErrorType``, streams are binary event-streams whose
payloads carry the ``p`` padding field, in Bedrock's order ``messageStart → (contentBlockStart?
contentBlockDelta* contentBlockStop)* → messageStop → metadata``. InvokeModel answers Titan and
Cohere embedding bodies. Serve it at the root: the adapter's base URL is the fake's URL.

Agents (as :mod:`delos.testing._agent` plans for every fake): declared tools make the fake answer
with ``toolUse`` blocks (streamed as a ``contentBlockStart`` and 8-character input fragments);
tool results make it answer ``Tool said: …``; Claude's ``thinking`` makes it think first, in a
signed ``reasoningContent`` block (redacted when the prompt holds Anthropic's
:data:`REDACTED_THINKING_TRIGGER`). ``cachePoint`` blocks mark prompt prefixes it caches:
usage reports ``cacheWriteInputTokens`` for a new prefix and ``cacheReadInputTokens`` for one
seen before. It refuses (400 ``ValidationException``, Bedrock's or Claude's words) what Bedrock
refuses: unpaired ``toolUse`` / ``toolResult`` ids, tool blocks without ``toolConfig``, thinking
whose signature is not its own, bad document names, documents without text, images or documents
outside user turns, thinking on a model or with settings that cannot have it.

This module is the server: paths, SigV4 authentication, faults, errors, headers, model lists and
InvokeModel embeddings. The request checks and the prompt-cache accounting live in
:mod:`delos.testing._bedrock_checks`, the model's answer and how it is written (whole or as an
event-stream) in :mod:`delos.testing._bedrock_answer`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Final
from urllib.parse import quote, unquote

import anyio

from delos.testing._bedrock_answer import (
    HTTP_ERRORS,
    REDACTED_THINKING_TRIGGER,
    Answer,
    plan_answer,
    stream_events,
    whole_answer,
)
from delos.testing._bedrock_checks import converse_problem
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens
from delos.testing._server import (
    HANG_UP,
    RESET,
    BodyItem,
    FakeRequest,
    FakeResponse,
    Handler,
    Pause,
    ScriptedBody,
)
from delos.testing.fake_openai import embedding_of

__all__ = [
    "BEDROCK_CHAT_MODELS",
    "BEDROCK_EMBEDDING_MODELS",
    "REDACTED_THINKING_TRIGGER",
    "fake_bedrock_handler",
]

BEDROCK_CHAT_MODELS: Final = (
    "anthropic.claude-opus-4-5-20251101-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-opus-4-1-20250805-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-opus-20240229-v1:0",
    "meta.llama3-1-405b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "meta.llama3-1-8b-instruct-v1:0",
    "amazon.titan-text-premier-v1:0",
    "mistral.mistral-large-2407-v1:0",
    "cohere.command-r-plus-v1:0",
)
BEDROCK_EMBEDDING_MODELS: Final = (
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "cohere.embed-multilingual-v3",
)

_BEDROCK_NS: Final = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_CORAL_NS: Final = "http://internal.amazon.com/coral/com.amazon.coral.service/"
_EVENT_STREAM: Final = "application/vnd.amazon.eventstream"
_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_GEO_PREFIXES = ("us.", "eu.", "apac.", "global.")
_TITAN_DIMENSIONS = (256, 512, 1024)
_COHERE_DIMENSIONS = 1024
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")


def fake_bedrock_handler(
    control: FakeControl,
    *,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server`.

    Every request must carry a well-formed SigV4 signature for service ``bedrock`` in
    ``region``. ``access_key_id`` None accepts any key id; with ``secret_access_key`` the
    signature itself is verified. Temporary credentials (``ASIA…`` key ids, or any key when
    ``session_token`` is set) must send ``X-Amz-Security-Token``.
    """
    fake = _FakeBedrock(control, region, access_key_id, secret_access_key, session_token)
    return fake.handle


class _FakeBedrock:
    def __init__(
        self,
        control: FakeControl,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None,
    ) -> None:
        self.control = control
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.sequence = 0
        #: Keys of the prompt prefixes cached so far (the fake's prompt cache).
        self.cache: set[str] = set()

    async def handle(self, request: FakeRequest) -> FakeResponse:
        behaviour = self.control.next_behaviour()
        self.sequence += 1
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            return self._error(404, "UnknownOperationException", None, namespace=_CORAL_NS)
        rejected = self._check_signature(request)
        if rejected is not None:
            return rejected
        model, operation = unquote(match.group(1)), match.group(2)
        try:
            body = request.json()
        except ValueError:
            return self._error(400, "SerializationException", "Unexpected character in body.")
        if not isinstance(body, dict):
            return self._error(400, "SerializationException", "Expected a JSON object.")
        early = await self._before_headers(behaviour, streaming=operation == "converse-stream")
        if early is not None:
            return early
        base = model.removeprefix(next((p for p in _GEO_PREFIXES if model.startswith(p)), ""))
        if base not in BEDROCK_CHAT_MODELS + BEDROCK_EMBEDDING_MODELS:
            return self._error(
                400, "ValidationException", "The provided model identifier is invalid."
            )
        if operation == "invoke":
            return self._invoke(base, body, behaviour)
        if base in BEDROCK_EMBEDDING_MODELS:
            return self._error(
                400,
                "ValidationException",
                "This action doesn't support the model that you provided. "
                "Try again with a supported text or chat model.",
            )
        problem = converse_problem(base, body)
        if problem is not None:
            return self._error(400, "ValidationException", problem)
        if operation == "converse-stream":
            return self._stream(base, body, behaviour)
        return self._converse(base, body, behaviour)

    # -- authentication -------------------------------------------------------------------------

    def _check_signature(self, request: FakeRequest) -> FakeResponse | None:
        """None when the SigV4 signature is acceptable, else AWS's 403 answer."""
        authorization = request.header("authorization")
        if authorization is None:
            return self._error(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
                namespace=_CORAL_NS,
            )
        parsed = _AUTHORIZATION.match(authorization)
        amz_date = request.header("x-amz-date") or ""
        if parsed is None or not _AMZ_DATE.match(amz_date):
            return self._auth_error(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                "parameters and an 'X-Amz-Date' header.",
            )
        signed = parsed["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return self._auth_error(
                "IncompleteSignatureException", "'Host' and 'X-Amz-Date' must be SignedHeaders."
            )
        if parsed["date"] != amz_date[:8]:
            return self._auth_error(
                "InvalidSignatureException",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{parsed['date']}' != '{amz_date[:8]}'",
            )
        if parsed["service"] != "bedrock":
            return self._auth_error(
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 'bedrock'. ",
            )
        if parsed["region"] != self.region:
            return self._auth_error(
                "InvalidSignatureException", "Credential should be scoped to a valid region. "
            )
        token = request.header("x-amz-security-token")
        temporary = parsed["key"].startswith("ASIA") or self.session_token is not None
        if (self.access_key_id is not None and parsed["key"] != self.access_key_id) or (
            temporary and (token is None or token != (self.session_token or token))
        ):
            return self._auth_error(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if self.secret_access_key is None:
            return None
        canonical = _canonical_request(request, signed)
        scope = f"{parsed['date']}/{self.region}/bedrock/aws4_request"
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        key = _signing_key(self.secret_access_key, parsed["date"], self.region, "bedrock")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, parsed["signature"]):
            return None
        return self._auth_error(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.\n\nThe Canonical String for this request should have "
            f"been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{to_sign}'\n",
        )

    def _auth_error(self, error_type: str, message: str) -> FakeResponse:
        return self._error(403, error_type, message, namespace=_CORAL_NS)

    # -- faults and errors ----------------------------------------------------------------------

    async def _before_headers(
        self, behaviour: Behaviour, *, streaming: bool
    ) -> FakeResponse | None:
        await anyio.sleep(behaviour.latency.draw(self.control.rng))
        match behaviour.fault:
            case Fault.RESET_BEFORE_HEADERS:
                return FakeResponse.reset()
            case Fault.SILENCE_BEFORE_HEADERS:
                await anyio.sleep_forever()
            case Fault.HTTP_ERROR:
                status = behaviour.error_status
                default = "InternalServerException" if status >= 500 else "ValidationException"
                error_type, message = HTTP_ERRORS.get(status, (default, "Unexpected error."))
                extra = (
                    {"originalStatusCode": 500, "resourceName": "model"} if status == 424 else {}
                )
                return self._error(
                    status, error_type, message, retry_after=behaviour.retry_after, extra=extra
                )
            case Fault.WRONG_CONTENT_TYPE:
                return FakeResponse(
                    200, [("content-type", "text/html")], b"<html>Bad gateway</html>"
                )
            case Fault.INVALID_JSON if not streaming:
                return FakeResponse(200, self._headers("application/json"), b'{"metrics": {"lat')
            case Fault.OVERSIZED_BODY if not streaming:
                return FakeResponse(
                    200, self._headers("application/json"), ScriptedBody(_oversized_json())
                )
        return None

    def _request_id(self) -> str:
        return f"{self.sequence:08x}-0000-4000-8000-00000000bedc"

    def _headers(self, content_type: str) -> list[tuple[str, str]]:
        return [("content-type", content_type), ("x-amzn-RequestId", self._request_id())]

    def _error(
        self,
        status: int,
        error_type: str,
        message: str | None,
        *,
        namespace: str = _BEDROCK_NS,
        retry_after: float | str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> FakeResponse:
        headers = [
            ("x-amzn-RequestId", self._request_id()),
            ("x-amzn-ErrorType", f"{error_type}:{namespace}"),
        ]
        if retry_after is not None:
            headers.append(("retry-after", str(retry_after)))
        return FakeResponse.json({"message": message, **(extra or {})}, status, headers)

    # -- Converse -------------------------------------------------------------------------------

    def _plan(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> Answer:
        return plan_answer(model, body, behaviour, sequence=self.sequence, cache=self.cache)

    def _latency_ms(self) -> int:
        """The ``latencyMs`` reported (milliseconds): made up from the request counter."""
        return 120 + self.sequence % 50

    def _converse(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        payload = whole_answer(self._plan(model, body, behaviour), self._latency_ms())
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usage"]
        encoded = json.dumps(payload, separators=(",", ":")).encode()
        headers = self._headers("application/json")
        half = encoded[: len(encoded) // 2]
        if behaviour.fault in (Fault.TRUNCATED, Fault.RESET_MID_BODY, Fault.HEADERS_THEN_SILENCE):
            # Content-Length promises the whole body; the connection ends (or stalls) short of it.
            headers.append(("content-length", str(len(encoded))))
            ending: BodyItem = RESET if behaviour.fault is Fault.RESET_MID_BODY else HANG_UP
            silent = behaviour.fault is Fault.HEADERS_THEN_SILENCE
            steps: list[BodyItem | Pause] = [Pause(math.inf)] if silent else [half, ending]
            return FakeResponse(200, headers, ScriptedBody(steps))
        return FakeResponse(200, headers, encoded)

    def _stream(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        answer = self._plan(model, body, behaviour)
        events = stream_events(answer, behaviour, self.control.rng, self._latency_ms)
        return FakeResponse(200, self._headers(_EVENT_STREAM), ScriptedBody(events))

    # -- InvokeModel (embeddings) ---------------------------------------------------------------

    def _invoke(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        report_tokens = behaviour.fault is not Fault.NO_FINAL_USAGE
        payload: dict[str, Any]
        if model.startswith("amazon.titan-embed"):
            text = body.get("inputText")
            dimensions = body.get("dimensions", 1024)
            if not isinstance(text, str) or not text:
                return self._malformed("#: required key [inputText] not found")
            if dimensions not in _TITAN_DIMENSIONS:
                return self._malformed(f"#/dimensions: {dimensions} is not a valid enum value")
            tokens = count_tokens([text])
            vector = embedding_of(text, dimensions)
            payload = {"embedding": vector, "embeddingsByType": {"float": vector}}
            if report_tokens:
                payload["inputTextTokenCount"] = tokens
        elif model.startswith("cohere.embed"):
            texts = body.get("texts")
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                return self._malformed("#: required key [texts] not found")
            if not 0 < len(texts) <= 96:
                return self._malformed(
                    f"#/texts: expected maximum item count: 96, found: {len(texts)}"
                )
            if body.get("input_type") not in _COHERE_INPUT_TYPES:
                return self._malformed("#: required key [input_type] not found")
            tokens = count_tokens(texts)
            vectors = [embedding_of(text, _COHERE_DIMENSIONS) for text in texts]
            by_type = bool(body.get("embedding_types"))
            payload = {
                "embeddings": {"float": vectors} if by_type else vectors,
                "id": self._request_id(),
                "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
                "texts": [text.lower() for text in texts],
            }
        else:
            return self._malformed("InvokeModel on this fake serves embedding models only")
        headers = self._headers("application/json")
        headers.append(("X-Amzn-Bedrock-Invocation-Latency", "35"))
        if report_tokens:
            headers.append(("X-Amzn-Bedrock-Input-Token-Count", str(tokens)))
        return FakeResponse(200, headers, json.dumps(payload, separators=(",", ":")).encode())

    def _malformed(self, detail: str) -> FakeResponse:
        message = f"Malformed input request: {detail}, please reformat your input and try again."
        return self._error(400, "ValidationException", message)


# -- SigV4 canonical form and oversized bodies ----------------------------------------------------


def _canonical_request(request: FakeRequest, signed: Sequence[str]) -> str:
    """SigV4's canonical request as AWS rebuilds it from what arrived.

    The path is URI-encoded once more (every service but S3 signs the encoded path encoded
    again: ``%3A`` becomes ``%253A``); the request paths served here have no dot segments.
    """
    pairs = sorted(pair.partition("=")[::2] for pair in request.query.split("&") if pair)
    lines = []
    for name in signed:
        values = [value for key, value in request.headers if key == name]
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    return "\n".join(
        (
            request.method,
            quote(request.path, safe="/~"),
            "&".join(f"{key}={value}" for key, value in pairs),
            "\n".join(lines) + "\n",
            ";".join(signed),
            hashlib.sha256(request.body).hexdigest(),
        )
    )


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _oversized_json() -> Iterator[BodyItem]:
    block = b" " * (1 << 20)
    yield b'{"padding": "'
    for _ in range(40):
        yield block
    yield b'"}'
