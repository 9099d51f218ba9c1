"""The router in process, on scripted providers and trio's virtual clock.

Every duration asserted here is virtual time: a 30 s first-token timeout or a 60 s limiter wait
runs instantly, and is measured exactly. Only trio has a virtual clock, so these tests run on
trio alone; the router's code is the same backend-neutral anyio code on asyncio.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from delos.resilience import BreakerConfig, BreakerState
from delos.runtime.catalog import cost_usd, estimate_prompt_tokens
from delos.runtime.errors import (
    AllCandidatesFailed,
    CircuitOpen,
    ConnectionsBusy,
    ErrorKind,
    LocalRateLimited,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    kind_of,
)
from delos.runtime.inputs import CompletionInput, Routing, completion_input
from delos.runtime.routing import (
    AttemptKind,
    AttemptOutcome,
    ResiliencePolicy,
    RoutedAnswer,
    Router,
    StreamPiece,
)
from delos.runtime.values import TextDelta
from tests.runtime.scripted import Reply, ScriptedProvider, gateway_on, mock_clock_backend

pytestmark = pytest.mark.anyio

PRIMARY, RACE, HEDGE = AttemptKind.PRIMARY, AttemptKind.RACE, AttemptKind.HEDGE
RETRY, FALLBACK = AttemptKind.RETRY, AttemptKind.FALLBACK
WON, FAILED, CANCELLED = AttemptOutcome.WON, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED

PROMPT = "hello there"
#: No retry on the same provider: what follows a failure is the next candidate.
NO_RETRY = ResiliencePolicy(attempts_per_provider=1)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return mock_clock_backend()


def gpt4o(**fields: Any) -> CompletionInput:
    """gpt-4o, served at the same price by openai and openrouter (openai first on a tie)."""
    return completion_input(messages=[("user", PROMPT)], model="gpt-4o", **fields)


def unavailable(provider: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(provider, "503 Service Unavailable", http_status=503)


async def warm_up(router: Router, openai: ScriptedProvider) -> None:
    """Give openai the 20 samples of time to first token a hedge delay needs, and no more: the
    request that completes them is the first that could be hedged."""
    for _ in range(21):  # the second goes to openrouter, unexplored until then
        await router.complete(gpt4o())
    assert openai.calls == 20


def trail(answer: RoutedAnswer) -> list[tuple[str, AttemptKind, AttemptOutcome]]:
    return [(a.provider, a.kind, a.outcome) for a in answer.attempts]


async def test_a_latency_race_keeps_the_first_answer_and_bills_the_cancelled_loser() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=1.0, usage=None))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=3.0))
    router = gateway_on(openai, openrouter).router

    answer = await router.complete(gpt4o(routing=Routing.LATENCY))

    assert (answer.provider, answer.latency_s) == ("openai", 1.0)
    assert sorted(trail(answer)) == [("openai", RACE, WON), ("openrouter", RACE, CANCELLED)]
    assert (openai.cancelled, openrouter.cancelled) == (0, 1)
    # The loser produced nothing; it is billed its prompt, estimated.
    prompt_tokens = estimate_prompt_tokens([PROMPT])
    model = router.catalog.model("openrouter", "openai/gpt-4o")
    assert model is not None
    [loser] = [a for a in answer.attempts if a.outcome is CANCELLED]
    assert loser.cost_usd == cost_usd(model, prompt_tokens, 0) > 0
    assert answer.total_cost_usd == answer.cost_usd + loser.cost_usd
    assert anyio.current_time() == 1.0  # nothing kept running after the answer


async def test_a_streamed_race_is_won_by_the_first_token_and_the_loser_is_closed() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=2.0))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=1.0, chunks=("Hel", "lo")))
    router = gateway_on(openai, openrouter).router
    received: list[str] = []

    async def sink(piece: StreamPiece) -> None:
        assert isinstance(piece, TextDelta)
        received.append(piece.text)

    answer = await router.stream(gpt4o(routing=Routing.LATENCY), sink)

    assert sorted(trail(answer)) == [("openai", RACE, CANCELLED), ("openrouter", RACE, WON)]
    assert received == ["Hel", "lo"]
    assert answer.time_to_first_token_s == answer.latency_s == 1.0
    assert (openai.cancelled, openai.open_streams, openrouter.open_streams) == (1, 0, 0)


async def test_a_hedge_starts_after_the_live_p95_and_wins() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=0.25))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=0.5))
    router = gateway_on(openai, openrouter, policy=ResiliencePolicy(hedging=True)).router
    await warm_up(router, openai)
    openai.script.append(Reply(delay=30.0))

    started = anyio.current_time()
    answer = await router.complete(gpt4o())

    assert trail(answer) == [("openai", PRIMARY, CANCELLED), ("openrouter", HEDGE, WON)]
    assert anyio.current_time() - started == answer.latency_s == 0.25 + 0.5
    assert openai.cancelled == 1


async def test_no_hedge_when_the_budget_has_no_token_for_it() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=0.25))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=0.5))
    policy = ResiliencePolicy(hedging=True, budget_ratio=0.0, budget_min_per_second=0.0)
    router = gateway_on(openai, openrouter, policy=policy).router
    await warm_up(router, openai)
    openai.script.append(Reply(delay=30.0))
    calls_before = openrouter.calls

    answer = await router.complete(gpt4o())

    assert trail(answer) == [("openai", PRIMARY, WON)]
    assert answer.latency_s == 30.0
    assert openrouter.calls == calls_before
    assert router.guards.budget.rejections == 1


async def test_a_5xx_falls_back_to_the_next_candidate() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=1.0, error=unavailable("openai")))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=2.0))
    router = gateway_on(openai, openrouter, policy=NO_RETRY).router

    answer = await router.complete(gpt4o())

    assert trail(answer) == [("openai", PRIMARY, FAILED), ("openrouter", FALLBACK, WON)]
    assert answer.attempts[0].error == "openai: 503 Service Unavailable"
    assert (answer.provider, answer.latency_s) == ("openrouter", 3.0)


async def test_a_transient_failure_is_retried_on_the_same_provider_within_the_budget() -> None:
    openai = ScriptedProvider(
        "openai", Reply(delay=1.0, error=unavailable("openai")), then=Reply(delay=1.0)
    )
    openrouter = ScriptedProvider("openrouter")
    router = gateway_on(openai, openrouter).router
    policy = router.guards.policy

    answer = await router.complete(gpt4o())

    assert trail(answer) == [("openai", PRIMARY, FAILED), ("openai", RETRY, WON)]
    assert openrouter.calls == 0
    assert router.guards.budget.withdrawals == 1
    # Two calls of 1 s each, and a full-jitter backoff in between.
    assert 2.0 <= answer.latency_s <= 2.0 + policy.retry_initial_backoff


async def test_a_stream_is_timed_from_its_first_token_to_its_end() -> None:
    openai = ScriptedProvider("openai", then=Reply(chunks=("Hel", "lo"), chunk_delay=1.5))
    router = gateway_on(openai).router
    received: list[str] = []

    async def sink(piece: StreamPiece) -> None:
        assert isinstance(piece, TextDelta)
        received.append(piece.text)

    answer = await router.stream(gpt4o(), sink)

    assert (answer.time_to_first_token_s, answer.latency_s) == (0.0, 1.5)
    assert (answer.content, received) == ("Hello", ["Hel", "lo"])
    assert trail(answer) == [("openai", PRIMARY, WON)]


async def test_a_stream_that_fails_after_its_first_token_is_not_retried_nor_replaced() -> None:
    cut = UpstreamProtocolError("openai", "stream ended without a finish")
    openai = ScriptedProvider("openai", Reply(chunks=("Hel",), error_after_chunks=cut))
    openrouter = ScriptedProvider("openrouter")
    router = gateway_on(openai, openrouter).router
    received: list[str] = []

    async def sink(piece: StreamPiece) -> None:
        assert isinstance(piece, TextDelta)
        received.append(piece.text)

    with pytest.raises(AllCandidatesFailed) as failed:
        await router.stream(gpt4o(), sink)

    assert received == ["Hel"]
    assert failed.value.errors == (cut,)
    assert (openai.calls, openrouter.calls) == (1, 0)
    assert openai.open_streams == 0


async def test_a_silent_stream_times_out_at_first_token_and_the_next_candidate_answers() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=60.0))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=1.0, chunks=("Hel", "lo")))
    router = gateway_on(openai, openrouter).router
    first_token_timeout = router.guards.policy.first_token_timeout
    received: list[str] = []

    async def sink(piece: StreamPiece) -> None:
        assert isinstance(piece, TextDelta)
        received.append(piece.text)

    answer = await router.stream(gpt4o(), sink)

    assert trail(answer) == [("openai", PRIMARY, FAILED), ("openrouter", FALLBACK, WON)]
    assert answer.attempts[0].error == "openai: no first token within 30.0 s"
    assert answer.time_to_first_token_s == answer.latency_s == first_token_timeout + 1.0
    assert received == ["Hel", "lo"]
    # A timeout is not retried on the same provider; its stream was cancelled and closed.
    assert (openai.calls, openai.cancelled, openai.open_streams) == (1, 1, 0)


async def test_with_a_deadline_a_silent_provider_leaves_half_the_time_to_the_fallback() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=60.0))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=1.0))
    router = gateway_on(openai, openrouter).router

    with anyio.fail_after(10.0):
        answer = await router.complete(gpt4o())

    assert trail(answer) == [("openai", PRIMARY, FAILED), ("openrouter", FALLBACK, WON)]
    assert answer.attempts[0].error == "openai: no answer within 5.0 s"
    assert answer.latency_s == 6.0


async def test_the_callers_deadline_cancels_the_attempt_and_leaves_the_guards_clean() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=60.0))
    router = gateway_on(openai).router
    guards = router.guards

    with anyio.move_on_after(10.0) as scope:
        await router.complete(gpt4o(provider="openai"))

    assert scope.cancelled_caught
    assert anyio.current_time() == 10.0
    assert openai.cancelled == 1
    # A cancellation is no evidence against the provider, and leaves nothing in flight.
    breaker = guards.breakers.get_breaker("openai/gpt-4o").snapshot()
    assert (breaker.state, breaker.calls_in_window) == (BreakerState.CLOSED, 0)
    assert guards.latency.snapshot(("openai", "gpt-4o")).in_flight == 0


async def test_a_breaker_opens_skips_then_half_opens_on_the_clock_and_closes() -> None:
    breaker = BreakerConfig(
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=0.5,
        wait_in_open=30.0,
        half_open_trial_calls=1,
    )
    openai = ScriptedProvider("openai", then=Reply(error=unavailable("openai")))
    openrouter = ScriptedProvider("openrouter")
    policy = ResiliencePolicy(breaker=breaker, attempts_per_provider=1)
    router = gateway_on(openai, openrouter, policy=policy).router

    def state() -> BreakerState:
        return router.guards.breaker_state("openai", "gpt-4o")

    for _ in range(4):
        with pytest.raises(AllCandidatesFailed):
            await router.complete(gpt4o(provider="openai"))
    assert (state(), openai.calls) == (BreakerState.OPEN, 4)

    # Open: the provider is skipped when another can serve, refused when it is the only one.
    skipped = await router.complete(gpt4o())
    assert trail(skipped) == [("openrouter", PRIMARY, WON)]
    with pytest.raises(AllCandidatesFailed) as refused:
        await router.complete(gpt4o(provider="openai"))
    assert [type(e) for e in refused.value.errors] == [CircuitOpen]
    assert openai.calls == 4

    await anyio.sleep(breaker.wait_in_open - 1.0)
    assert state() is BreakerState.OPEN
    await anyio.sleep(1.0)
    assert state() is BreakerState.HALF_OPEN

    openai.then = Reply()  # recovered: the trial call succeeds and closes the breaker
    trial = await router.complete(gpt4o(provider="openai"))
    assert trail(trial) == [("openai", PRIMARY, WON)]
    assert state() is BreakerState.CLOSED


async def test_the_limiter_holds_a_request_until_its_slot() -> None:
    openai = ScriptedProvider("openai")
    policy = ResiliencePolicy(limiter_max_wait=120.0)
    limits = {"limits": {"openai": {"requests_per_minute": 1}}}
    router = gateway_on(openai, policy=policy, settings=limits).router

    first = await router.complete(gpt4o())
    second = await router.complete(gpt4o())

    assert (first.latency_s, second.latency_s) == (0.0, 60.0)
    assert trail(second) == [("openai", PRIMARY, WON)]


async def test_a_limiter_wait_longer_than_allowed_sends_the_request_elsewhere() -> None:
    openai = ScriptedProvider("openai")
    openrouter = ScriptedProvider("openrouter")
    limits = {"limits": {"openai": {"requests_per_minute": 1}}}
    router = gateway_on(openai, openrouter, policy=NO_RETRY, settings=limits).router
    await router.complete(gpt4o(provider="openai"))

    moved = await router.complete(gpt4o())
    with pytest.raises(AllCandidatesFailed) as refused:
        await router.complete(gpt4o(provider="openai"))

    assert trail(moved) == [("openai", PRIMARY, FAILED), ("openrouter", FALLBACK, WON)]
    assert moved.latency_s == 0.0
    [error] = refused.value.errors
    assert isinstance(error, LocalRateLimited)
    assert error.retry_after == 60.0
    assert openai.calls == 1
    assert anyio.current_time() == 0.0


async def test_a_timed_out_unary_attempt_is_an_upstream_timeout_counted_by_the_breaker() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=500.0))
    router = gateway_on(openai).router
    unary_timeout = router.guards.policy.unary_timeout

    with pytest.raises(AllCandidatesFailed) as failed:
        await router.complete(gpt4o())

    [error] = failed.value.errors
    assert isinstance(error, UpstreamTimeout)
    assert anyio.current_time() == unary_timeout
    snapshot = router.guards.breakers.get_breaker("openai/gpt-4o").snapshot()
    assert (snapshot.calls_in_window, snapshot.failure_rate) == (1, 1.0)
    assert router.guards.latency.snapshot(("openai", "gpt-4o")).in_flight == 0


def double_speed() -> dict[str, Any]:
    """A gateway clock running twice as fast as the event loop's, and a sleep that agrees."""

    def clock() -> float:
        return 2.0 * anyio.current_time()

    async def sleep(seconds: float) -> None:
        await anyio.sleep(seconds / 2.0)

    return {"clock": clock, "sleep": sleep}


async def test_the_gateways_clock_times_answers_and_paces_the_limiter() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=1.0))
    limits = {"limits": {"openai": {"requests_per_minute": 1}}}
    policy = ResiliencePolicy(limiter_max_wait=120.0)
    router = gateway_on(openai, policy=policy, settings=limits, **double_speed()).router

    first = await router.complete(gpt4o())
    second = await router.complete(gpt4o())  # its slot comes 60 s of the gateway's clock later

    assert (first.latency_s, second.latency_s) == (2.0, 60.0)
    assert anyio.current_time() == 31.0


async def test_the_gateways_clock_ages_the_cache() -> None:
    gateway = gateway_on(ScriptedProvider("openai"), **double_speed())
    request = gpt4o(use_cache=True, cache_ttl_seconds=10)

    await gateway.completions.complete(request)
    await anyio.sleep(4.0)
    assert (await gateway.completions.complete(request)).cached
    await anyio.sleep(1.0)  # 10 s on the gateway's clock: the entry expired
    assert not (await gateway.completions.complete(request)).cached


async def test_the_gateways_clock_times_the_breakers_cool_down() -> None:
    breaker = BreakerConfig(window_size=1, minimum_calls=1, wait_in_open=30.0)
    openai = ScriptedProvider("openai", then=Reply(error=unavailable("openai")))
    policy = ResiliencePolicy(breaker=breaker, attempts_per_provider=1)
    router = gateway_on(openai, policy=policy, **double_speed()).router
    guards = router.guards

    with pytest.raises(AllCandidatesFailed):
        await router.complete(gpt4o())
    assert guards.breaker_state("openai", "gpt-4o") is BreakerState.OPEN
    await anyio.sleep(14.5)
    assert guards.breaker_state("openai", "gpt-4o") is BreakerState.OPEN
    await anyio.sleep(0.5)
    assert guards.breaker_state("openai", "gpt-4o") is BreakerState.HALF_OPEN


# -- connections: the gateway's own queue ---------------------------------------------------


async def test_a_full_connection_pool_sends_the_request_to_the_next_candidate_at_once() -> None:
    openai = ScriptedProvider("openai", Reply(delay=100.0), then=Reply(delay=1.0))
    openrouter = ScriptedProvider("openrouter", then=Reply(delay=1.0))
    gateway = gateway_on(
        openai,
        openrouter,
        policy=NO_RETRY,
        settings={"max_connections": {"openai": 1}, "connection_wait_seconds": 0.5},
    )
    router = gateway.router
    async with anyio.create_task_group() as holders:
        # Quality order puts openai first, whatever it has in flight.
        holders.start_soon(router.complete, gpt4o(routing=Routing.QUALITY))
        await anyio.wait_all_tasks_blocked()  # the first request holds openai's only connection
        started = anyio.current_time()

        answer = await router.complete(gpt4o(routing=Routing.QUALITY))

        assert answer.provider == "openrouter"
        assert anyio.current_time() - started == pytest.approx(0.5 + 1.0)
        [busy, won] = answer.attempts
        assert (busy.provider, busy.outcome) == ("openai", FAILED)
        assert "all 1 connections busy for 0.5 s (DELOS_RUNTIME_OPENAI_MAX_CONNECTIONS)" in (
            busy.error
        )
        assert (won.provider, won.outcome) == ("openrouter", WON)
        holders.cancel_scope.cancel()
    # Waiting for our own pool is never evidence against the provider.
    assert gateway.guards.breaker_state("openai", "gpt-4o") is BreakerState.CLOSED
    assert gateway.guards.latency.snapshots()[("openai", "gpt-4o")].error_rate == 0.0
    assert gateway.guards.connections["openai"].in_use == 0


async def test_alone_a_full_pool_is_resource_exhausted_never_a_silent_wait() -> None:
    openai = ScriptedProvider("openai", Reply(delay=100.0), then=Reply(delay=1.0))
    gateway = gateway_on(
        openai,
        policy=NO_RETRY,
        settings={"max_connections": {"openai": 1}, "connection_wait_seconds": 2.0},
    )
    async with anyio.create_task_group() as holders:
        holders.start_soon(gateway.router.complete, gpt4o())
        await anyio.wait_all_tasks_blocked()
        started = anyio.current_time()
        with pytest.raises(AllCandidatesFailed) as raised:
            await gateway.router.complete(gpt4o())
        assert anyio.current_time() - started == pytest.approx(2.0)
        assert kind_of(raised.value) is ErrorKind.RATE_LIMITED
        assert isinstance(raised.value.errors[0], ConnectionsBusy)
        holders.cancel_scope.cancel()
    assert gateway.guards.breaker_state("openai", "gpt-4o") is BreakerState.CLOSED


async def test_a_connection_freed_within_the_wait_is_taken_and_the_wait_is_not_latency() -> None:
    openai = ScriptedProvider("openai", Reply(delay=3.0), then=Reply(delay=1.0))
    gateway = gateway_on(
        openai,
        policy=NO_RETRY,
        settings={"max_connections": {"openai": 1}, "connection_wait_seconds": 5.0},
    )
    async with anyio.create_task_group() as holders:
        holders.start_soon(gateway.router.complete, gpt4o())
        await anyio.wait_all_tasks_blocked()
        answer = await gateway.router.complete(gpt4o())
    assert answer.provider == "openai"
    [attempt] = answer.attempts
    # 3 s waiting for the connection, then the provider's own 1 s: only that is its latency.
    assert (attempt.outcome, attempt.latency_s) == (WON, 1.0)
    assert answer.latency_s == pytest.approx(4.0)
