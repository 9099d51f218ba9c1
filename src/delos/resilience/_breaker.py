"""Circuit breaker: purgatory's API shape with resilience4j's rules.

    CLOSED ──(failure rate or slow-call rate ≥ threshold over ≥ minimum_calls)──▶ OPEN
    OPEN ──(wait elapsed; noticed lazily by try_acquire() or a state read)──▶ HALF_OPEN
    HALF_OPEN ──(all trial calls done, rates over them ≥ a threshold)──▶ OPEN (wait backs off)
    HALF_OPEN ──(all trial calls done, rates below both thresholds)──▶ CLOSED (window cleared)

Admission is non-blocking (`try_acquire()` returns a `CallPermit` or raises `CircuitOpenError`)
so a router can move on to another provider at once. Every permit is settled exactly once, and
settling is synchronous so it still happens in a cancelled scope. A cancelled call is settled
with `record_ignored()`, never as a failure: a cancelled race loser says nothing about the
health of its provider.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._clock import Clock

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerSnapshot",
    "BreakerState",
    "CallPermit",
    "CircuitBreaker",
    "CircuitBreakerFactory",
    "CircuitOpenError",
]

logger = logging.getLogger("delos.resilience.breaker")


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


BreakerListener = Callable[[str, BreakerState, BreakerState], None]
"""Called as `listener(name, old_state, new_state)`, synchronously, on every transition."""


class _Outcome(enum.Enum):
    """How a settled permit counts for its breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class _Record:
    """The state and its timing, replaced as a whole on every transition.

    `opened_at` and `half_open_at` are clock times in seconds (None unless they apply);
    `consecutive_opens` counts openings since the breaker last closed and sets the back-off of
    the wait in OPEN.
    """

    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    half_open_at: float | None = None
    consecutive_opens: int = 0


class CircuitOpenError(Exception):
    """A breaker refused a call. `retry_after_seconds` is the time until it goes half-open.

    It is 0.0 when the breaker is half-open with every trial slot taken: the trials in flight
    decide, and no time bound is known.
    """

    def __init__(self, name: str, retry_after_seconds: float) -> None:
        super().__init__(name, retry_after_seconds)
        self.name = name
        self.retry_after_seconds = retry_after_seconds

    def __str__(self) -> str:
        return (
            f"circuit breaker {self.name!r} is open; "
            f"retry after {self.retry_after_seconds:.3f} seconds"
        )


def _require(condition: bool, field: str, rule: str, value: object) -> None:
    if not condition:
        raise ValueError(f"BreakerConfig.{field} must be {rule}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Breaker thresholds. Rates are fractions in (0, 1]; durations are seconds.

    `window_size` is the number of most recent calls the rates are computed over;
    `minimum_calls` (capped at `window_size`) must be reached before the breaker decides.
    The wait in OPEN is `wait_in_open` for the first opening and is multiplied by
    `open_backoff_multiplier` on each consecutive re-opening, up to `max_wait_in_open`.
    Set `slow_call_duration` to `math.inf` to disable slow-call detection.
    Raises `ValueError` naming the field when a value is out of range.
    """

    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 0.8
    slow_call_duration: float = 30.0
    window_size: int = 20
    minimum_calls: int = 10
    wait_in_open: float = 15.0
    open_backoff_multiplier: float = 2.0
    max_wait_in_open: float = 300.0
    half_open_trial_calls: int = 3

    def __post_init__(self) -> None:
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, field)
            _require(0 < value <= 1, field, "in (0, 1]", value)
        _require(self.slow_call_duration > 0, "slow_call_duration", "> 0", self.slow_call_duration)
        for field in ("window_size", "minimum_calls", "half_open_trial_calls"):
            value = getattr(self, field)
            _require(value >= 1, field, ">= 1", value)
        wait = self.wait_in_open
        _require(0 <= wait < math.inf, "wait_in_open", "finite and >= 0", wait)
        multiplier = self.open_backoff_multiplier
        _require(1 <= multiplier < math.inf, "open_backoff_multiplier", ">= 1", multiplier)
        _require(
            wait <= self.max_wait_in_open < math.inf,
            "max_wait_in_open",
            "finite and >= wait_in_open",
            self.max_wait_in_open,
        )

    @property
    def effective_minimum_calls(self) -> int:
        """`minimum_calls` capped at `window_size` (a full window always decides)."""
        return min(self.minimum_calls, self.window_size)

    def wait_for_opening(self, consecutive_opens: int) -> float:
        """Seconds to stay OPEN for the n-th consecutive opening (n >= 1)."""
        try:
            wait = self.wait_in_open * self.open_backoff_multiplier ** (consecutive_opens - 1)
        except OverflowError:
            return self.max_wait_in_open
        return min(wait, self.max_wait_in_open)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state for metrics and debugging.

    In HALF_OPEN the rates and call count are those of the trial calls completed so far; in
    OPEN they are those that caused the opening. `seconds_until_half_open` is None unless OPEN.
    `rejected_calls` counts refused admissions since the breaker object was created.
    """

    name: str
    state: BreakerState
    failure_rate: float
    slow_call_rate: float
    calls_in_window: int
    consecutive_opens: int
    seconds_until_half_open: float | None
    rejected_calls: int


class _Window:
    """The last `size` outcomes with running totals: O(1) per call, subtract on evict."""

    __slots__ = ("_failures", "_ring", "_slow")

    def __init__(self, size: int) -> None:
        self._ring: deque[tuple[bool, bool]] = deque(maxlen=size)
        self._failures = 0
        self._slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        if len(self._ring) == self._ring.maxlen:
            old_failed, old_slow = self._ring[0]  # about to be evicted by append()
            self._failures -= old_failed
            self._slow -= old_slow
        self._ring.append((failed, slow))
        self._failures += failed
        self._slow += slow

    @property
    def calls(self) -> int:
        return len(self._ring)

    @property
    def failure_rate(self) -> float:
        return self._failures / len(self._ring) if self._ring else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self._slow / len(self._ring) if self._ring else 0.0


class CallPermit:
    """Admission for one call. Settle it with exactly one `record_*` call; later ones are no-ops.

    A permit issued before the breaker changed state is settled silently: its outcome
    belongs to a state that no longer exists.
    """

    __slots__ = ("_breaker", "_epoch", "_settled")

    def __init__(self, breaker: CircuitBreaker, epoch: int) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether an outcome has already been recorded for this permit."""
        return self._settled

    def record_success(self, duration: float) -> None:
        """The call succeeded after `duration` seconds (slow if above `slow_call_duration`)."""
        self._settle(_Outcome.SUCCESS, duration)

    def record_failure(self, duration: float) -> None:
        """The call failed after `duration` seconds."""
        self._settle(_Outcome.FAILURE, duration)

    def record_ignored(self) -> None:
        """The call says nothing about the upstream (cancelled, rejected locally, caller error).

        Frees a half-open trial slot without counting.
        """
        self._settle(_Outcome.IGNORED, 0.0)

    def _settle(self, outcome: _Outcome, duration: float) -> None:
        if self._settled:
            return
        self._settled = True
        self._breaker._on_settled(self._epoch, outcome, duration)


class CircuitBreaker:
    """One breaker, a synchronous state machine driven by an injected clock (seconds).

    `listeners` are called as `listener(name, old, new)` on each transition; a listener that
    raises is logged and skipped.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._listeners = list(listeners)
        self._record = _Record()
        self._window = _Window(config.window_size)
        self._trials_admitted = 0
        self._rejected = 0
        # Bumped on every transition; permits from an earlier epoch are settled silently.
        self._epoch = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._record.state.value}>"

    @property
    def state(self) -> BreakerState:
        """The current state, after applying a due OPEN → HALF_OPEN transition."""
        self._sync()
        return self._record.state

    def add_listener(self, listener: BreakerListener) -> None:
        """Call `listener(name, old, new)` on every later transition."""
        self._listeners.append(listener)

    def try_acquire(self) -> CallPermit:
        """Admit a call without waiting.

        Raises `CircuitOpenError` when OPEN, or when HALF_OPEN with every trial slot taken.
        """
        self._sync()
        record = self._record
        if record.state is BreakerState.CLOSED:
            return CallPermit(self, self._epoch)
        if record.state is BreakerState.HALF_OPEN:
            if self._trials_admitted < self.config.half_open_trial_calls:
                self._trials_admitted += 1
                return CallPermit(self, self._epoch)
            retry_after = 0.0
        else:
            assert record.half_open_at is not None
            retry_after = max(record.half_open_at - self._clock(), 0.0)
        self._rejected += 1
        raise CircuitOpenError(self.name, retry_after)

    def snapshot(self) -> BreakerSnapshot:
        """The current state and rates (see `BreakerSnapshot`)."""
        self._sync()
        record = self._record
        until_half_open = None
        if record.state is BreakerState.OPEN and record.half_open_at is not None:
            until_half_open = max(record.half_open_at - self._clock(), 0.0)
        return BreakerSnapshot(
            name=self.name,
            state=record.state,
            failure_rate=self._window.failure_rate,
            slow_call_rate=self._window.slow_call_rate,
            calls_in_window=self._window.calls,
            consecutive_opens=record.consecutive_opens,
            seconds_until_half_open=until_half_open,
            rejected_calls=self._rejected,
        )

    def _sync(self) -> None:
        """Apply a due OPEN → HALF_OPEN transition."""
        record = self._record
        if (
            record.state is BreakerState.OPEN
            and record.half_open_at is not None
            and self._clock() >= record.half_open_at
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _on_settled(self, epoch: int, outcome: _Outcome, duration: float) -> None:
        self._sync()
        if epoch != self._epoch:
            return
        state = self._record.state
        if outcome is _Outcome.IGNORED:
            if state is BreakerState.HALF_OPEN:
                self._trials_admitted -= 1
            return
        if state is BreakerState.OPEN:  # unreachable: no permit is issued in OPEN
            return
        self._window.add(outcome is _Outcome.FAILURE, duration > self.config.slow_call_duration)
        if state is BreakerState.CLOSED:
            if self._window.calls >= self.config.effective_minimum_calls and self._exceeded():
                self._transition(BreakerState.OPEN)
        elif self._window.calls >= self.config.half_open_trial_calls:
            # Only the trial calls decide, as in resilience4j's HalfOpenState.
            self._transition(BreakerState.OPEN if self._exceeded() else BreakerState.CLOSED)

    def _exceeded(self) -> bool:
        return (
            self._window.failure_rate >= self.config.failure_rate_threshold
            or self._window.slow_call_rate >= self.config.slow_call_rate_threshold
        )

    def _reset_counters(self, state: BreakerState) -> None:
        self._trials_admitted = 0
        if state is BreakerState.CLOSED:
            self._window = _Window(self.config.window_size)
        elif state is BreakerState.HALF_OPEN:
            self._window = _Window(self.config.half_open_trial_calls)
        # OPEN keeps the window that tripped it, for snapshot().

    def _transition(self, new: BreakerState) -> None:
        old_record = self._record
        now = self._clock()
        if new is BreakerState.OPEN:
            opens = old_record.consecutive_opens + 1
            wait = self.config.wait_for_opening(opens)
            record = _Record(new, now, now + wait, opens)
        elif new is BreakerState.HALF_OPEN:
            record = _Record(new, old_record.opened_at, None, old_record.consecutive_opens)
        else:
            record = _Record(new)
        self._record = record
        self._epoch += 1
        self._reset_counters(new)
        self._announce(old_record.state, record)

    def _announce(self, old: BreakerState, record: _Record) -> None:
        new = record.state
        if new is BreakerState.OPEN:
            assert record.half_open_at is not None and record.opened_at is not None
            logger.warning(
                "circuit breaker %r: %s -> open for %.3f s (failure rate %.2f, slow-call rate "
                "%.2f over %d calls, opening #%d)",
                self.name,
                old.value,
                record.half_open_at - record.opened_at,
                self._window.failure_rate,
                self._window.slow_call_rate,
                self._window.calls,
                record.consecutive_opens,
            )
        else:
            logger.info("circuit breaker %r: %s -> %s", self.name, old.value, new.value)
        for listener in list(self._listeners):
            # Transitions run inside record_*() calls, often in finally blocks: a faulty
            # metrics hook must not break the call it observes.
            try:
                listener(self.name, old, new)
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", self.name, listener)


class CircuitBreakerFactory:
    """Creates and keeps one breaker per name, sharing a clock and listeners."""

    def __init__(
        self,
        default_config: BreakerConfig,
        *,
        clock: Clock,
    ) -> None:
        self.default_config = default_config
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []

    def get_breaker(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """Return the breaker called `name`, creating it on first use.

        Raises `ValueError` when `config` differs from the configuration the breaker was
        created with (the first caller must not silently decide for everyone).
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name,
                config if config is not None else self.default_config,
                clock=self._clock,
                listeners=self._listeners,
            )
            self._breakers[name] = breaker
        elif config is not None and config != breaker.config:
            raise ValueError(
                f"circuit breaker {name!r} already exists with a different configuration"
            )
        return breaker

    def breakers(self) -> list[CircuitBreaker]:
        """All breakers created so far, in creation order."""
        return list(self._breakers.values())

    def add_listener(self, listener: BreakerListener) -> None:
        """Call `listener(name, old, new)` on transitions of every breaker, present and future."""
        self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)
