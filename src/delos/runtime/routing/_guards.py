"""The resilience state around every provider: breakers, limiters, latency table, retry budget.

One :class:`Guards` per process. Breakers are per (provider, model); limiters per provider;
the latency table per (provider, model); the retry budget is gateway-wide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    Reservation,
    RetryBudget,
    Sleep,
    Slots,
    SlotsExhausted,
)
from delos.runtime.config import Settings
from delos.runtime.errors import CircuitOpen, ConnectionsBusy, LocalRateLimited
from delos.runtime.observability import Metrics, Tracing
from delos.runtime.routing._candidates import Candidate

__all__ = ["Guards", "ResiliencePolicy"]


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
    ) -> None:
        self.policy = policy or ResiliencePolicy.from_settings(settings)
        self._settings = settings
        self.clock = clock
        self.sleep = sleep
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing.from_settings(None)
        self.breakers = CircuitBreakerFactory(self.policy.breaker, clock=clock)
        self.breakers.add_listener(self._on_breaker_change)
        self.latency: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
        self.budget = RetryBudget(
            self.policy.budget_ratio, min_per_second=self.policy.budget_min_per_second, clock=clock
        )
        self.limiters: dict[str, ProviderLimiter] = {}
        #: Provider → its connection slots, made on first use.
        self.connections: dict[str, Slots] = {}
        for provider, limits in settings.limits.items():
            self.limiters[provider] = ProviderLimiter.for_worker_share(
                limits.requests_per_minute,
                limits.tokens_per_minute,
                workers,
                clock=clock,
                sleep=sleep,
            )

    def _on_breaker_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        provider, _, model = name.partition("/")
        self.metrics.set_breaker_state(provider, model, new.value)

    def breaker(self, candidate: Candidate) -> CircuitBreaker:
        provider, model = candidate.key
        return self.breakers.get_breaker(f"{provider}/{model}")

    def breaker_state(self, provider: str, model: str) -> BreakerState:
        return self.breakers.get_breaker(f"{provider}/{model}").state

    def admitted(self, candidate: Candidate) -> bool:
        """False while the candidate's breaker is open (half-open candidates stay eligible)."""
        return self.breaker(candidate).state is not BreakerState.OPEN

    def acquire_permit(self, candidate: Candidate) -> CallPermit:
        try:
            return self.breaker(candidate).try_acquire()
        except CircuitOpenError as error:
            provider, model = candidate.key
            raise CircuitOpen(
                provider,
                f"circuit open for {model} after repeated failures; "
                f"next trial in {error.retry_after_seconds:.1f} s",
            ) from None

    async def reserve(self, candidate: Candidate, estimated_tokens: int) -> Reservation | None:
        limiter = self.limiters.get(candidate.provider.name)
        if limiter is None:
            return None
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
                limiter = self.limiters[provider] = self._unlimited()
            limiter.apply_hints(hints)

        return listener

    def pause(self, provider: str, seconds: float) -> None:
        """A 429's Retry-After: hold this provider's limiter for ``seconds``."""
        limiter = self.limiters.get(provider)
        if limiter is None:
            limiter = self.limiters[provider] = self._unlimited()
        limiter.pause_until(self.clock() + seconds)

    def _unlimited(self) -> ProviderLimiter:
        """A limiter with no configured limit: it only honours what the provider says."""
        return ProviderLimiter(None, None, clock=self.clock, sleep=self.sleep)
