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
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from delos.runtime.wire import encode_sse, encode_sse_comment
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
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse

__all__ = ["OpenAIFlavour", "embedding_of", "fake_openai_handler"]


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
        "gpt-5",
        "gpt-5-mini",
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
# The stream's last event: a literal data line, not JSON.
_DONE = encode_sse("[DONE]")
_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Tokens an image or a file counts for (OpenAI's base cost of an image).
_MEDIA_TOKENS: Final = 85
#: The shortest prefix a provider caches (tokens); cached counts grow in blocks of 128 beyond it.
_CACHE_MINIMUM: Final = 1024
_CACHE_BLOCK: Final = 128
_CACHE_ENTRIES: Final = 4096
#: OpenAI: reasoning tokens per word of the fake's thought, by effort (the text is never sent).
_EFFORT_FACTOR: Final = {"none": 0, "minimal": 1, "low": 2, "medium": 4, "high": 8, "xhigh": 16}
_OPENAI_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh")
_OPENAI_REASONING_MODELS: Final = ("gpt-5", "o1", "o3", "o4")
#: OpenAI's request fields; any other is refused as OpenAI does.
_OPENAI_FIELDS: Final = frozenset(
    "model messages temperature top_p n stream stream_options stop max_tokens "
    "max_completion_tokens presence_penalty frequency_penalty logit_bias logprobs top_logprobs "
    "user response_format seed tools tool_choice parallel_tool_calls reasoning_effort store "
    "metadata modalities audio prediction service_tier verbosity web_search_options "
    "prompt_cache_key prompt_cache_retention prompt_cache_options safety_identifier "
    "function_call functions".split()
)
_PART_TYPES: Final = {
    OpenAIFlavour.OPENAI: ("text", "image_url", "input_audio", "file"),
    OpenAIFlavour.TOGETHER: ("text", "image_url", "video_url", "audio_url", "input_audio"),
    OpenAIFlavour.OPENROUTER: ("text", "image_url", "input_audio", "file"),
}
_REASONING_FORMATS: Final = {
    "anthropic/": "anthropic-claude-v1",
    "google/": "google-gemini-v1",
    "openai/": "openai-responses-v1",
}


def fake_openai_handler(
    control: FakeControl,
    flavour: OpenAIFlavour = OpenAIFlavour.OPENAI,
    *,
    api_key: str | None = None,
) -> Any:
    """A handler for :func:`~delos.testing.open_fake_server`; ``api_key`` None accepts any key."""
    fake = _FakeOpenAI(control, flavour, api_key)
    return fake.handle


class _Invalid(Exception):
    """A request the real API answers with 400 and this message."""


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of a prompt for the fake cache: its identity, tokens, and a cache_control mark."""

    key: str
    tokens: int
    marked: bool = False


@dataclass
class _Turn:
    """What the fake answers to one request."""

    pieces: list[str] = field(default_factory=list)
    calls: list[tuple[str, FakeToolCall]] = field(default_factory=list)
    thought: str = ""
    thought_signed: bool = False
    reasoning_tokens: int = 0
    prompt_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    finish: str = "stop"

    @property
    def completion_tokens(self) -> int:
        calls = sum(count_tokens([call.arguments_json]) for _, call in self.calls)
        return len(self.pieces) + calls + self.reasoning_tokens


class _FakeOpenAI:
    def __init__(self, control: FakeControl, flavour: OpenAIFlavour, api_key: str | None) -> None:
        self.control = control
        self.flavour = flavour
        self.api_key = api_key
        self.sequence = 0
        # Automatic caching: the prompts each model saw lately (their unit keys).
        self._seen: dict[str, deque[tuple[str, ...]]] = {}
        # Anthropic-style caching: the marked prefixes written so far, per model.
        self._written: set[tuple[str, ...]] = set()

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
            _Validator(self.flavour).check(body)
        except _Invalid as problem:
            return self._error(400, str(problem))
        self.sequence += 1
        turn = self._turn(body, behaviour)
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

    # -- the agent turn -----------------------------------------------------------------------

    def _turn(self, body: dict[str, Any], behaviour: Behaviour) -> _Turn:
        messages: list[dict[str, Any]] = body["messages"]
        units = _prompt_units(messages)
        turn = _Turn(prompt_tokens=sum(unit.tokens for unit in units))
        turn.cache_read, turn.cache_write = self._cache(body["model"], units)
        user_text = _last_user_text(messages)
        self._think(body, turn, user_text)
        tools = [
            (str(t["function"]["name"]), t["function"].get("parameters") or {})
            for t in body.get("tools") or ()
        ]
        if messages[-1].get("role") == "tool":
            results = [_text_of(m) for m in _trailing_tool_messages(messages)]
            turn.pieces = _spaced(tool_reply(results).split(" "))
        elif tools and messages[-1].get("role") == "user":
            choice = body.get("tool_choice") or ""
            if isinstance(choice, dict):
                choice = str(choice["function"]["name"])
            parallel = body.get("parallel_tool_calls") is not False
            calls = planned_tool_calls(tools, user_text, tool_choice=choice, parallel=parallel)
            turn.calls = [(self._call_id(i), call) for i, call in enumerate(calls)]
        if turn.calls:
            turn.finish = "tool_calls"
        else:
            if not turn.pieces:
                turn.pieces = self._answer(body, behaviour)
            turn.finish = self._finish_reason(body, len(turn.pieces), behaviour)
        return turn

    def _think(self, body: dict[str, Any], turn: _Turn, user_text: str) -> None:
        thought = thought_about(user_text)
        words = len(thought.split())
        if self.flavour is OpenAIFlavour.OPENAI:
            effort = body.get("reasoning_effort")
            if effort:
                turn.reasoning_tokens = words * _EFFORT_FACTOR[effort]
            return
        reasoning = body.get("reasoning") or {}
        if self.flavour is OpenAIFlavour.TOGETHER:
            if body.get("reasoning_effort") or reasoning.get("enabled"):
                turn.thought, turn.reasoning_tokens = thought, words
            return
        if (
            reasoning
            and reasoning.get("enabled") is not False
            and reasoning.get("effort") != "none"
        ):
            turn.reasoning_tokens = words
            if not reasoning.get("exclude"):
                turn.thought = thought
                turn.thought_signed = body["model"].startswith("anthropic/")

    def _call_id(self, index: int) -> str:
        digest = hashlib.sha256(f"{self.flavour.value}:{self.sequence}:{index}".encode())
        return "call_" + digest.hexdigest()[:24]

    def _cache(self, model: str, units: Sequence[_Unit]) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for a prompt of ``units``."""
        if self.flavour is OpenAIFlavour.TOGETHER:
            return 0, 0
        keys = tuple(unit.key for unit in units)
        totals = []
        running = 0
        for unit in units:
            running += unit.tokens
            totals.append(running)
        if self.flavour is OpenAIFlavour.OPENROUTER and model.startswith("anthropic/"):
            marks = [i for i, unit in enumerate(units) if unit.marked]
            if not marks or totals[marks[-1]] < _CACHE_MINIMUM:
                return 0, 0
            read = next(
                (totals[i] for i in reversed(marks) if (model, *keys[: i + 1]) in self._written),
                0,
            )
            if len(self._written) >= _CACHE_ENTRIES:
                self._written.clear()  # a bounded cache: the fake may serve a long benchmark
            self._written.add((model, *keys[: marks[-1] + 1]))
            return read, totals[marks[-1]] - read
        seen = self._seen.setdefault(model, deque(maxlen=64))
        common = 0
        for earlier in seen:
            shared = 0
            for index, (key, previous) in enumerate(zip(keys, earlier, strict=False)):
                if key != previous:
                    break
                shared = totals[index]
            common = max(common, shared)
        seen.append(keys)
        if common < _CACHE_MINIMUM:
            return 0, 0
        return common - (common - _CACHE_MINIMUM) % _CACHE_BLOCK, 0

    def _answer(self, body: dict[str, Any], behaviour: Behaviour) -> list[str]:
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema", {})
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(schema)
            )
            text = json.dumps(value)
            return [text[i : i + 8] for i in range(0, len(text), 8)]
        if behaviour.reply is not None:
            return _spaced(behaviour.reply.split(" "))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        count = min(behaviour.completion_tokens, limit) if limit else behaviour.completion_tokens
        return _spaced(reply_words(_text_of(body["messages"][-1]), count))

    def _finish_reason(self, body: dict[str, Any], produced: int, behaviour: Behaviour) -> str:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and behaviour.reply is None and behaviour.completion_tokens > limit:
            return "length"
        return "eos" if self.flavour is OpenAIFlavour.TOGETHER and produced % 2 else "stop"

    def _usage(self, turn: _Turn) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        }
        if self.flavour is OpenAIFlavour.TOGETHER:
            return usage  # Together's usage has these three fields only
        prompt_details: dict[str, Any] = {"cached_tokens": turn.cache_read}
        if self.flavour is OpenAIFlavour.OPENROUTER:
            prompt_details["cache_write_tokens"] = turn.cache_write
        else:
            prompt_details["audio_tokens"] = 0
        usage["prompt_tokens_details"] = prompt_details
        usage["completion_tokens_details"] = {"reasoning_tokens": turn.reasoning_tokens}
        return usage

    def _reasoning_details(self, model: str, text: str, signature: str | None) -> dict[str, Any]:
        fmt = next((f for p, f in _REASONING_FORMATS.items() if model.startswith(p)), "unknown")
        detail: dict[str, Any] = {"type": "reasoning.text", "text": text}
        if signature is not None:
            detail["signature"] = signature
        return {**detail, "format": fmt, "index": 0}

    def _completion(self, body: dict[str, Any], behaviour: Behaviour, turn: _Turn) -> FakeResponse:
        text = "".join(turn.pieces)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if self.flavour is OpenAIFlavour.OPENAI:
            message |= {"refusal": None, "annotations": []}
        if turn.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call_id, call in turn.calls
            ]
        if turn.thought:
            message["reasoning"] = turn.thought
            if self.flavour is OpenAIFlavour.OPENROUTER:
                signature = sign(turn.thought) if turn.thought_signed else None
                detail = self._reasoning_details(body["model"], turn.thought, signature)
                message["reasoning_details"] = [detail]
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": turn.finish,
        }
        if self.flavour is OpenAIFlavour.OPENROUTER:
            choice["native_finish_reason"] = turn.finish
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{self.sequence:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _served_model(body["model"]),
            "choices": [choice],
            "usage": self._usage(turn),
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

    # -- streams ------------------------------------------------------------------------------

    def _stream(self, body: dict[str, Any], behaviour: Behaviour, turn: _Turn) -> FakeResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.flavour is not OpenAIFlavour.OPENAI:
            include_usage = True
        headers = self._headers("text/event-stream; charset=utf-8")
        headers.append(("cache-control", "no-cache"))
        return FakeResponse(200, headers, self._events(body, behaviour, turn, include_usage))

    def _deltas(self, model: str, turn: _Turn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The delta that opens the answer, and those that follow it, in order."""
        opening: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        steps: list[dict[str, Any]] = []
        for word in _spaced(turn.thought.split(" ")) if turn.thought else ():
            if self.flavour is OpenAIFlavour.TOGETHER:
                steps.append({"role": "assistant", "content": "", "reasoning": word})
            else:
                detail = self._reasoning_details(model, word, None)
                steps.append({"content": "", "reasoning": word, "reasoning_details": [detail]})
        if turn.thought_signed:
            detail = self._reasoning_details(model, "", sign(turn.thought))
            steps.append({"content": "", "reasoning_details": [detail]})
        steps += [{"content": piece} for piece in turn.pieces]
        if self.flavour is OpenAIFlavour.TOGETHER and turn.calls:
            whole = [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for index, (call_id, call) in enumerate(turn.calls)
            ]
            steps.append({"role": "assistant", "content": None, "tool_calls": whole})
            return opening, steps
        for index, (call_id, call) in enumerate(turn.calls):
            start = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if index == 0 and self.flavour is OpenAIFlavour.OPENAI:
                opening = {"role": "assistant", "content": None, "tool_calls": [start]}
                opening["refusal"] = None
            else:
                steps.append({"tool_calls": [start]})
            arguments = call.arguments_json
            for at in range(0, len(arguments), 8):
                fragment = {"index": index, "function": {"arguments": arguments[at : at + 8]}}
                steps.append({"tool_calls": [fragment]})
        return opening, steps

    async def _events(
        self, body: dict[str, Any], behaviour: Behaviour, turn: _Turn, include_usage: bool
    ) -> AsyncIterator[BodyItem]:
        rng = self.control.rng
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
            if self.flavour is OpenAIFlavour.OPENROUTER:
                choice["native_finish_reason"] = finish_reason
            payload = {**base, "choices": [choice], **extra}
            if openai_usage:
                payload.setdefault("usage", None)
            return encode_sse(json.dumps(payload, separators=(",", ":")))

        if self.flavour is OpenAIFlavour.OPENROUTER:
            yield encode_sse_comment("OPENROUTER PROCESSING")
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            await anyio.sleep_forever()
        await anyio.sleep(behaviour.time_to_first_token.draw(rng))
        opening, steps = self._deltas(body["model"], turn)
        yield chunk(opening, None)
        interval = behaviour.token_interval
        mid_stream_faults = (
            Fault.RESET_MID_BODY,
            Fault.TRUNCATED,
            Fault.STREAM_ERROR_EVENT,
            Fault.INVALID_JSON,
        )
        for index, step in enumerate(steps):
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
            yield chunk(step, None)
        usage = self._usage(turn)
        send_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
        if self.flavour is OpenAIFlavour.TOGETHER and send_usage:
            yield chunk({}, turn.finish, usage=usage)
        else:
            yield chunk({}, turn.finish)
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


class _Validator:
    """Refuses (raises :class:`_Invalid`) what the flavour's real API answers with 400."""

    def __init__(self, flavour: OpenAIFlavour) -> None:
        self.flavour = flavour

    def check(self, body: dict[str, Any]) -> None:
        if self.flavour is OpenAIFlavour.OPENAI:
            for name in body:
                if name not in _OPENAI_FIELDS:
                    raise _Invalid(f"Unrecognized request argument supplied: {name}")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1."
            )
        self._tools(body)
        self._reasoning(body)
        model = str(body.get("model"))
        marks = 0
        pending: list[str] = []
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                raise _Invalid(f"Invalid type for '{where}': expected an object.")
            role = message.get("role")
            if pending and role != "tool":
                raise _Invalid(_unanswered(pending))
            marks += self._message(where, message, model)
            if role == "assistant" and message.get("tool_calls"):
                pending = self._calls(where, message["tool_calls"])
            elif role == "tool":
                call_id = message.get("tool_call_id")
                if call_id not in pending:
                    raise _Invalid(
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'."
                    )
                pending.remove(call_id)
        if pending:
            raise _Invalid(_unanswered(pending))
        if marks > 4:
            raise _Invalid(
                f"A maximum of 4 blocks with cache_control may be provided. Found {marks}."
            )

    def _tools(self, body: dict[str, Any]) -> None:
        tools = body.get("tools")
        names: list[str] = []
        for index, tool in enumerate(tools or ()):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not function:
                raise _Invalid(f"Invalid value for 'tools[{index}]': expected a function tool.")
            name = function.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                raise _Invalid(
                    f"Invalid 'tools[{index}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
                )
            if not isinstance(function.get("parameters", {}), dict):
                raise _Invalid(f"Invalid type for 'tools[{index}].function.parameters'.")
            names.append(name)
        for option in ("tool_choice", "parallel_tool_calls"):
            if option in body and not tools and self.flavour is OpenAIFlavour.OPENAI:
                raise _Invalid(
                    f"Invalid value for '{option}': '{option}' is only allowed when 'tools' are "
                    "specified."
                )
        choice = body.get("tool_choice")
        if choice is None or choice in ("auto", "none", "required"):
            return
        if isinstance(choice, dict) and choice.get("type") == "function":
            if (choice.get("function") or {}).get("name") in names:
                return
            raise _Invalid("Invalid 'tool_choice': the function named is not among the tools.")
        raise _Invalid(
            "Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or a function."
        )

    def _reasoning(self, body: dict[str, Any]) -> None:
        effort = body.get("reasoning_effort")
        reasoning = body.get("reasoning")
        if self.flavour is OpenAIFlavour.OPENAI:
            if effort is None:
                return
            if effort not in _OPENAI_EFFORTS:
                raise _Invalid(
                    f"Invalid value: '{effort}'. Supported values are: 'none', 'minimal', 'low', "
                    "'medium', 'high', and 'xhigh'."
                )
            if not str(body.get("model")).startswith(_OPENAI_REASONING_MODELS):
                raise _Invalid(
                    "Unsupported parameter: 'reasoning_effort' is not supported with this model."
                )
            return
        if self.flavour is OpenAIFlavour.TOGETHER:
            if effort is not None and effort not in ("low", "medium", "high"):
                raise _Invalid(f"reasoning_effort: '{effort}' is not one of low, medium, high")
            if reasoning is not None and (
                not isinstance(reasoning, dict) or set(reasoning) - {"enabled"}
            ):
                raise _Invalid('reasoning: expected {"enabled": bool}')
            return
        if reasoning is None:
            return
        if not isinstance(reasoning, dict) or set(reasoning) - {
            "effort",
            "max_tokens",
            "exclude",
            "enabled",
        }:
            raise _Invalid("reasoning: unknown field")
        if "effort" in reasoning and "max_tokens" in reasoning:
            raise _Invalid("reasoning: give only one of effort and max_tokens")
        if reasoning.get("effort", "high") not in _OPENAI_EFFORTS:
            raise _Invalid(f"reasoning.effort: invalid value '{reasoning['effort']}'")
        tokens = reasoning.get("max_tokens", 1)
        if not isinstance(tokens, int) or tokens < 1:
            raise _Invalid("reasoning.max_tokens: expected a positive integer")

    def _message(self, where: str, message: dict[str, Any], model: str) -> int:
        """Check one message; the number of cache_control marks it carries."""
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise _Invalid(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'tool', 'function', and 'developer'."
            )
        allowed = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio"}
        if self.flavour is OpenAIFlavour.OPENROUTER:
            allowed |= {"reasoning", "reasoning_details", "cache_control"}
        if self.flavour is not OpenAIFlavour.TOGETHER:
            for key in message:
                if key not in allowed:
                    raise _Invalid(f"Unknown parameter: '{where}.{key}'.")
        content = message.get("content")
        marks = 0
        if isinstance(content, list):
            if self.flavour is OpenAIFlavour.TOGETHER and role != "user":
                raise _Invalid(f"{where}.content: a {role} message's content must be a string")
            for number, part in enumerate(content):
                marks += self._part(f"{where}.content[{number}]", part, str(role))
        elif content is None:
            if role != "assistant" or not message.get("tool_calls"):
                raise _Invalid(f"Invalid value for '{where}.content': expected a string, got null.")
        elif not isinstance(content, str):
            raise _Invalid(f"Invalid type for '{where}.content': expected a string or an array.")
        if role == "assistant" and message.get("reasoning_details") is not None:
            self._thinking(where, message["reasoning_details"], model)
        return marks

    def _part(self, where: str, part: Any, role: str) -> int:
        if not isinstance(part, dict):
            raise _Invalid(f"Invalid type for '{where}': expected an object.")
        kind = part.get("type")
        kinds = _PART_TYPES[self.flavour] if role == "user" else ("text",)
        if kind not in kinds:
            listed = ", ".join(f"'{k}'" for k in kinds)
            raise _Invalid(f"Invalid value: '{kind}'. Supported values are: {listed}.")
        allowed = {"type", kind}
        if self.flavour is OpenAIFlavour.OPENROUTER:
            allowed.add("cache_control")
        for key in part:
            if key not in allowed:
                raise _Invalid(f"Unknown parameter: '{where}.{key}'.")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _Invalid(f"Invalid type for '{where}.text': expected a string.")
        if kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str) or not _valid_image_url(url):
                raise _Invalid(
                    f"Invalid '{where}.image_url.url': expected an https URL or a base64 data URL "
                    "of an image."
                )
        if kind == "file":
            file = part.get("file") or {}
            data = file.get("file_data")
            if not file.get("file_id") and not (
                isinstance(data, str) and _decoded(data, "application/pdf") is not None
            ):
                raise _Invalid(
                    f"Invalid '{where}.file.file_data': expected a base64 data URL of a PDF."
                )
        control = part.get("cache_control")
        if control is None:
            return 0
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            raise _Invalid(f'{where}.cache_control: expected {{"type": "ephemeral"}}')
        return 1

    def _calls(self, where: str, calls: Any) -> list[str]:
        ids: list[str] = []
        for number, call in enumerate(calls if isinstance(calls, list) else [None]):
            at = f"{where}.tool_calls[{number}]"
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or call.get("type") != "function"
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                raise _Invalid(f"Invalid '{at}': expected {{id, type: function, function}}.")
            ids.append(call["id"])
        return ids

    def _thinking(self, where: str, details: Any, model: str) -> None:
        for number, detail in enumerate(details if isinstance(details, list) else [None]):
            at = f"{where}.reasoning_details[{number}]"
            kind = detail.get("type") if isinstance(detail, dict) else None
            if kind not in ("reasoning.text", "reasoning.encrypted", "reasoning.summary"):
                raise _Invalid(f"Invalid '{at}.type': unknown reasoning detail type.")
            if kind != "reasoning.text" or not isinstance(detail, dict):
                continue
            signature = detail.get("signature")
            if signature or model.startswith("anthropic/"):
                if not signature_valid(str(detail.get("text", "")), str(signature or "")):
                    raise _Invalid(f"{at}: Invalid `signature` in `thinking` block")


def _unanswered(ids: Sequence[str]) -> str:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(ids)
    )


def _decoded(url: str, media_type: str) -> bytes | None:
    """The bytes of a base64 data URL of ``media_type``; None for anything else."""
    head, _, payload = url.partition(",")
    if head != f"data:{media_type};base64":
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _valid_image_url(url: str) -> bool:
    if url.startswith(("https://", "http://")):
        return True
    media_type = url[5:].split(";", 1)[0] if url.startswith("data:") else ""
    return media_type.startswith("image/") and _decoded(url, media_type) is not None


def _prompt_units(messages: Sequence[Mapping[str, Any]]) -> list[_Unit]:
    """A prompt as the fake cache sees it: one unit per text (words), image or file (85 tokens)
    and tool call, keyed by what it is and where."""
    units: list[_Unit] = []
    for message in messages:
        head = [message.get("role"), message.get("tool_call_id")]
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                bare = {k: v for k, v in part.items() if k != "cache_control"}
                tokens = _words(part["text"]) if part.get("type") == "text" else _MEDIA_TOKENS
                key = json.dumps([*head, bare], sort_keys=True)
                units.append(_Unit(key, tokens, "cache_control" in part))
        elif content is not None or not message.get("tool_calls"):
            text = str(content or "")
            units.append(_Unit(json.dumps([*head, text]), _words(text)))
        for call in message.get("tool_calls") or ():
            arguments = str(call["function"]["arguments"])
            units.append(_Unit(json.dumps([*head, call], sort_keys=True), _words(arguments)))
    return units


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(message: Mapping[str, Any]) -> str:
    """The text of a message: its string content, or its text parts joined by spaces."""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return str(content or "")


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _trailing_tool_messages(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    trailing: list[Mapping[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, message)
    return trailing


def _spaced(words: Sequence[str]) -> list[str]:
    """Stream pieces of ``words``: each after the first keeps its leading space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def embedding_of(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-free vector for ``text``; exact in float32."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 97) / 64.0 - 0.75 for i in range(dimensions)]


def _served_model(model: str) -> str:
    # OpenAI answers with a dated snapshot name; others echo the id.
    return {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(
        model, model
    )


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
