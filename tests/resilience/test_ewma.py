from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TypeVar

import pytest

from delos.resilience._clock import FakeClock
from delos.resilience._ewma import LatencyTable, PeakEwma

KEY = ("openai", "gpt-4o")
OTHER = ("anthropic", "claude")
K = TypeVar("K", bound=Hashable)


def measured(table: LatencyTable[K], clock: FakeClock, key: K, ttft: float) -> None:
    """Run one successful attempt whose first token took ``ttft`` seconds."""
    timer = table.start(key)
    clock.advance(ttft)
    timer.first_token()
    timer.finish_success(output_tokens=0)


# PeakEwma


def test_peak_ewma_has_no_value_before_the_first_sample(clock: FakeClock) -> None:
    assert PeakEwma(clock=clock).value is None


def test_peak_ewma_jumps_to_a_larger_sample_at_once(clock: FakeClock) -> None:
    ewma = PeakEwma(10.0, clock=clock)
    ewma.observe(0.1)
    clock.advance(0.001)
    ewma.observe(2.0)
    assert ewma.value == 2.0


def test_peak_ewma_decays_toward_a_smaller_sample_with_weight_exp_minus_elapsed_over_tau(
    clock: FakeClock,
) -> None:
    ewma = PeakEwma(10.0, clock=clock)
    ewma.observe(1.0)
    clock.advance(10.0)
    ewma.observe(0.0)
    assert ewma.value == pytest.approx(math.exp(-1.0))


def test_peak_ewma_recovers_halfway_after_tau_ln2(clock: FakeClock) -> None:
    ewma = PeakEwma(15.0, clock=clock)
    ewma.observe(4.0)
    clock.advance(15.0 * math.log(2))
    ewma.observe(2.0)
    assert ewma.value == pytest.approx(3.0)


def test_peak_ewma_does_not_decay_while_idle(clock: FakeClock) -> None:
    ewma = PeakEwma(1.0, clock=clock)
    ewma.observe(1.0)
    clock.advance(1000.0)
    assert ewma.value == 1.0


def test_lower_bound_raises_the_estimate_but_never_lowers_it(clock: FakeClock) -> None:
    ewma = PeakEwma(clock=clock)
    ewma.observe(1.0)
    ewma.observe_lower_bound(0.2)
    assert ewma.value == 1.0
    ewma.observe_lower_bound(3.0)
    assert ewma.value == 3.0


def test_lower_bound_alone_does_not_create_an_estimate(clock: FakeClock) -> None:
    ewma = PeakEwma(clock=clock)
    ewma.observe_lower_bound(0.05)
    assert ewma.value is None


def test_peak_ewma_rejects_negative_samples_and_non_positive_tau(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        PeakEwma(0.0, clock=clock)
    with pytest.raises(ValueError):
        PeakEwma(clock=clock).observe(-1.0)


# Exploration and load


def test_an_untried_key_asks_to_be_explored(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    assert not table.is_explored(KEY)
    assert table.load(KEY) is None


def test_a_key_being_explored_is_not_chosen_again_until_measured(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    assert table.load(KEY) == math.inf
    timer.finish_abandoned()
    assert table.load(KEY) is None


def test_load_is_ttft_estimate_times_in_flight_plus_one(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    measured(table, clock, KEY, 0.5)
    assert table.is_explored(KEY)
    assert table.load(KEY) == pytest.approx(0.5)
    table.start(KEY)
    table.start(KEY)
    assert table.load(KEY) == pytest.approx(1.5)


def test_a_key_not_measured_for_stale_after_seconds_needs_exploring_again(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, stale_after=60.0)
    measured(table, clock, KEY, 0.5)
    clock.advance(59.0)
    assert table.is_explored(KEY)
    clock.advance(1.0)
    assert not table.is_explored(KEY)
    assert table.load(KEY) is None
    measured(table, clock, KEY, 0.4)
    assert table.is_explored(KEY)


def test_failing_attempts_do_not_keep_a_key_explored(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, stale_after=60.0)
    measured(table, clock, KEY, 0.5)
    for _ in range(70):
        timer = table.start(KEY)
        clock.advance(0.01)
        timer.finish_failure()
        clock.advance(1.0)
    assert table.load(KEY) is None


# AttemptTimer


def test_abandoned_attempt_raises_the_estimate_as_a_lower_bound_and_is_not_an_error(
    clock: FakeClock,
) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    measured(table, clock, KEY, 0.5)
    timer = table.start(KEY)
    clock.advance(2.0)
    timer.finish_abandoned()
    snapshot = table.snapshot(KEY)
    assert snapshot.ttft_ewma_ms == pytest.approx(2000.0)
    assert snapshot.error_rate == 0.0
    assert snapshot.samples == 1
    assert snapshot.in_flight == 0


def test_abandoned_attempt_after_its_first_token_leaves_the_estimate_alone(
    clock: FakeClock,
) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    clock.advance(0.3)
    timer.first_token()
    clock.advance(5.0)
    timer.finish_abandoned()
    assert table.snapshot(KEY).ttft_ewma_ms == pytest.approx(300.0)


def test_a_fast_failure_never_makes_a_key_look_faster(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    measured(table, clock, KEY, 0.5)
    timer = table.start(KEY)
    clock.advance(0.001)
    timer.finish_failure()
    snapshot = table.snapshot(KEY)
    assert snapshot.ttft_ewma_ms == pytest.approx(500.0)
    assert snapshot.error_rate == pytest.approx(0.5, abs=0.01)


def test_a_ttft_timeout_makes_the_key_look_at_least_that_slow(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    measured(table, clock, KEY, 0.5)
    timer = table.start(KEY)
    clock.advance(10.0)
    timer.finish_failure()
    assert table.load(KEY) == pytest.approx(10.0)


def test_only_the_first_finish_counts(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    table.start(KEY)
    clock.advance(0.2)
    assert timer.finish_success(output_tokens=10) is True
    assert timer.finish_abandoned() is False
    assert timer.finish_failure() is False
    snapshot = table.snapshot(KEY)
    assert snapshot.in_flight == 1
    assert snapshot.error_rate == 0.0


def test_only_the_first_first_token_counts(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    clock.advance(0.2)
    timer.first_token()
    clock.advance(0.7)
    timer.first_token()
    assert table.snapshot(KEY).samples == 1
    assert table.snapshot(KEY).ttft_ewma_ms == pytest.approx(200.0)


def test_unary_success_counts_the_whole_response_time_as_ttft(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    clock.advance(1.5)
    timer.finish_success(output_tokens=100)
    snapshot = table.snapshot(KEY)
    assert snapshot.ttft_ewma_ms == pytest.approx(1500.0)
    assert snapshot.tokens_per_second is None


def test_decode_rate_is_output_tokens_over_time_after_the_first_token(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    timer = table.start(KEY)
    clock.advance(0.5)
    timer.first_token()
    clock.advance(2.0)
    timer.finish_success(output_tokens=100)
    assert table.snapshot(KEY).tokens_per_second == pytest.approx(50.0)


def test_error_rate_weighs_recent_outcomes_more(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, tau=10.0)
    for _ in range(10):
        table.start(KEY).finish_failure()
    clock.advance(60.0)
    for _ in range(10):
        table.start(KEY).finish_success(output_tokens=1)
    assert table.snapshot(KEY).error_rate < 0.01


# Percentiles and snapshots


def test_ttft_percentile_is_none_until_min_samples_exist(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, min_samples=20)
    for _ in range(19):
        measured(table, clock, KEY, 0.1)
    assert table.ttft_percentile(KEY, 0.95) is None
    measured(table, clock, KEY, 0.1)
    assert table.ttft_percentile(KEY, 0.95) == pytest.approx(0.1)


def test_ttft_percentile_is_the_nearest_rank_of_recent_samples(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, min_samples=20)
    for millis in range(1, 101):
        measured(table, clock, KEY, millis / 1000)
    assert table.ttft_percentile(KEY, 0.95) == pytest.approx(0.095)
    assert table.snapshot(KEY).p95_ttft_ms == pytest.approx(95.0)


def test_ttft_percentile_forgets_samples_beyond_the_window(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock, window=50, min_samples=20)
    for _ in range(50):
        measured(table, clock, KEY, 9.0)
    for _ in range(50):
        measured(table, clock, KEY, 0.1)
    assert table.ttft_percentile(KEY, 1.0) == pytest.approx(0.1)


def test_snapshot_of_an_unknown_key_is_empty(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    snapshot = table.snapshot(KEY)
    assert snapshot.ttft_ewma_ms is None
    assert snapshot.tokens_per_second is None
    assert snapshot.p95_ttft_ms is None
    assert (snapshot.in_flight, snapshot.samples, snapshot.error_rate) == (0, 0, 0.0)


def test_snapshots_cover_every_key_seen(clock: FakeClock) -> None:
    table: LatencyTable[tuple[str, str]] = LatencyTable(clock=clock)
    measured(table, clock, KEY, 0.5)
    table.start(OTHER)
    snapshots = table.snapshots()
    assert set(snapshots) == {KEY, OTHER}
    assert snapshots[OTHER].in_flight == 1


def test_the_table_evicts_the_least_recently_started_key_beyond_max_keys(clock: FakeClock) -> None:
    table: LatencyTable[str] = LatencyTable(clock=clock, max_keys=2)
    table.start("a")
    table.start("b")
    table.start("a")
    table.start("c")
    assert set(table.snapshots()) == {"a", "c"}
