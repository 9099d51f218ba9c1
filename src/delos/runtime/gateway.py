"""The gateway's state for one process: settings, catalog, providers, router.

Everything is built from the settings at start and passed down explicitly; nothing is global.
With ``DELOS_RUNTIME_REDIS_URL`` set, :func:`open_gateway` also opens the state replicas share
(:class:`SharedState`): limits and breakers on that Redis, the cache's level 2 on it or on
``DELOS_RUNTIME_REDIS_CACHE_URL``; its background tasks (heartbeats, breaker polls, metrics) run
in the gateway's task group. Without it, nothing imports the Redis client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio
import httpx

from delos.resilience import Clock, Sleep, backend_clock
from delos.runtime.cache import ResponseCache
from delos.runtime.catalog import Catalog
from delos.runtime.completions import Completions, NoPromptStore
from delos.runtime.config import Settings, secret_value
from delos.runtime.media import ImageFetcher
from delos.runtime.observability import Metrics, Tracing
from delos.runtime.prompts import DirectoryPromptStore, PromptStore
from delos.runtime.providers import Provider, build_providers
from delos.runtime.providers.registry import start_providers
from delos.runtime.redaction import Redactor
from delos.runtime.routing import Guards, ResiliencePolicy, Router

if TYPE_CHECKING:
    from delos.runtime.shared import ReplicaRegistry, SharedBreakers, SharedCache, SharedStore

__all__ = ["Gateway", "SharedState", "open_gateway", "open_shared_state"]

log = logging.getLogger("delos.runtime.gateway")

#: How often the shared state's counters reach the metrics, seconds.
SHARED_METRICS_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class SharedState:
    """What this replica shares with the others, on Redis. Open it with `open_shared_state`.

    ``cache_store`` is ``store`` unless the cache has a Redis of its own.
    """

    store: SharedStore
    cache_store: SharedStore
    replicas: ReplicaRegistry
    breakers: SharedBreakers
    cache: SharedCache

    def live_replicas(self) -> int:
        """The last known number of live replicas, this one included."""
        return self.replicas.live_replicas

    def record_metrics(self, metrics: Metrics) -> None:
        """Publish the stores' and the level-2 cache's counters (see `Metrics`)."""
        stores = {"limits": self.store.stats()}
        if self.cache_store is not self.store:
            stores["cache"] = self.cache_store.stats()
        metrics.record_shared_state(stores, self.cache.stats, self.replicas.live_replicas)

    async def publish_metrics(self, metrics: Metrics, sleep: Sleep = anyio.sleep) -> None:
        """`record_metrics` every `SHARED_METRICS_INTERVAL` seconds, until cancelled."""
        while True:
            self.record_metrics(metrics)
            await sleep(SHARED_METRICS_INTERVAL)


@asynccontextmanager
async def open_shared_state(
    settings: Settings,
    *,
    policy: ResiliencePolicy | None = None,
    clock: Clock = anyio.current_time,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[SharedState]:
    """The shared state on ``settings.redis_url`` (and ``redis_cache_url``), for the block.

    Heartbeats and breaker polls run in a task group of their own, cancelled when the block
    ends; then the stores close. An unreachable Redis delays nothing but the first calls: every
    piece falls back to local state until it answers. Raises `ValueError` when ``redis_url`` is
    unset.
    """
    if settings.redis_url is None:
        raise ValueError("open_shared_state needs settings.redis_url (DELOS_RUNTIME_REDIS_URL)")
    # Imported here: the Redis client costs import time only to gateways that use it.
    from delos.runtime.shared import (
        ReplicaRegistry,
        SharedBreakers,
        SharedCache,
        SharedStoreConfig,
        open_shared_store,
    )

    policy = policy or ResiliencePolicy.from_settings(settings)
    deadline = settings.redis_deadline_seconds
    config = SharedStoreConfig(deadline=deadline, connect_timeout=max(deadline, 0.05))
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            open_shared_store(secret_value(settings.redis_url), config, clock=clock, sleep=sleep)
        )
        cache_store = store
        if settings.redis_cache_url is not None:
            cache_store = await stack.enter_async_context(
                open_shared_store(
                    secret_value(settings.redis_cache_url), config, clock=clock, sleep=sleep
                )
            )
        replicas = ReplicaRegistry(store, sleep=sleep)
        shared = SharedState(
            store=store,
            cache_store=cache_store,
            replicas=replicas,
            # A trial abandoned (cancelled, a 429) keeps its claim until it expires: one more
            # wait in open at most, and never less than a second.
            breakers=SharedBreakers(
                store,
                trial_ttl=max(policy.breaker.wait_in_open, 1.0),
                clock=clock,
                sleep=sleep,
            ),
            cache=SharedCache(
                cache_store,
                default_ttl_seconds=settings.cache_default_ttl_seconds,
                clock=clock,
                sleep=sleep,
            ),
        )
        if cache_store is store:
            store.add_listener(
                _fallback_logger(store.where, "limits, breakers and cache", replicas)
            )
        else:
            store.add_listener(_fallback_logger(store.where, "limits and breakers", replicas))
            cache_store.add_listener(_fallback_logger(cache_store.where, "cache", None))
        tasks = await stack.enter_async_context(anyio.create_task_group())
        # Exit runs last-in first-out: the tasks are cancelled, the group waits for them (the
        # registry withdraws this replica), then the stores close.
        stack.callback(tasks.cancel_scope.cancel)
        await tasks.start(replicas.run)
        await tasks.start(shared.breakers.run)
        yield shared


def _fallback_logger(
    where: str, what: str, replicas: ReplicaRegistry | None
) -> Callable[[bool], None]:
    """Say, once per switch, what this replica does instead of sharing `what` (the store logs
    why, and the metrics count each decision)."""

    def on_switch(degraded: bool) -> None:
        if not degraded:
            log.warning("Redis %s back: %s shared again", where, what)
        elif replicas is None:
            log.warning("Redis %s away: %s local (level 1 only) until it is back", where, what)
        else:
            log.warning(
                "Redis %s away: %s local until it is back; each rate limit at 1/%d of its "
                "configured value (the last known number of live replicas)",
                where,
                what,
                replicas.live_replicas,
            )

    return on_switch


class Gateway:
    """``clock`` (seconds) and ``sleep`` time everything under the gateway: breakers, latency
    table, retry budget, limiters, retries, hedges, the cache's TTLs and reported latencies.
    They default to anyio's, the clock deadlines run on (virtual under trio's ``MockClock``);
    see :class:`Guards` for what a replacement must do. Only ``started_at`` (uptime) reads
    ``time.monotonic``: it is taken at construction, possibly outside an event loop.

    ``shared`` (see `open_shared_state`) makes limits, breakers and the cache shared with the
    other replicas; without it every piece of state is this process's own.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: dict[str, Provider],
        *,
        policy: ResiliencePolicy | None = None,
        workers: int = 1,
        clock: Clock | None = None,
        sleep: Sleep = anyio.sleep,
        shared: SharedState | None = None,
    ) -> None:
        clock = backend_clock() if clock is None else clock
        self.settings = settings
        self.shared = shared
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
            store=shared.store if shared is not None else None,
            shared_breakers=shared.breakers if shared is not None else None,
            live_replicas=shared.live_replicas if shared is not None else _alone,
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
        self.completions = Completions(
            self.router,
            self.cache,
            prompts,
            self.metrics,
            clock=clock,
            shared_cache=shared.cache if shared is not None else None,
        )
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


def _alone() -> int:
    return 1


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: ResiliencePolicy | None = None,
    workers: int = 1,
    clock: Clock | None = None,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[Gateway]:
    """Build the gateway; leaving the block closes every provider's connection pool and, with
    ``DELOS_RUNTIME_REDIS_URL``, the shared state (see `open_shared_state`).

    ``clock`` and ``sleep``: see :class:`Gateway` (None: anyio's, read cheaply)."""
    clock = backend_clock() if clock is None else clock
    catalog = Catalog.load(settings.catalog_path)
    providers = build_providers(settings, catalog, transport=transport)
    try:
        async with AsyncExitStack() as stack:
            shared: SharedState | None = None
            if settings.redis_url is not None:
                shared = await stack.enter_async_context(
                    open_shared_state(settings, policy=policy, clock=clock, sleep=sleep)
                )
            gateway = Gateway(
                settings,
                catalog,
                providers,
                policy=policy,
                workers=workers,
                clock=clock,
                sleep=sleep,
                shared=shared,
            )
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)  # before the group waits for its tasks
            await tasks.start(gateway.guards.silence.run)
            if shared is not None:
                tasks.start_soon(shared.publish_metrics, gateway.metrics, sleep)
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
