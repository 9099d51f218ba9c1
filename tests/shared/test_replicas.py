"""Heartbeats and the live-replica count, on Redis's clock."""

from __future__ import annotations

import anyio
import pytest

from delos.resilience import FakeClock
from delos.runtime.shared import ReplicaRegistry, SharedStore
from tests.shared.conftest import RedisServer, replicas, store_config

pytestmark = pytest.mark.anyio


async def exercise_replicas(store: SharedStore) -> None:
    registry = ReplicaRegistry(store, replica_id="exercise")
    assert await registry.heartbeat() >= 1
    assert await registry.count() >= 1
    await registry.withdraw()


async def test_replicas_count_each_other(redis_server: RedisServer) -> None:
    async with replicas(redis_server, 3) as stores:
        registries = [ReplicaRegistry(store) for store in stores]
        assert [await registry.heartbeat() for registry in registries] == [1, 2, 3]
        assert await registries[0].heartbeat() == 3
        assert registries[0].live_replicas == 3
        assert len({registry.replica_id for registry in registries}) == 3
        await registries[2].withdraw()
        assert await registries[0].heartbeat() == 2


async def test_a_silent_replica_stops_counting_when_its_heartbeat_expires(
    redis_server: RedisServer,
) -> None:
    async with replicas(redis_server, 2) as (store_a, store_b):
        short = ReplicaRegistry(store_a, interval=0.05, ttl=0.2)
        steady = ReplicaRegistry(store_b)
        await short.heartbeat()
        assert await steady.heartbeat() == 2
        await anyio.sleep(0.3)  # the expiry itself is under test
        assert await steady.count() == 1
        assert await steady.heartbeat() == 1


async def test_run_beats_until_cancelled_then_withdraws(redis_server: RedisServer) -> None:
    clock = FakeClock()
    async with replicas(redis_server, 2) as (store_a, store_b):
        watcher = ReplicaRegistry(store_b)
        registry = ReplicaRegistry(store_a, sleep=clock.sleep)
        async with anyio.create_task_group() as group:
            await group.start(registry.run)
            assert await watcher.heartbeat() == 2
            clock.advance(1.0)  # the next beat
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()
        assert await watcher.heartbeat() == 1


async def test_the_last_known_count_survives_redis(redis_server: RedisServer) -> None:
    config = store_config(deadline=0.05, connect_timeout=0.05)
    async with replicas(redis_server, 2, config) as (store_a, store_b):
        first, second = ReplicaRegistry(store_a), ReplicaRegistry(store_b)
        await first.heartbeat()
        assert await second.heartbeat() == 2
        redis_server.kill()
        assert await second.heartbeat() == 2  # nobody can beat: the count stays as it was
        assert await second.count() == 2
        assert second.live_replicas == 2
        assert store_b.stats().fallbacks[("replicas", "error")] == 2
