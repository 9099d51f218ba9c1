"""The resilience state around every provider: breakers, limiters, latency table, retry budget.

One :class:`Guards` per process. Breakers are per (provider, model); limiters per provider;
the latency table per (provider, model); the retry budget is gateway-wide.

With a shared store (Redis), limiters are :class:`SharedProviderLimiter`: the configured limits
are global rather than divided among this host's workers, and a provider's pause reaches every
replica. Breakers still count failures here, but an opening is published, any replica's opening
cuts the provider off here too, and a half-open trial is claimed by one replica at a time. The
latency table and the retry budget stay local (a ratio: per-replica budgets add up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from delos.resilience import (
    BreakerConfig,
    BreakerState,
    CallPermit,
    CircuitBreaker,
    CircuitBreakerFactory,
    CircuitOpenError,
    Clock,
    LatencyTable,
    ProviderLimiter,
    RateLimitHints,
    RateLimitWouldWait,
    RetryBudget,
    Sleep,
    Slots,
    SlotsExhausted,
    reads_anyio_time,
)
from delos.runtime.config import Settings
from delos.runtime.errors import CircuitOpen, ConnectionsBusy, LocalRateLimited
from delos.runtime.observability import Metrics, Tracing
from delos.runtime.routing._candidates import Candidate
from delos.runtime.routing._silence import SilenceWatcher

if TYPE_CHECKING:
    # Only for annotations: without Redis, nothing here imports the shared-state package.
    from delos.runtime.shared import (
        ProviderRateLimiter,
        RateReservation,
        SharedBreakers,
        SharedStore,
    )

__all__ = ["Guards", "Permit", "ResiliencePolicy"]


class Permit(Protocol):
    """Admission for one call, settled exactly once (later calls are no-ops)."""

    def record_success(self, duration: float) -> None: ...

    def record_failure(self, duration: float) -> None: ...

    def record_ignored(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """The knobs of the resilience layer (seconds, ratios)."""

    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    race_width: int = 2
    hedging: bool = False
    #: A hedge never starts before this many seconds, whatever the p95 says.
    hedge_min_delay: float = 0.05
    #: Attempts on one provider for one request (1 = no retry on the same provider).
    attempts_per_provider: int = 2
    retry_initial_backoff: float = 0.1
    retry_max_backoff: float = 2.0
    budget_ratio: float = 0.1
    budget_min_per_second: float = 1.0
    #: Longest a request may queue in a provider's limiter before trying another provider.
    limiter_max_wait: float = 2.0
    #: A stream's first token, or a whole unary answer, must arrive within this many seconds;
    #: with fallbacks left, within half the remaining deadline too, so a silent provider never
    #: eats the whole deadline.
    first_token_timeout: float = 30.0
    unary_timeout: float = 120.0
    #: Longest silence between two events of a stream that already started, seconds.
    idle_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ResiliencePolicy:
        return cls(race_width=settings.race_width, hedging=settings.hedging)


class Guards:
    """The guards, and the clock and sleep that time them and every attempt.

    ``clock`` (seconds) and ``sleep`` drive the breakers' cool-downs, the latency table, the
    retry budget's window, the limiters' waits, retry backoffs and hedge delays. They default
    to anyio's: the clock cancel scopes and deadlines run on, virtual under trio's
    ``MockClock``. A replacement must move ``clock()`` on by ``s`` across ``sleep(s)``;
    deadline arithmetic keeps anyio's clock whatever is injected. Neither is called while
    constructing, so guards may be built outside an event loop.

    ``store`` (with ``shared_breakers`` and ``live_replicas``, the last known number of live
    replicas) shares limits and breakers with the other replicas; without it (the default)
    configured limits are divided among this host's ``workers``.
    """

    def __init__(
        self,
        settings: Settings,
        policy: ResiliencePolicy | None = None,
        *,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
        workers: int = 1,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        store: SharedStore | None = None,
        shared_breakers: SharedBreakers | None = None,
        live_replicas: Callable[[], int] = lambda: 1,
    ) -> None:
        self.policy = policy or ResiliencePolicy.from_settings(settings)
        self._settings = settings
        self.clock = clock
        #: The clock cancel-scope deadlines are set on: ``clock`` when it reads anyio's time.
        self.deadline_clock: Clock = clock if reads_anyio_time(clock) else anyio.current_time
        self.sleep = sleep
        #: Watches streams' silence limits; the gateway's task group runs it.
        self.silence = SilenceWatcher(clock, sleep)
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing.from_settings(None)
        self.breakers = CircuitBreakerFactory(self.policy.breaker, clock=clock)
        self.breakers.add_listener(self._on_breaker_change)
        self.latency: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
        self.budget = RetryBudget(
            self.policy.budget_ratio, min_per_second=self.policy.budget_min_per_second, clock=clock
        )
        self._workers = workers
        self._store = store
        self._live_replicas = live_replicas
        self.shared_breakers = shared_breakers
        self._shared_seen: set[str] = set()
        if shared_breakers is not None:
            shared_breakers.attach(self.breakers)
            shared_breakers.add_listener(self._on_shared_breaker_change)
        self.limiters: dict[str, ProviderRateLimiter] = {}
        #: Provider → its connection slots, made on first use.
        self.connections: dict[str, Slots] = {}
        for provider, limits in settings.limits.items():
            self.limiters[provider] = self._limiter(
                provider, limits.requests_per_minute, limits.tokens_per_minute
            )

    def _on_breaker_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        provider, _, model = name.partition("/")
        self.metrics.set_breaker_state(provider, model, new.value)

    def _on_shared_breaker_change(self, name: str, _state: BreakerState) -> None:
        provider, _, model = name.partition("/")
        self.metrics.set_breaker_state(provider, model, self.breaker_state(provider, model))

    def breaker(self, candidate: Candidate) -> CircuitBreaker:
        provider, model = candidate.key
        return self.breakers.get_breaker(f"{provider}/{model}")

    def breaker_state(self, provider: str, model: str) -> BreakerState:
        """This replica's breaker state, or the shared one while that is worse."""
        name = f"{provider}/{model}"
        local = self.breakers.get_breaker(name).state
        if local is not BreakerState.CLOSED or self.shared_breakers is None:
            return local
        return self.shared_breakers.state(name)

    def admitted(self, candidate: Candidate) -> bool:
        """False while the candidate's breaker is open, here or (with a shared store) on any
        replica; half-open candidates stay eligible."""
        if self.breaker(candidate).state is BreakerState.OPEN:
            return False
        shared = self.shared_breakers
        provider, model = candidate.key
        return shared is None or shared.state(f"{provider}/{model}") is not BreakerState.OPEN

    async def acquire_permit(self, candidate: Candidate) -> Permit:
        """Admission for one call on ``candidate``. Raises :class:`CircuitOpen` while its
        breaker is open here or on another replica, or while another replica makes the
        half-open trial call. Only that claim awaits (one round trip to Redis, in HALF_OPEN)."""
        provider, model = candidate.key
        try:
            permit = self.breaker(candidate).try_acquire()
        except CircuitOpenError as error:
            raise _circuit_open(candidate, error.retry_after_seconds) from None
        shared = self.shared_breakers
        if shared is None:
            return permit
        name = f"{provider}/{model}"
        if name not in self._shared_seen:
            # The polls cover the breakers this replica knows: read a new one's shared state
            # now (one round trip, once), or its first call would miss an opening elsewhere.
            self._shared_seen.add(name)
            shared.watch(name)
            try:
                await shared.refresh()
            except BaseException:
                permit.record_ignored()
                raise
        state = shared.state(name)
        if state is BreakerState.CLOSED:
            return permit
        if state is BreakerState.OPEN:
            permit.record_ignored()
            raise _circuit_open(candidate, shared.seconds_until_half_open(name) or 0.0)
        try:
            claimed = await shared.try_claim_trial(name)
        except BaseException:
            permit.record_ignored()
            raise
        if not claimed:
            permit.record_ignored()
            raise CircuitOpen(
                provider, f"circuit half-open for {model}: another replica makes the trial call"
            )
        return _SharedTrial(permit, shared, name, self.policy.breaker.wait_in_open)

    async def reserve(self, candidate: Candidate, estimated_tokens: int) -> RateReservation | None:
        limiter = self.limiters.get(candidate.provider.name)
        if limiter is None:
            if self._store is None:
                return None
            # Shared, every provider has a limiter, limited or not: it is where this replica
            # finds a pause another replica's 429 set.
            limiter = self.limiters[candidate.provider.name] = self._unlimited(
                candidate.provider.name
            )
        started = self.clock()
        try:
            reservation = await limiter.reserve(
                estimated_tokens, max_wait=self.policy.limiter_max_wait
            )
        except RateLimitWouldWait as error:
            raise LocalRateLimited(
                candidate.provider.name,
                f"local rate limit reached (would wait {error.wait_seconds:.1f} s)",
                retry_after=error.wait_seconds,
            ) from None
        self.metrics.observe_limiter_wait(candidate.provider.name, self.clock() - started)
        return reservation

    async def take_connection(self, candidate: Candidate) -> Slots:
        """A connection slot towards the candidate's provider, waited for within the configured
        bound (the wait is recorded, never counted against the provider); give it back with
        ``release()``. Raises :class:`ConnectionsBusy`."""
        name = candidate.provider.name
        slots = self.connections.get(name)
        if slots is None:
            capacity = self._settings.connections_for(name)
            slots = self.connections[name] = Slots(capacity, clock=self.clock)
        try:
            waited = await slots.acquire(self._settings.connection_wait_seconds)
        except SlotsExhausted as error:
            self.metrics.record_connections_busy(name, waiting=slots.waiting)
            raise ConnectionsBusy(
                name,
                f"all {error.capacity} connections busy for {error.waited:.1f} s "
                f"(DELOS_RUNTIME_{name.upper()}_MAX_CONNECTIONS)",
            ) from None
        if waited:
            self.metrics.observe_connection_wait(name, waited, waiting=slots.waiting)
        return slots

    def rate_limit_listener(self, provider: str) -> Callable[[RateLimitHints], None]:
        """What an adapter calls with the rate-limit headers it sees. Without a configured limit,
        a limiter is created the first time the provider says it is exhausted, so the pause it
        asks for is honoured anyway."""

        def listener(hints: RateLimitHints) -> None:
            limiter = self.limiters.get(provider)
            if limiter is None:
                if not (
                    hints.retry_after
                    or hints.remaining_requests == 0
                    or hints.remaining_tokens == 0
                ):
                    return
                limiter = self.limiters[provider] = self._unlimited(provider)
            limiter.apply_hints(hints)

        return listener

    def pause(self, provider: str, seconds: float) -> None:
        """A 429's Retry-After: hold this provider's limiter for ``seconds``."""
        limiter = self.limiters.get(provider)
        if limiter is None:
            limiter = self.limiters[provider] = self._unlimited(provider)
        limiter.pause_until(self.clock() + seconds)

    def _unlimited(self, provider: str) -> ProviderRateLimiter:
        """A limiter with no configured limit: it only honours what the provider says."""
        return self._limiter(provider, None, None)

    def _limiter(
        self, provider: str, requests_per_minute: float | None, tokens_per_minute: float | None
    ) -> ProviderRateLimiter:
        """Local: this worker's share of the limits. Shared: the limits themselves, global."""
        if self._store is None:
            return ProviderLimiter.for_worker_share(
                requests_per_minute,
                tokens_per_minute,
                self._workers,
                clock=self.clock,
                sleep=self.sleep,
            )
        # Imported here: the shared-state package brings coredis, which only Redis needs.
        from delos.runtime.shared import SharedProviderLimiter

        return SharedProviderLimiter(
            provider,
            requests_per_minute,
            tokens_per_minute,
            self._store,
            live_replicas=self._live_replicas,
            clock=self.clock,
            sleep=self.sleep,
        )


def _circuit_open(candidate: Candidate, retry_after_seconds: float) -> CircuitOpen:
    provider, model = candidate.key
    return CircuitOpen(
        provider,
        f"circuit open for {model} after repeated failures; "
        f"next trial in {retry_after_seconds:.1f} s",
    )


class _SharedTrial:
    """A call that is every replica's half-open trial of breaker ``name``: settling it settles
    the local permit and tells the other replicas (a success closes the breaker everywhere, a
    failure opens it again for ``reopen_seconds``, a call that says nothing — cancelled, a race
    loser, a 429 — hands the claim back so that the next request, here or on another replica,
    makes the trial at once)."""

    __slots__ = ("_breakers", "_local", "_name", "_reopen_seconds")

    def __init__(
        self, local: CallPermit, breakers: SharedBreakers, name: str, reopen_seconds: float
    ) -> None:
        self._local = local
        self._breakers = breakers
        self._name = name
        self._reopen_seconds = reopen_seconds

    def record_success(self, duration: float) -> None:
        if not self._local.settled:
            self._local.record_success(duration)
            self._breakers.settle_trial(self._name, success=True)

    def record_failure(self, duration: float) -> None:
        if not self._local.settled:
            self._local.record_failure(duration)
            self._breakers.settle_trial(
                self._name, success=False, reopen_seconds=self._reopen_seconds
            )

    def record_ignored(self) -> None:
        if not self._local.settled:
            self._local.record_ignored()
            self._breakers.release_trial(self._name)
