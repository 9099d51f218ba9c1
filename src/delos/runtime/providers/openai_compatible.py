"""One adapter for every OpenAI-compatible chat API: OpenAI, Together AI and OpenRouter.

The differences are data (one :class:`OpenAIDialect` row each), not copies: the base URL, the name
of the max-tokens field, whether streams need ``stream_options.include_usage``, attribution
headers, and which agent features have a native form (documents, ``parallel_tool_calls``, how
reasoning is asked for, Anthropic cache markers). Whether a dialect has embeddings is its row of the
provider table. Bodies are built in :mod:`._openai_request`, whose docstring maps every setting
to its native form, and answers and streams read in :mod:`._openai_answer`; this module does the
I/O.

Refused before anything is sent (:class:`~delos.runtime.errors.UnsupportedByProvider`):

- images or PDFs in a system, assistant or tool message (Chat Completions takes text only there);
- PDFs on Together (no document part);
- ``parallel_tool_calls=False`` on Together (no such field);
- ``reasoning.effort="minimal"`` on Together (low, medium, high only);
- on OpenRouter's Anthropic models, a ``cache_breakpoint`` on a message with no text part to
  carry ``cache_control`` (an assistant turn that only calls tools).

Left out by design, each the provider's own behaviour: ``cache_breakpoint`` where caching is
automatic (OpenAI, Together, OpenRouter's other models: prompts of 1024 tokens and more are cached
without a marker); ``include_thoughts`` on OpenAI, whose Chat Completions never returns thinking
text (the answer simply has none); Together's own thinking in history (its input has no reasoning
field). A reasoning setting with both an effort and a budget goes to OpenRouter as the budget (its
exact form), to the others as the effort.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from functools import partial

from pydantic import SecretStr

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings, secret_value
from delos.runtime.providers._http import feed_decoder, upstream_errors
from delos.runtime.providers._openai_answer import (
    ChatStreamReader,
    error_message,
    parse_completion,
    parse_embeddings,
)
from delos.runtime.providers._openai_request import OpenAIDialect, chat_body, embeddings_body
from delos.runtime.providers._transport import UpstreamAnswer
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.values import ChatRequest, Completion, Embeddings, EmbedRequest, StreamEvent
from delos.runtime.wire import SseDecoder, SseEvent

__all__ = [
    "OPENAI",
    "OPENROUTER",
    "TOGETHER",
    "OpenAICompatibleProvider",
    "OpenAIDialect",
    "build_openai",
    "build_openrouter",
    "build_together",
]


OPENAI = OpenAIDialect(
    "openai", "https://api.openai.com/v1", max_tokens_field="max_completion_tokens"
)
# Together's schema: reasoning_effort low/medium/high or reasoning.enabled; no document part, no
# parallel_tool_calls; system, assistant and tool content is one string.
TOGETHER = OpenAIDialect(
    "together",
    "https://api.together.xyz/v1",
    reasoning_form="together",
    efforts=frozenset({"low", "medium", "high"}),
    documents=False,
    parallel_tool_calls=False,
    string_content_roles=frozenset({"system", "assistant", "tool"}),
)
# OpenRouter always reports usage in the last chunk; the option is accepted and harmless. Its
# Anthropic models take Anthropic's cache_control on content parts.
OPENROUTER = OpenAIDialect(
    "openrouter",
    "https://openrouter.ai/api/v1",
    reasoning_form="openrouter",
    cache_control_models=("anthropic/",),
)


class OpenAICompatibleProvider(HttpProvider):
    def __init__(
        self,
        dialect: OpenAIDialect,
        *,
        api_key: str,
        client: HttpClient,
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
            headers={
                "authorization": f"Bearer {api_key}",
                **dialect.extra_headers,
                **(extra_headers or {}),
            },
            message_of=error_message,
            on_rate_limits=on_rate_limits,
        )
        self.dialect = dialect

    def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, object]:
        return chat_body(request, self.dialect, stream=stream)

    async def complete(self, request: ChatRequest) -> Completion:
        url = f"{self.base_url}/chat/completions"
        payload = await self._post_json(url, self._chat_body(request, stream=False))
        return parse_completion(self.name, payload, model=request.model)

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        url = f"{self.base_url}/chat/completions"
        body = self._chat_body(request, stream=True)
        reader = ChatStreamReader(self.name, model=request.model)
        return self._open_stream(url, body, "text/event-stream", partial(self._events, reader))

    async def _events(
        self, reader: ChatStreamReader, response: UpstreamAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = SseDecoder()
        with upstream_errors(self.name):
            async for data in response.chunks():
                for event in feed_decoder(self.name, decoder, data):
                    if not isinstance(event, SseEvent):
                        continue  # keep-alive comments
                    for item in reader.feed(event):
                        yield item
                    if reader.finished:
                        return
        reader.end()

    async def embed(self, request: EmbedRequest) -> Embeddings:
        if not self.supports_embeddings:
            return await super().embed(request)
        payload = await self._post_json(f"{self.base_url}/embeddings", embeddings_body(request))
        return parse_embeddings(self.name, payload, request)


def _build(
    dialect: OpenAIDialect,
    key: SecretStr | None,
    base_url: str | None,
    catalog: Catalog,
    client: HttpClient,
    extra_headers: Mapping[str, str] | None = None,
) -> Provider:
    return OpenAICompatibleProvider(
        dialect,
        api_key=secret_value(key),
        client=client,
        catalog=catalog,
        base_url=base_url,
        extra_headers=extra_headers,
    )


def build_openai(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """OpenAI from ``DELOS_RUNTIME_OPENAI_KEY`` (and its base-URL override)."""
    return _build(OPENAI, settings.openai_key, settings.openai_base_url, catalog, client)


def build_together(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """Together AI from ``DELOS_RUNTIME_TOGETHER_KEY`` (and its base-URL override)."""
    return _build(TOGETHER, settings.together_key, settings.together_base_url, catalog, client)


def build_openrouter(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """OpenRouter from ``DELOS_RUNTIME_OPENROUTER_KEY``, with the attribution headers
    ``HTTP-Referer`` and ``X-Title`` from ``DELOS_RUNTIME_OPENROUTER_SITE_URL`` and
    ``DELOS_RUNTIME_OPENROUTER_SITE_NAME``."""
    headers = {}
    if settings.openrouter_site_url:
        headers["HTTP-Referer"] = settings.openrouter_site_url
    if settings.openrouter_site_name:
        headers["X-Title"] = settings.openrouter_site_name
    key, base_url = settings.openrouter_key, settings.openrouter_base_url
    return _build(OPENROUTER, key, base_url, catalog, client, headers)
