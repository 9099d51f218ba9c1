"""The shared GCRA limiter against a real Redis: several replicas (clients), one limit.

Tests that count a whole burst build their limiters with ``arrival_spread=0``, so a burst is a
minute's worth exactly; the spread has tests of its own (test_limits_arrival.py), as have lost
state (test_limits_lost_state.py) and settlements (test_limits_settlement.py).
"""

from __future__ import annotations

import math

import anyio
import pytest

from delos.resilience import FakeClock, ProviderLimiter, RateLimitHints, RateLimitWouldWait
from delos.runtime.shared import (
    ProviderRateLimiter,
    SharedProviderLimiter,
    open_shared_store,
)
from tests.shared.conftest import (
    RedisServer,
    SleepRecorder,
    replicas,
    server_time,
    store_config,
    stored_time,
)

pytestmark = pytest.mark.anyio


async def _admitted(limiter: SharedProviderLimiter, tokens: int, results: list[bool]) -> None:
    try:
        await limiter.reserve(tokens, max_wait=0)
    except RateLimitWouldWait:
        results.append(False)
    else:
        results.append(True)


async def test_admits_exactly_the_configured_rpm_across_replicas(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 3) as stores:
        limiters = [
            SharedProviderLimiter("openai", 10, None, store, arrival_spread=0) for store in stores
        ]
        results: list[bool] = []
        async with anyio.create_task_group() as group:
            for i in range(30):
                group.start_soon(_admitted, limiters[i % 3], 1, results)
    # At 10 a minute, the next unit is 6 s away: nothing refills during the test.
    assert results.count(True) == 10


async def test_tokens_short_reserves_nothing(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 3) as stores:
        limiters = [
            SharedProviderLimiter("openai", 100, 1000, store, arrival_spread=0) for store in stores
        ]
        results: list[bool] = []
        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(_admitted, limiters[i], 400, results)
        assert results.count(True) == 2
        rpm_key = stores[0].keys.limiter("openai")[0]
        requests_tat = await stores[0].client.get(rpm_key)
        with pytest.raises(RateLimitWouldWait):
            await limiters[0].reserve(201, max_wait=0)
        # All or nothing: the refused call took no request unit either.
        assert await stores[0].client.get(rpm_key) == requests_tat
        await limiters[1].reserve(200, max_wait=0)


async def test_reconcile_refunds_and_charges_the_difference(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a = SharedProviderLimiter("anthropic", 100, 1000, store_a, arrival_spread=0)
        b = SharedProviderLimiter("anthropic", 100, 1000, store_b, arrival_spread=0)
        (await a.reserve(800, max_wait=0)).reconcile(100)  # refunds 700
        await store_a.wait_idle()
        (await b.reserve(900, max_wait=0)).reconcile(1000)  # charges 100 more: 1100 used
        await store_b.wait_idle()
        with pytest.raises(RateLimitWouldWait) as refused:
            await a.reserve(1, max_wait=0)
        # 101 tokens of debt at 1000 a minute: about 6 s before one token conforms.
        assert 5.5 < refused.value.wait_seconds < 6.5


async def test_release_unused_gives_back_the_request_and_tokens(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a = SharedProviderLimiter("gemini", 1, 500, store_a, arrival_spread=0)
        b = SharedProviderLimiter("gemini", 1, 500, store_b, arrival_spread=0)
        reservation = await a.reserve(500, max_wait=0)
        with pytest.raises(RateLimitWouldWait):
            await b.reserve(1, max_wait=0)
        reservation.release_unused()
        reservation.release_unused()  # settled once; later calls are no-ops
        assert reservation.settled
        await store_a.wait_idle()
        await b.reserve(500, max_wait=0)


async def test_a_pause_holds_every_replica(redis_server: RedisServer) -> None:
    record = SleepRecorder()
    slept = record.slept

    async with replicas(redis_server, 2) as (store_a, store_b):
        a = SharedProviderLimiter("openai", 100, None, store_a)
        b = SharedProviderLimiter("openai", 100, None, store_b, sleep=record)
        a.pause_until(anyio.current_time() + 2.0)
        assert a.paused_until is not None
        await store_a.wait_idle()
        with pytest.raises(RateLimitWouldWait) as refused:
            await b.reserve(1, max_wait=0.5)
        assert 1.9 < refused.value.wait_seconds <= 2.0
        assert b.paused_until is not None  # learnt from the answer
        await b.reserve(1, max_wait=5)  # reserved for the end of the pause, slept off locally
        assert len(slept) == 1 and 1.8 < slept[0] <= 2.0


async def test_rate_limit_hints_pause_every_replica(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a = SharedProviderLimiter("bedrock", None, None, store_a)
        b = SharedProviderLimiter("bedrock", None, None, store_b)
        a.apply_hints(RateLimitHints(remaining_requests=0, requests_reset_after=3.0))
        await store_a.wait_idle()
        with pytest.raises(RateLimitWouldWait) as refused:
            await b.reserve(1, max_wait=0)
        assert 2.9 < refused.value.wait_seconds <= 3.0


async def test_admission_runs_on_the_servers_clock(redis_server: RedisServer) -> None:
    # Two replicas whose clocks disagree by a day, and neither of which ever moves.
    async with replicas(redis_server, 2) as (store_a, store_b):
        early, late = FakeClock(0.0), FakeClock(86_400.0)
        a = SharedProviderLimiter("openai", 6, None, store_a, clock=early, arrival_spread=0)
        b = SharedProviderLimiter("openai", 6, None, store_b, clock=late, arrival_spread=0)
        results: list[bool] = []
        for limiter in (a, b, a, b, a, b, a, b):
            await _admitted(limiter, 1, results)
        assert results.count(True) == 6
        server_now = await server_time(store_a)
        theoretical_arrival = await stored_time(store_a, store_a.keys.limiter("openai")[0])
        # Six requests at one per 10 s, a burst of six: the TAT is 60 s ahead of Redis's TIME.
        assert abs(theoretical_arrival / 1e6 - (server_now + 60)) < 2


async def test_a_wait_within_the_bound_is_reserved_and_slept_locally(
    redis_server: RedisServer,
) -> None:
    record = SleepRecorder()
    slept = record.slept

    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter("openai", 60, None, store, sleep=record, arrival_spread=0)
        for _ in range(60):
            await limiter.reserve(0, max_wait=0)
        await limiter.reserve(0, max_wait=5)
        await limiter.reserve(0, max_wait=5)
        assert [round(s) for s in slept] == [1, 2]  # one round trip each, no polling


async def test_cancelled_while_waiting_gives_the_slot_back(redis_server: RedisServer) -> None:
    sleeping = anyio.Event()

    async def sleep_until_cancelled(seconds: float) -> None:
        sleeping.set()
        await anyio.sleep_forever()

    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter(
            "openai", 60, None, store, sleep=sleep_until_cancelled, arrival_spread=0
        )
        for _ in range(60):
            await limiter.reserve(0, max_wait=0)
        tat_key = store.keys.limiter("openai")[0]
        before = await stored_time(store, tat_key)
        async with anyio.create_task_group() as group:
            group.start_soon(limiter.reserve, 0)  # reserved a second ahead ...
            await sleeping.wait()
            assert await stored_time(store, tat_key) > before + 0.9e6
            group.cancel_scope.cancel()  # ... then cancelled while sleeping it off
        await store.wait_idle()
        assert await stored_time(store, tat_key) == pytest.approx(before, abs=1e5)


async def test_degraded_store_falls_back_to_an_empty_share(redis_server: RedisServer) -> None:
    clock = FakeClock(100.0)
    config = store_config(deadline=0.05)
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        limiter = SharedProviderLimiter(
            "openai", 30, 3000, store, live_replicas=lambda: 3, clock=clock, sleep=clock.sleep
        )
        await limiter.reserve(10, max_wait=0)
        redis_server.kill()
        # A share of 10 a minute that starts empty: the minute before is not admitted twice.
        for _ in range(5):
            with pytest.raises(RateLimitWouldWait):
                await limiter.reserve(10, max_wait=0)
        assert store.degraded
        clock.advance(6.0)
        reservation = await limiter.reserve(10, max_wait=0)
        reservation.reconcile(5)  # local: settled in-process, nothing sent
        # Larger than the share's whole burst (1000 tokens): admitted once the share is full.
        clock.advance(60.0)
        await limiter.reserve(2000, max_wait=0)
        fallbacks = store.stats().fallbacks
        assert fallbacks[("limiter", "degraded")] >= 3
        assert sum(fallbacks.values()) == 7


async def test_refuses_more_tokens_than_the_burst(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter("openai", 10, 100, store)
        with pytest.raises(ValueError, match="estimated_tokens"):
            await limiter.reserve(101)
        with pytest.raises(ValueError, match="tokens_per_minute"):
            SharedProviderLimiter("openai", 10, math.inf, store)


async def test_local_and_shared_limiters_share_one_interface(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 1) as (store,):
        limiters: list[ProviderRateLimiter] = [
            ProviderLimiter(60, 1000),
            SharedProviderLimiter("openai", 60, 1000, store),
        ]
        for limiter in limiters:
            reservation = await limiter.reserve(100, max_wait=1)
            reservation.reconcile(50)
            assert reservation.settled and reservation.estimated_tokens == 100
            limiter.apply_hints(RateLimitHints(retry_after=1.0))
            assert limiter.paused_until is not None
