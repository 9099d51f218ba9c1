"""The ``Provider`` protocol of the product spec, and the base class the HTTP adapters share.

An adapter speaks one provider's native wire format and nothing else: no routing, no retries, no
limits. It raises only errors of :mod:`delos.runtime.errors` and reports the rate-limit headers it
sees through ``on_rate_limits``, which the resilience layer consumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Protocol, runtime_checkable

import httpx

from delos.resilience._limiter import RateLimitHints
from delos.runtime.catalog import Catalog
from delos.runtime.errors import EmbeddingsNotSupported
from delos.runtime.providers._http import rate_limit_hints
from delos.runtime.values import ChatRequest, Completion, Embeddings, EmbedRequest, StreamEvent

__all__ = ["HttpProvider", "Provider", "RateLimitListener"]

RateLimitListener = Callable[[RateLimitHints], None]


@runtime_checkable
class Provider(Protocol):
    """What the router needs from a provider."""

    @property
    def name(self) -> str: ...

    @property
    def supports_embeddings(self) -> bool: ...

    def models(self) -> Sequence[str]:
        """Chat model ids this provider serves."""
        ...

    async def available(self) -> bool:
        """Whether the provider can be asked now (configured, and reachable where that is cheap)."""
        ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a streamed completion; leaving the block closes the upstream request.

        The iterator yields :class:`~delos.runtime.values.TextDelta` events and, last,
        exactly one :class:`~delos.runtime.values.StreamFinished`. A stream that ends any other way
        raises :class:`~delos.runtime.errors.UpstreamProtocolError`: never a silent truncation.
        """
        ...

    async def embed(self, request: EmbedRequest) -> Embeddings: ...

    def cost_per_1k_tokens(self) -> Mapping[str, tuple[Decimal, Decimal]]:
        """Model id → (input, output) USD per 1K tokens."""
        ...

    async def aclose(self) -> None: ...


class HttpProvider:
    """Shared state of an HTTP adapter: its name, pooled client, catalog view and listeners."""

    supports_embeddings: bool = False

    def __init__(
        self,
        name: str,
        *,
        client: httpx.AsyncClient,
        catalog: Catalog,
        base_url: str,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        self._name = name
        self._client = client
        self._catalog = catalog
        self.base_url = base_url.rstrip("/")
        self.on_rate_limits = on_rate_limits

    @property
    def name(self) -> str:
        return self._name

    def models(self) -> Sequence[str]:
        return tuple(model.id for model in self._catalog.chat_models(self._name))

    def embedding_models(self) -> Sequence[str]:
        return tuple(model.id for model in self._catalog.embedding_models(self._name))

    async def available(self) -> bool:
        return True

    def cost_per_1k_tokens(self) -> Mapping[str, tuple[Decimal, Decimal]]:
        models = (
            *self._catalog.chat_models(self._name),
            *self._catalog.embedding_models(self._name),
        )
        return {m.id: (m.input_per_1k, m.output_per_1k) for m in models}

    async def embed(self, request: EmbedRequest) -> Embeddings:
        raise EmbeddingsNotSupported(
            f"{self._name} has no embeddings API; providers with embeddings: "
            "openai, gemini, bedrock, vertex, together, ollama"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _observe_headers(self, headers: httpx.Headers) -> None:
        if self.on_rate_limits is None:
            return
        hints = rate_limit_hints(headers)
        if hints is not None:
            self.on_rate_limits(hints)
