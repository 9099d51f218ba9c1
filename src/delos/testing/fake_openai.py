"""A fake of the OpenAI API and of the OpenAI-compatible APIs of Together AI and OpenRouter.

Byte-level fidelity: the chat completion and chunk objects, ``data: [DONE]``, usage in streams
(``stream_options.include_usage`` for OpenAI; on the finishing chunk for Together; always, in a last
chunk, for OpenRouter, which also sends ``: OPENROUTER PROCESSING`` comment lines), embeddings as
float lists or base64 float32, each flavour's model list and error envelope, and rate-limit headers.

Agent conversations behave as :mod:`delos.testing._agent` says, in each flavour's native form:

- tool calls: ``message.tool_calls`` (``content`` null) and finish reason ``tool_calls``; streamed
  as OpenAI does (a call's first fragment carries ``index``, ``id``, ``type``, ``function.name`` and
  empty ``arguments``, later ones ``index`` and an ``arguments`` piece; OpenAI puts the first call
  in the chunk that opens the answer). Together sends each call whole, every call of the answer in
  one chunk (a shape the adapter must split; not observed on the real API);
- thinking: OpenAI reports ``completion_tokens_details.reasoning_tokens`` when sent
  ``reasoning_effort`` and never returns the text; Together returns ``reasoning`` text (no token
  detail in its usage); OpenRouter returns ``reasoning`` and ``reasoning_details`` (a
  ``reasoning.text`` block, signed for Anthropic models, its signature streamed in a last
  fragment) and the reasoning token count;
- caching: a prompt that repeats a prefix of at least 1024 tokens of an earlier prompt to the same
  model reads it (``prompt_tokens_details.cached_tokens``, 1024 plus whole 128-token blocks), as
  OpenAI's and OpenRouter's automatic caching do; on OpenRouter's Anthropic models only
  ``cache_control`` marks cache: the first request writes the marked prefix
  (``cache_write_tokens``), the next identical one reads it. Together reports no cache.

Requests are validated as the real APIs do where that is cheap (400 with the provider's error
envelope): tool and tool_choice shapes, a tool message answering no earlier call, calls left
unanswered, unknown content part types and bad image or file data, OpenAI's unknown parameters,
each flavour's reasoning values, ``cache_control`` shapes and count, and OpenRouter thinking sent
back with a bad or missing signature. The fakes' tokenizer: a text counts its words, an image or a
file 85 tokens.

This module is the server: paths, authentication, faults, errors, headers, model lists and
embeddings. The request checks and the prompt-cache accounting live in
:mod:`delos.testing._openai_checks`, the model's answer and how each flavour writes it (whole or
streamed) in :mod:`delos.testing._openai_answer`.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens
from delos.testing._openai_answer import Turn, completion, plan_turn, stream_events
from delos.testing._openai_checks import Invalid, PromptCache, check_request, prompt_units
from delos.testing._openai_flavour import OpenAIFlavour
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse

__all__ = ["OpenAIFlavour", "embedding_of", "fake_openai_handler"]


_MODELS: dict[OpenAIFlavour, tuple[str, ...]] = {
    OpenAIFlavour.OPENAI: (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4-turbo",
        "gpt-4",
        "gpt-3.5-turbo",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o4-mini",
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
        "openai/gpt-oss-120b",
        "mistralai/Mixtral-8x22B-Instruct-v0.1",
        "togethercomputer/m2-bert-80M-8k-retrieval",
        "BAAI/bge-large-en-v1.5",
    ),
    OpenAIFlavour.OPENROUTER: (
        "anthropic/claude-3.5-sonnet",
        "anthropic/claude-sonnet-4.5",
        "anthropic/claude-haiku-4.5",
        "openai/gpt-4o",
        "openai/gpt-5",
        "google/gemini-pro-1.5",
        "google/gemini-2.5-pro",
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
        # The prompts seen so far, for cache reads and writes.
        self.cache = PromptCache(flavour)

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
        try:
            check_request(self.flavour, body)
        except Invalid as problem:
            return self._error(400, str(problem))
        self.sequence += 1
        units = prompt_units(body["messages"])
        turn = plan_turn(
            body,
            behaviour,
            self.flavour,
            sequence=self.sequence,
            prompt_tokens=sum(unit.tokens for unit in units),
            cache=self.cache.usage(body["model"], units),
        )
        if body.get("stream"):
            return self._stream(body, behaviour, turn)
        return self._completion(body, behaviour, turn)

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

    # -- answers ------------------------------------------------------------------------------

    def _completion(self, body: dict[str, Any], behaviour: Behaviour, turn: Turn) -> FakeResponse:
        payload = completion(body, turn, self.flavour, sequence=self.sequence)
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

    def _stream(self, body: dict[str, Any], behaviour: Behaviour, turn: Turn) -> FakeResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.flavour is not OpenAIFlavour.OPENAI:
            include_usage = True
        headers = self._headers("text/event-stream; charset=utf-8")
        headers.append(("cache-control", "no-cache"))
        events = stream_events(
            body,
            behaviour,
            turn,
            self.flavour,
            sequence=self.sequence,
            rng=self.control.rng,
            include_usage=include_usage,
        )
        return FakeResponse(200, headers, events)

    # -- embeddings ---------------------------------------------------------------------------

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
