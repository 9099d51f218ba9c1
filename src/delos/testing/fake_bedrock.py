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
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

import anyio

from delos.runtime.wire import encode_event, encode_event_stream_message
from delos.testing._agent import (
    planned_tool_calls,
    sign,
    signature_valid,
    thought_about,
    tool_reply,
)
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler
from delos.testing._server import Pause as _Pause
from delos.testing._server import ScriptedBody as _Script
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
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_GEO_PREFIXES = ("us.", "eu.", "apac.", "global.")
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


#: Anthropic's test string: a prompt holding it gets its thinking redacted.
REDACTED_THINKING_TRIGGER: Final = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
_REDACTED_PREFIX: Final = b"delos-redacted-thinking\0"
#: What the fake tokenizer counts an image as.
_IMAGE_TOKENS: Final = 85


@dataclass
class _Answer:
    """One answer: thinking, text pieces (one token each), tool calls, stop reason, usage."""

    thought: str | None = None
    redacted: bool = False
    pieces: list[str] = field(default_factory=list)
    #: (toolUseId, name, input as JSON text), in order.
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=dict)


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
        problem = _converse_problem(base, body)
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

    def _answer(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> _Answer:
        """What the model says to ``body``, as :mod:`delos.testing._agent` plans it."""
        last = body["messages"][-1]["content"]
        user_text = " ".join(str(block["text"]) for block in last if "text" in block)
        results = [block["toolResult"] for block in last if "toolResult" in block]
        answer = _Answer()
        if _thinking_budget(body) is not None and not results:
            answer.thought = thought_about(user_text)
            answer.redacted = REDACTED_THINKING_TRIGGER in user_text
        tools = _declared_tools(body)
        if results:
            reply = tool_reply([_result_text(result) for result in results])
            answer.pieces = _spaced(reply.split(" "))
        elif tools:
            choice = _tool_choice(body)
            for index, call in enumerate(planned_tool_calls(tools, user_text, tool_choice=choice)):
                arguments = call.arguments_json
                if behaviour.fault is Fault.NONCONFORMING_JSON and choice == call.name:
                    arguments = '{"unexpected":true}'
                answer.calls.append((self._tool_id(index), call.name, arguments))
            answer.stop_reason = "tool_use"
        else:
            answer.pieces, answer.stop_reason = self._reply(body, behaviour, user_text)
        prompt, read, written = self._prompt_tokens(model, body)
        completion = len(answer.pieces) + sum(len(_fragments(a)) for _, _, a in answer.calls)
        if answer.thought is not None:
            completion += count_tokens([answer.thought])
        answer.usage = {
            "inputTokens": prompt - read - written,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        }
        if _has_cache_points(body):
            answer.usage.update(cacheReadInputTokens=read, cacheWriteInputTokens=written)
        return answer

    def _reply(
        self, body: dict[str, Any], behaviour: Behaviour, user_text: str
    ) -> tuple[list[str], str]:
        """A text answer's pieces (one token each) and its stop reason."""
        config = body.get("inferenceConfig") or {}
        limit = config.get("maxTokens")
        stop_reason = "end_turn"
        if behaviour.reply is not None:
            words = behaviour.reply.split(" ")
        else:
            count = behaviour.completion_tokens
            if limit is not None and count > limit:
                count, stop_reason = limit, "max_tokens"
            words = reply_words(user_text, count)
        for index, word in enumerate(words):
            if any(stop in word for stop in config.get("stopSequences") or ()):
                words, stop_reason = words[:index], "stop_sequence"
                break
        return _spaced(words), stop_reason

    def _prompt_tokens(self, model: str, body: dict[str, Any]) -> tuple[int, int, int]:
        """The prompt's tokens, and those read from and written to the fake's prompt cache.

        The prompt is tools, then system, then messages. Each ``cachePoint`` marks a prefix;
        the longest prefix cached before is read, and the prefix up to the last point, when
        new, is written (the part of it not read). Every marked prefix is cached from then on.
        Unlike Bedrock, the fake caches prefixes of any length.
        """
        digest = hashlib.sha256(model.encode())
        total = 0
        points: list[tuple[str, int]] = []
        tools = (body.get("toolConfig") or {}).get("tools") or ()
        sections = [("tools", tools), ("system", body.get("system") or ())]
        sections += [(m["role"], m["content"]) for m in body["messages"]]
        for label, blocks in sections:
            digest.update(f"\0{label}\0".encode())
            for block in blocks:
                if "cachePoint" in block:
                    points.append((digest.hexdigest(), total))
                    continue
                digest.update(json.dumps(block, sort_keys=True).encode())
                total += _block_tokens(block)
        if not points:
            return total, 0, 0
        read = max((tokens for key, tokens in points if key in self.cache), default=0)
        last_key, last_tokens = points[-1]
        written = 0 if last_key in self.cache else last_tokens - read
        self.cache.update(key for key, _ in points)
        return total, read, written

    def _converse(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        answer = self._answer(model, body, behaviour)
        content: list[dict[str, Any]] = []
        if answer.thought is not None:
            content.append({"reasoningContent": _reasoning(answer.thought, answer.redacted)})
        if answer.pieces or not answer.calls:
            content.append({"text": "".join(answer.pieces)})
        for call_id, name, arguments in answer.calls:
            tool = {"input": json.loads(arguments), "name": name, "toolUseId": call_id}
            content.append({"toolUse": tool})
        payload: dict[str, Any] = {
            "metrics": {"latencyMs": 120 + self.sequence % 50},
            "output": {"message": {"content": content, "role": "assistant"}},
            "stopReason": answer.stop_reason,
            "usage": answer.usage,
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

    def _tool_id(self, index: int) -> str:
        return f"tooluse_{self.sequence:016d}{index:06d}"

    def _stream(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        answer = self._answer(model, body, behaviour)
        return FakeResponse(
            200, self._headers(_EVENT_STREAM), _Script(self._events(answer, behaviour))
        )

    def _events(self, answer: _Answer, behaviour: Behaviour) -> Iterator[BodyItem | _Pause]:
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            yield _Pause(math.inf)
        yield _Pause(behaviour.time_to_first_token.draw(self.control.rng))
        frames = _Frames()
        yield frames.event("messageStart", {"role": "assistant"})
        interval = behaviour.token_interval
        fault_at = 0 if behaviour.fault is Fault.OVERSIZED_BODY else behaviour.tokens_before_fault
        deltas = 0
        for event_type, payload in _block_events(answer):
            if event_type != "contentBlockDelta":
                yield frames.event(event_type, payload)
                continue
            deltas += 1
            if deltas > 1 and interval:
                yield _Pause(interval)
            frame = frames.event(event_type, payload)
            if deltas - 1 == fault_at:
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
        yield frames.event("messageStop", {"stopReason": answer.stop_reason})
        if behaviour.fault is not Fault.NO_FINAL_USAGE:
            metadata = {"metrics": {"latencyMs": 120 + self.sequence % 50}, "usage": answer.usage}
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
_NEEDS_TOOL_CONFIG = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)
_BAD_DOCUMENT_NAME = (
    "The document file name can only contain alphanumeric characters, whitespace characters, "
    "hyphens, parentheses, and square brackets. The name can't contain more than one "
    "consecutive whitespace character. Check that the file name conforms to these restrictions "
    "and retry your request."
)
#: Errors Claude itself raises, which Bedrock passes on behind this prefix.
_MODEL_SAYS = "The model returned the following errors: "
_THINKING_DOCS = (
    "Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "toolUse", "toolResult", "reasoningContent", "cachePoint"}
)
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_DOCUMENT_FORMATS = frozenset({"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"})
#: Bedrock's rule for document names; underscores pass too (observed, though not documented).
_DOCUMENT_NAME = re.compile(r"(?!.* {2})[A-Za-z0-9_ ()\[\]-]{1,200}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Claude generations with extended thinking.
_THINKING_MODEL = re.compile(r"anthropic\.claude-(3-7-|(sonnet|opus|haiku)-[4-9])")
_ANTHROPIC_TYPES = {"text": "text", "toolUse": "tool_use", "image": "image", "document": "document"}


def _converse_problem(model: str, body: dict[str, Any]) -> str | None:
    """The ValidationException message Bedrock gives for ``body``, or None when it is valid."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _NULL_MESSAGES
    expected = "user"
    uses: list[str] = []  # the toolUse ids of the previous (assistant) message
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return f"Malformed message at messages.{index}."
        if message.get("role") != expected:
            return _FIRST_NOT_USER if index == 0 else _NOT_ALTERNATING
        problem = _content_problem(model, index, message) or _pairing_problem(index, message, uses)
        if problem is not None:
            return problem
        uses = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        expected = "assistant" if expected == "user" else "user"
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return (
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' "
            "failed to satisfy constraint: Member must have value greater than or equal to 1"
        )
    if _has_cache_points(body) and not _caches(model):
        return f"{_MODEL_SAYS}cachePoint: this model does not support prompt caching"
    return _tool_config_problem(body) or _thinking_problem(model, body)


def _content_problem(model: str, index: int, message: dict[str, Any]) -> str | None:
    role = message["role"]
    content = message["content"]
    for position, block in enumerate(content):
        at = f"messages.{index}.content.{position}"
        if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_TYPES:
            return f"The content block at {at} is not a supported content block."
        kind, value = next(iter(block.items()))
        if kind == "text" and not str(value).strip():
            return (
                f"The text field in the ContentBlock object at {at} is blank. Add text to the "
                "text field, and try again."
            )
        if kind in ("image", "document", "toolResult") and role != "user":
            return f"The {kind} block at {at} is only allowed in a user message."
        if kind in ("toolUse", "reasoningContent") and role != "assistant":
            return f"The {kind} block at {at} is only allowed in an assistant message."
        problem = _block_problem(kind, value, at)
        if problem is not None:
            return problem
    if any("document" in b for b in content) and not any("text" in b for b in content):
        return (
            f"The message at messages.{index} has a document but no text. Add a text block "
            "to a message with a document, and try again."
        )
    return None


def _block_problem(kind: str, value: Any, at: str) -> str | None:
    if kind == "image":
        if value.get("format") not in _IMAGE_FORMATS or not _bytes_valid(value):
            return f"The image at {at} is malformed: check its format and bytes."
    elif kind == "document":
        if not _DOCUMENT_NAME.fullmatch(str(value.get("name", ""))):
            return _BAD_DOCUMENT_NAME
        if value.get("format") not in _DOCUMENT_FORMATS or not _bytes_valid(value):
            return f"The document at {at} is malformed: check its format and bytes."
    elif kind == "toolUse":
        if not _TOOL_USE_ID.fullmatch(str(value.get("toolUseId", ""))):
            return f"The toolUseId at {at}.toolUse is malformed."
        if not isinstance(value.get("input"), dict):
            return f"The format of the value at {at}.toolUse.input is invalid."
    elif kind == "toolResult":
        for number, item in enumerate(value.get("content") or ()):
            if "json" in item and not isinstance(item["json"], dict):
                return (
                    f"The format of the value at {at}.toolResult.content.{number}.json is "
                    "invalid. Provide a json object for the field and try again."
                )
    elif kind == "reasoningContent":
        return _reasoning_problem(value, at)
    elif kind == "cachePoint" and value.get("type") != "default":
        return f"The value at {at}.cachePoint.type must be one of the following: default."
    return None


def _reasoning_problem(value: dict[str, Any], at: str) -> str | None:
    """Thinking sent back must be the fake's own, unchanged (its signature checks)."""
    if "redactedContent" in value:
        if not _sealed_valid(str(value["redactedContent"])):
            return f"{_MODEL_SAYS}{at}: Invalid `data` in `redacted_thinking` block"
        return None
    reasoning = value.get("reasoningText") or {}
    if "signature" not in reasoning:
        return f"{_MODEL_SAYS}{at}.thinking.signature: Field required"
    if not signature_valid(str(reasoning.get("text", "")), str(reasoning["signature"])):
        return f"{_MODEL_SAYS}{at}: Invalid `signature` in `thinking` block"
    return None


def _pairing_problem(index: int, message: dict[str, Any], uses: Sequence[str]) -> str | None:
    """Every toolUse of the previous message answered here, and nothing else."""
    results = [b["toolResult"].get("toolUseId") for b in message["content"] if "toolResult" in b]
    for position, result in enumerate(results):
        if result not in uses:
            return (
                f"{_MODEL_SAYS}messages.{index}.content.{position}: unexpected `tool_use_id` "
                f"found in `tool_result` blocks: {result}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
    if len(results) > len(uses):
        return (
            f"The number of toolResult blocks at messages.{index}.content exceeds the number of "
            "toolUse blocks of previous turn."
        )
    missing = [use for use in uses if use not in results]
    if missing:
        return (
            f"Expected toolResult blocks at messages.{index}.content for the following Ids: "
            + ", ".join(missing)
        )
    return None


def _tool_config_problem(body: dict[str, Any]) -> str | None:
    tool_config = body.get("toolConfig")
    if tool_config is None:
        blocks = (b for m in body["messages"] for b in m["content"])
        if any("toolUse" in b or "toolResult" in b for b in blocks):
            return _NEEDS_TOOL_CONFIG
        return None
    tools = tool_config.get("tools") or ()
    names = []
    for number, tool in enumerate(tools):
        spec = tool.get("toolSpec")
        if spec is None:
            continue
        names.append(spec.get("name"))
        if not _TOOL_NAME.fullmatch(str(spec.get("name", ""))):
            return f"The value at toolConfig.tools.{number}.toolSpec.name is malformed."
        schema = (spec.get("inputSchema") or {}).get("json")
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            return (
                f"The value at toolConfig.tools.{number}.toolSpec.inputSchema.json.type must be "
                "one of the following: object."
            )
    chosen = (tool_config.get("toolChoice") or {}).get("tool", {}).get("name")
    if not names or (chosen is not None and chosen not in names):
        return "toolConfig.toolChoice.tool.name must name a tool in toolConfig.tools."
    return None


def _thinking_problem(model: str, body: dict[str, Any]) -> str | None:
    """Claude's own checks of a request that thinks."""
    fields = body.get("additionalModelRequestFields") or {}
    if "thinking" not in fields:
        return None
    if not _THINKING_MODEL.search(model):
        return f"{_MODEL_SAYS}thinking: Extra inputs are not permitted"
    budget = _thinking_budget(body)
    if budget is None:
        return None
    if budget < 1024:
        return (
            f"{_MODEL_SAYS}thinking.enabled.budget_tokens: Input should be greater than or "
            "equal to 1024"
        )
    config = body.get("inferenceConfig") or {}
    if config.get("maxTokens") is not None and config["maxTokens"] <= budget:
        return (
            f"{_MODEL_SAYS}`max_tokens` must be greater than `thinking.budget_tokens`. "
            + _THINKING_DOCS
        )
    if config.get("temperature") not in (None, 1):
        return f"{_MODEL_SAYS}`temperature` may only be set to 1 when thinking is enabled. " + (
            _THINKING_DOCS
        )
    if config.get("topP") is not None and config["topP"] < 0.95:
        return (
            f"{_MODEL_SAYS}`top_p` must be greater than or equal to 0.95 or unset when "
            "thinking is enabled. " + _THINKING_DOCS
        )
    if _tool_choice(body) not in ("", "auto"):
        return f"{_MODEL_SAYS}Thinking may not be enabled when tool_choice forces tool use."
    messages = body["messages"]
    if len(messages) >= 2 and any("toolResult" in b for b in messages[-1]["content"]):
        first = next(iter(messages[-2]["content"][0]), "")
        if first != "reasoningContent":
            return (
                f"{_MODEL_SAYS}messages.{len(messages) - 2}.content.0.type: Expected `thinking` "
                f"or `redacted_thinking`, but found `{_ANTHROPIC_TYPES.get(first, first)}`. "
                "When `thinking` is enabled, a final `assistant` message must start with a "
                "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
                "blocks). We recommend you include thinking blocks from previous turns. To "
                "avoid this requirement, disable `thinking`. " + _THINKING_DOCS
            )
    return None


def _bytes_valid(value: dict[str, Any]) -> bool:
    data = (value.get("source") or {}).get("bytes")
    try:
        return isinstance(data, str) and len(base64.b64decode(data, validate=True)) > 0
    except ValueError:
        return False


def _caches(model: str) -> bool:
    return "anthropic.claude" in model or "amazon.nova" in model


def _has_cache_points(body: dict[str, Any]) -> bool:
    tools = (body.get("toolConfig") or {}).get("tools") or ()
    blocks = [*tools, *(body.get("system") or ())]
    blocks += [b for m in body["messages"] for b in m["content"]]
    return any("cachePoint" in block for block in blocks)


def _declared_tools(body: dict[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    tools = (body.get("toolConfig") or {}).get("tools") or ()
    specs = [tool["toolSpec"] for tool in tools if "toolSpec" in tool]
    return [(spec["name"], spec["inputSchema"]["json"]) for spec in specs]


def _tool_choice(body: dict[str, Any]) -> str:
    """``toolChoice`` as :func:`planned_tool_calls` takes it ("" for auto)."""
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    if "any" in choice:
        return "required"
    return str(choice["tool"]["name"]) if "tool" in choice else ""


def _thinking_budget(body: dict[str, Any]) -> int | None:
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    return budget if isinstance(budget, int) else 0


def _result_text(result: dict[str, Any]) -> str:
    texts = []
    for item in result.get("content") or ():
        if "text" in item:
            texts.append(str(item["text"]))
        elif "json" in item:
            texts.append(json.dumps(item["json"], ensure_ascii=False, separators=(",", ":")))
    return "".join(texts)


def _block_tokens(block: dict[str, Any]) -> int:
    """The fake tokenizer's count for one content, system or tool block."""
    kind, value = next(iter(block.items()))
    if kind == "text":
        return count_tokens([str(value)])
    if kind == "toolSpec":
        schema = json.dumps(value.get("inputSchema", {}))
        return count_tokens([value.get("name", ""), value.get("description", ""), schema])
    if kind == "toolUse":
        return count_tokens([value.get("name", ""), json.dumps(value.get("input"))])
    if kind == "toolResult":
        return sum(_block_tokens(item) for item in value.get("content") or ()) or 1
    if kind == "json":
        return count_tokens([json.dumps(value)])
    if kind == "image":
        return _IMAGE_TOKENS
    if kind == "document":
        data = base64.b64decode((value.get("source") or {}).get("bytes") or "")
        words = data.decode(errors="replace") if value.get("format") == "txt" else ""
        return count_tokens([str(value.get("name", "")), words]) + len(data) // 64
    if kind == "reasoningContent":
        return count_tokens([str((value.get("reasoningText") or {}).get("text", ""))])
    return 0


def _spaced(words: Sequence[str]) -> list[str]:
    """Words as streamed pieces: each but the first after its space."""
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


def _fragments(arguments: str) -> list[str]:
    """A tool call's input as ConverseStream sends it: pieces of 8 characters."""
    return [arguments[i : i + 8] for i in range(0, len(arguments), 8)] or [""]


def _reasoning(thought: str, redacted: bool) -> dict[str, Any]:
    if redacted:
        return {"redactedContent": _seal(thought)}
    return {"reasoningText": {"signature": sign(thought), "text": thought}}


def _seal(thought: str) -> str:
    """Redacted thinking as Bedrock's JSON carries a blob (base64): bytes only the fake reads."""
    raw = _REDACTED_PREFIX + sign(thought).encode() + b"\0" + thought.encode()
    return base64.b64encode(raw).decode()


def _sealed_valid(data: str) -> bool:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return False
    if not raw.startswith(_REDACTED_PREFIX):
        return False
    signature, _, thought = raw[len(_REDACTED_PREFIX) :].partition(b"\0")
    return signature_valid(thought.decode(errors="replace"), signature.decode(errors="replace"))


def _block_events(answer: _Answer) -> Iterator[tuple[str, dict[str, Any]]]:
    """The content-block events of ``answer``: thinking, text, then each tool call."""
    index = 0

    def delta(value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "contentBlockDelta", {"contentBlockIndex": index, "delta": value}

    if answer.thought is not None:
        if answer.redacted:
            yield delta({"reasoningContent": {"redactedContent": _seal(answer.thought)}})
        else:
            for piece in _spaced(answer.thought.split(" ")):
                yield delta({"reasoningContent": {"text": piece}})
            yield delta({"reasoningContent": {"signature": sign(answer.thought)}})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1
    if answer.pieces or not answer.calls:
        for piece in answer.pieces:
            yield delta({"text": piece})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1
    for call_id, name, arguments in answer.calls:
        start = {"toolUse": {"name": name, "toolUseId": call_id}}
        yield "contentBlockStart", {"contentBlockIndex": index, "start": start}
        for fragment in _fragments(arguments):
            yield delta({"toolUse": {"input": fragment}})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1


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
