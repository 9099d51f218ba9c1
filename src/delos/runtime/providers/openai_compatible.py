"""One adapter for every OpenAI-compatible chat API: OpenAI, Together AI and OpenRouter.

The differences are data (:class:`OpenAIDialect`), not copies: the base URL, the name of the
max-tokens field, whether streams need ``stream_options.include_usage``, attribution headers, and
whether the provider has embeddings. Usage is read wherever a dialect puts it in a stream (a last
chunk with no choices for OpenAI and OpenRouter, the finishing chunk for Together).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from delos.runtime.catalog import Catalog
from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._http import (
    decode_json,
    error_from_status,
    read_bounded,
    require_media_type,
    upstream_errors,
)
from delos.runtime.providers.base import HttpProvider, RateLimitListener
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import SseDecoder, SseEvent, WireProtocolError

__all__ = ["OPENAI", "OPENROUTER", "TOGETHER", "OpenAICompatibleProvider", "OpenAIDialect"]


@dataclass(frozen=True, slots=True)
class OpenAIDialect:
    name: str
    default_base_url: str
    max_tokens_field: str = "max_tokens"
    #: Ask for usage in streams with ``stream_options.include_usage``.
    stream_usage_option: bool = True
    supports_embeddings: bool = True
    extra_headers: Mapping[str, str] = field(default_factory=dict)


OPENAI = OpenAIDialect(
    "openai", "https://api.openai.com/v1", max_tokens_field="max_completion_tokens"
)
TOGETHER = OpenAIDialect("together", "https://api.together.xyz/v1")
# OpenRouter always reports usage in the last chunk; the option is accepted and harmless.
OPENROUTER = OpenAIDialect("openrouter", "https://openrouter.ai/api/v1", supports_embeddings=False)

_FINISH_REASONS = {
    "eos": "stop",
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def _error_message(payload: Any) -> str | None:
    error = payload.get("error")
    if isinstance(error, str):
        return error
    return str(error.get("message")) if isinstance(error, dict) else None


def _usage(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    prompt, completion = payload.get("prompt_tokens"), payload.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


class OpenAICompatibleProvider(HttpProvider):
    def __init__(
        self,
        dialect: OpenAIDialect,
        *,
        api_key: str,
        client: httpx.AsyncClient,
        catalog: Catalog,
        base_url: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        super().__init__(
            dialect.name,
            client=client,
            catalog=catalog,
            base_url=base_url or dialect.default_base_url,
            on_rate_limits=on_rate_limits,
        )
        self.dialect = dialect
        self.supports_embeddings = dialect.supports_embeddings
        self._headers = {
            "authorization": f"Bearer {api_key}",
            **dialect.extra_headers,
            **(extra_headers or {}),
        }

    # -- requests -------------------------------------------------------------------------------

    def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body[self.dialect.max_tokens_field] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": dict(request.output_schema),
                    "strict": False,
                },
            }
        if stream:
            body["stream"] = True
            if self.dialect.stream_usage_option:
                body["stream_options"] = {"include_usage": True}
        return body

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 300:
            return
        body = await read_bounded(self.name, response, limit=64 * 1024)
        raise error_from_status(self.name, response, body, message_of=_error_message)

    async def complete(self, request: ChatRequest) -> Completion:
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST",
                f"{self.base_url}/chat/completions",
                json=self._chat_body(request, stream=False),
                headers=self._headers,
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                body = await read_bounded(self.name, response)
        payload = decode_json(self.name, body, response.headers.get("content-type"))
        return self._parse_completion(payload, request)

    def _parse_completion(self, payload: Any, request: ChatRequest) -> Completion:
        try:
            if payload.get("error"):
                raise UpstreamProtocolError(
                    self.name, f"error in answer: {_error_message(payload)}"
                )
            choice = payload["choices"][0]
            message = choice["message"]
            content = message.get("content")
            if content is None:
                content = message.get("refusal") or ""
            finish = str(choice.get("finish_reason") or "stop")
            return Completion(
                content=str(content),
                model=str(payload.get("model") or request.model),
                finish_reason=_FINISH_REASONS.get(finish, finish),
                usage=_usage(payload.get("usage")),
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamProtocolError(self.name, "answer has an unexpected shape") from None

    @asynccontextmanager
    async def open_stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST",
                f"{self.base_url}/chat/completions",
                json=self._chat_body(request, stream=True),
                headers=self._headers,
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                require_media_type(self.name, response, "text/event-stream")
                async with aclosing(self._events(response, request)) as events:
                    yield events

    async def _events(
        self, response: httpx.Response, request: ChatRequest
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = SseDecoder()
        finish: str | None = None
        usage: Usage | None = None
        model = request.model
        with upstream_errors(self.name):
            async for data in response.aiter_bytes():
                try:
                    events = decoder.feed(data)
                except WireProtocolError as exc:
                    raise UpstreamProtocolError(self.name, f"malformed stream: {exc}") from None
                for event in events:
                    if not isinstance(event, SseEvent):
                        continue  # keep-alive comments
                    if event.data == "[DONE]":
                        if finish is None:
                            raise UpstreamProtocolError(self.name, "stream ended without a finish")
                        yield StreamFinished(finish, usage, model)
                        return
                    chunk = self._decode_chunk(event.data)
                    model = str(chunk.get("model") or model)
                    usage = _usage(chunk.get("usage")) or usage
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        text = delta.get("content")
                        if text:
                            yield TextDelta(str(text))
                        reason = choice.get("finish_reason")
                        if reason and reason != "error":
                            finish = _FINISH_REASONS.get(reason, str(reason))
        raise UpstreamProtocolError(
            self.name, "stream ended before [DONE]: the answer is truncated"
        )

    def _decode_chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise UpstreamProtocolError(self.name, "stream event is not valid JSON") from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(self.name, "stream event is not a JSON object")
        if chunk.get("error"):
            detail = _error_message(chunk) or "unknown error"
            raise UpstreamProtocolError(self.name, f"error in the stream: {detail}")
        return chunk

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> Embeddings:
        if not self.supports_embeddings:
            return await super().embed(request)
        body = {"model": request.model, "input": list(request.texts), "encoding_format": "base64"}
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST", f"{self.base_url}/embeddings", json=body, headers=self._headers
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                raw = await read_bounded(self.name, response)
        payload = decode_json(self.name, raw, response.headers.get("content-type"))
        try:
            items = sorted(payload["data"], key=lambda item: item["index"])
            vectors = [_vector(item["embedding"]) for item in items]
            usage_payload = payload.get("usage") or {}
            tokens = usage_payload.get("prompt_tokens")
            usage = Usage(int(tokens), 0) if isinstance(tokens, int) else None
        except (KeyError, TypeError, ValueError, struct.error):
            raise UpstreamProtocolError(
                self.name, "embeddings answer has an unexpected shape"
            ) from None
        if len(vectors) != len(request.texts):
            raise UpstreamProtocolError(self.name, "embeddings answer has the wrong count")
        return Embeddings(vectors, str(payload.get("model") or request.model), usage)


def _vector(value: Any) -> list[float]:
    """A float list, or base64 little-endian float32 (what we ask for: 4× smaller than JSON)."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in value]
