"""Rate limiting with GCRA for anyio: refundable, chargeable, pausable, bounded waits.

Layout: `GcraLimiter` limits one dimension (units per period); `ProviderLimiter` pairs a
requests-per-minute and a tokens-per-minute limiter, reserves both for a call and reconciles the
estimate with the real usage; `RateLimitHints` carries what a provider's headers said (filled in
by adapters); `share_limits` splits a provider's limits across worker processes.

GCRA keeps one number, the theoretical arrival time (TAT). With emission interval
`T = period / rate` and tolerance `tau = burst * T`, taking `c` units at time `now` is allowed when
`max(TAT, now) + c*T - tau <= now`, and moves `TAT` to `max(TAT, now) + c*T`. It admits a burst
of `burst` units, then paces at `rate` per `period` (a token bucket written as a schedule).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ._clock import Clock, reads_anyio_time

__all__ = [
    "GcraLimiter",
    "LimiterSnapshot",
    "ProviderLimiter",
    "ProviderLimiterSnapshot",
    "RateLimitHints",
    "RateLimitWouldWait",
    "Reservation",
    "share_limits",
]

Sleep = Callable[[float], Awaitable[None]]

# Float slack when comparing clock times: after sleeping exactly the predicted wait, rounding
# can leave a few ulps to go, which must not cost another sleep.
_EPSILON = 1e-9


def _allowed_wait(clock: Clock, now: float, start: float, max_wait: float) -> float:
    """Seconds a caller that arrived at `start` may still wait at `now`.

    The cancel-scope deadline counts only when `clock` is anyio's: deadlines are anyio clock
    times, which another clock's readings cannot be compared with.
    """
    allowed = max_wait - (now - start)
    if reads_anyio_time(clock):
        allowed = min(allowed, anyio.current_effective_deadline() - now)
    return allowed


class RateLimitWouldWait(Exception):
    """Admission would take `wait_seconds`, more than the caller allowed. Nothing was reserved."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(wait_seconds)
        self.wait_seconds = wait_seconds

    def __str__(self) -> str:
        return f"rate limit would wait {self.wait_seconds:.3f} seconds, longer than allowed"


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """A `GcraLimiter`'s state. Units are the limiter's (requests, tokens); times in seconds.

    `available` is what could be taken right now ignoring pauses and queued waiters;
    `paused_until` is None when no pause is in force; `waiting` is the amount queued in
    `acquire()`.
    """

    rate: float
    period: float
    burst: float
    available: float
    theoretical_arrival_time: float
    paused_until: float | None
    waiting: float


class GcraLimiter:
    """`rate` units per `period` seconds with bursts up to `burst` units (default: `rate`).

    `rate=math.inf` means unlimited; such a limiter still honours `pause_until()`.
    `clock` and `sleep` default to anyio's. Waiting in `acquire()` is bounded by `max_wait` and,
    only when `clock` is `anyio.current_time`, by the deadline of the enclosing cancel scopes:
    another clock's times cannot be compared with anyio deadlines.
    """

    def __init__(
        self,
        rate: float,
        period: float = 60.0,
        *,
        burst: float | None = None,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 (math.inf for unlimited), got {rate!r}")
        if not 0 < period < math.inf:
            raise ValueError(f"period must be a finite number of seconds > 0, got {period!r}")
        if rate == math.inf:
            burst = math.inf
            self._interval = 0.0
        else:
            burst = rate if burst is None else burst
            if not 0 < burst < math.inf:
                raise ValueError(f"burst must be finite and > 0, got {burst!r}")
            self._interval = period / rate
        self.rate = rate
        self.period = period
        self.burst = burst
        self._tolerance = burst * self._interval if self._interval else 0.0
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf
        self._paused_until = -math.inf
        self._lock = anyio.Lock()
        self._waiters = 0
        self._waiting = 0.0

    def __repr__(self) -> str:
        return f"<GcraLimiter {self.rate:g}/{self.period:g}s burst={self.burst:g}>"

    @property
    def paused_until(self) -> float | None:
        """The clock time a pause lasts until, or None when not paused."""
        return self._paused_until if self._paused_until > self._clock() else None

    def predicted_wait(self, amount: float = 1) -> float:
        """Seconds `acquire(amount)` would wait if called now, behind the callers already queued.

        Raises `ValueError` for a negative amount or one larger than `burst`.
        """
        self._check_amount(amount)
        now = self._clock()
        return self._wait(now, amount, self._waiting)

    def try_acquire_nowait(self, amount: float = 1) -> bool:
        """Take `amount` units if that needs no waiting; return whether they were taken.

        Never overtakes queued callers. Raises `ValueError` like `predicted_wait()`.
        """
        self._check_amount(amount)
        now = self._clock()
        if self._wait(now, amount, self._waiting) > _EPSILON:
            return False
        self._take(now, amount)
        return True

    async def acquire(self, amount: float = 1, *, max_wait: float = math.inf) -> None:
        """Take `amount` units, waiting in FIFO order for them (large amounts are not starved).

        Raises `RateLimitWouldWait` without taking anything when the wait would exceed
        `max_wait` seconds or the time left before the cancel-scope deadline (see the class
        docstring); this is checked on entry and again whenever a pause or a charge lengthens
        the wait. Raises `ValueError` for a negative amount or one larger than `burst`.
        """
        self._check_amount(amount)
        start = self._clock()
        wait = self._wait(start, amount, self._waiting)
        if wait <= _EPSILON and not self._waiters:
            # Nobody queued and nothing to wait for: the common case takes no lock and reads no
            # deadline.
            self._take(start, amount)
            return
        if wait > _allowed_wait(self._clock, start, start, max_wait):
            raise RateLimitWouldWait(wait)
        self._waiters += 1
        self._waiting += amount
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    # Holding the lock, this caller is first in line: nobody is ahead.
                    wait = self._wait(now, amount, 0.0)
                    if wait <= _EPSILON:
                        self._take(now, amount)
                        return
                    if wait > _allowed_wait(self._clock, now, start, max_wait):
                        raise RateLimitWouldWait(wait)
                    # A refund during this sleep does not shorten it; the loop re-checks after.
                    await self._sleep(wait)
        finally:
            self._waiters -= 1
            # Reset at zero so float rounding in the running sum cannot accumulate.
            self._waiting = self._waiting - amount if self._waiters else 0.0

    def refund(self, amount: float) -> None:
        """Give back `amount` units (an over-estimate). Capacity never exceeds a full burst.

        Raises `ValueError` for a negative amount.
        """
        self._check_non_negative(amount)
        self._tat = max(self._tat - amount * self._interval, self._clock())

    def charge(self, amount: float) -> None:
        """Take `amount` more units at once (an under-estimate), going into debt if needed.

        Later callers wait for the debt to be paid off. Raises `ValueError` if negative.
        """
        self._check_non_negative(amount)
        self._take(self._clock(), amount)

    def pause_until(self, until: float) -> None:
        """Admit nothing before clock time `until` (seconds). A shorter pause never cuts one."""
        self._paused_until = max(self._paused_until, until)

    def snapshot(self) -> LimiterSnapshot:
        """The current state (see `LimiterSnapshot`)."""
        now = self._clock()
        if self._interval:
            backlog = max(self._tat - now, 0.0)
            available = max((self._tolerance - backlog) / self._interval, 0.0)
        else:
            available = math.inf
        return LimiterSnapshot(
            rate=self.rate,
            period=self.period,
            burst=self.burst,
            available=available,
            theoretical_arrival_time=self._tat,
            paused_until=self._paused_until if self._paused_until > now else None,
            waiting=self._waiting,
        )

    def _wait(self, now: float, amount: float, ahead: float) -> float:
        # Queued callers take their units as soon as they conform, so they move TAT to
        # max(TAT, now, paused_until) + ahead*T before this caller's turn comes.
        base = max(self._tat, now, self._paused_until)
        start = max(self._paused_until, base + (ahead + amount) * self._interval - self._tolerance)
        return max(start - now, 0.0)

    def _take(self, now: float, amount: float) -> None:
        self._tat = max(self._tat, now) + amount * self._interval

    def _check_amount(self, amount: float) -> None:
        self._check_non_negative(amount)
        if amount > self.burst:
            raise ValueError(
                f"amount {amount!r} exceeds the burst of {self.burst!r}; it could never be admitted"
            )

    @staticmethod
    def _check_non_negative(amount: float) -> None:
        if not amount >= 0:
            raise ValueError(f"amount must be >= 0, got {amount!r}")


@dataclass(frozen=True, slots=True)
class RateLimitHints:
    """Rate-limit information from a provider response, in provider-neutral form.

    All durations are seconds from the moment the response was received; None means the
    provider did not say.
    """

    retry_after: float | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    requests_reset_after: float | None = None
    tokens_reset_after: float | None = None


def share_limits(
    requests_per_minute: float | None, tokens_per_minute: float | None, workers: int
) -> tuple[float | None, float | None]:
    """Split a provider's limits evenly across `workers` processes (None stays unlimited).

    Together the workers never exceed the provider's limits. A request needing more tokens
    than one worker's share can then never be admitted by that worker.
    Raises `ValueError` when `workers` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    return (
        None if requests_per_minute is None else requests_per_minute / workers,
        None if tokens_per_minute is None else tokens_per_minute / workers,
    )


class Reservation:
    """One request unit and an estimated number of tokens taken by `ProviderLimiter.reserve()`.

    Settle it once, synchronously (safe in a `finally` block or a cancelled scope), with either
    `reconcile()` or `release_unused()`; later calls to either are no-ops.
    """

    __slots__ = ("_requests", "_settled", "_tokens", "estimated_tokens")

    def __init__(self, requests: GcraLimiter, tokens: GcraLimiter, estimated_tokens: int) -> None:
        self._requests = requests
        self._tokens = tokens
        self._settled = False
        self.estimated_tokens = estimated_tokens

    @property
    def settled(self) -> bool:
        """Whether `reconcile()` or `release_unused()` has already been called."""
        return self._settled

    def reconcile(self, actual_tokens: int) -> None:
        """The call used `actual_tokens`: refund an over-estimate, charge an under-estimate.

        Raises `ValueError` for a negative count.
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens!r}")
        if self._settled:
            return
        self._settled = True
        difference = actual_tokens - self.estimated_tokens
        if difference < 0:
            self._tokens.refund(-difference)
        elif difference > 0:
            self._tokens.charge(difference)

    def release_unused(self) -> None:
        """The call never reached the provider: give back the request unit and all tokens."""
        if self._settled:
            return
        self._settled = True
        self._requests.refund(1)
        self._tokens.refund(self.estimated_tokens)


@dataclass(frozen=True, slots=True)
class ProviderLimiterSnapshot:
    """A `ProviderLimiter`'s state: both dimensions, the pause in force, the last reservation."""

    requests: LimiterSnapshot
    tokens: LimiterSnapshot
    paused_until: float | None
    last_reserved_tokens: int | None


def _limiter_for(rate: float | None, burst_floor: float, clock: Clock, sleep: Sleep) -> GcraLimiter:
    if rate is None:
        return GcraLimiter(math.inf, 60.0, clock=clock, sleep=sleep)
    # The burst is a minute's worth, but at least one whole unit, so that a fractional rate
    # (a small per-worker share) still admits single requests.
    return GcraLimiter(rate, 60.0, burst=max(rate, burst_floor), clock=clock, sleep=sleep)


class ProviderLimiter:
    """Requests-per-minute and tokens-per-minute limits of one provider (None = unlimited).

    Each call reserves one request and its estimated tokens (`reserve()`), then settles the
    `Reservation` with the real usage. `apply_hints()` pauses admission when the provider's
    headers say its own limits are exhausted. `clock` and `sleep` default to anyio's.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        *,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._requests = _limiter_for(requests_per_minute, 1.0, clock, sleep)
        self._tokens = _limiter_for(tokens_per_minute, 0.0, clock, sleep)
        self._last_reserved_tokens: int | None = None

    @classmethod
    def for_worker_share(
        cls,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        workers: int,
        *,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> ProviderLimiter:
        """A limiter for one of `workers` processes sharing the provider (see `share_limits`)."""
        rpm, tpm = share_limits(requests_per_minute, tokens_per_minute, workers)
        return cls(rpm, tpm, clock=clock, sleep=sleep)

    @property
    def requests(self) -> GcraLimiter:
        """The requests-per-minute limiter."""
        return self._requests

    @property
    def tokens(self) -> GcraLimiter:
        """The tokens-per-minute limiter."""
        return self._tokens

    @property
    def paused_until(self) -> float | None:
        """The clock time admission is paused until, or None when not paused."""
        pauses = [
            until
            for until in (self._requests.paused_until, self._tokens.paused_until)
            if until is not None
        ]
        return max(pauses) if pauses else None

    async def reserve(self, estimated_tokens: int, *, max_wait: float = math.inf) -> Reservation:
        """Reserve one request and `estimated_tokens` tokens, waiting at most `max_wait` seconds.

        All or nothing: raises `RateLimitWouldWait` (reserving nothing) when either dimension
        would wait too long, including against the cancel-scope deadline when the clock is
        anyio's. Raises `ValueError` when `estimated_tokens` is negative or above the token burst.
        """
        token_wait = self._tokens.predicted_wait(estimated_tokens)  # validates the amount too
        start = self._clock()
        self._last_reserved_tokens = estimated_tokens
        # Both dimensions refill in parallel, so the longer of the two predicted waits is the
        # wait; checking it first avoids waiting for a request unit only to give it back.
        wait = max(self._requests.predicted_wait(1), token_wait)
        if wait > _EPSILON and wait > _allowed_wait(self._clock, start, start, max_wait):
            raise RateLimitWouldWait(wait)
        await self._requests.acquire(1, max_wait=max_wait)
        try:
            await self._tokens.acquire(
                estimated_tokens, max_wait=max_wait - (self._clock() - start)
            )
        except BaseException:
            self._requests.refund(1)
            raise
        return Reservation(self._requests, self._tokens, estimated_tokens)

    def pause_until(self, until: float) -> None:
        """Admit nothing before clock time `until` (seconds), in both dimensions."""
        self._requests.pause_until(until)
        self._tokens.pause_until(until)

    def apply_hints(self, hints: RateLimitHints) -> None:
        """Adapt to what the provider reported.

        - `retry_after` pauses both dimensions for that long;
        - `remaining_requests == 0` pauses requests until `requests_reset_after`;
        - `remaining_tokens` below the size of the last reservation (a typical call) pauses
          tokens until `tokens_reset_after`.
        A zero remaining count without a reset time pauses nothing: there is no end to wait for.
        """
        now = self._clock()
        if hints.retry_after is not None and hints.retry_after > 0:
            self.pause_until(now + hints.retry_after)
        if (
            hints.remaining_requests is not None
            and hints.remaining_requests <= 0
            and hints.requests_reset_after is not None
        ):
            self._requests.pause_until(now + hints.requests_reset_after)
        needed = max(self._last_reserved_tokens or 0, 1)
        if (
            hints.remaining_tokens is not None
            and hints.remaining_tokens < needed
            and hints.tokens_reset_after is not None
        ):
            self._tokens.pause_until(now + hints.tokens_reset_after)

    def snapshot(self) -> ProviderLimiterSnapshot:
        """The current state (see `ProviderLimiterSnapshot`)."""
        return ProviderLimiterSnapshot(
            requests=self._requests.snapshot(),
            tokens=self._tokens.snapshot(),
            paused_until=self.paused_until,
            last_reserved_tokens=self._last_reserved_tokens,
        )
