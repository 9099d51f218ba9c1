"""Shared breaker openings and the single half-open trial claimant, against a real Redis."""

from __future__ import annotations

import time

import anyio
import pytest

from delos.resilience import BreakerConfig, BreakerState, CircuitBreakerFactory, FakeClock
from delos.runtime.shared import SharedBreakers, SharedStore, open_shared_store
from tests.shared.conftest import RedisServer, replicas, store_config

pytestmark = pytest.mark.anyio

NAME = "openai/gpt-4o"


async def exercise_breakers(store: SharedStore) -> None:
    breakers = SharedBreakers(store)
    breakers.publish_open(NAME, 0.05)
    await store.wait_idle()
    await breakers.refresh()
    await breakers.try_claim_trial(NAME)
    breakers.settle_trial(NAME, success=True)


async def test_an_opening_reaches_another_replica_within_a_second(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        publisher, watcher = SharedBreakers(store_a), SharedBreakers(store_b, poll_interval=0.25)
        watcher.watch(NAME)
        seen = anyio.Event()

        def on_change(name: str, state: BreakerState) -> None:
            if state is BreakerState.OPEN:
                seen.set()

        watcher.add_listener(on_change)
        async with anyio.create_task_group() as group:
            await group.start(watcher.run)
            started = time.perf_counter()
            publisher.publish_open(NAME, 30.0)
            assert publisher.state(NAME) is BreakerState.OPEN  # at once, on the publisher
            with anyio.fail_after(1.0):
                await seen.wait()
            elapsed = time.perf_counter() - started
            group.cancel_scope.cancel()
        print(f"opening seen by another replica after {elapsed * 1000:.0f} ms")
        assert watcher.state(NAME) is BreakerState.OPEN
        assert 29 < (watcher.seconds_until_half_open(NAME) or 0) <= 30


async def test_exactly_one_replica_claims_the_trial(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 4) as stores:
        views = [SharedBreakers(store) for store in stores]
        _, half, _ = stores[0].keys.breaker(NAME)
        await stores[0].client.set(half, "1", px=60_000)  # an opening that just ended
        claims: list[bool] = []

        async def claim(view: SharedBreakers) -> None:
            claims.append(await view.try_claim_trial(NAME))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(claim, views[i % 4])
        assert claims.count(True) == 1


async def test_no_claim_while_open_and_no_claim_needed_when_closed(
    redis_server: RedisServer,
) -> None:
    async with open_shared_store(redis_server.url, store_config()) as store:
        breakers = SharedBreakers(store)
        assert await breakers.try_claim_trial(NAME)  # closed: call freely
        breakers.publish_open(NAME, 30.0)
        await store.wait_idle()
        assert not await breakers.try_claim_trial(NAME)


async def test_a_successful_trial_closes_it_everywhere_and_a_failed_one_reopens(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        clock = FakeClock()
        a, b = SharedBreakers(store_a, clock=clock), SharedBreakers(store_b)
        open_key, half_key, _ = store_a.keys.breaker(NAME)
        await store_a.client.set(half_key, "1", px=60_000)
        a.watch(NAME)
        b.watch(NAME)
        await b.refresh()
        assert b.state(NAME) is BreakerState.HALF_OPEN
        assert await a.try_claim_trial(NAME)
        assert not await b.try_claim_trial(NAME)
        a.settle_trial(NAME, success=False, reopen_seconds=10.0)
        await store_a.wait_idle()
        await b.refresh()
        assert b.state(NAME) is BreakerState.OPEN
        await store_a.client.delete([open_key])  # the new opening ends ...
        clock.advance(10.0)  # ... for the replica that published it too
        assert await b.try_claim_trial(NAME)  # the failed claim was released
        b.settle_trial(NAME, success=True)
        await store_b.wait_idle()
        await a.refresh()
        assert a.state(NAME) is BreakerState.CLOSED
        assert await store_a.client.exists([half_key]) == 0


async def test_a_local_opening_is_published_for_its_duration(redis_server: RedisServer) -> None:
    clock = FakeClock()
    config = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=20.0)
    factory = CircuitBreakerFactory(config, clock=clock)
    async with replicas(redis_server, 2) as (store_a, store_b):
        SharedBreakers(store_a).attach(factory)
        watcher = SharedBreakers(store_b)
        breaker = factory.get_breaker(NAME)
        for _ in range(2):
            breaker.try_acquire().record_failure(0.1)
        assert breaker.state is BreakerState.OPEN
        await store_a.wait_idle()
        watcher.watch(NAME)
        await watcher.refresh()
        assert watcher.state(NAME) is BreakerState.OPEN
        assert 19 < (watcher.seconds_until_half_open(NAME) or 0) <= 20


async def test_degraded_means_local_breakers_only(redis_server: RedisServer) -> None:
    config = store_config(deadline=0.05, connect_timeout=0.05)
    async with open_shared_store(redis_server.url, config) as store:
        breakers = SharedBreakers(store)
        breakers.publish_open("other/model", 30.0)
        await store.wait_idle()
        await breakers.refresh()
        redis_server.kill()
        await breakers.refresh()
        assert breakers.state("other/model") is BreakerState.OPEN  # its own, until it ends
        assert breakers.state(NAME) is BreakerState.CLOSED
        assert await breakers.try_claim_trial(NAME)
        assert store.stats().fallbacks[("breaker_poll", "error")] == 1


async def test_a_trial_without_a_verdict_hands_its_claim_back(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a, b = SharedBreakers(store_a), SharedBreakers(store_b)
        _, half_key, _ = store_a.keys.breaker(NAME)
        await store_a.client.set(half_key, "1", px=60_000)
        assert await a.try_claim_trial(NAME)
        assert not await b.try_claim_trial(NAME)
        a.release_trial(NAME)  # cancelled, or a 429: no verdict
        a.release_trial(NAME)  # nothing held any more: nothing to do
        await store_a.wait_idle()
        assert await b.try_claim_trial(NAME)  # at once, not after the claim's 60 s
        assert await store_a.client.exists([half_key]) == 1  # still half-open: no verdict


async def test_a_late_hand_back_never_frees_another_replicas_claim(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        a, b = SharedBreakers(store_a), SharedBreakers(store_b)
        _, half_key, trial_key = store_a.keys.breaker(NAME)
        await store_a.client.set(half_key, "1", px=60_000)
        assert await a.try_claim_trial(NAME)
        await store_a.client.delete([trial_key])  # a's claim expired ...
        assert await b.try_claim_trial(NAME)  # ... and b holds the trial now
        a.release_trial(NAME)
        await store_a.wait_idle()
        assert not await a.try_claim_trial(NAME)


async def test_a_claim_cancelled_in_flight_is_handed_back(redis_server: RedisServer) -> None:
    async with open_shared_store(redis_server.url, store_config()) as store:
        breakers = SharedBreakers(store)
        _, half_key, trial_key = store.keys.breaker(NAME)
        await store.client.set(half_key, "1", px=60_000)
        assert await breakers.try_claim_trial("other/model")  # closed; loads the script
        redis_server.pause()  # the claim goes out, and waits for Redis
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(breakers.try_claim_trial, NAME)
                await anyio.wait_all_tasks_blocked()
                group.cancel_scope.cancel()
        finally:
            redis_server.resume()
        await store.wait_idle()
        # Redis took the claim, then the hand-back queued behind it on the same connection.
        assert await store.client.exists([trial_key]) == 0
        assert store.stats().fallbacks == {}
