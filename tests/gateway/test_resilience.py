"""Resilience scenarios against the fakes: cut-off, recovery, budgets, hedging."""

from __future__ import annotations

import anyio
import pytest
from grpclib.exceptions import GRPCError

from delos.resilience import BreakerConfig, FakeClock
from delos.runtime.routing import ResiliencePolicy
from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Behaviour, Fault, Latency
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio

BREAKER = BreakerConfig(
    window_size=10,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    wait_in_open=30.0,
    half_open_trial_calls=2,
)


def gpt4o(**fields: object) -> pb.CompleteRequest:
    fields.setdefault("messages", [pb.Message(role="user", content="hello there")])
    return pb.CompleteRequest(params=pb.CompletionParams(model="gpt-4o", **fields))  # type: ignore[arg-type]


async def test_a_failing_provider_is_cut_off_then_recovers_through_half_open() -> None:
    clock = FakeClock(1000.0)
    policy = ResiliencePolicy(breaker=BREAKER)
    async with open_harness(("openai", "openrouter"), policy=policy, clock=clock) as h:
        failing = h.controls["openai"]
        failing.behaviour = failing.behaviour.with_fault(Fault.HTTP_ERROR, error_status=502)
        answered_by = [(await h.stub.Complete(gpt4o())).provider for _ in range(10)]
        upstream_calls_when_cut = h.fakes["openai"].stats.request_count
        for _ in range(5):
            assert (await h.stub.Complete(gpt4o())).provider == "openrouter"
        # Cut off: no further call reached the failing provider.
        assert h.fakes["openai"].stats.request_count == upstream_calls_when_cut
        health = await h.stub.Health(pb.HealthRequest())
        assert {p.name: p.breaker_state for p in health.providers}["openai"] == "open"

        failing.behaviour = Behaviour()  # the provider recovers
        clock.advance(BREAKER.wait_in_open + 1)
        recovered = [(await h.stub.Complete(gpt4o())).provider for _ in range(3)]
        listed = await h.stub.ListProviders(pb.ListProvidersRequest())
    # No client-visible error while the provider failed: every request was answered.
    assert answered_by == ["openrouter"] * 10
    # The configured evidence: 4 failed calls (2 requests × (primary + retry)) open it.
    assert upstream_calls_when_cut == 4
    # Half-open: trial calls go to the recovered provider and close the breaker.
    assert recovered == ["openai"] * 3
    assert {p.name: p.breaker_state for p in listed.providers}["openai"] == "closed"


async def test_under_total_failure_attempts_per_request_stay_within_the_retry_budget() -> None:
    clock = FakeClock(1000.0)
    # A breaker that never opens, so only the budget bounds the retries.
    never_opens = BreakerConfig(window_size=1000, minimum_calls=1000)
    policy = ResiliencePolicy(
        breaker=never_opens, attempts_per_provider=3, budget_ratio=0.1, budget_min_per_second=0.5
    )
    requests = 100
    async with open_harness(("openai",), policy=policy, clock=clock) as h:
        control = h.controls["openai"]
        control.behaviour = control.behaviour.with_fault(Fault.HTTP_ERROR, error_status=500)
        for _ in range(requests):
            with pytest.raises(GRPCError):
                await h.stub.Complete(gpt4o(provider="openai"))
        attempts = h.fakes["openai"].stats.request_count
    # Without a budget: 3 attempts per request (300). With it: the primary, plus at most
    # ratio × requests + floor (min_per_second × ttl of 10 s) retries.
    assert requests < attempts <= requests + 0.1 * requests + 0.5 * 10
    assert attempts / requests <= 1.15


async def test_a_hedge_starts_after_the_live_p95_and_the_first_token_wins() -> None:
    async with open_harness(("openai", "openrouter"), settings={"hedging": True}) as h:
        h.controls["openrouter"].behaviour = Behaviour(latency=Latency(base=0.01))
        # Quick answers give the primary (the faster at equal cost) a p95 time to first token.
        warm_up = [(await h.stub.Complete(gpt4o())).provider for _ in range(22)]
        assert warm_up[-20:] == ["openai"] * 20
        h.controls["openai"].queue([Behaviour(latency=Latency(base=30.0))])
        started = anyio.current_time()
        response = await h.stub.Complete(gpt4o())
        elapsed = anyio.current_time() - started
        with anyio.fail_after(5):
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
    assert response.provider == "openrouter"
    assert {(a.provider, a.kind, a.outcome) for a in response.attempts} == {
        ("openai", "primary", "cancelled"),
        ("openrouter", "hedge", "won"),
    }
    assert elapsed < 30.0  # the hedge answered long before the slow primary would have


async def test_hedging_can_be_turned_off_per_request() -> None:
    async with open_harness(("openai", "openrouter"), settings={"hedging": True}) as h:
        h.controls["openrouter"].behaviour = Behaviour(latency=Latency(base=0.01))
        for _ in range(22):
            await h.stub.Complete(gpt4o())
        h.controls["openai"].queue([Behaviour(latency=Latency(base=0.3))])
        response = await h.stub.Complete(gpt4o(metadata={"delos.hedge": "false"}))
    assert [a.kind for a in response.attempts] == ["primary"]
    assert response.provider == "openai"
