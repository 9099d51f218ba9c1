"""Resilience primitives, with no knowledge of providers: backend-neutral anyio code, time injected.

Layout:
    _clock.py     the Clock and Sleep types, anyio's clock read cheaply, a FakeClock for tests
    _breaker.py   circuit breaker (purgatory's API shape, resilience4j's rules)
    _limiter.py   GCRA rate limiter, provider RPM+TPM limiter, rate-limit hints
    _ewma.py      PeakEWMA latency table (TTFT, throughput, in-flight, errors)
    _budget.py    retry budget: retries and hedges as a ratio of primary traffic
    _race.py      races and hedges: first to claim wins, the others are cancelled
    _retry.py     tenacity retry policy: backoff, Retry-After, deadline, budget
    _slots.py     a provider's connections as slots, taken with a bounded wait

Wrapper order, outermost first, for every upstream attempt (as resilience4j's
``Retry(CircuitBreaker(RateLimiter(TimeLimiter(fn))))``):

    router → race / hedge / retry / fallback orchestration (budget, deadline)
        → breaker admission (non-blocking: an open provider neither queues nor spends tokens)
            → rate limiter (bounded wait; a long wait sends the request elsewhere)
                → connection slot (bounded wait; a full pool sends the request elsewhere)
                    → the adapter's call (the deadline is the caller's cancel scope)

Retries and hedges sit outermost so every attempt passes its own provider's breaker and limiter
and may go to another provider; the breaker comes before the limiter so a provider that is cut
off never makes callers wait; time spent waiting in the limiter or for a connection is not part
of the call the breaker times, so queueing is never mistaken for a slow provider. Every outcome
feeds the breaker, the latency table, the limiter's reconciliation and the budget; a
cancellation (race or hedge loser, client gone) counts as neither success nor failure.
"""

from delos.resilience._breaker import (
    BreakerConfig,
    BreakerState,
    CallPermit,
    CircuitBreaker,
    CircuitBreakerFactory,
    CircuitOpenError,
)
from delos.resilience._budget import RetryBudget
from delos.resilience._clock import (
    BackendClock,
    Clock,
    FakeClock,
    Sleep,
    backend_clock,
    reads_anyio_time,
)
from delos.resilience._ewma import LatencySnapshot, LatencyTable
from delos.resilience._limiter import (
    ProviderLimiter,
    RateLimitHints,
    RateLimitWouldWait,
    Reservation,
)
from delos.resilience._race import AllAttemptsFailed, RaceTicket, race
from delos.resilience._retry import retrying
from delos.resilience._slots import Slots, SlotsExhausted

__all__ = [
    "AllAttemptsFailed",
    "BackendClock",
    "BreakerConfig",
    "BreakerState",
    "CallPermit",
    "CircuitBreaker",
    "CircuitBreakerFactory",
    "CircuitOpenError",
    "Clock",
    "FakeClock",
    "LatencySnapshot",
    "LatencyTable",
    "ProviderLimiter",
    "RaceTicket",
    "RateLimitHints",
    "RateLimitWouldWait",
    "Reservation",
    "RetryBudget",
    "Sleep",
    "Slots",
    "SlotsExhausted",
    "backend_clock",
    "race",
    "reads_anyio_time",
    "retrying",
]
