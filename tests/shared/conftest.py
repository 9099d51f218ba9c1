"""The shared-state tests: every one on asyncio and trio, against real ``redis-server``s
(tests/redis_servers.py; ``redis_server`` itself is in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delos.runtime.shared import SharedStoreConfig
from tests.redis_servers import RedisServer, serve_redis

__all__ = ["RedisServer", "store_config"]


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


def store_config(**changes: object) -> SharedStoreConfig:
    """Generous deadlines for tests that are not about deadlines: a loaded CI machine must not
    turn a slow call into a fallback the test did not ask for."""
    settings: dict[str, object] = {"deadline": 1.0, "connect_timeout": 1.0}
    settings.update(changes)
    return SharedStoreConfig(**settings)  # type: ignore[arg-type]
