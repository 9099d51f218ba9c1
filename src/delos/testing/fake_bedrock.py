"""A fake of AWS Bedrock Runtime: Converse, ConverseStream and InvokeModel for embeddings.

Byte-level fidelity: SigV4 ``Authorization`` headers are checked like AWS checks them (scope,
signed headers, session token, and the signature itself when the secret is known), answers and
errors carry ``x-amzn-RequestId`` and ``x-amzn-ErrorType``, streams are binary event-streams whose
payloads carry the ``p`` padding field, in Bedrock's order ``messageStart → contentBlockDelta* →
contentBlockStop → messageStop → metadata``. InvokeModel answers Titan and Cohere embedding bodies.
Serve it at the root: the adapter's base URL is the fake's URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Final
from urllib.parse import quote, unquote

import anyio

from delos.runtime.wire import encode_event, encode_event_stream_message
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler
from delos.testing._server import Pause as _Pause
from delos.testing._server import ScriptedBody as _Script
from delos.testing.fake_openai import embedding_of

__all__ = ["BEDROCK_CHAT_MODELS", "BEDROCK_EMBEDDING_MODELS", "fake_bedrock_handler"]

BEDROCK_CHAT_MODELS: Final = (
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
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_GEO_PREFIXES = ("us.", "eu.", "apac.")
_TITAN_DIMENSIONS = (256, 512, 1024)
_COHERE_DIMENSIONS = 1024
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")

#: Status → (exception name, message) for HTTP errors; in-stream exceptions by status.
_HTTP_ERRORS: Final = {
    400: (
        "ValidationException",
        "Malformed input request, please reformat your input and try again.",
    ),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "Received an error from the model. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_STREAM_EXCEPTIONS: Final = {
    400: "validationException",
    408: "modelTimeoutException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    500: "internalServerException",
    503: "serviceUnavailableException",
}


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
        problem = _converse_problem(body)
        if problem is not None:
            return self._error(400, "ValidationException", problem)
        if operation == "converse-stream":
            return self._stream(body, behaviour)
        return self._converse(body, behaviour)

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
                error_type, message = _HTTP_ERRORS.get(status, (default, "Unexpected error."))
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
                    200, self._headers("application/json"), _Script(_oversized_json())
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

    def _answer(
        self, body: dict[str, Any], behaviour: Behaviour
    ) -> tuple[list[str], int, str, bool]:
        """The answer's pieces (one token each), prompt tokens, stop reason, and whether the
        pieces are a tool's JSON input (structured output)."""
        system = [str(block.get("text", "")) for block in body.get("system") or ()]
        turns = [
            [str(block.get("text", "")) for block in message["content"]]
            for message in body["messages"]
        ]
        prompt_tokens = count_tokens(system + [text for turn in turns for text in turn])
        schema = _forced_tool_schema(body)
        if schema is not None:
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(schema)
            )
            text = json.dumps(value)
            return (
                [text[i : i + 8] for i in range(0, len(text), 8)],
                prompt_tokens,
                "tool_use",
                True,
            )
        config = body.get("inferenceConfig") or {}
        limit = config.get("maxTokens")
        stop_reason = "end_turn"
        if behaviour.reply is not None:
            words = behaviour.reply.split(" ")
        else:
            count = behaviour.completion_tokens
            if limit is not None and count > limit:
                count, stop_reason = limit, "max_tokens"
            words = reply_words(" ".join(turns[-1]), count)
        for index, word in enumerate(words):
            if any(stop in word for stop in config.get("stopSequences") or ()):
                words, stop_reason = words[:index], "stop_sequence"
                break
        return (
            [w if i == 0 else " " + w for i, w in enumerate(words)],
            prompt_tokens,
            stop_reason,
            False,
        )

    def _converse(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        pieces, prompt_tokens, stop_reason, structured = self._answer(body, behaviour)
        if structured:
            tool = {
                "input": json.loads("".join(pieces)),
                "name": "output",
                "toolUseId": self._tool_id(),
            }
            content: list[dict[str, Any]] = [{"toolUse": tool}]
        else:
            content = [{"text": "".join(pieces)}]
        payload: dict[str, Any] = {
            "metrics": {"latencyMs": 120 + self.sequence % 50},
            "output": {"message": {"content": content, "role": "assistant"}},
            "stopReason": stop_reason,
            "usage": _usage(prompt_tokens, len(pieces)),
        }
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
            steps: list[BodyItem | _Pause] = [_Pause(math.inf)] if silent else [half, ending]
            return FakeResponse(200, headers, _Script(steps))
        return FakeResponse(200, headers, encoded)

    def _tool_id(self) -> str:
        return f"tooluse_{self.sequence:022d}"

    def _stream(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        return FakeResponse(
            200, self._headers(_EVENT_STREAM), _Script(self._events(body, behaviour))
        )

    def _events(self, body: dict[str, Any], behaviour: Behaviour) -> Iterator[BodyItem | _Pause]:
        pieces, prompt_tokens, stop_reason, structured = self._answer(body, behaviour)
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            yield _Pause(math.inf)
        yield _Pause(behaviour.time_to_first_token.draw(self.control.rng))
        frames = _Frames()
        yield frames.event("messageStart", {"role": "assistant"})
        if structured:
            start = {"toolUse": {"name": "output", "toolUseId": self._tool_id()}}
            yield frames.event("contentBlockStart", {"contentBlockIndex": 0, "start": start})
        interval = behaviour.token_interval
        for index, piece in enumerate(pieces):
            if index and interval:
                yield _Pause(interval)
            delta = {"toolUse": {"input": piece}} if structured else {"text": piece}
            frame = frames.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta})
            fault_at = (
                0 if behaviour.fault is Fault.OVERSIZED_BODY else behaviour.tokens_before_fault
            )
            if index == fault_at:
                match behaviour.fault:
                    case Fault.RESET_MID_BODY:
                        yield RESET
                        return
                    case Fault.TRUNCATED:
                        yield frame[: len(frame) // 2]  # then a clean end of the body
                        return
                    case Fault.STREAM_ERROR_EVENT:
                        yield _stream_exception(behaviour.error_status)
                        return
                    case Fault.BAD_CRC:
                        frame = frame[:-4] + struct.pack(">I", ~zlib.crc32(frame[:-4]) & 0xFFFFFFFF)
                    case Fault.INVALID_JSON:
                        frame = encode_event("contentBlockDelta", b'{"contentBlockIndex":0,"del')
                    case Fault.OVERSIZED_BODY:
                        yield from _oversized_frame()
                        return
            yield frame
        yield frames.event("contentBlockStop", {"contentBlockIndex": 0})
        yield frames.event("messageStop", {"stopReason": stop_reason})
        if behaviour.fault is not Fault.NO_FINAL_USAGE:
            metadata = {
                "metrics": {"latencyMs": 120 + self.sequence % 50},
                "usage": _usage(prompt_tokens, len(pieces)),
            }
            yield frames.event("metadata", metadata)

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


# -- request checks and canonical form ------------------------------------------------------------


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


_NULL_MESSAGES = (
    "1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
    "Member must not be null"
)
_FIRST_NOT_USER = (
    "A conversation must start with a user message. Try again with a conversation that starts "
    "with a user message."
)
_NOT_ALTERNATING = (
    "A conversation must alternate between user and assistant roles. Make sure the conversation "
    "alternates between user and assistant roles and try again."
)


def _converse_problem(body: dict[str, Any]) -> str | None:
    """The ValidationException message Bedrock gives for ``body``, or None when it is valid."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _NULL_MESSAGES
    expected = "user"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return f"Malformed message at messages.{index}."
        if message.get("role") != expected:
            return _FIRST_NOT_USER if index == 0 else _NOT_ALTERNATING
        for position, block in enumerate(message["content"]):
            if isinstance(block, dict) and "text" in block and not str(block["text"]).strip():
                return (
                    f"The text field in the ContentBlock object at messages.{index}.content."
                    f"{position} is blank. Add text to the text field, and try again."
                )
        expected = "assistant" if expected == "user" else "user"
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return (
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' "
            "failed to satisfy constraint: Member must have value greater than or equal to 1"
        )
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        names = [tool.get("toolSpec", {}).get("name") for tool in tool_config.get("tools") or ()]
        chosen = (tool_config.get("toolChoice") or {}).get("tool", {}).get("name")
        if not names or (chosen is not None and chosen not in names):
            return "toolConfig.toolChoice.tool.name must name a tool in toolConfig.tools."
    return None


def _forced_tool_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    tool_config = body.get("toolConfig") or {}
    chosen = (tool_config.get("toolChoice") or {}).get("tool", {}).get("name")
    for tool in tool_config.get("tools") or ():
        spec = tool.get("toolSpec", {})
        if chosen is not None and spec.get("name") == chosen:
            schema = spec.get("inputSchema", {}).get("json", {})
            return schema if isinstance(schema, dict) else {}
    return None


# -- encoding helpers --------------------------------------------------------------------------


class _Frames:
    """Event frames of one stream, each with a ``p`` padding field of varying length."""

    def __init__(self) -> None:
        self.count = 0

    def event(self, event_type: str, payload: dict[str, Any]) -> bytes:
        self.count += 1
        padded = {**payload, "p": _PADDING[: 1 + (self.count * 7) % len(_PADDING)]}
        return encode_event(event_type, json.dumps(padded, separators=(",", ":")).encode())


def _stream_exception(status: int) -> bytes:
    name = _STREAM_EXCEPTIONS.get(status, "modelStreamErrorException")
    payload: dict[str, Any] = {"message": _HTTP_ERRORS.get(status, ("", "Model stream error."))[1]}
    if name == "modelStreamErrorException":
        payload.update(originalStatusCode=500, originalMessage="The model stopped unexpectedly.")
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event_stream_message(headers, json.dumps(payload, separators=(",", ":")).encode())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "inputTokens": prompt_tokens,
        "outputTokens": completion_tokens,
        "totalTokens": prompt_tokens + completion_tokens,
    }


def _oversized_json() -> Iterator[BodyItem]:
    block = b" " * (1 << 20)
    yield b'{"padding": "'
    for _ in range(40):
        yield block
    yield b'"}'


def _oversized_frame() -> Iterator[BodyItem]:
    """A well-formed 25 MiB event: larger than botocore (24 MiB) or our decoder accept."""
    headers = encode_event("contentBlockDelta", b"")[12:-4]  # the encoded headers alone
    block = b"x" * (1 << 20)
    total = 16 + len(headers) + 25 * len(block)
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    crc = zlib.crc32(prelude + headers)
    yield prelude + headers
    for _ in range(25):
        crc = zlib.crc32(block, crc)
        yield block
    yield struct.pack(">I", crc)
