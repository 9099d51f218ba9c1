"""Vertex AI: Gemini models under ``publishers/google``, Claude under ``publishers/anthropic``.

One provider named ``vertex`` to the router; it hands each request to the adapter that speaks the
publisher's format (the Gemini adapter, or the Anthropic Messages adapter in its Vertex variant).
Both share the provider's pooled HTTP client. Embeddings go through Gemini's ``:predict``.

Both adapters name what they return ``vertex``: ``Thinking.provider`` (a signature is valid only
on the endpoint that made it) and the errors they raise. Gemini's agent features (tools,
thinking, signatures, implicit caching) are those of :mod:`delos.runtime.providers.gemini`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings, secret_value
from delos.runtime.providers.anthropic import AnthropicProvider
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.providers.gemini import GeminiProvider
from delos.runtime.values import ChatRequest, Completion, Embeddings, EmbedRequest, StreamEvent

__all__ = ["VertexProvider", "build_vertex"]


class VertexProvider(HttpProvider):
    def __init__(
        self,
        *,
        project: str,
        location: str,
        access_token: str,
        client: HttpClient,
        catalog: Catalog,
        base_url: str | None = None,
    ) -> None:
        self.gemini = GeminiProvider.for_vertex(
            project, location, access_token, client, catalog, base_url
        )
        self.claude = AnthropicProvider.for_vertex(
            project=project,
            location=location,
            access_token=access_token,
            client=client,
            catalog=catalog,
            base_url=base_url,
        )
        super().__init__("vertex", client=client, catalog=catalog, base_url=self.gemini.base_url)

    def set_rate_limit_listener(self, listener: RateLimitListener | None) -> None:
        # Both adapters see the answers; this provider sends nothing itself.
        self.gemini.set_rate_limit_listener(listener)
        self.claude.set_rate_limit_listener(listener)

    def _adapter(self, model: str) -> GeminiProvider | AnthropicProvider:
        return self.claude if model.startswith("claude") else self.gemini

    def models(self) -> Sequence[str]:
        return tuple(m.id for m in self._catalog.chat_models("vertex"))

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._adapter(request.model).complete(request)

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return self._adapter(request.model).open_stream(request)

    async def embed(self, request: EmbedRequest) -> Embeddings:
        return await self.gemini.embed(request)


def build_vertex(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """Vertex AI from ``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_CLOUD_LOCATION`` and
    ``GOOGLE_CLOUD_ACCESS_TOKEN`` (and ``DELOS_RUNTIME_VERTEX_BASE_URL``)."""
    return VertexProvider(
        project=settings.google_cloud_project or "",
        location=settings.google_cloud_location,
        access_token=secret_value(settings.google_cloud_access_token),
        client=client,
        catalog=catalog,
        base_url=settings.vertex_base_url,
    )
