"""Two gateways, one Redis: replicas that behave as one.

Each gateway is a whole in-process gateway (`open_gateway`) with its own provider client to the
one fake OpenAI on loopback, and its own connection to a real ``redis-server``: limits, pauses,
breaker openings and cached answers cross from one to the other only through Redis. Waits are
events and Redis's own expiry; the only timed bounds are the ones the issue sets (an opening
seen within a second).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from delos.resilience import BreakerConfig, BreakerState
from delos.runtime.config import Settings
from delos.runtime.errors import DelosError
from delos.runtime.gateway import Gateway, SharedState, open_gateway
from delos.runtime.inputs import completion_input
from delos.runtime.routing import ResiliencePolicy, StreamPiece
from delos.runtime.values import TextDelta
from delos.testing import Behaviour, FakeControl, FakeServer, Fault, Latency
from delos.testing.fakes import open_fakes
from tests.redis_servers import RedisServer, serve_redis

pytestmark = pytest.mark.anyio

#: One attempt per request and no race: each request is at most one upstream call.
ONE_CALL = ResiliencePolicy(attempts_per_provider=1, race_width=1)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def cache_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for the cache alone, as documented: bounded memory, any key evictable."""
    directory = tmp_path / "cache"
    directory.mkdir()
    yield from serve_redis(directory, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")


@dataclass
class Replicas:
    a: Gateway
    b: Gateway
    upstream: FakeServer
    control: FakeControl

    @property
    def both(self) -> tuple[Gateway, Gateway]:
        return self.a, self.b


def shared(gateway: Gateway) -> SharedState:
    assert gateway.shared is not None
    return gateway.shared


@asynccontextmanager
async def two_replicas(
    redis: RedisServer,
    settings: Mapping[str, Any] | None = None,
    policy: ResiliencePolicy = ONE_CALL,
) -> AsyncIterator[Replicas]:
    async with open_fakes(("openai",)) as fakes, AsyncExitStack() as stack:
        values: dict[str, Any] = {
            **fakes.settings,
            "redis_url": redis.url,
            # Generous: these tests are not about deadlines, and a loaded machine must not
            # turn a slow call into a fallback the test did not ask for.
            "redis_deadline_seconds": 1.0,
            **(settings or {}),
        }
        gateways = [
            await stack.enter_async_context(
                open_gateway(Settings.model_validate(values), policy=policy)
            )
            for _ in range(2)
        ]
        yield Replicas(*gateways, fakes.servers["openai"], fakes.controls["openai"])


async def ask(gateway: Gateway, text: str = "hello there", **fields: Any) -> str | DelosError:
    """The answer's provider, or the error the client would see."""
    request = completion_input(messages=[("user", text)], model="gpt-4o", **fields)
    try:
        return (await gateway.completions.complete(request)).provider
    except DelosError as error:
        return error


async def ask_all(calls: list[tuple[Gateway, str]], **fields: Any) -> list[str | DelosError]:
    results: list[str | DelosError] = [""] * len(calls)

    async def one(index: int, gateway: Gateway, text: str) -> None:
        results[index] = await ask(gateway, text, **fields)

    async with anyio.create_task_group() as group:
        for index, (gateway, text) in enumerate(calls):
            group.start_soon(one, index, gateway, text)
    return results


async def test_an_rpm_limit_is_global_across_replicas(redis_server: RedisServer) -> None:
    async with two_replicas(redis_server, {"limits": {"openai": {"requests_per_minute": 10}}}) as r:
        calls = [(r.both[i % 2], f"question {i}") for i in range(30)]
        results = await ask_all(calls)
        upstream = r.upstream.stats.request_count
    answered = [result for result in results if result == "openai"]
    # Locally each replica would admit its own 10 (limit × replicas); shared, 10 in all.
    assert upstream == len(answered) == 10
    assert all(isinstance(result, DelosError) for result in results if result != "openai")


async def test_a_429_on_one_replica_pauses_the_provider_on_the_other(
    redis_server: RedisServer,
) -> None:
    async with two_replicas(redis_server) as r:  # no configured limit: only the pause
        r.control.fail_next(1, Fault.HTTP_ERROR, error_status=429, retry_after=30)
        assert isinstance(await ask(r.a), DelosError)
        await shared(r.a).store.wait_idle()  # the pause has been sent
        refused = await ask(r.b)
        upstream = r.upstream.stats.request_count
        paused_until = r.b.guards.limiters["openai"].paused_until
    assert isinstance(refused, DelosError)
    assert "rate limit" in refused.message
    assert upstream == 1  # the other replica never called the paused provider
    assert paused_until is not None


async def test_an_opening_on_one_replica_is_seen_by_the_other_within_a_second(
    redis_server: RedisServer,
) -> None:
    breaker = BreakerConfig(window_size=4, minimum_calls=2, wait_in_open=30.0)
    policy = ResiliencePolicy(breaker=breaker, attempts_per_provider=1, race_width=1)
    async with two_replicas(redis_server, policy=policy) as r:
        assert await ask(r.b) == "openai"  # b knows the breaker, and polls it
        seen = anyio.Event()

        def on_change(name: str, state: BreakerState) -> None:
            if name == "openai/gpt-4o" and state is BreakerState.OPEN:
                seen.set()

        shared(r.b).breakers.add_listener(on_change)
        r.control.behaviour = r.control.behaviour.with_fault(Fault.HTTP_ERROR, error_status=500)
        for _ in range(2):
            assert isinstance(await ask(r.a), DelosError)
        assert r.a.guards.breaker_state("openai", "gpt-4o") is BreakerState.OPEN
        opened = anyio.current_time()
        with anyio.fail_after(1.0):
            await seen.wait()
        seen_after = anyio.current_time() - opened
        calls_before = r.upstream.stats.request_count
        refused = await ask(r.b)
        calls_after = r.upstream.stats.request_count
        state_on_b = r.b.guards.breaker_state("openai", "gpt-4o")
    print(f"opening seen by the other replica after {seen_after * 1000:.0f} ms")
    assert isinstance(refused, DelosError)
    assert "circuit open" in refused.message
    assert calls_after == calls_before  # b skipped the provider without calling it
    assert state_on_b is BreakerState.OPEN


async def test_a_half_open_trial_is_made_by_one_replica(redis_server: RedisServer) -> None:
    # A short opening, so the test waits on Redis's expiry of it rather than on a clock.
    breaker = BreakerConfig(
        window_size=4, minimum_calls=2, wait_in_open=0.3, half_open_trial_calls=1
    )
    policy = ResiliencePolicy(breaker=breaker, attempts_per_provider=1, race_width=1)
    async with two_replicas(redis_server, policy=policy) as r:
        assert await ask(r.b) == "openai"
        half_open = anyio.Event()

        def on_change(name: str, state: BreakerState) -> None:
            if state is BreakerState.HALF_OPEN:
                half_open.set()

        shared(r.b).breakers.add_listener(on_change)
        r.control.behaviour = r.control.behaviour.with_fault(Fault.HTTP_ERROR, error_status=500)
        for _ in range(2):
            await ask(r.a)
        with anyio.fail_after(5):
            await half_open.wait()
        # Recovered, and slow enough that every request below arrives during the trial.
        r.control.behaviour = Behaviour(latency=Latency(base=0.3))
        before = r.upstream.stats.request_count
        results = await ask_all([(r.both[i % 2], "hello there") for i in range(8)])
        trial_calls = r.upstream.stats.request_count - before
        await shared(r.a).store.wait_idle()
        await shared(r.b).store.wait_idle()
        await shared(r.b).breakers.refresh()
        after_trial = await ask(r.b)
    assert trial_calls == 1
    assert results.count("openai") == 1
    assert after_trial == "openai"  # the trial's success closed the breaker everywhere


async def test_identical_requests_across_replicas_reach_the_provider_once(
    redis_server: RedisServer,
) -> None:
    async with two_replicas(redis_server) as r:
        r.control.behaviour = Behaviour(latency=Latency(base=0.2))
        results = await ask_all(
            [(r.both[i % 2], "the same question") for i in range(10)], use_cache=True
        )
        upstream = r.upstream.stats.request_count
        later = await ask(r.b, "the same question", use_cache=True)  # from b's level 1 or 2
        upstream_later = r.upstream.stats.request_count
    assert results == ["openai"] * 10
    assert upstream == 1
    assert later == "openai" and upstream_later == 1


async def test_redis_killed_mid_run_fails_no_request_then_sharing_resumes(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    rpm = 6000  # fail-static: 3000 per replica (two live), one request per 20 ms each
    caplog.set_level(logging.WARNING, logger="delos.runtime.gateway")
    async with two_replicas(
        redis_server, {"limits": {"openai": {"requests_per_minute": rpm}}}
    ) as r:
        assert await ask_all([(g, "warm up") for g in r.both]) == ["openai"] * 2
        # The first replica counted itself alone; its next heartbeat counts both.
        assert [await shared(g).replicas.heartbeat() for g in r.both] == [2, 2]

        redis_server.kill()
        per_replica = 20
        started = anyio.current_time()
        results = await ask_all([(r.both[i % 2], f"q{i}") for i in range(2 * per_replica)])
        elapsed = anyio.current_time() - started
        degraded = [shared(g).store.degraded for g in r.both]
        for gateway in r.both:
            shared(gateway).record_metrics(gateway.metrics)
        exposition = r.a.metrics.render().decode()

        back = [anyio.Event(), anyio.Event()]
        for event, gateway in zip(back, r.both, strict=True):
            shared(gateway).store.add_listener(
                lambda degraded, event=event: None if degraded else event.set()
            )
        redis_server.start()  # the same port, empty: no persistence
        with anyio.fail_after(10):  # the breaker around Redis retries after 0.5 s
            for event in back:
                await event.wait()
        assert await ask(r.a, "shared again") == "openai"
        rpm_key = shared(r.a).store.keys.limiter("openai")[0]
        pttl = int(redis_server.command("PTTL", rpm_key).strip().lstrip(b":"))

    assert results == ["openai"] * (2 * per_replica)  # no request failed
    assert degraded == [True, True]
    # Local limits applied: each replica's share starts empty and admits one request per
    # 60 / (rpm / 2) seconds, so its 20 requests took at least 19 intervals.
    assert elapsed >= (per_replica - 1) * 60 / (rpm / 2) * 0.9
    assert 'delos_shared_state_degraded{store="limits"} 1.0' in exposition
    assert 'reason="degraded"' in exposition
    assert pttl > 0  # the limiter's state is on Redis again
    messages = [r.getMessage() for r in caplog.records if r.name == "delos.runtime.gateway"]
    assert sum(" away:" in message for message in messages) == 2  # once per replica
    assert sum(" back:" in message for message in messages) == 2


async def test_a_streamed_answer_is_replayed_by_the_other_replica(
    redis_server: RedisServer,
) -> None:
    async with two_replicas(redis_server) as r:
        texts: dict[str, list[str]] = {"a": [], "b": []}

        def sink_for(name: str) -> Any:
            async def sink(piece: StreamPiece) -> None:
                if isinstance(piece, TextDelta):
                    texts[name].append(piece.text)

            return sink

        request = completion_input(messages=[("user", "stream it")], model="gpt-4o", use_cache=True)
        first = await r.a.completions.stream(request, sink_for("a"))
        replayed = await r.b.completions.stream(request, sink_for("b"))
        upstream = r.upstream.stats.request_count
    assert not first.cached and replayed.cached
    assert "".join(texts["b"]) == "".join(texts["a"]) == first.content
    assert upstream == 1


async def test_the_cache_can_live_on_a_redis_of_its_own(
    redis_server: RedisServer, cache_server: RedisServer
) -> None:
    settings = {
        "redis_cache_url": cache_server.url,
        "limits": {"openai": {"requests_per_minute": 100}},
    }
    async with two_replicas(redis_server, settings) as r:
        assert await ask(r.a, "kept apart", use_cache=True) == "openai"
        await shared(r.a).cache_store.wait_idle()  # the answer is stored
        assert await ask(r.b, "kept apart", use_cache=True) == "openai"
        upstream = r.upstream.stats.request_count
        for gateway in r.both:
            shared(gateway).record_metrics(gateway.metrics)
        exposition = r.b.metrics.render().decode()
    limits_keys = redis_server.command("KEYS", "*").decode()
    cache_keys = cache_server.command("KEYS", "*").decode()
    assert upstream == 1
    assert ":cache:" in cache_keys and ":limit:" not in cache_keys
    assert ":limit:" in limits_keys and ":cache:" not in limits_keys
    assert 'delos_shared_state_calls_total{store="cache"}' in exposition
    assert 'delos_shared_cache_events_total{event="hits"} 1.0' in exposition
    assert "delos_live_replicas 2.0" in exposition


async def test_replicas_start_and_serve_while_redis_is_down(redis_server: RedisServer) -> None:
    redis_server.kill()
    limits = {"limits": {"openai": {"requests_per_minute": 6000}}}
    async with two_replicas(redis_server, limits) as r:
        results = await ask_all([(g, "anyone there?") for g in r.both], use_cache=True)
        degraded = [shared(g).store.degraded for g in r.both]
    assert results == ["openai", "openai"]
    assert degraded == [True, True]


def test_without_redis_the_redis_client_is_never_imported() -> None:
    code = (
        "import sys, delos.runtime.gateway, delos.runtime.grpc.server\n"
        "assert 'coredis' not in sys.modules, 'coredis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
