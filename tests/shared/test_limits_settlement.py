"""Settling a shared reservation costs no round trip of its own.

What a replica owes (an over- or under-estimate, an unused reservation) rides along with its
next reservation; when none comes within the store's ``settle_hold``, the store sends it alone.
The stores' background sleep is a fake clock's: the hold ends only when a test moves it.
"""

from __future__ import annotations

import anyio
import pytest

from delos.resilience import FakeClock
from delos.runtime.shared import SharedProviderLimiter, SharedStore, open_shared_store
from tests.shared.conftest import (
    RedisServer,
    replicas,
    script_calls,
    server_time,
    store_config,
    stored_time,
)

pytestmark = pytest.mark.anyio


def _limiter(store: SharedStore) -> SharedProviderLimiter:
    """6000 tokens a minute: 1000 tokens are 10 s of the server's clock."""
    return SharedProviderLimiter("openai", 1000, 6000, store, arrival_spread=0)


async def _seconds_of_tokens_ahead(store: SharedStore) -> float:
    """How far the tokens TAT runs ahead of Redis's clock, seconds."""
    tat = await stored_time(store, store.keys.limiter("openai")[1])
    return tat / 1e6 - await server_time(store)


async def test_a_settlement_rides_along_with_the_next_reservation(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 1, sleep=FakeClock().sleep) as (store,):
        limiter = _limiter(store)
        await limiter.reserve(0)  # loads the script
        scripts, calls = script_calls(redis_server), store.stats().calls

        (await limiter.reserve(1000)).reconcile(200)  # 800 tokens owed back
        assert store.stats().held == 1
        await limiter.reserve(100)  # ... and carried
        assert store.stats().held == 0

        await store.wait_idle()  # the hold ends: nothing left to send
        assert (script_calls(redis_server) - scripts, store.stats().calls - calls) == (2, 2)
        # 200 + 100 tokens taken: 3 s ahead, not the 11 s of 1000 + 100.
        assert 2.5 < await _seconds_of_tokens_ahead(store) <= 3.0


async def test_a_settlement_no_reservation_carries_goes_alone_after_the_hold(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with replicas(redis_server, 1, clock=clock, sleep=clock.sleep) as (store,):
        limiter = _limiter(store)
        (await limiter.reserve(1000)).reconcile(200)
        calls = store.stats().calls
        await anyio.wait_all_tasks_blocked()
        assert store.stats().calls == calls  # held
        clock.advance(store.config.settle_hold)
        await anyio.wait_all_tasks_blocked()
        assert store.stats().held == 0  # handed to the background sender ...
        await store.wait_idle()  # ... which has sent it
        assert store.stats().calls == calls + 1
        assert 1.5 < await _seconds_of_tokens_ahead(store) <= 2.0


async def test_steady_traffic_never_waits_out_a_hold(redis_server: RedisServer) -> None:
    clock = FakeClock()
    async with replicas(redis_server, 1, clock=clock, sleep=clock.sleep) as (store,):
        limiter = _limiter(store)
        calls = store.stats().calls
        for _ in range(10):  # a request every 0.2 s, each settled with a refund
            (await limiter.reserve(100)).reconcile(50)
            clock.advance(0.2)
            await anyio.wait_all_tasks_blocked()
        # Each settlement rode along with the next reservation; the last one is still held.
        assert (store.stats().calls - calls, store.stats().held) == (10, 1)


async def test_settlements_add_up_until_sent(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 1, sleep=FakeClock().sleep) as (store,):
        limiter = _limiter(store)
        first, second, third = [await limiter.reserve(1000) for _ in range(3)]
        first.reconcile(500)  # 500 back
        second.reconcile(1200)  # 200 more
        third.release_unused()  # 1000 back, and the request
        calls = store.stats().calls
        await store.wait_idle()
        assert store.stats().calls == calls + 1  # one settlement for the three
        assert 16.5 < await _seconds_of_tokens_ahead(store) <= 17.0  # 1700 tokens


async def test_an_exact_estimate_or_an_unlimited_dimension_owes_nothing(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 1) as (store,):
        (await _limiter(store).reserve(100)).reconcile(100)
        (await SharedProviderLimiter("gemini", 100, None, store).reserve(100)).reconcile(10)
        assert store.stats().held == 0


async def test_closing_the_store_sends_what_is_held(redis_server: RedisServer) -> None:
    config = store_config(settle_hold=3600.0)
    async with open_shared_store(redis_server.url, config) as store:
        (await _limiter(store).reserve(1000)).reconcile(0)
    async with open_shared_store(redis_server.url, config) as store:
        # Refunded in full: the tokens TAT is back at now, which leaves no key.
        assert await store.client.exists([store.keys.limiter("openai")[1]]) == 0
