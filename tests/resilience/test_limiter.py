from __future__ import annotations

import math

import anyio
import pytest
from trio.testing import MockClock

from delos.resilience._clock import FakeClock
from delos.resilience._limiter import (
    GcraLimiter,
    ProviderLimiter,
    RateLimitHints,
    RateLimitWouldWait,
    share_limits,
)


def paced(clock: FakeClock, rate: float, period: float, burst: float | None = None) -> GcraLimiter:
    return GcraLimiter(rate, period, burst=burst, clock=clock, sleep=clock.sleep)


def provider(clock: FakeClock, rpm: float | None, tpm: float | None) -> ProviderLimiter:
    return ProviderLimiter(rpm, tpm, clock=clock, sleep=clock.sleep)


# --- FakeClock, the time source of these tests --------------------------------------------------


def test_fake_clock_moves_only_forward_and_only_when_told() -> None:
    clock = FakeClock(start=5.0)
    assert clock() == 5.0
    clock.advance(2.5)
    assert clock() == 7.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1.0)


@pytest.mark.anyio
async def test_fake_clock_sleepers_wake_when_time_reaches_their_deadline(clock: FakeClock) -> None:
    woken: list[tuple[str, float]] = []

    async def sleeper(label: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append((label, clock()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "late", 3.0)
        tg.start_soon(sleeper, "early", 1.0)
        tg.start_soon(sleeper, "now", 0.0)
        await anyio.wait_all_tasks_blocked()
        assert woken == [("now", 1000.0)]
        clock.advance(2.0)
        await anyio.wait_all_tasks_blocked()
        assert woken[1:] == [("early", 1002.0)]
        clock.advance(1.0)
    assert woken[2:] == [("late", 1003.0)]


@pytest.mark.anyio
async def test_fake_clock_sleep_advancing_moves_time_itself(clock: FakeClock) -> None:
    await clock.sleep_advancing(4.0)
    await clock.sleep_advancing(-1.0)
    assert clock() == 1004.0


# --- GcraLimiter: arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "period", "burst", "field"),
    [
        (0, 60.0, None, "rate"),
        (math.nan, 60.0, None, "rate"),
        (10, 0.0, None, "period"),
        (10, math.inf, None, "period"),
        (10, 60.0, 0, "burst"),
        (10, 60.0, math.inf, "burst"),
    ],
)
def test_limiter_rejects_invalid_configuration(
    rate: float, period: float, burst: float | None, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        GcraLimiter(rate, period, burst=burst, clock=FakeClock())


def test_burst_is_admitted_at_once_then_requests_are_paced(clock: FakeClock) -> None:
    limiter = paced(clock, rate=6, period=60.0, burst=3)  # one unit every 10 s
    assert [limiter.try_acquire_nowait() for _ in range(4)] == [True, True, True, False]
    assert limiter.predicted_wait() == pytest.approx(10.0)
    clock.advance(9.0)
    assert not limiter.try_acquire_nowait()
    clock.advance(1.0)
    assert limiter.try_acquire_nowait()
    assert limiter.predicted_wait() == pytest.approx(10.0)


def test_burst_defaults_to_a_full_period_worth(clock: FakeClock) -> None:
    limiter = paced(clock, rate=5, period=60.0)
    assert limiter.burst == 5
    assert limiter.try_acquire_nowait(5)
    assert not limiter.try_acquire_nowait(1)


def test_capacity_refills_continuously_but_never_above_the_burst(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)
    assert limiter.try_acquire_nowait(10)
    clock.advance(2.5)
    assert limiter.snapshot().available == pytest.approx(2.5)
    clock.advance(1000.0)
    assert limiter.snapshot().available == pytest.approx(10.0)


@pytest.mark.anyio
async def test_amounts_above_the_burst_or_negative_are_value_errors(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=60.0)
    for amount in (11, -1, math.nan):
        with pytest.raises(ValueError, match="amount"):
            limiter.predicted_wait(amount)
        with pytest.raises(ValueError, match="amount"):
            limiter.try_acquire_nowait(amount)
        with pytest.raises(ValueError, match="amount"):
            await limiter.acquire(amount)
    assert limiter.snapshot().available == 10


def test_refund_gives_capacity_back_but_never_beyond_a_full_burst(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)
    assert limiter.try_acquire_nowait(8)
    limiter.refund(3)
    assert limiter.snapshot().available == pytest.approx(5.0)
    limiter.refund(100)
    assert limiter.snapshot().available == pytest.approx(10.0)
    assert limiter.try_acquire_nowait(10)
    assert not limiter.try_acquire_nowait(1)


def test_charge_takes_capacity_at_once_and_can_go_into_debt(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)  # one unit per second
    assert limiter.try_acquire_nowait(6)
    limiter.charge(9)  # 5 over the burst
    assert limiter.snapshot().available == 0.0
    assert limiter.predicted_wait(1) == pytest.approx(6.0)


def test_refund_and_charge_reject_negative_amounts(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)
    with pytest.raises(ValueError, match="amount"):
        limiter.refund(-1)
    with pytest.raises(ValueError, match="amount"):
        limiter.charge(-1)


def test_pause_until_blocks_admission_until_that_time(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)
    limiter.pause_until(clock() + 30.0)
    limiter.pause_until(clock() + 5.0)  # a shorter pause does not cut the longer one
    assert limiter.paused_until == clock() + 30.0
    assert not limiter.try_acquire_nowait()
    assert limiter.predicted_wait(10) == pytest.approx(30.0)
    clock.advance(30.0)
    assert limiter.paused_until is None
    assert limiter.try_acquire_nowait(10)


def test_unlimited_limiter_admits_everything_but_honours_pauses(clock: FakeClock) -> None:
    limiter = paced(clock, rate=math.inf, period=60.0)
    assert all(limiter.try_acquire_nowait(1e9) for _ in range(100))
    limiter.charge(1e12)
    assert limiter.predicted_wait(1e9) == 0.0
    limiter.pause_until(clock() + 2.0)
    assert limiter.predicted_wait() == pytest.approx(2.0)


def test_snapshot_describes_the_limiter(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0, burst=4)
    assert limiter.try_acquire_nowait(3)
    limiter.pause_until(clock() + 1.0)
    snapshot = limiter.snapshot()
    assert (snapshot.rate, snapshot.period, snapshot.burst) == (10, 10.0, 4)
    assert snapshot.available == pytest.approx(1.0)
    assert snapshot.theoretical_arrival_time == pytest.approx(clock() + 3.0)
    assert (snapshot.paused_until, snapshot.waiting) == (clock() + 1.0, 0.0)


# --- GcraLimiter: waiting -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_acquire_waits_exactly_until_the_units_conform(clock: FakeClock) -> None:
    limiter = paced(clock, rate=1, period=2.0)
    await limiter.acquire()
    done: list[float] = []

    async def second() -> None:
        await limiter.acquire()
        done.append(clock())

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        clock.advance(1.5)
        await anyio.wait_all_tasks_blocked()
        assert done == []
        clock.advance(0.5)
    assert done == [1002.0]


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order_so_large_ones_are_not_starved(
    clock: FakeClock,
) -> None:
    limiter = paced(clock, rate=10, period=10.0)  # one unit per second, burst 10
    assert limiter.try_acquire_nowait(10)
    served: list[tuple[str, float]] = []

    async def take(label: str, amount: int) -> None:
        await limiter.acquire(amount)
        served.append((label, clock() - 1000.0))

    async with anyio.create_task_group() as tg:
        for label, amount in [("large", 10), ("small-1", 1), ("small-2", 1)]:
            tg.start_soon(take, label, amount)
            await anyio.wait_all_tasks_blocked()
        assert limiter.predicted_wait(1) == pytest.approx(13.0)  # behind all three
        for _ in range(12):
            clock.advance(1.0)
            await anyio.wait_all_tasks_blocked()
    assert served == [("large", 10.0), ("small-1", 11.0), ("small-2", 12.0)]


@pytest.mark.anyio
async def test_nowait_never_overtakes_a_queued_caller(clock: FakeClock) -> None:
    limiter = paced(clock, rate=10, period=10.0)
    assert limiter.try_acquire_nowait(5)  # 5 units free, the large caller needs 10
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 10)
        await anyio.wait_all_tasks_blocked()
        assert limiter.snapshot().waiting == 10
        assert not limiter.try_acquire_nowait(1)
        clock.advance(5.0)
    assert limiter.snapshot().waiting == 0


@pytest.mark.anyio
async def test_too_long_a_wait_raises_without_reserving(clock: FakeClock) -> None:
    limiter = paced(clock, rate=1, period=1.0)
    await limiter.acquire()
    before = limiter.snapshot()
    with pytest.raises(RateLimitWouldWait) as raised:
        await limiter.acquire(max_wait=0.5)
    assert raised.value.wait_seconds == pytest.approx(1.0)
    assert "1.000 seconds" in str(raised.value)
    assert limiter.snapshot() == before


@pytest.mark.anyio
async def test_a_pause_that_pushes_a_queued_wait_past_max_wait_raises(clock: FakeClock) -> None:
    limiter = paced(clock, rate=1, period=1.0)
    await limiter.acquire()
    before = limiter.snapshot().theoretical_arrival_time
    errors: list[RateLimitWouldWait] = []

    async def bounded() -> None:
        try:
            await limiter.acquire(max_wait=5.0)
        except RateLimitWouldWait as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bounded)
        await anyio.wait_all_tasks_blocked()
        limiter.pause_until(clock() + 10.0)  # a Retry-After arrives meanwhile
        clock.advance(1.0)
    assert [e.wait_seconds for e in errors] == [pytest.approx(9.0)]
    snapshot = limiter.snapshot()
    assert (snapshot.theoretical_arrival_time, snapshot.waiting) == (before, 0.0)


@pytest.mark.anyio
async def test_a_cancelled_waiter_reserves_nothing_and_leaves_the_queue(clock: FakeClock) -> None:
    limiter = paced(clock, rate=1, period=1.0)
    await limiter.acquire()
    before = limiter.snapshot()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 1)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert limiter.snapshot() == before
    clock.advance(1.0)
    assert limiter.try_acquire_nowait()


@pytest.mark.anyio
async def test_a_cancel_scope_deadline_shorter_than_the_wait_raises_at_once() -> None:
    limiter = GcraLimiter(1, 60.0)  # anyio's clock: deadlines apply
    assert limiter.try_acquire_nowait()
    before = limiter.snapshot()
    with anyio.fail_after(5):
        with pytest.raises(RateLimitWouldWait) as raised:
            await limiter.acquire()
    assert raised.value.wait_seconds > 55
    assert limiter.snapshot().theoretical_arrival_time == before.theoretical_arrival_time


@pytest.mark.anyio
async def test_deadlines_are_ignored_for_a_clock_that_is_not_anyio(clock: FakeClock) -> None:
    limiter = paced(clock, rate=1, period=7200.0)
    await limiter.acquire()
    done = anyio.Event()

    async def wait_past_the_deadline() -> None:
        with anyio.fail_after(3600):  # seconds of anyio's clock, not of the fake one
            await limiter.acquire()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_past_the_deadline)
        await anyio.wait_all_tasks_blocked()
        assert limiter.snapshot().waiting == 1
        clock.advance(7200.0)
    assert done.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}))]
)
async def test_waits_follow_anyio_time_and_respect_the_remaining_deadline() -> None:
    limiter = GcraLimiter(1, 60.0)
    await limiter.acquire()
    start = anyio.current_time()
    with anyio.fail_after(100):
        await limiter.acquire()
    assert anyio.current_time() - start == pytest.approx(60.0)
    with anyio.fail_after(90):
        await anyio.sleep(40)  # 50 s left, the next unit is 20 s away
        await limiter.acquire()
        assert anyio.current_time() - start == pytest.approx(120.0)
        with pytest.raises(RateLimitWouldWait):
            await limiter.acquire()  # 60 s away, 30 s left


# --- ProviderLimiter --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reserve_takes_one_request_and_the_estimated_tokens(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    reservation = await limits.reserve(400)
    assert reservation.estimated_tokens == 400
    snapshot = limits.snapshot()
    assert snapshot.requests.available == pytest.approx(59)
    assert snapshot.tokens.available == pytest.approx(600)
    assert snapshot.last_reserved_tokens == 400


@pytest.mark.anyio
async def test_reserve_is_all_or_nothing_when_tokens_would_wait_too_long(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=600)  # 10 tokens per second
    await limits.reserve(600)
    before = limits.snapshot()
    with pytest.raises(RateLimitWouldWait) as raised:
        await limits.reserve(100, max_wait=5.0)
    assert raised.value.wait_seconds == pytest.approx(10.0)
    after = limits.snapshot()
    assert (after.requests, after.tokens) == (before.requests, before.tokens)


@pytest.mark.anyio
async def test_a_reserve_cancelled_while_waiting_for_tokens_returns_its_request(
    clock: FakeClock,
) -> None:
    limits = provider(clock, rpm=60, tpm=600)
    await limits.reserve(600)
    before = limits.snapshot()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limits.reserve, 100)
        await anyio.wait_all_tasks_blocked()
        assert limits.snapshot().requests.available == pytest.approx(before.requests.available - 1)
        tg.cancel_scope.cancel()
    after = limits.snapshot()
    assert (after.requests, after.tokens) == (before.requests, before.tokens)


@pytest.mark.anyio
async def test_reserve_waits_for_the_slower_dimension(clock: FakeClock) -> None:
    limits = provider(clock, rpm=1, tpm=600)  # one request per minute, 10 tokens per second
    await limits.reserve(600)
    with pytest.raises(RateLimitWouldWait) as raised:
        await limits.reserve(50, max_wait=30.0)  # tokens need 5 s, the request 60 s
    assert raised.value.wait_seconds == pytest.approx(60.0)
    reserved: list[float] = []

    async def call() -> None:
        await limits.reserve(50)
        reserved.append(clock())

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        clock.advance(59.0)
        await anyio.wait_all_tasks_blocked()
        assert reserved == []
        clock.advance(1.0)
    assert reserved == [1060.0]
    assert limits.snapshot().tokens.available == pytest.approx(550)


@pytest.mark.anyio
async def test_reconcile_refunds_an_over_estimate(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    reservation = await limits.reserve(800)
    reservation.reconcile(300)
    assert limits.snapshot().tokens.available == pytest.approx(700)
    assert limits.snapshot().requests.available == pytest.approx(59)


@pytest.mark.anyio
async def test_reconcile_charges_an_under_estimate(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=600)  # 10 tokens per second
    reservation = await limits.reserve(500)
    reservation.reconcile(800)  # 200 tokens of debt
    assert limits.tokens.predicted_wait(100) == pytest.approx(30.0)


@pytest.mark.anyio
async def test_a_reservation_settles_only_once(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    reservation = await limits.reserve(500)
    reservation.reconcile(100)
    settled = limits.snapshot()
    reservation.reconcile(100)
    reservation.reconcile(900)
    reservation.release_unused()
    assert reservation.settled
    assert limits.snapshot() == settled


@pytest.mark.anyio
async def test_release_unused_returns_the_request_and_every_token(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    await limits.reserve(200)
    reservation = await limits.reserve(500)
    reservation.release_unused()
    reservation.reconcile(500)
    snapshot = limits.snapshot()
    assert snapshot.requests.available == pytest.approx(59)
    assert snapshot.tokens.available == pytest.approx(800)


@pytest.mark.anyio
async def test_reserve_rejects_more_tokens_than_the_limit_without_reserving(
    clock: FakeClock,
) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    with pytest.raises(ValueError, match="burst"):
        await limits.reserve(1001)
    assert limits.snapshot().requests.available == 60


def test_retry_after_pauses_both_dimensions(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    limits.apply_hints(RateLimitHints(retry_after=20.0))
    assert limits.paused_until == clock() + 20.0
    assert limits.requests.paused_until == limits.tokens.paused_until == clock() + 20.0
    clock.advance(20.0)
    assert limits.paused_until is None


def test_no_remaining_requests_pauses_requests_until_their_reset(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    limits.apply_hints(RateLimitHints(remaining_requests=1, requests_reset_after=30.0))
    assert limits.paused_until is None
    limits.apply_hints(RateLimitHints(remaining_requests=0, requests_reset_after=30.0))
    assert limits.requests.paused_until == clock() + 30.0
    assert limits.tokens.paused_until is None


@pytest.mark.anyio
async def test_too_few_remaining_tokens_for_a_typical_call_pauses_tokens(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=10_000)
    (await limits.reserve(2000)).reconcile(1500)
    limits.apply_hints(RateLimitHints(remaining_tokens=2000, tokens_reset_after=12.0))
    assert limits.paused_until is None
    limits.apply_hints(RateLimitHints(remaining_tokens=1999, tokens_reset_after=12.0))
    assert limits.tokens.paused_until == clock() + 12.0
    assert limits.requests.paused_until is None


def test_exhausted_counts_without_a_reset_time_pause_nothing(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    limits.apply_hints(RateLimitHints(remaining_requests=0, remaining_tokens=0, retry_after=None))
    assert limits.paused_until is None


def test_tokens_pause_before_any_reservation_only_at_zero(clock: FakeClock) -> None:
    limits = provider(clock, rpm=60, tpm=1000)
    limits.apply_hints(RateLimitHints(remaining_tokens=1, tokens_reset_after=5.0))
    assert limits.paused_until is None
    limits.apply_hints(RateLimitHints(remaining_tokens=0, tokens_reset_after=5.0))
    assert limits.paused_until == clock() + 5.0


@pytest.mark.anyio
async def test_a_paused_provider_admits_again_when_the_pause_ends(clock: FakeClock) -> None:
    limits = provider(clock, rpm=None, tpm=None)
    limits.apply_hints(RateLimitHints(retry_after=30.0))
    with pytest.raises(RateLimitWouldWait):
        await limits.reserve(10, max_wait=29.0)
    reserved: list[float] = []

    async def call() -> None:
        await limits.reserve(10, max_wait=30.0)
        reserved.append(clock())

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        clock.advance(29.0)
        await anyio.wait_all_tasks_blocked()
        assert reserved == []
        clock.advance(1.0)
    assert reserved == [1030.0]


@pytest.mark.anyio
async def test_no_limits_means_no_waiting(clock: FakeClock) -> None:
    limits = provider(clock, rpm=None, tpm=None)
    for _ in range(1000):
        (await limits.reserve(1_000_000, max_wait=0.0)).reconcile(2_000_000)
    assert limits.snapshot().requests.available == math.inf


def test_share_limits_splits_across_workers() -> None:
    assert share_limits(600, 90_000, 4) == (150, 22_500)
    rpm, tpm = share_limits(None, 1000, 3)
    assert rpm is None
    assert tpm == pytest.approx(333.33, abs=0.01)
    with pytest.raises(ValueError, match="workers"):
        share_limits(600, 1000, 0)


def test_a_worker_share_below_one_request_per_minute_still_admits_requests(
    clock: FakeClock,
) -> None:
    limits = ProviderLimiter.for_worker_share(3, None, 6, clock=clock, sleep=clock.sleep)
    assert limits.requests.rate == 0.5
    assert limits.requests.try_acquire_nowait()
    assert limits.requests.predicted_wait() == pytest.approx(120.0)
