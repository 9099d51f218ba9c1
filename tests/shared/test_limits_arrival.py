"""Admission at the limit never sends a request to the provider early.

Redis admits at reservation time, the provider counts at arrival. The shared tolerance is
shorter by the spread of the time from one to the other, so a request that travels faster than
an earlier one still arrives after its slot by the provider's clock; and a request that waits
for its slot sleeps from the moment the answer arrives, so it never leaves before the slot.
"""

from __future__ import annotations

import pytest

from delos.resilience import FakeClock, RateLimitWouldWait
from delos.runtime.shared import ARRIVAL_SPREAD, SharedProviderLimiter
from tests.shared.conftest import RedisServer, SleepRecorder, replicas

pytestmark = pytest.mark.anyio


async def test_the_burst_is_shorter_by_the_spread_and_the_rate_unchanged(
    redis_server: RedisServer,
) -> None:
    record = SleepRecorder()
    slept = record.slept

    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter("openai", 60, None, store, sleep=record, arrival_spread=0.5)
        for _ in range(59):
            await limiter.reserve(0, max_wait=0)
        with pytest.raises(RateLimitWouldWait) as refused:
            await limiter.reserve(0, max_wait=0)
        assert 0.2 < refused.value.wait_seconds <= 0.5  # the 60th, a spread later
        for _ in range(3):
            await limiter.reserve(0, max_wait=5)
    assert 0.2 < slept[0] <= 0.5
    # Then one a second, as configured.
    assert [round(later - slept[0], 1) for later in slept[1:]] == [1.0, 2.0]


async def test_the_default_spread_costs_a_tenth_of_a_second_of_burst(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter("openai", 60, None, store)
        for _ in range(59):
            await limiter.reserve(0, max_wait=0)
        with pytest.raises(RateLimitWouldWait) as refused:
            await limiter.reserve(0, max_wait=0)
    assert ARRIVAL_SPREAD == 0.1
    assert 0 < refused.value.wait_seconds <= 0.1  # admitted at once without the spread


async def test_a_wait_is_slept_from_the_answer_never_before_the_slot(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()

    def slow_round_trips() -> float:
        clock.advance(0.5)  # each reading comes 0.5 s after the one before
        return clock()

    record = SleepRecorder()
    slept = record.slept

    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter(
            "openai", 60, None, store, clock=slow_round_trips, sleep=record, arrival_spread=0
        )
        for _ in range(60):
            await limiter.reserve(0, max_wait=0)
        await limiter.reserve(0, max_wait=5)
    # Redis may have read its clock as late as the answer: the whole wait is slept from there,
    # not the wait less the (0.5 s) round trip.
    assert 0.75 < slept[0] <= 1.0
