from __future__ import annotations

import pytest

from delos.resilience import RateLimitWouldWait
from delos.runtime.shared import SharedProviderLimiter, open_shared_store

pytestmark = pytest.mark.anyio


async def test_smoke(redis_server) -> None:
    async with open_shared_store(redis_server.url) as a, open_shared_store(redis_server.url) as b:
        la = SharedProviderLimiter("openai", 10, 1000, a)
        lb = SharedProviderLimiter("openai", 10, 1000, b)
        admitted = 0
        for i in range(15):
            try:
                await (la if i % 2 else lb).reserve(10, max_wait=0)
                admitted += 1
            except RateLimitWouldWait as e:
                print("wait", e.wait_seconds)
        assert admitted == 10
        print(a.stats())
