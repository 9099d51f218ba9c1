"""The gateway's state for one process: settings, catalog, providers, router.

Everything is built from the settings at start and passed down explicitly; nothing is global.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx

from delos.resilience import Clock, Sleep
from delos.runtime.cache import ResponseCache
from delos.runtime.catalog import Catalog
from delos.runtime.completions import Completions, NoPromptStore
from delos.runtime.config import Settings
from delos.runtime.media import ImageFetcher
from delos.runtime.observability import Metrics, Tracing
from delos.runtime.prompts import DirectoryPromptStore, PromptStore
from delos.runtime.providers import Provider, build_providers
from delos.runtime.providers.registry import start_providers
from delos.runtime.redaction import Redactor
from delos.runtime.routing import Guards, ResiliencePolicy, Router

__all__ = ["Gateway", "open_gateway"]


class Gateway:
    """``clock`` (seconds) and ``sleep`` time everything under the gateway: breakers, latency
    table, retry budget, limiters, retries, hedges, the cache's TTLs and reported latencies.
    They default to anyio's, the clock deadlines run on (virtual under trio's ``MockClock``);
    see :class:`Guards` for what a replacement must do. Only ``started_at`` (uptime) reads
    ``time.monotonic``: it is taken at construction, possibly outside an event loop.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: dict[str, Provider],
        *,
        policy: ResiliencePolicy | None = None,
        workers: int = 1,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.redact = Redactor(settings.secrets())
        self.metrics = Metrics(redact=self.redact)
        self.tracing = Tracing.from_settings(settings.observe_endpoint, redact=self.redact)
        self.guards = Guards(
            settings,
            policy,
            workers=workers,
            clock=clock,
            sleep=sleep,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        for name, provider in providers.items():
            provider.set_rate_limit_listener(self.guards.rate_limit_listener(name))
        self.router = Router(
            providers,
            catalog,
            self.guards,
            quality_order=settings.quality_order,
            image_fetcher=ImageFetcher() if settings.fetch_image_urls else None,
        )
        self.cache = ResponseCache(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_bytes,
            default_ttl_seconds=settings.cache_default_ttl_seconds,
            clock=clock,
        )
        prompts: PromptStore = (
            DirectoryPromptStore(settings.prompts_dir) if settings.prompts_dir else NoPromptStore()
        )
        self.completions = Completions(self.router, self.cache, prompts, self.metrics, clock=clock)
        self.started_at = time.monotonic()

    @property
    def catalog(self) -> Catalog:
        """The shipped catalog plus models discovered at run time (Ollama's)."""
        return self.router.catalog

    async def provider_availability(self) -> dict[str, bool]:
        availability = {}
        for name, provider in self.providers.items():
            try:
                with anyio.fail_after(2.0):
                    availability[name] = await provider.available()
            except (TimeoutError, Exception):
                availability[name] = False
        return availability


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: ResiliencePolicy | None = None,
    workers: int = 1,
    clock: Clock = anyio.current_time,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[Gateway]:
    """Build the gateway; leaving the block closes every provider's connection pool.

    ``clock`` and ``sleep``: see :class:`Gateway`."""
    catalog = Catalog.load(settings.catalog_path)
    providers = build_providers(settings, catalog, transport=transport)
    try:
        gateway = Gateway(
            settings, catalog, providers, policy=policy, workers=workers, clock=clock, sleep=sleep
        )
        await start_providers(providers)
        try:
            yield gateway
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(gateway.tracing.shutdown)
    finally:
        with anyio.CancelScope(shield=True):
            for provider in providers.values():
                await provider.aclose()
