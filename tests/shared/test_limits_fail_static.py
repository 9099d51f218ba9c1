"""Limits while Redis is away and as it returns: the replicas together never exceed the limit.

Away, each replica admits its share (the limit ÷ the live replicas), starting empty after the
slots Redis had already promised. Back, a replica keeps within its share too until every other
replica can have found Redis back, and charges what its share admitted to the state it last saw.
Waits on this replica run on a fake clock; admission on Redis runs on Redis's clock, so each
test picks rates whose intervals dwarf the real time it takes.
"""

from __future__ import annotations

import pytest

from delos.resilience import FakeClock, RateLimitWouldWait
from delos.runtime.shared import SharedProviderLimiter, SharedStore, open_shared_store
from tests.shared.conftest import RedisServer, server_time, store_config, stored_time

pytestmark = pytest.mark.anyio


def _limiter(
    store: SharedStore, clock: FakeClock, *, per_minute: float, replicas: int
) -> SharedProviderLimiter:
    """`per_minute` requests for `replicas` live replicas; waits and the 3 s hold after a
    return on the fake clock; the burst a minute's worth exactly."""
    return SharedProviderLimiter(
        "openai",
        per_minute,
        None,
        store,
        live_replicas=lambda: replicas,
        clock=clock,
        sleep=clock.sleep_advancing,
        arrival_spread=0,
        return_hold=3.0,
    )


async def _admitted(limiter: SharedProviderLimiter) -> bool:
    try:
        await limiter.reserve(0, max_wait=0)
    except RateLimitWouldWait:
        return False
    return True


async def _until_restored(
    store: SharedStore, limiter: SharedProviderLimiter, clock: FakeClock
) -> list[bool]:
    """Let the breaker around Redis try again until a call succeeds; what each call got."""
    outcomes = []
    for _ in range(6):
        clock.advance(store.config.breaker.max_wait_in_open)
        outcomes.append(await _admitted(limiter))
        if not store.degraded:
            return outcomes
    raise AssertionError("the store never found Redis back")


async def test_away_the_share_refills_only_after_the_slots_redis_had_promised(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock(100.0)
    async with open_shared_store(
        redis_server.url, store_config(deadline=0.05), clock=clock
    ) as store:
        # 30 a minute (a slot every 2 s) for 3 replicas: a share of 10 a minute, every 6 s.
        limiter = _limiter(store, clock, per_minute=30, replicas=3)
        for _ in range(30):
            await limiter.reserve(0, max_wait=0)  # the burst, spent
        await limiter.reserve(0, max_wait=5)  # the slot 2 s ahead ...
        await limiter.reserve(0, max_wait=5)  # ... and the one 4 s ahead: a queue 4 s deep
        redis_server.kill()
        # Empty once the promised slots have reached the provider (4 s), plus one share interval.
        assert not await _admitted(limiter)
        clock.advance(9.5)
        assert not await _admitted(limiter)
        clock.advance(1.0)
        assert await _admitted(limiter)
        assert store.degraded


async def test_back_a_replica_keeps_within_its_share_until_the_others_can_be_back(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock(100.0)
    config = store_config(deadline=0.05)
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        # 6 a minute (a slot every 10 s) for 2 replicas: a share of 3 a minute, every 20 s.
        limiter = _limiter(store, clock, per_minute=6, replicas=2)
        tat_key = store.keys.limiter("openai")[0]
        await limiter.reserve(0, max_wait=0)
        kept = await stored_time(store, tat_key)
        assert redis_server.command("SAVE").startswith(b"+OK")  # this state survives the restart

        redis_server.kill()
        assert not await _admitted(limiter)  # the share starts empty ...
        clock.advance(20.1)
        assert await _admitted(limiter)  # ... and admits one request 20 s later
        assert store.degraded

        redis_server.start()
        # The shared bucket has four requests left, the share none: the share decides.
        assert not any(await _until_restored(store, limiter, clock))
        assert not await _admitted(limiter)
        clock.advance(3.1)  # every other replica has had the time to find Redis back
        assert [await _admitted(limiter) for _ in range(3)] == [True, True, True]
        # Two of the bucket's slots went to the request admitted while away and the three
        # since; the slot the first call back took and gave back was refunded.
        assert await stored_time(store, tat_key) == pytest.approx(kept + 40e6, abs=1e6)
        assert await stored_time(store, tat_key) <= (await server_time(store) + 60) * 1e6
