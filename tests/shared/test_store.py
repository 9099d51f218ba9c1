"""The store around Redis: deadlines, the breaker, fail-static accounting, the key layout."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from delos.resilience import FakeClock
from delos.runtime.shared import (
    KeySpace,
    SharedProviderLimiter,
    SharedStateUnavailable,
    SharedStore,
    SharedStoreConfig,
    open_shared_store,
)
from delos.runtime.shared._store import Client
from tests.shared.conftest import RedisServer, store_config

pytestmark = pytest.mark.anyio

DEADLINE = 0.05
#: Scheduling slack over the deadline on a loaded two-core machine.
SLACK = 0.05


async def _ping(client: Client) -> bytes:
    return await client.ping()


async def _timed_ping(store: SharedStore) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        await store.run("test", _ping)
    except SharedStateUnavailable as error:
        return error.reason, time.perf_counter() - started
    return "ok", time.perf_counter() - started


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "delos.runtime.shared"]


async def test_a_paused_redis_degrades_within_the_deadline_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(0.0)
    config = store_config(deadline=DEADLINE, connect_timeout=DEADLINE)
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        assert (await _timed_ping(store))[0] == "ok"
        redis_server.pause()
        try:
            outcomes = [await _timed_ping(store) for _ in range(10)]
        finally:
            redis_server.resume()
        # One success and two failures: a failure rate of 2/3 over the minimum of three calls.
        assert [reason for reason, _ in outcomes] == ["timeout"] * 2 + ["degraded"] * 8
        assert max(seconds for _, seconds in outcomes) < DEADLINE + SLACK
        assert max(seconds for _, seconds in outcomes[2:]) < 0.005  # refused without a call
        assert store.degraded
        assert store.stats().fallbacks == {("test", "timeout"): 2, ("test", "degraded"): 8}
        clock.advance(config.breaker.wait_in_open)  # one trial call is let through
        assert (await _timed_ping(store))[0] == "ok"
        assert not store.degraded
    messages = _messages(caplog)
    assert len(messages) == 2  # one line each way, none per request
    assert "unavailable (no answer within 50 ms)" in messages[0]
    assert "restored" in messages[1]


async def test_a_killed_redis_degrades_and_recovers_once_restarted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(0.0)
    config = store_config(deadline=DEADLINE, connect_timeout=DEADLINE)
    changes: list[bool] = []
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        store.add_listener(changes.append)
        redis_server.kill()
        outcomes = [await _timed_ping(store) for _ in range(5)]
        assert [reason for reason, _ in outcomes] == ["error"] * 3 + ["degraded"] * 2
        assert max(seconds for _, seconds in outcomes) < DEADLINE + SLACK
        clock.advance(config.breaker.wait_in_open)
        assert (await _timed_ping(store))[0] == "error"  # the trial fails: open again, longer
        clock.advance(config.breaker.wait_in_open)
        assert (await _timed_ping(store))[0] == "degraded"  # backed off to twice the wait
        redis_server.start()
        clock.advance(config.breaker.wait_in_open)
        assert (await _timed_ping(store))[0] == "ok"
        assert changes == [True, False]
        assert store.stats().degraded_episodes == 1
    assert len(_messages(caplog)) == 2


async def test_connecting_to_a_hung_redis_loses_no_pool_slot(redis_server: RedisServer) -> None:
    """A restarted Redis that accepts connections but never answers them: every call must stay
    bounded, and once it answers the pool must still have its connections (coredis alone loses
    a slot per cancelled connection attempt: see `_ShieldedPool`)."""
    clock = FakeClock(0.0)
    config = store_config(deadline=DEADLINE, connect_timeout=DEADLINE, max_connections=2)
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        redis_server.kill()
        redis_server.start()
        redis_server.pause()
        try:
            for _ in range(4):
                for _ in range(3):
                    reason, seconds = await _timed_ping(store)
                    assert reason != "ok"
                    # A new connection: TCP connect, then a handshake bounded by the deadline.
                    assert seconds < 2 * DEADLINE + SLACK
                clock.advance(config.breaker.max_wait_in_open)
        finally:
            redis_server.resume()
        clock.advance(config.breaker.max_wait_in_open)
        assert (await _timed_ping(store))[0] == "ok"


async def test_a_redis_that_was_never_there_only_makes_calls_fall_back(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.kill()
    config = store_config(deadline=DEADLINE, connect_timeout=DEADLINE)
    clock = FakeClock()
    async with open_shared_store(url, config) as store:
        limiter = SharedProviderLimiter(
            "openai", 60, None, store, clock=clock, sleep=clock.sleep_advancing
        )
        reservation = await limiter.reserve(0, max_wait=2)  # the empty share refills in 1 s
        reservation.release_unused()
    assert store.stats().fallbacks[("limiter", "error")] == 1


async def test_background_commands_run_in_order_and_are_dropped_when_degraded(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock(0.0)
    # The generous deadline: a hundred commands on a loaded machine must not degrade the store
    # (a killed Redis refuses connections at once).
    config = store_config(connect_timeout=DEADLINE)
    async with open_shared_store(redis_server.url, config, clock=clock) as store:
        for value in range(100):

            async def incr(client: Client, value: int = value) -> int:
                return await client.incrby("counter", 1)

            store.submit_nowait("count", incr)
        await store.wait_idle()
        assert await store.client.get("counter") == b"100"
        redis_server.kill()
        for _ in range(3):
            await _timed_ping(store)
        assert store.degraded
        store.submit_nowait("count", incr)
        assert store.stats().fallbacks[("count", "degraded")] == 1
        assert store.stats().pending == 0


async def test_a_full_background_queue_drops_and_counts(redis_server: RedisServer) -> None:
    config = store_config(pending_limit=2)
    async with open_shared_store(redis_server.url, config) as store:
        for _ in range(5):
            store.submit_nowait("settle", _ping)  # no checkpoint: nothing has been sent yet
        # One handed straight to the waiting sender task, two queued, two dropped.
        assert store.stats().fallbacks == {("settle", "queue_full"): 2}
        await store.wait_idle()


async def test_closing_sends_what_is_pending(redis_server: RedisServer) -> None:
    async with open_shared_store(redis_server.url, store_config()) as store:

        async def mark(client: Client) -> object:
            return await client.set("closing", "sent")

        store.submit_nowait("mark", mark)
    async with open_shared_store(redis_server.url, store_config()) as store:
        assert await store.client.get("closing") == b"sent"


def test_keys_carry_the_version_and_one_hash_tag_per_provider() -> None:
    keys = KeySpace()
    assert keys.limiter("openai") == (
        "delos:v1:limit:{openai}:rpm",
        "delos:v1:limit:{openai}:tpm",
        "delos:v1:limit:{openai}:pause",
        "delos:v1:limit:{openai}:epoch",
    )
    assert keys.breaker("openai/gpt-4o")[0] == "delos:v1:breaker:{openai/gpt-4o}:open"
    assert keys.cache("ab12")[1] == "delos:v1:cache:{ab12}:lock"
    assert KeySpace("tenant").replicas == "tenant:v1:replicas"
    with pytest.raises(ValueError, match="braces"):
        keys.limiter("open{ai}")
    with pytest.raises(ValueError, match="namespace"):
        SharedStoreConfig(namespace="a:b")
    with pytest.raises(ValueError, match="deadline"):
        SharedStoreConfig(deadline=0)


async def test_every_script_runs_on_a_redis_cluster(cluster_server: RedisServer) -> None:
    """A one-node cluster refuses (CROSSSLOT) any script whose keys span two slots: the store
    would degrade. Every shared piece runs once here, and nothing falls back."""
    from tests.shared.test_breakers import exercise_breakers
    from tests.shared.test_cache import exercise_cache
    from tests.shared.test_replicas import exercise_replicas

    async with open_shared_store(cluster_server.url, store_config()) as store:
        limiter = SharedProviderLimiter("openai", 60, 1000, store)
        (await limiter.reserve(100, max_wait=0)).reconcile(50)
        (await limiter.reserve(100, max_wait=0)).release_unused()
        limiter.pause_until(anyio.current_time() + 1)
        await exercise_breakers(store)
        await exercise_cache(store)
        await exercise_replicas(store)
        await store.wait_idle()
        stats = store.stats()
        assert stats.fallbacks == {} and stats.failures == 0 and stats.calls >= 10


async def test_eviction_reaches_limiter_keys_in_another_logical_database(
    lru_server: RedisServer,
) -> None:
    """Why the cache needs its own instance, not just its own DB: ``allkeys-lru`` samples every
    database, so filling the cache's DB evicts the limiter's state in DB 0."""
    limits_url, cache_url = lru_server.url, lru_server.url.rsplit("/", 1)[0] + "/1"
    async with (
        open_shared_store(limits_url, store_config()) as limits,
        open_shared_store(cache_url, store_config()) as cache,
    ):
        limiter = SharedProviderLimiter("openai", 10, None, limits)
        await limiter.reserve(0, max_wait=0)
        tat_key = limits.keys.limiter("openai")[0]
        assert await limits.client.exists([tat_key])
        filler = b"x" * 10_000
        for start in range(0, 1000, 100):
            async with cache.client.pipeline(transaction=False) as pipe:
                for index in range(start, start + 100):
                    pipe.set(f"cache-{index}", filler)
        assert not await limits.client.exists([tat_key])
