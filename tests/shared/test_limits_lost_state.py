"""Limiter state that Redis lost grants no fresh burst; state nobody has seen starts full.

A lost bucket is one whose epoch key vanished while a replica remembers it: Redis restarted
without persistence, or was flushed. Each test spends nothing it does not count, and at 60 a
minute the next unit is a second away, so nothing refills unnoticed. The stores' background
sleep is a fake clock's, never advanced: a settlement is sent only when a test says so.
"""

from __future__ import annotations

import anyio
import pytest

from delos.resilience import FakeClock, RateLimitWouldWait
from delos.runtime.shared import (
    LuaScript,
    SharedProviderLimiter,
    SharedStateUnavailable,
    SharedStore,
)
from tests.shared.conftest import RedisServer, SleepRecorder, replicas, server_time

pytestmark = pytest.mark.anyio

_NOTHING = LuaScript("return 1")


def _limiter(store: SharedStore) -> SharedProviderLimiter:
    """60 requests a minute, a burst of exactly 60."""
    return SharedProviderLimiter("openai", 60, None, store, arrival_spread=0)


async def _reconnected(store: SharedStore) -> None:
    """Absorb the error a connection to the old server may still give, once."""
    for _ in range(3):
        try:
            await store.run_script("reconnect", _NOTHING, [], [])
        except SharedStateUnavailable:
            continue
        assert not store.degraded
        return
    raise AssertionError("the store did not reconnect")


async def _lose_state(server: RedisServer, how: str, *stores: SharedStore) -> None:
    if how == "restart":
        server.kill()
        server.start()  # the same port, empty: no persistence
    else:
        assert server.command("FLUSHALL").startswith(b"+OK")
    for store in stores:
        await _reconnected(store)


async def _epoch(store: SharedStore) -> bytes:
    value = await store.client.get(store.keys.limiter("openai")[3])
    assert value is not None
    return value


async def _refused_wait(limiter: SharedProviderLimiter) -> float:
    with pytest.raises(RateLimitWouldWait) as refused:
        await limiter.reserve(0, max_wait=0)
    return refused.value.wait_seconds


@pytest.mark.parametrize("how", ["restart", "flush"])
async def test_lost_state_starts_empty_on_every_replica(
    redis_server: RedisServer, how: str
) -> None:
    async with replicas(redis_server, 2, sleep=FakeClock().sleep) as (store_a, store_b):
        a, b = _limiter(store_a), _limiter(store_b)
        await a.reserve(0, max_wait=0)
        await b.reserve(0, max_wait=0)
        # Owed to the state about to be lost: neither refills the empty bucket.
        (await a.reserve(0, max_wait=0)).release_unused()
        (await b.reserve(0, max_wait=0)).release_unused()
        await _lose_state(redis_server, how, store_a, store_b)

        # Empty: the next request conforms one interval from now, on either replica.
        assert 0.5 < await _refused_wait(a) <= 1.0
        assert 0.5 < await _refused_wait(b) <= 1.0
        assert 0.5 < await _refused_wait(_limiter(store_b)) <= 1.0  # a replica new to it too
        assert (await _epoch(store_a)).startswith(b"lost:")


async def test_lost_state_refills_at_the_configured_rate(redis_server: RedisServer) -> None:
    record = SleepRecorder()
    slept = record.slept

    async with replicas(redis_server, 1) as (store,):
        limiter = SharedProviderLimiter("openai", 60, None, store, sleep=record, arrival_spread=0)
        await limiter.reserve(0, max_wait=0)
        await _lose_state(redis_server, "restart", store)
        for _ in range(3):
            await limiter.reserve(0, max_wait=5)
    # Reserved one second apart from an empty bucket: the rate, not a burst.
    assert [round(seconds) for seconds in slept] == [1, 2, 3]


async def test_a_first_deployment_starts_with_a_full_burst(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a, b = _limiter(store_a), _limiter(store_b)
        for index in range(60):
            await (a if index % 2 else b).reserve(0, max_wait=0)
        assert 0.5 < await _refused_wait(a) <= 1.0
        assert (await _epoch(store_a)).startswith(b"new:")


async def test_a_bucket_whose_state_expired_is_full_again(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 1) as (store,):
        limiter = _limiter(store)
        for _ in range(60):
            await limiter.reserve(0, max_wait=0)
        epoch = await _epoch(store)
        # As the TAT's time to live ending would: the epoch stands, so this is not a loss.
        await store.client.delete([store.keys.limiter("openai")[0]])
        for _ in range(60):
            await limiter.reserve(0, max_wait=0)
        assert await _epoch(store) == epoch


async def test_a_replica_that_saw_nothing_cannot_hide_a_loss(redis_server: RedisServer) -> None:
    """Redis came back empty and a replica started meanwhile reached it first: it cannot tell a
    loss from a first deployment and takes a full bucket. The first replica that remembers the
    old epoch empties it, once."""
    async with replicas(redis_server, 2, sleep=FakeClock().sleep) as (store_a, store_b):
        old, other_old = _limiter(store_a), _limiter(store_b)
        await old.reserve(0, max_wait=0)
        await other_old.reserve(0, max_wait=0)
        await _lose_state(redis_server, "flush", store_a, store_b)
        newcomer = _limiter(store_b)
        await newcomer.reserve(0, max_wait=0)  # a full bucket, as far as it can tell
        assert (await _epoch(store_a)).startswith(b"new:")

        assert 0.5 < await _refused_wait(old) <= 1.0
        emptied = await _epoch(store_a)
        assert emptied.startswith(b"lost:")
        assert 0.5 < await _refused_wait(newcomer) <= 1.0
        assert 0.5 < await _refused_wait(other_old) <= 1.0
        assert await _epoch(store_a) == emptied  # adopted, not emptied again


async def test_a_new_epoch_older_than_a_window_is_left_alone(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 1) as (store,):
        old = _limiter(store)
        await old.reserve(0, max_wait=0)
        await _lose_state(redis_server, "flush", store)
        # Re-created by a replica that saw nothing, over a minute ago: whatever burst it took
        # is a minute in the past, and the bucket has refilled since.
        long_ago = f"new:{round((await server_time(store) - 61) * 1e6)}"
        await store.client.set(store.keys.limiter("openai")[3], long_ago)
        for _ in range(60):
            await old.reserve(0, max_wait=0)
        assert await _epoch(store) == long_ago.encode()


async def test_a_pause_lost_with_the_state_is_published_again(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a = _limiter(store_a)
        await a.reserve(0, max_wait=0)
        a.pause_until(anyio.current_time() + 30)  # the provider said: 30 s
        await store_a.wait_idle()
        await _lose_state(redis_server, "restart", store_a, store_b)

        await _refused_wait(a)  # finds the state lost, and the pause gone with it
        await store_a.wait_idle()
        # A replica that never heard of the pause finds it on Redis.
        assert 25 < await _refused_wait(_limiter(store_b)) <= 30
