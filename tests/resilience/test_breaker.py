from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import pytest

from delos.resilience._breaker import (
    BreakerConfig,
    BreakerListener,
    BreakerState,
    CallPermit,
    CircuitBreaker,
    CircuitBreakerFactory,
    CircuitOpenError,
)
from delos.resilience._clock import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# Small numbers keep the scenarios readable: 4 calls decide, 2 trials in half-open.
SMALL = BreakerConfig(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.75,
    slow_call_duration=2.0,
    window_size=4,
    minimum_calls=4,
    wait_in_open=10.0,
    open_backoff_multiplier=2.0,
    max_wait_in_open=30.0,
    half_open_trial_calls=2,
)


def make_breaker(
    clock: FakeClock,
    config: BreakerConfig = SMALL,
    *,
    listeners: Sequence[BreakerListener] = (),
) -> CircuitBreaker:
    return CircuitBreaker("upstream", config, clock=clock, listeners=listeners)


def feed(breaker: CircuitBreaker, outcomes: str) -> None:
    """Run one call per letter: S success, F failure, W slow success, I ignored."""
    for letter in outcomes:
        permit = breaker.try_acquire()
        if letter == "S":
            permit.record_success(0.1)
        elif letter == "F":
            permit.record_failure(0.1)
        elif letter == "W":
            permit.record_success(5.0)
        else:
            permit.record_ignored()


def open_breaker(breaker: CircuitBreaker) -> None:
    feed(breaker, "FFFF")
    assert breaker.state is OPEN


class Transitions:
    def __init__(self) -> None:
        self.seen: list[tuple[str, BreakerState, BreakerState]] = []

    def __call__(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.seen.append((name, old, new))


# --- configuration ----------------------------------------------------------------------------


def test_default_config_uses_the_documented_starting_values() -> None:
    config = BreakerConfig()
    assert (config.failure_rate_threshold, config.slow_call_rate_threshold) == (0.5, 0.8)
    assert (config.slow_call_duration, config.window_size, config.minimum_calls) == (30.0, 20, 10)
    assert (config.wait_in_open, config.open_backoff_multiplier) == (15.0, 2.0)
    assert (config.max_wait_in_open, config.half_open_trial_calls) == (300.0, 3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 1.5),
        ("slow_call_rate_threshold", math.nan),
        ("slow_call_duration", 0.0),
        ("window_size", 0),
        ("minimum_calls", 0),
        ("half_open_trial_calls", 0),
        ("wait_in_open", -1.0),
        ("open_backoff_multiplier", 0.5),
        ("max_wait_in_open", 5.0),
    ],
)
def test_config_rejects_out_of_range_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_minimum_calls_is_capped_at_the_window_size() -> None:
    assert BreakerConfig(window_size=5, minimum_calls=50).effective_minimum_calls == 5


def test_wait_in_open_multiplies_per_consecutive_opening_up_to_the_cap() -> None:
    waits = [SMALL.wait_for_opening(n) for n in (1, 2, 3, 4, 5000)]
    assert waits == [10.0, 20.0, 30.0, 30.0, 30.0]


# --- closed -----------------------------------------------------------------------------------


def test_closed_breaker_opens_when_failure_rate_reaches_threshold(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "SFS")
    assert breaker.state is CLOSED
    feed(breaker, "F")  # 2 failures out of 4 = 50 %
    assert breaker.state is OPEN


def test_closed_breaker_makes_no_decision_before_minimum_calls(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "FFF")
    assert breaker.state is CLOSED
    assert breaker.snapshot().failure_rate == 1.0


def test_window_keeps_only_the_most_recent_calls(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "FSSSS")  # the failure has left the 4-call window
    snapshot = breaker.snapshot()
    assert (snapshot.calls_in_window, snapshot.failure_rate) == (4, 0.0)
    feed(breaker, "FF")
    assert breaker.state is OPEN  # 2 of the last 4, although only 3 of all 7 calls failed


def test_slow_successes_trip_the_breaker_by_slow_call_rate(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "WWS")
    assert breaker.state is CLOSED
    feed(breaker, "W")  # 3 slow out of 4 = 75 %
    assert breaker.state is OPEN
    assert breaker.snapshot().failure_rate == 0.0


def test_ignored_outcomes_never_count(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "I" * 50 + "FIII")
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.calls_in_window) == (CLOSED, 1)


# --- open -------------------------------------------------------------------------------------


def test_open_breaker_rejects_with_time_until_half_open(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    open_breaker(breaker)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as raised:
        breaker.try_acquire()
    assert raised.value.name == "upstream"
    assert raised.value.retry_after_seconds == pytest.approx(6.0)
    assert "'upstream' is open" in str(raised.value)
    assert breaker.snapshot().rejected_calls == 1


def test_open_moves_to_half_open_lazily_once_the_wait_has_elapsed(clock: FakeClock) -> None:
    transitions = Transitions()
    breaker = make_breaker(clock, listeners=[transitions])
    open_breaker(breaker)
    clock.advance(10.0)
    assert transitions.seen == [("upstream", CLOSED, OPEN)]  # nothing happens on its own
    assert breaker.state is HALF_OPEN
    assert transitions.seen[-1] == ("upstream", OPEN, HALF_OPEN)


# --- half-open --------------------------------------------------------------------------------


def half_open_breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = make_breaker(clock)
    open_breaker(breaker)
    clock.advance(10.0)
    return breaker


def test_half_open_admits_only_the_configured_number_of_trials(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    breaker.try_acquire()
    breaker.try_acquire()
    with pytest.raises(CircuitOpenError) as raised:
        breaker.try_acquire()
    # The trials in flight decide; there is no time bound to report.
    assert raised.value.retry_after_seconds == 0.0
    assert breaker.state is HALF_OPEN


def test_ignored_trial_frees_its_half_open_slot(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    first = breaker.try_acquire()
    breaker.try_acquire()
    first.record_ignored()
    breaker.try_acquire()
    assert breaker.snapshot().calls_in_window == 0


def test_half_open_decides_only_once_every_trial_has_completed(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    first.record_failure(0.1)
    assert breaker.state is HALF_OPEN
    second.record_success(0.1)
    assert breaker.state is OPEN  # 1 failure of 2 trials = 50 %


def test_half_open_failure_reopens_with_a_doubled_wait_up_to_the_cap(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    waits = []
    for _ in range(3):
        feed(breaker, "FF")
        snapshot = breaker.snapshot()
        assert snapshot.state is OPEN
        waits.append(snapshot.seconds_until_half_open)
        assert snapshot.seconds_until_half_open is not None
        clock.advance(snapshot.seconds_until_half_open)
    assert waits == [20.0, 30.0, 30.0]
    assert breaker.snapshot().consecutive_opens == 4


def test_half_open_slow_trials_reopen(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    feed(breaker, "WW")
    assert breaker.state is OPEN


def test_half_open_success_closes_clears_the_window_and_resets_backoff(clock: FakeClock) -> None:
    breaker = half_open_breaker(clock)
    feed(breaker, "SS")
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.calls_in_window, snapshot.consecutive_opens) == (CLOSED, 0, 0)
    open_breaker(breaker)
    assert breaker.snapshot().seconds_until_half_open == 10.0  # back to the first wait


# --- permits ----------------------------------------------------------------------------------


def test_a_permit_records_only_its_first_outcome(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    permit = breaker.try_acquire()
    permit.record_failure(0.1)
    permit.record_failure(0.1)
    permit.record_success(0.1)
    assert permit.settled
    assert breaker.snapshot().calls_in_window == 1


def test_permit_from_an_earlier_state_is_settled_silently(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    late: list[CallPermit] = [breaker.try_acquire() for _ in range(3)]
    open_breaker(breaker)
    late[0].record_failure(0.1)  # finishes while OPEN
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    late[1].record_success(0.1)  # finishes while HALF_OPEN: not a trial
    late[2].record_ignored()  # must not free a trial slot it never took
    assert breaker.snapshot().calls_in_window == 0
    breaker.try_acquire()
    breaker.try_acquire()
    with pytest.raises(CircuitOpenError):
        breaker.try_acquire()


# --- listeners, logging, snapshot --------------------------------------------------------------


def test_listeners_see_every_transition_in_order(clock: FakeClock) -> None:
    transitions = Transitions()
    breaker = make_breaker(clock, listeners=[transitions])
    open_breaker(breaker)
    clock.advance(10.0)
    feed(breaker, "FF")
    clock.advance(20.0)
    feed(breaker, "SS")
    assert [(old, new) for _, old, new in transitions.seen] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_a_failing_listener_is_logged_and_the_others_still_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics backend down")

    transitions = Transitions()
    breaker = make_breaker(clock, listeners=[broken, transitions])
    with caplog.at_level(logging.ERROR, logger="delos.resilience.breaker"):
        open_breaker(breaker)
    assert transitions.seen == [("upstream", CLOSED, OPEN)]
    assert any("listener" in r.getMessage() and r.exc_info for r in caplog.records)


def test_transitions_are_logged_warning_for_open_and_info_otherwise(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make_breaker(clock)
    with caplog.at_level(logging.INFO, logger="delos.resilience.breaker"):
        open_breaker(breaker)
        clock.advance(10.0)
        feed(breaker, "SS")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "closed -> open for 10.000 s" in levels[0][1]
    assert "half_open -> closed" in levels[2][1]


def test_snapshot_reports_rates_and_time_until_half_open(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    feed(breaker, "SW")
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.failure_rate, snapshot.slow_call_rate) == (CLOSED, 0.0, 0.5)
    assert snapshot.seconds_until_half_open is None
    feed(breaker, "FF")
    clock.advance(3.0)
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.failure_rate, snapshot.calls_in_window) == (OPEN, 0.5, 4)
    assert snapshot.seconds_until_half_open == pytest.approx(7.0)
    assert snapshot.consecutive_opens == 1


# --- factory ----------------------------------------------------------------------------------


@pytest.fixture
def factory(clock: FakeClock) -> Iterator[CircuitBreakerFactory]:
    yield CircuitBreakerFactory(SMALL, clock=clock)


def test_factory_returns_one_breaker_per_name(factory: CircuitBreakerFactory) -> None:
    first = factory.get_breaker("openai")
    assert factory.get_breaker("openai") is first
    assert factory.get_breaker("openai", SMALL) is first
    other = factory.get_breaker("anthropic", BreakerConfig())
    assert other.config == BreakerConfig()
    assert factory.breakers() == [first, other]


def test_factory_refuses_a_second_different_config(factory: CircuitBreakerFactory) -> None:
    factory.get_breaker("openai")
    with pytest.raises(ValueError, match="openai"):
        factory.get_breaker("openai", BreakerConfig())


def test_factory_listeners_reach_existing_and_future_breakers(
    factory: CircuitBreakerFactory,
) -> None:
    existing = factory.get_breaker("openai")
    transitions = Transitions()
    factory.add_listener(transitions)
    open_breaker(existing)
    open_breaker(factory.get_breaker("anthropic"))
    assert [name for name, _, _ in transitions.seen] == ["openai", "anthropic"]
