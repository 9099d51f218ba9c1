"""A half-open trial that ends without a verdict frees the claim for the next request at once.

Two whole gateways on one Redis and one fake OpenAI, through the router's own attempt path: the
trial's permit is settled there (`record_ignored` for a 429 or a cancellation), and the claim
must be handed back from that settlement, not left to expire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from delos.resilience import BreakerConfig
from delos.runtime.config import Settings
from delos.runtime.errors import DelosError
from delos.runtime.gateway import Gateway, open_gateway
from delos.runtime.inputs import completion_input
from delos.runtime.routing import ResiliencePolicy
from delos.testing import Behaviour, FakeControl, FakeServer, Fault, Latency
from delos.testing.fakes import open_fakes
from tests.shared.conftest import RedisServer

pytestmark = pytest.mark.anyio

#: One attempt, no race; a claim that would otherwise last 30 s (the gateway's trial_ttl is one
#: breaker wait), so only a hand-back lets the second request through.
POLICY = ResiliencePolicy(
    breaker=BreakerConfig(wait_in_open=30.0), attempts_per_provider=1, race_width=1
)
NAME = "openai/gpt-4o"


@asynccontextmanager
async def two_gateways(
    redis: RedisServer,
) -> AsyncIterator[tuple[Gateway, Gateway, FakeControl, FakeServer]]:
    async with open_fakes(("openai",)) as fakes, AsyncExitStack() as stack:
        values = {**fakes.settings, "redis_url": redis.url, "redis_deadline_seconds": 1.0}
        a, b = [
            await stack.enter_async_context(
                open_gateway(Settings.model_validate(values), policy=POLICY)
            )
            for _ in range(2)
        ]
        yield a, b, fakes.controls["openai"], fakes.servers["openai"]


async def ask(gateway: Gateway) -> str | DelosError:
    request = completion_input(messages=[("user", "hello there")], model="gpt-4o")
    try:
        return (await gateway.completions.complete(request)).provider
    except DelosError as error:
        return error


def _half_open(redis: RedisServer, gateway: Gateway) -> str:
    """Make the shared breaker half-open (an opening that just ended); the trial key's name."""
    assert gateway.shared is not None
    _, half_key, trial_key = gateway.shared.store.keys.breaker(NAME)
    assert redis.command("SET", half_key, "1", "PX", "60000").startswith(b"+OK")
    return trial_key


async def test_a_trial_answered_429_frees_the_claim(redis_server: RedisServer) -> None:
    async with two_gateways(redis_server) as (a, b, control, _):
        trial_key = _half_open(redis_server, a)
        control.fail_next(1, Fault.HTTP_ERROR, error_status=429)  # no Retry-After: no pause
        refused = await ask(a)  # a claims the trial; the provider says nothing of its health
        assert a.shared is not None
        await a.shared.store.wait_idle()
        claimed = redis_server.command("EXISTS", trial_key)
        answered = await ask(b)  # b makes the trial now, and it succeeds
    assert isinstance(refused, DelosError) and "429" in refused.message
    assert claimed == b":0\r\n"
    assert answered == "openai"


async def test_a_cancelled_trial_frees_the_claim(redis_server: RedisServer) -> None:
    async with two_gateways(redis_server) as (a, b, control, upstream):
        trial_key = _half_open(redis_server, a)
        control.behaviour = Behaviour(latency=Latency(base=30.0))
        assert a.shared is not None
        async with anyio.create_task_group() as group:
            group.start_soon(ask, a)
            await upstream.wait_until(lambda stats: stats.active_responses == 1)
            claimed_during = redis_server.command("EXISTS", trial_key)
            group.cancel_scope.cancel()  # the client went away mid-trial
        await a.shared.store.wait_idle()
        claimed_after = redis_server.command("EXISTS", trial_key)
        control.behaviour = Behaviour()
        answered = await ask(b)
    assert (claimed_during, claimed_after) == (b":1\r\n", b":0\r\n")
    assert answered == "openai"
