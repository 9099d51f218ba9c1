"""A fake of the OpenAI API and of the OpenAI-compatible APIs of Together AI and OpenRouter.

Byte-level fidelity: the chat completion and chunk objects, ``data: [DONE]``, usage in streams
(``stream_options.include_usage`` for OpenAI; on the finishing chunk for Together; always, in a last
chunk, for OpenRouter, which also sends ``: OPENROUTER PROCESSING`` comment lines), embeddings as
float lists or base64 float32, each flavour's model list and error envelope, and rate-limit headers.
"""

from __future__ import annotations

import base64
import enum
import json
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from delos.runtime.wire import encode_sse, encode_sse_comment
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse

__all__ = ["OpenAIFlavour", "fake_openai_handler"]


class OpenAIFlavour(enum.Enum):
    OPENAI = "openai"
    TOGETHER = "together"
    OPENROUTER = "openrouter"

    @property
    def prefix(self) -> str:
        """The path of the base URL on the fake (the adapter's base URL ends with it)."""
        return "/api/v1" if self is OpenAIFlavour.OPENROUTER else "/v1"


_MODELS: dict[OpenAIFlavour, tuple[str, ...]] = {
    OpenAIFlavour.OPENAI: (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4-turbo",
        "gpt-4",
        "gpt-3.5-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
    ),
    OpenAIFlavour.TOGETHER: (
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
        "deepseek-ai/DeepSeek-V3",
        "deepseek-ai/DeepSeek-R1",
        "mistralai/Mixtral-8x22B-Instruct-v0.1",
        "togethercomputer/m2-bert-80M-8k-retrieval",
        "BAAI/bge-large-en-v1.5",
    ),
    OpenAIFlavour.OPENROUTER: (
        "anthropic/claude-3.5-sonnet",
        "openai/gpt-4o",
        "google/gemini-pro-1.5",
        "meta-llama/llama-3.1-405b-instruct",
        "mistralai/mistral-large",
        "deepseek/deepseek-chat",
    ),
}

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
    504: ("server_error", None),
}
_EMBEDDING_DIMENSIONS = 8
# The stream's last event: a literal data line, not JSON.
_DONE = encode_sse("[DONE]")


def fake_openai_handler(
    control: FakeControl,
    flavour: OpenAIFlavour = OpenAIFlavour.OPENAI,
    *,
    api_key: str | None = None,
) -> Any:
    """A handler for :func:`~delos.testing.open_fake_server`; ``api_key`` None accepts any key."""
    fake = _FakeOpenAI(control, flavour, api_key)
    return fake.handle


class _FakeOpenAI:
    def __init__(self, control: FakeControl, flavour: OpenAIFlavour, api_key: str | None) -> None:
        self.control = control
        self.flavour = flavour
        self.api_key = api_key
        self.sequence = 0

    async def handle(self, request: FakeRequest) -> FakeResponse:
        behaviour = self.control.next_behaviour()
        prefix = self.flavour.prefix
        path = request.path.removeprefix(prefix)
        if not request.path.startswith(prefix + "/"):
            return self._error(404, f"Unknown request URL: {request.method} {request.path}")
        authorization = request.header("authorization", "") or ""
        if not authorization.startswith("Bearer ") or (
            self.api_key is not None and authorization != f"Bearer {self.api_key}"
        ):
            return self._error(401, "Incorrect API key provided.")
        if request.method == "GET" and path == "/models":
            return self._models()
        if request.method != "POST" or path not in ("/chat/completions", "/embeddings"):
            return self._error(404, f"Unknown request URL: {request.method} {request.path}")
        try:
            body = request.json()
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        early = await self._before_headers(behaviour, streaming=bool(body.get("stream")))
        if early is not None:
            return early
        model = body.get("model")
        if model not in _MODELS[self.flavour]:
            return self._error(
                404, f"The model `{model}` does not exist or you do not have access."
            )
        if path == "/embeddings":
            return self._embeddings(body, behaviour)
        if body.get("stream"):
            return self._stream(body, behaviour)
        return self._completion(body, behaviour)

    # -- responses ----------------------------------------------------------------------------

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
                return self._error(
                    behaviour.error_status,
                    _status_message(behaviour.error_status),
                    retry_after=behaviour.retry_after,
                )
            case Fault.INVALID_JSON if not streaming:
                return FakeResponse(200, [("content-type", "application/json")], b'{"id": "chatc')
            case Fault.WRONG_CONTENT_TYPE:
                return FakeResponse(
                    200, [("content-type", "text/html")], b"<html>Bad gateway</html>"
                )
            case Fault.OVERSIZED_BODY:
                return FakeResponse(200, [("content-type", "application/json")], _oversized())
        return None

    def _headers(self, content_type: str) -> list[tuple[str, str]]:
        headers = [("content-type", content_type)]
        if self.flavour is OpenAIFlavour.OPENAI:
            headers += [
                ("x-request-id", f"req_{self.sequence:08d}"),
                ("openai-processing-ms", "1"),
                ("x-ratelimit-limit-requests", "10000"),
                ("x-ratelimit-limit-tokens", "30000000"),
                ("x-ratelimit-remaining-requests", "9999"),
                ("x-ratelimit-remaining-tokens", "29999990"),
                ("x-ratelimit-reset-requests", "6ms"),
                ("x-ratelimit-reset-tokens", "0s"),
            ]
        elif self.flavour is OpenAIFlavour.TOGETHER:
            headers += [
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "99"),
                ("x-ratelimit-reset", "1"),
            ]
        else:
            headers.append(("x-generation-id", f"gen-{self.sequence:08d}"))
        return headers

    def _error(
        self, status: int, message: str, *, retry_after: float | str | None = None
    ) -> FakeResponse:
        error_type, code = _ERROR_TYPES.get(status, ("server_error", None))
        error: dict[str, Any]
        if self.flavour is OpenAIFlavour.OPENROUTER:
            error = {"code": status, "message": message, "metadata": {}}
        else:
            error = {"message": message, "type": error_type, "param": None, "code": code}
        headers = [("content-type", "application/json")]
        if retry_after is not None:
            headers.append(("retry-after", str(retry_after)))
        return FakeResponse.json({"error": error}, status, headers[1:])

    def _models(self) -> FakeResponse:
        created = 1_700_000_000
        if self.flavour is OpenAIFlavour.TOGETHER:
            entries = [
                {
                    "id": m,
                    "object": "model",
                    "created": created,
                    "type": "embedding" if "bert" in m or "bge" in m else "chat",
                    "display_name": m.split("/")[-1],
                    "organization": m.split("/")[0],
                    "context_length": 131072,
                    "pricing": {"input": 0.88, "output": 0.88},
                }
                for m in _MODELS[self.flavour]
            ]
            return FakeResponse.json(entries)
        if self.flavour is OpenAIFlavour.OPENROUTER:
            data = [
                {
                    "id": m,
                    "name": m,
                    "created": created,
                    "context_length": 128000,
                    "pricing": {"prompt": "0.0000025", "completion": "0.00001"},
                }
                for m in _MODELS[self.flavour]
            ]
            return FakeResponse.json({"data": data})
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "system"}
            for m in _MODELS[self.flavour]
        ]
        return FakeResponse.json({"object": "list", "data": data})

    def _answer(self, body: dict[str, Any], behaviour: Behaviour) -> tuple[list[str], int]:
        messages = body.get("messages") or []
        texts = [str(m.get("content", "")) for m in messages]
        prompt_tokens = count_tokens(texts)
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema", {})
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(schema)
            )
            text = json.dumps(value)
            return [text[i : i + 8] for i in range(0, len(text), 8)], prompt_tokens
        if behaviour.reply is not None:
            words = behaviour.reply.split(" ")
            return [w if i == 0 else " " + w for i, w in enumerate(words)], prompt_tokens
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        count = min(behaviour.completion_tokens, limit) if limit else behaviour.completion_tokens
        words = reply_words(texts[-1] if texts else "", count)
        return [w if i == 0 else " " + w for i, w in enumerate(words)], prompt_tokens

    def _finish_reason(self, body: dict[str, Any], produced: int, behaviour: Behaviour) -> str:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and behaviour.reply is None and behaviour.completion_tokens > limit:
            return "length"
        return "eos" if self.flavour is OpenAIFlavour.TOGETHER and produced % 2 else "stop"

    def _completion(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        self.sequence += 1
        pieces, prompt_tokens = self._answer(body, behaviour)
        finish = self._finish_reason(body, len(pieces), behaviour)
        payload = {
            "id": f"chatcmpl-{self.sequence:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _served_model(body["model"]),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(pieces),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt_tokens, len(pieces)),
            "service_tier": "default",
            "system_fingerprint": "fp_delosfake",
        }
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usage"]
        mid_body = {Fault.TRUNCATED: HANG_UP, Fault.RESET_MID_BODY: RESET}
        if behaviour.fault in mid_body:
            encoded = json.dumps(payload).encode()
            return FakeResponse(
                200,
                self._headers("application/json"),
                _chunks([encoded[: len(encoded) // 2], mid_body[behaviour.fault]]),
            )
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            return FakeResponse(200, self._headers("application/json"), _silence())
        return FakeResponse(
            200,
            self._headers("application/json"),
            json.dumps(payload, separators=(",", ":")).encode(),
        )

    def _stream(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        self.sequence += 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.flavour is not OpenAIFlavour.OPENAI:
            include_usage = True
        headers = self._headers("text/event-stream; charset=utf-8")
        headers.append(("cache-control", "no-cache"))
        return FakeResponse(200, headers, self._events(body, behaviour, include_usage))

    async def _events(
        self, body: dict[str, Any], behaviour: Behaviour, include_usage: bool
    ) -> AsyncIterator[BodyItem]:
        rng = self.control.rng
        pieces, prompt_tokens = self._answer(body, behaviour)
        finish = self._finish_reason(body, len(pieces), behaviour)
        base = {
            "id": f"chatcmpl-{self.sequence:08d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": _served_model(body["model"]),
            "system_fingerprint": "fp_delosfake",
        }
        openai_usage = self.flavour is OpenAIFlavour.OPENAI and include_usage

        def chunk(delta: dict[str, Any], finish_reason: str | None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            payload = {**base, "choices": [choice], **extra}
            if openai_usage:
                payload.setdefault("usage", None)
            return encode_sse(json.dumps(payload, separators=(",", ":")))

        if self.flavour is OpenAIFlavour.OPENROUTER:
            yield encode_sse_comment("OPENROUTER PROCESSING")
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            await anyio.sleep_forever()
        await anyio.sleep(behaviour.time_to_first_token.draw(rng))
        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        interval = behaviour.token_interval
        mid_stream_faults = (
            Fault.RESET_MID_BODY,
            Fault.TRUNCATED,
            Fault.STREAM_ERROR_EVENT,
            Fault.INVALID_JSON,
        )
        for index, piece in enumerate(pieces):
            if behaviour.fault in mid_stream_faults and index == behaviour.tokens_before_fault:
                if behaviour.fault is Fault.RESET_MID_BODY:
                    yield RESET
                elif behaviour.fault is Fault.TRUNCATED:
                    yield b'data: {"id":"chatcmpl-trunc'
                    yield HANG_UP
                elif behaviour.fault is Fault.INVALID_JSON:
                    yield encode_sse('{"id":"chatcmpl-broken","choices":[{"delta":{"cont')
                    yield _DONE
                else:
                    yield self._stream_error()
                    yield _DONE
                return
            if index and interval:
                await anyio.sleep(interval)
            yield chunk({"content": piece}, None)
        usage = _usage(prompt_tokens, len(pieces))
        send_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
        if self.flavour is OpenAIFlavour.TOGETHER and send_usage:
            yield chunk({}, finish, usage=usage)
        else:
            yield chunk({}, finish)
        if send_usage and (openai_usage or self.flavour is OpenAIFlavour.OPENROUTER):
            payload = {**base, "choices": [], "usage": usage}
            yield encode_sse(json.dumps(payload, separators=(",", ":")))
        yield _DONE

    def _stream_error(self) -> bytes:
        if self.flavour is OpenAIFlavour.OPENROUTER:
            payload: dict[str, Any] = {
                "error": {"code": 502, "message": "Provider returned error"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        else:
            payload = {
                "error": {
                    "message": "The server had an error while processing your "
                    "request. Sorry about that!",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        return encode_sse(json.dumps(payload))

    def _embeddings(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        raw_input = body.get("input")
        texts: Sequence[str] = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
        if not texts or not all(isinstance(t, str) for t in texts):
            return self._error(400, "'input' must be a string or an array of strings")
        encoding = body.get("encoding_format", "float")
        data = []
        for index, text in enumerate(texts):
            vector = embedding_of(text, body.get("dimensions") or _EMBEDDING_DIMENSIONS)
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = count_tokens(texts)
        payload = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return FakeResponse(
            200,
            self._headers("application/json"),
            json.dumps(payload, separators=(",", ":")).encode(),
        )


def embedding_of(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-free vector for ``text``; exact in float32."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 97) / 64.0 - 0.75 for i in range(dimensions)]


def _served_model(model: str) -> str:
    # OpenAI answers with a dated snapshot name; others echo the id.
    return {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(
        model, model
    )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _status_message(status: int) -> str:
    return {
        400: "Invalid request.",
        401: "Incorrect API key provided.",
        403: "Country, region, or territory not supported.",
        404: "The model does not exist or you do not have access to it.",
        429: "Rate limit reached for requests. Please try again later.",
        500: "The server had an error while processing your request. Sorry about that!",
        502: "Bad gateway.",
        503: "The engine is currently overloaded, please try again later.",
        504: "Gateway timeout.",
    }.get(status, "Unexpected error.")


async def _chunks(items: Sequence[BodyItem]) -> AsyncIterator[BodyItem]:
    for item in items:
        yield item


async def _silence() -> AsyncIterator[BodyItem]:
    await anyio.sleep_forever()
    yield b""  # pragma: no cover - never reached


async def _oversized() -> AsyncIterator[BodyItem]:
    block = b" " * (1 << 20)
    yield b'{"padding": "'
    for _ in range(80):
        yield block
    yield b'"}'
