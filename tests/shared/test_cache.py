"""The response cache's level 2, and its single flight across replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import anyio
import pytest

from delos.runtime.cache import CachedAnswer, CacheOutcome, ResponseCache
from delos.runtime.shared import SharedCache, SharedStore, open_shared_store
from tests.shared.conftest import RedisServer, replicas, store_config

pytestmark = pytest.mark.anyio

KEY = "9f86d081884c7d659a2feaa0c55ad015"
FIRST_POLL = 0.01


def answer(content: str = "Bonjour \u2028 à vous") -> CachedAnswer:
    return CachedAnswer(
        content=content,
        finish_reason="stop",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=12,
        completion_tokens=5,
        usage_estimated=False,
        cost_usd=Decimal("0.000123"),
    )


class Upstream:
    """A compute function that counts its calls and, when gated, waits to be released."""

    def __init__(self, *, cacheable: bool = True, gated: bool = False) -> None:
        self.calls = 0
        self.started = anyio.Event()
        self.cacheable = cacheable
        self.release = anyio.Event()
        if not gated:
            self.release.set()

    async def __call__(self) -> tuple[CachedAnswer, bool]:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return answer(f"answer #{self.calls}"), self.cacheable


@asynccontextmanager
async def caches(
    server: RedisServer, count: int, polls: Polls | None = None, **options: float
) -> AsyncIterator[list[SharedCache]]:
    async with replicas(server, count) as stores:
        sleep = (polls or Polls()).sleep
        settings = {"default_ttl_seconds": 60.0, "first_poll": FIRST_POLL, **options}
        yield [
            SharedCache(store, sleep=sleep, **settings)  # type: ignore[arg-type]
            for store in stores
        ]
        for store in stores:
            await store.wait_idle()


async def exercise_cache(store: SharedStore) -> None:
    cache = SharedCache(store, default_ttl_seconds=60)
    assert await cache.put(KEY, answer())
    assert await cache.get(KEY) == answer()
    await cache.get_or_compute("other", Upstream())
    await store.wait_idle()


class Polls:
    """The caches' injected sleep: tells the test how many callers have started waiting for a
    leader (each waiter's first poll, and only it, sleeps `FIRST_POLL`)."""

    def __init__(self) -> None:
        self.waiters = 0
        self._changed = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        if seconds == FIRST_POLL:
            self.waiters += 1
            self._changed.set()
            self._changed = anyio.Event()
        await anyio.sleep(seconds)

    async def wait_for(self, waiters: int) -> None:
        with anyio.fail_after(5):
            while self.waiters < waiters:
                await self._changed.wait()


async def test_put_get_and_time_to_live(redis_server: RedisServer) -> None:
    async with caches(redis_server, 2) as (a, b):
        assert await a.get(KEY) is None
        assert await a.put(KEY, answer(), ttl_seconds=0.2)
        assert await b.get(KEY) == answer()  # the other replica reads it, exactly
        await anyio.sleep(0.3)  # the expiry itself is under test
        assert await b.get(KEY) is None


async def test_a_value_above_the_cap_is_not_stored(redis_server: RedisServer) -> None:
    async with caches(redis_server, 1, max_value_bytes=1024) as (cache,):
        assert not await cache.put(KEY, answer("x" * 2000))
        assert await cache.put("small", answer("x" * 100))
        assert cache.stats.too_large == 1
        assert await cache.get(KEY) is None


async def test_concurrent_identical_requests_across_replicas_compute_once(
    redis_server: RedisServer,
) -> None:
    upstream, polls = Upstream(gated=True), Polls()
    outcomes: list[tuple[CachedAnswer, CacheOutcome]] = []
    async with caches(redis_server, 3, polls) as replicas:

        async def ask(cache: SharedCache) -> None:
            outcomes.append(await cache.get_or_compute(KEY, upstream))

        async with anyio.create_task_group() as group:
            for i in range(8):
                group.start_soon(ask, replicas[i % 3])
            await polls.wait_for(7)
            upstream.release.set()
    assert upstream.calls == 1
    assert sorted(outcome for _, outcome in outcomes) == ["coalesced"] * 7 + ["miss"]
    assert {result for result, _ in outcomes} == {answer("answer #1")}


async def test_an_uncacheable_answer_is_handed_over_not_stored(redis_server: RedisServer) -> None:
    upstream, polls = Upstream(cacheable=False, gated=True), Polls()
    outcomes: list[CacheOutcome] = []
    async with caches(redis_server, 2, polls) as (a, b):

        async def ask(cache: SharedCache) -> None:
            outcomes.append((await cache.get_or_compute(KEY, upstream))[1])

        async with anyio.create_task_group() as group:
            group.start_soon(ask, a)
            await upstream.started.wait()  # a leads, holding the lock
            group.start_soon(ask, b)
            await polls.wait_for(1)
            upstream.release.set()
        assert upstream.calls == 1 and sorted(outcomes) == ["coalesced", "miss"]
        assert await a.get(KEY) is None


async def test_a_failed_leader_hands_over_to_the_next_caller(redis_server: RedisServer) -> None:
    results: list[str] = []

    async def failing() -> tuple[CachedAnswer, bool]:
        started.set()
        await gate.wait()
        raise RuntimeError("upstream down")

    started, gate = anyio.Event(), anyio.Event()
    fallback, polls = Upstream(), Polls()
    async with caches(redis_server, 2, polls) as (a, b):

        async def lead() -> None:
            with pytest.raises(RuntimeError):
                await a.get_or_compute(KEY, failing)
            results.append("failed")

        async def follow() -> None:
            _, outcome = await b.get_or_compute(KEY, fallback)
            results.append(outcome)

        async with anyio.create_task_group() as group:
            group.start_soon(lead)
            await started.wait()
            group.start_soon(follow)
            await polls.wait_for(1)
            gate.set()
    assert sorted(results) == ["failed", "miss"] and fallback.calls == 1


async def test_waiters_give_up_after_their_bound(redis_server: RedisServer) -> None:
    slow = Upstream(gated=True)
    impatient = Upstream()
    async with caches(redis_server, 2, max_wait=0.05) as (a, b):
        async with anyio.create_task_group() as group:
            group.start_soon(a.get_or_compute, KEY, slow)
            await slow.started.wait()
            with anyio.fail_after(2):
                _, outcome = await b.get_or_compute(KEY, impatient)
            slow.release.set()
        assert outcome == "miss" and impatient.calls == 1 and b.stats.waited_out == 1


async def test_a_stale_leader_never_releases_its_successors_lock(
    redis_server: RedisServer,
) -> None:
    stale = Upstream(gated=True)
    successor = Upstream(gated=True)
    async with (
        caches(redis_server, 1, lock_ttl_seconds=0.1) as (short,),
        caches(redis_server, 1) as (normal,),
    ):
        lock_key = normal._store.keys.cache(KEY)[1]
        store = normal._store
        async with anyio.create_task_group() as group:
            group.start_soon(short.get_or_compute, KEY, stale)
            await stale.started.wait()
            await anyio.sleep(0.15)  # the stale leader's lock expires: the expiry is under test
            group.start_soon(normal.get_or_compute, KEY, successor)
            await successor.started.wait()
            successor_token = await store.client.get(lock_key)
            stale.release.set()  # the stale leader publishes and tries to release
            await anyio.wait_all_tasks_blocked()
            await short._store.wait_idle()
            assert await store.client.get(lock_key) == successor_token
            successor.release.set()
        await store.wait_idle()
        assert not await store.client.exists([lock_key])


async def test_a_degraded_store_computes_at_once(redis_server: RedisServer) -> None:
    config = store_config(deadline=0.05, connect_timeout=0.05)
    async with open_shared_store(redis_server.url, config) as store:
        cache = SharedCache(store, default_ttl_seconds=60)
        redis_server.kill()
        upstream = Upstream()
        assert (await cache.get_or_compute(KEY, upstream))[1] == "miss"
        assert not await cache.put(KEY, answer())
        assert await cache.get(KEY) is None
        assert upstream.calls == 1
        purposes = {purpose for purpose, _ in store.stats().fallbacks}
        assert purposes == {"cache_lookup", "cache_put", "cache_get"}


async def test_level_two_sits_under_the_in_process_cache(redis_server: RedisServer) -> None:
    upstream = Upstream()
    async with caches(redis_server, 2) as (shared_a, shared_b):
        level_one_a = ResponseCache(max_entries=10, max_bytes=1 << 20, default_ttl_seconds=60)
        level_one_b = ResponseCache(max_entries=10, max_bytes=1 << 20, default_ttl_seconds=60)
        first = await level_one_a.get_or_compute(KEY, shared_a.for_level_one(KEY, upstream))
        await shared_a._store.wait_idle()
        second = await level_one_b.get_or_compute(KEY, shared_b.for_level_one(KEY, upstream))
        third = await level_one_b.get_or_compute(KEY, shared_b.for_level_one(KEY, upstream))
    assert upstream.calls == 1
    assert [first[1], second[1], third[1]] == ["miss", "miss", "hit"]  # level 1's view
    assert shared_b.stats.hits == 1  # b's level-1 miss was a level-2 hit
