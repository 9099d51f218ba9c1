"""The shared-state tests: every one on asyncio and trio, against real ``redis-server``s
(tests/redis_servers.py; ``redis_server`` itself is in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from delos.resilience import Clock, Sleep
from delos.runtime.shared import LuaScript, SharedStore, SharedStoreConfig, open_shared_store
from tests.redis_servers import RedisServer, serve_redis

__all__ = [
    "RedisServer",
    "SleepRecorder",
    "replicas",
    "script_calls",
    "server_time",
    "store_config",
    "stored_time",
]

# Redis's clock in microseconds, as the scripts read it. (coredis's ``time()`` drops the
# microseconds' top digits: fine to a second, not to a millisecond.)
_TIME = LuaScript("local t = redis.call('TIME') return tonumber(t[1]) * 1000000 + tonumber(t[2])")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def lru_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that evicts any key, least recently used first, past 4 MB."""
    yield from serve_redis(tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def cluster_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning every slot: scripts touching two slots fail (CROSSSLOT)."""
    for server in serve_redis(tmp_path, "--cluster-enabled", "yes"):
        assert server.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383").startswith(b"+OK")
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in server.command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the one-node cluster never became ready"
            time.sleep(0.01)
        yield server


class SleepRecorder:
    """A sleep that returns at once and keeps what it was asked for, in ``slept``."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def store_config(**changes: object) -> SharedStoreConfig:
    """Generous deadlines for tests that are not about deadlines: a loaded CI machine must not
    turn a slow call into a fallback the test did not ask for."""
    settings: dict[str, object] = {"deadline": 1.0, "connect_timeout": 1.0}
    settings.update(changes)
    return SharedStoreConfig(**settings)  # type: ignore[arg-type]


@asynccontextmanager
async def replicas(
    server: RedisServer,
    count: int,
    config: SharedStoreConfig | None = None,
    *,
    clock: Clock = anyio.current_time,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[list[SharedStore]]:
    """`count` stores on `server`, one per replica, on `clock` and `sleep`."""
    config = config or store_config()
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(
                open_shared_store(server.url, config, clock=clock, sleep=sleep)
            )
            for _ in range(count)
        ]
        yield stores


async def server_time(store: SharedStore) -> float:
    """Redis's clock, seconds."""
    return int(await store.run_script("test", _TIME, [], [])) / 1e6


async def stored_time(store: SharedStore, key: str) -> float:
    """A time the scripts stored (server microseconds)."""
    value = await store.client.get(key)
    assert value is not None
    return float(value)


def script_calls(server: RedisServer) -> int:
    """EVALSHA calls Redis has run (the commands inside scripts are counted apart)."""
    stats = server.command("INFO", "commandstats").decode()
    for line in stats.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0
