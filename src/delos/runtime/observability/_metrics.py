"""Prometheus metrics: one registry per :class:`Metrics`, recorded from plain values.

The registry is never prometheus_client's global one, so two gateways (or two tests) in one
process keep separate counts. Label values are provider, model, client and status names only;
each distinct label tuple is resolved once and its child kept, so recording a request costs a
few dict lookups and increments. :func:`serve_metrics` answers Prometheus scrapes over HTTP/1.1
(h11 on anyio streams), inside the gateway's task group.

Under ``--workers N`` each worker's values live in prometheus_client's multiprocess files and the
supervisor serves their sum; so every gauge says how to combine workers (``multiprocess_mode``:
live gauges, dropped when their worker exits), and a custom collector would not be seen there.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Final, Generic, Protocol, SupportsFloat, TypeVar

import anyio
import h11
from anyio.abc import Listener, SocketAttribute, SocketStream, TaskStatus
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from delos.runtime.redaction import Redactor

__all__ = [
    "ANONYMOUS",
    "AttemptLike",
    "Metrics",
    "SharedCacheStatsLike",
    "SharedStoreStatsLike",
    "serve_metrics",
    "serve_metrics_on",
]

#: The client name of requests served without client keys (a metric label, a log field).
ANONYMOUS: Final = "anonymous"

log = logging.getLogger("delos.runtime.metrics")

#: Request latency and time to first token, seconds: 1 ms up to a minute.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
#: Time spent waiting for a rate limiter slot, seconds.
WAIT_BUCKETS: Final = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_BREAKER_STATE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}
# A label value that is not a plain name (free text, something the redactor recognises as a
# secret) is replaced: whoever can scrape the endpoint reads every label. This bounds what a
# value may hold, not how many there are: callers pass catalog names, not raw client input.
_LABEL_SHAPE: Final = re.compile(r"[A-Za-z0-9._:/@+\-]{1,128}")
_INVALID_LABEL: Final = "invalid"
_REDACTED_LABEL: Final = "redacted"
_NO_LABEL: Final = "none"

_M = TypeVar("_M", bound=MetricWrapperBase)


class _Exposition(Protocol):
    """What a scrape endpoint serves: a :class:`Metrics`, or the sum of several workers'."""

    def render(self) -> bytes: ...


class _Named(Protocol):
    """An enum member whose value is a plain name (``AttemptKind``, ``AttemptOutcome``)."""

    @property
    def value(self) -> str: ...


class AttemptLike(Protocol):
    """One upstream call, as the router records it (``AttemptRecord`` fits)."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def kind(self) -> _Named: ...  # primary, race, hedge, retry or fallback
    @property
    def outcome(self) -> _Named: ...  # won, failed or cancelled
    @property
    def cost_usd(self) -> SupportsFloat: ...


class _Family(Generic[_M]):
    """A labelled metric whose children are looked up once per distinct label tuple."""

    __slots__ = ("_children", "_clean", "_metric")

    def __init__(self, metric: _M, clean: Callable[[str], str]) -> None:
        self._metric = metric
        self._clean = clean
        self._children: dict[tuple[str, ...], _M] = {}

    def labels(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(*(self._clean(v) for v in values))
            self._children[values] = child
        return child


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own.

    ``redact`` (default: mask anything shaped like a provider key) vets label values once each;
    pass the gateway's redactor so configured secrets are caught as well.
    """

    #: The shared-state metrics, made on the first `record_shared_state` (only with Redis).
    _shared_state: _SharedStateMetrics | None = None

    def __init__(self, *, redact: Callable[[str], str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._redact = redact if redact is not None else Redactor()
        registry = self.registry

        def family(metric: _M) -> _Family[_M]:
            return _Family(metric, self._label_value)

        self._requests = family(
            Counter(
                "delos_requests",
                "Finished requests, by gRPC status name.",
                ("provider", "model", "rpc", "status"),
                registry=registry,
            )
        )
        self._latency = family(
            Histogram(
                "delos_request_latency_seconds",
                "Time from receiving a request to its last byte, seconds.",
                ("provider", "model", "rpc"),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self._ttft = family(
            Histogram(
                "delos_time_to_first_token_seconds",
                "Time from receiving a request to the first generated token, seconds.",
                ("provider", "model"),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self._tokens = family(
            Counter(
                "delos_tokens",
                "Tokens exchanged with providers (cached answers excluded).",
                ("provider", "model", "direction"),
                registry=registry,
            )
        )
        self._cost = family(
            Counter(
                "delos_cost_usd",
                "Money spent upstream, USD, losing race and hedge attempts included.",
                ("provider", "model", "client"),
                registry=registry,
            )
        )
        self._breaker = family(
            Gauge(
                "delos_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                ("provider", "model"),
                registry=registry,
                multiprocess_mode="livemax",  # the worst state among the workers
            )
        )
        self._thinking_dropped = family(
            Counter(
                "delos_thinking_dropped",
                "Thinking blocks signed by another endpoint, left out of a request (a "
                "conversation that moved to this provider).",
                ("provider",),
                registry=registry,
            )
        )
        self._connection_wait = family(
            Histogram(
                "delos_connection_wait_seconds",
                "Time spent waiting for a free connection to a provider (the gateway's own "
                "queue, never counted against the provider), seconds.",
                ("provider",),
                buckets=WAIT_BUCKETS,
                registry=registry,
            )
        )
        self._connection_waiters = family(
            Gauge(
                "delos_connection_waiters",
                "Requests waiting right now for a free connection to a provider.",
                ("provider",),
                registry=registry,
                multiprocess_mode="livesum",
            )
        )
        self._connections_busy = family(
            Counter(
                "delos_connections_busy",
                "Attempts refused because every connection to the provider stayed busy.",
                ("provider",),
                registry=registry,
            )
        )
        self._limiter_wait = family(
            Histogram(
                "delos_limiter_wait_seconds",
                "Time spent waiting for the local rate limiter, seconds.",
                ("provider",),
                buckets=WAIT_BUCKETS,
                registry=registry,
            )
        )
        self._attempts = family(
            Counter(
                "delos_upstream_attempts",
                "Upstream calls, by kind (primary, race, hedge, retry, fallback) and outcome.",
                ("provider", "model", "kind", "outcome"),
                registry=registry,
            )
        )

        def per_provider(name: str, documentation: str) -> _Family[Counter]:
            return family(Counter(name, documentation, ("provider",), registry=registry))

        self._started_by_kind = {
            "race": per_provider("delos_races_started", "Race attempts started."),
            "hedge": per_provider("delos_hedges_started", "Hedge attempts started."),
            "retry": per_provider("delos_retries", "Retry attempts."),
            "fallback": per_provider("delos_fallbacks", "Fallback attempts."),
        }
        self._won_by_kind = {
            "race": per_provider("delos_races_won", "Race attempts that gave the answer."),
            "hedge": per_provider("delos_hedges_won", "Hedge attempts that gave the answer."),
        }
        self._cache_hits = Counter(
            "delos_cache_hits", "Answers served from the cache.", registry=registry
        )
        self._cache_misses = Counter(
            "delos_cache_misses", "Cache lookups that found nothing.", registry=registry
        )
        self._cache_coalesced = Counter(
            "delos_cache_coalesced",
            "Requests that waited for an identical request in flight instead of calling upstream.",
            registry=registry,
        )
        self._in_flight = Gauge(
            "delos_in_flight_requests",
            "Requests being served.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    # -- requests -------------------------------------------------------------------------------

    def record_request(
        self,
        *,
        rpc: str,
        provider: str,
        model: str,
        status: str,
        latency_s: float,
        ttft_s: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: SupportsFloat = 0.0,
        client: str | None = None,
        cached: bool = False,
        attempts: Iterable[AttemptLike] = (),
    ) -> None:
        """Record one finished request.

        ``status`` is the name of the status the client saw (``"OK"``, ``"UNAVAILABLE"``);
        ``provider``/``model`` are those that answered, ``""`` when none did. Latencies are
        seconds; ``ttft_s`` is None for requests that produced no token. Tokens are counted only
        for answers not served from the cache. Spend is taken from ``attempts`` (each at its own
        provider and model, losers included); ``cost_usd`` (USD) is counted only when no attempt
        is given.
        """
        status_name = status
        client_name = client or ANONYMOUS
        self._requests.labels(provider, model, rpc, status_name).inc()
        self._latency.labels(provider, model, rpc).observe(latency_s)
        if ttft_s is not None:
            self._ttft.labels(provider, model).observe(ttft_s)
        if not cached:
            if prompt_tokens:
                self._tokens.labels(provider, model, "prompt").inc(prompt_tokens)
            if completion_tokens:
                self._tokens.labels(provider, model, "completion").inc(completion_tokens)
        any_attempt = False
        for attempt in attempts:
            any_attempt = True
            self.record_attempt(attempt, client=client_name)
        if not any_attempt:
            spent = float(cost_usd)
            if spent > 0:
                self._cost.labels(provider, model, client_name).inc(spent)

    def record_attempt(self, attempt: AttemptLike, *, client: str | None = None) -> None:
        """Record one upstream call (already included by :meth:`record_request`)."""
        provider, kind, outcome = attempt.provider, attempt.kind.value, attempt.outcome.value
        self._attempts.labels(provider, attempt.model, kind, outcome).inc()
        started = self._started_by_kind.get(kind)
        if started is not None:
            started.labels(provider).inc()
            won = self._won_by_kind.get(kind)
            if won is not None and outcome == "won":
                won.labels(provider).inc()
        spent = float(attempt.cost_usd)
        if spent > 0:
            self._cost.labels(provider, attempt.model, client or ANONYMOUS).inc(spent)

    def in_flight_started(self) -> None:
        """One more request in flight; :meth:`in_flight_ended` when it ends, however it ends."""
        self._in_flight.inc()

    def in_flight_ended(self) -> None:
        self._in_flight.dec()

    # -- resilience and cache -------------------------------------------------------------------

    def set_breaker_state(self, provider: str, model: str, state: str | Enum) -> None:
        """Publish a breaker's state: ``"closed"``, ``"half_open"``, ``"open"`` (or the enum).

        Raises ValueError for any other state.
        """
        name = state.value if isinstance(state, Enum) else state
        try:
            value = _BREAKER_STATE_VALUES[str(name)]
        except KeyError:
            raise ValueError(f"unknown breaker state {name!r}") from None
        self._breaker.labels(provider, model).set(value)

    def record_thinking_dropped(self, provider: str, count: int) -> None:
        self._thinking_dropped.labels(provider).inc(count)

    def observe_connection_wait(self, provider: str, seconds: float, *, waiting: int) -> None:
        """Record a wait for a free connection (seconds) and how many wait now."""
        self._connection_wait.labels(provider).observe(seconds)
        self._connection_waiters.labels(provider).set(waiting)

    def record_connections_busy(self, provider: str, *, waiting: int) -> None:
        self._connections_busy.labels(provider).inc()
        self._connection_waiters.labels(provider).set(waiting)

    def observe_limiter_wait(self, provider: str, seconds: float) -> None:
        """Record the time a call waited for the local rate limiter, seconds."""
        self._limiter_wait.labels(provider).observe(seconds)

    def record_cache_hit(self) -> None:
        self._cache_hits.inc()

    def record_cache_miss(self) -> None:
        self._cache_misses.inc()

    def record_cache_coalesced(self) -> None:
        self._cache_coalesced.inc()

    # -- shared state (Redis) -------------------------------------------------------------------

    def record_shared_state(
        self,
        stores: Mapping[str, SharedStoreStatsLike],
        cache: SharedCacheStatsLike | None,
        live_replicas: int,
    ) -> None:
        """Publish the shared state's counters, cumulative since each store opened, by store
        role (``limits``, ``cache``): fallback decisions to local state by purpose and reason,
        degraded episodes, calls, failures, and the level-2 cache's outcomes.

        The gateway calls this every second; counters move by the difference since the last
        call. Plain counters and gauges rather than a collector read at scrape time: under
        ``--workers`` only these reach the host's one endpoint, summed across the workers.
        """
        if self._shared_state is None:
            self._shared_state = _SharedStateMetrics(self.registry, self._label_value)
        self._shared_state.record(stores, cache, live_replicas)

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        return generate_latest(self.registry)

    def _label_value(self, value: str) -> str:
        if not value:
            return _NO_LABEL
        if _LABEL_SHAPE.fullmatch(value) is None:
            return _INVALID_LABEL
        if self._redact(value) != value:
            return _REDACTED_LABEL
        return value


class SharedStoreStatsLike(Protocol):
    """A shared store's counters (``delos.runtime.shared.SharedStoreStats`` fits)."""

    @property
    def degraded(self) -> bool: ...
    @property
    def calls(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def fallbacks(self) -> Mapping[tuple[str, str], int]: ...  # (purpose, reason) -> count
    @property
    def degraded_episodes(self) -> int: ...
    @property
    def pending(self) -> int: ...


class SharedCacheStatsLike(Protocol):
    """The level-2 cache's counters (``delos.runtime.shared.SharedCacheStats`` fits)."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def coalesced(self) -> int: ...
    @property
    def waited_out(self) -> int: ...
    @property
    def too_large(self) -> int: ...
    @property
    def waiting(self) -> int: ...


_SHARED_CACHE_EVENTS: Final = ("hits", "misses", "coalesced", "waited_out", "too_large")


class _SharedStateMetrics:
    """The metrics of `Metrics.record_shared_state`, and the counts last published."""

    def __init__(self, registry: CollectorRegistry, clean: Callable[[str], str]) -> None:
        def family(metric: _M) -> _Family[_M]:
            return _Family(metric, clean)

        def per_store(name: str, documentation: str) -> _Family[Counter]:
            return family(Counter(name, documentation, ("store",), registry=registry))

        self.degraded = family(
            Gauge(
                "delos_shared_state_degraded",
                "1 while Redis is not used and local state stands in (fail-static), else 0.",
                ("store",),
                registry=registry,
                multiprocess_mode="livemax",
            )
        )
        self.pending = family(
            Gauge(
                "delos_shared_state_pending",
                "Writes to Redis waiting to be sent in the background.",
                ("store",),
                registry=registry,
                multiprocess_mode="livesum",
            )
        )
        self.calls = per_store("delos_shared_state_calls", "Calls made to Redis.")
        self.failures = per_store(
            "delos_shared_state_failures", "Calls to Redis that failed or missed the deadline."
        )
        self.episodes = per_store(
            "delos_shared_state_degraded_episodes",
            "Switches from shared state on Redis to local state.",
        )
        self.fallbacks = family(
            Counter(
                "delos_shared_state_fallbacks",
                "Decisions to use local state instead of Redis, by purpose and reason.",
                ("store", "purpose", "reason"),
                registry=registry,
            )
        )
        self.cache_events = family(
            Counter(
                "delos_shared_cache_events",
                "Level-2 (Redis) cache lookups by outcome (hits, misses, coalesced), misses "
                "that gave up waiting for another replica (waited_out), answers too large to "
                "store (too_large).",
                ("event",),
                registry=registry,
            )
        )
        self.live_replicas = Gauge(
            "delos_live_replicas",
            "Replicas with a live heartbeat on Redis, as last seen (this one included).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._seen: dict[tuple[str, ...], int] = {}

    def record(
        self,
        stores: Mapping[str, SharedStoreStatsLike],
        cache: SharedCacheStatsLike | None,
        live_replicas: int,
    ) -> None:
        for store, stats in stores.items():
            self.degraded.labels(store).set(1 if stats.degraded else 0)
            self.pending.labels(store).set(stats.pending)
            self._advance(self.calls.labels(store), ("calls", store), stats.calls)
            self._advance(self.failures.labels(store), ("failures", store), stats.failures)
            self._advance(self.episodes.labels(store), ("episodes", store), stats.degraded_episodes)
            for (purpose, reason), count in stats.fallbacks.items():
                self._advance(
                    self.fallbacks.labels(store, purpose, reason),
                    ("fallbacks", store, purpose, reason),
                    count,
                )
        if cache is not None:
            for event in _SHARED_CACHE_EVENTS:
                self._advance(
                    self.cache_events.labels(event), ("cache", event), getattr(cache, event)
                )
        self.live_replicas.set(live_replicas)

    def _advance(self, counter: Counter, key: tuple[str, ...], total: int) -> None:
        # Counters only go up: a store opened again (counting from 0) resumes from there.
        last = self._seen.get(key, 0)
        if total > last:
            counter.inc(total - last)
        self._seen[key] = total


# -- the scrape endpoint ------------------------------------------------------------------------

#: A scraper that keeps a connection open longer than this is cut off, seconds.
_CONNECTION_SECONDS: Final = 30.0
_MAX_HEADER_BYTES: Final = 16 * 1024
_RECEIVE_BYTES: Final = 64 * 1024
# render() writes the classic text format; its content type is what prometheus_client's own
# server sends when the scraper asks for nothing newer.
_CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4.encode()


async def serve_metrics(
    metrics: _Exposition,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` on ``host``:``port`` until cancelled; ``port == 0``: do not serve.

    Start it with ``await task_group.start(serve_metrics, metrics, host, port)``, which returns
    the bound port (None when not serving). Raises OSError when the address cannot be bound.
    """
    if port == 0:
        task_status.started(None)
        return
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    await serve_metrics_on(metrics, listener, task_status=task_status)


async def serve_metrics_on(
    metrics: _Exposition,
    listener: Listener[SocketStream],
    *,
    task_status: TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the scrape endpoint on an open listener (closed on return) until cancelled."""
    async with listener:
        task_status.started(int(listener.extra(SocketAttribute.local_port)))
        await listener.serve(functools.partial(_serve_connection, metrics))


async def _serve_connection(metrics: _Exposition, stream: SocketStream) -> None:
    # Errors end this connection only: an exception escaping the handler would tear down the
    # listener's task group, and with it the endpoint.
    async with stream:
        with anyio.move_on_after(_CONNECTION_SECONDS):
            try:
                await _converse(metrics, stream, h11.Connection(h11.SERVER, _MAX_HEADER_BYTES))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            except Exception:
                log.exception("metrics endpoint: connection failed")


async def _converse(metrics: _Exposition, stream: SocketStream, connection: h11.Connection) -> None:
    while True:
        try:
            request = await _next_request(stream, connection)
        except h11.RemoteProtocolError:
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _respond(stream, connection, 400, b"bad request\n")
            return
        if request is None:
            return
        target = request.target.partition(b"?")[0]
        if target != b"/metrics":
            await _respond(stream, connection, 404, b"not found\n")
        elif request.method not in (b"GET", b"HEAD"):
            await _respond(stream, connection, 405, b"method not allowed\n", allow=b"GET, HEAD")
        else:
            await _respond(stream, connection, 200, metrics.render(), _CONTENT_TYPE)
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            return  # h11 says the connection must close (HTTP/1.0, Connection: close, ...)
        connection.start_next_cycle()


async def _next_request(stream: SocketStream, connection: h11.Connection) -> h11.Request | None:
    """The next request, its (ignored) body read; None once the client closed."""
    request: h11.Request | None = None
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(_RECEIVE_BYTES)
            except anyio.EndOfStream:
                data = b""
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _respond(
    stream: SocketStream,
    connection: h11.Connection,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    *,
    allow: bytes | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow))
    if status >= 400:
        headers.append((b"connection", b"close"))
    data = connection.send(h11.Response(status_code=status, headers=headers))
    data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send(data)
