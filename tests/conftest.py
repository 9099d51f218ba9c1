from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_servers import RedisServer, serve_redis


@pytest.fixture
def anyio_backend() -> str:
    """Tests of the grpclib edge run on asyncio; packages of backend-neutral code override this."""
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own on a free loopback port (skips when not installed)."""
    yield from serve_redis(tmp_path)
