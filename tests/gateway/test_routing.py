"""Routing end to end: latency convergence, races, fallbacks, cost of every attempt."""

from __future__ import annotations

import anyio
import pytest

from delos.runtime.routing import ResiliencePolicy
from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Behaviour, Fault, Latency
from tests.gateway.harness import Harness, open_harness

pytestmark = pytest.mark.anyio

LATENCY = pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED


def gpt4o(**fields: object) -> pb.CompleteRequest:
    fields.setdefault("messages", [pb.Message(role="user", content="hello there")])
    return pb.CompleteRequest(params=pb.CompletionParams(model="gpt-4o", **fields))  # type: ignore[arg-type]


def slow(seconds: float) -> Behaviour:
    return Behaviour(latency=Latency(base=seconds), time_to_first_token=Latency(base=seconds))


async def winners(h: Harness, count: int) -> list[str]:
    chosen = []
    for _ in range(count):
        response = await h.stub.Complete(gpt4o(routing=LATENCY))
        chosen.append(response.provider)
    return chosen


async def test_latency_routing_converges_on_the_faster_and_moves_away_when_it_slows() -> None:
    policy = ResiliencePolicy(race_width=1)
    async with open_harness(("openai", "openrouter"), policy=policy) as h:
        h.controls["openai"].behaviour = slow(0.002)
        h.controls["openrouter"].behaviour = slow(0.05)
        first = await winners(h, 12)
        # Each untried provider is explored once, then the faster one takes the traffic.
        assert sorted(first[:2]) == ["openai", "openrouter"]
        assert first[2:] == ["openai"] * 10
        h.controls["openai"].behaviour = slow(0.5)  # 10× slower than openrouter
        after = await winners(h, 6)
    moved_at = after.index("openrouter")
    assert moved_at <= 1  # the peak-sensitive estimate reacts to the first slow answer
    assert after[moved_at:] == ["openrouter"] * (len(after) - moved_at)


async def test_a_race_starts_both_and_the_first_answer_wins() -> None:
    async with open_harness(("openai", "openrouter")) as h:
        h.controls["openai"].behaviour = slow(0.0)
        h.controls["openrouter"].behaviour = slow(10.0)
        response = await h.stub.Complete(gpt4o(routing=LATENCY))
        with anyio.fail_after(5):
            await h.fakes["openrouter"].wait_until(lambda s: s.client_disconnects >= 1)
    assert response.provider == "openai"
    outcomes = {(a.provider, a.kind, a.outcome) for a in response.attempts}
    assert outcomes == {("openai", "race", "won"), ("openrouter", "race", "cancelled")}


async def test_a_streamed_race_closes_the_losers_upstream_and_bills_its_tokens() -> None:
    async with open_harness(("openai", "openrouter")) as h:
        h.controls["openai"].behaviour = Behaviour(time_to_first_token=Latency(base=0.0))
        h.controls["openrouter"].behaviour = Behaviour(time_to_first_token=Latency(base=10.0))
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(gpt4o(routing=LATENCY), end=True)
            chunks = [chunk async for chunk in stream]
        with anyio.fail_after(5):
            await h.fakes["openrouter"].wait_until(lambda s: s.client_disconnects >= 1)
        assert h.fakes["openrouter"].stats.completed_responses == 0
    final = chunks[-1]
    assert final.provider == "openai" and final.finish_reason == "stop"
    loser = next(a for a in final.attempts if a.provider == "openrouter")
    assert loser.outcome == "cancelled"
    # The loser never answered: its prompt is billed from an estimate, and counted in the total.
    assert loser.usage.estimated and loser.usage.prompt_tokens > 0 and loser.cost_usd > 0
    assert final.total_cost_usd == pytest.approx(final.cost_usd + loser.cost_usd)


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_failing_provider_falls_back_to_the_next_candidate(streamed: bool) -> None:
    async with open_harness(("openai", "openrouter")) as h:
        h.controls["openai"].fail_next(2, Fault.HTTP_ERROR, error_status=503)
        if streamed:
            async with h.stub.CompleteStream.open() as stream:
                await stream.send_message(gpt4o(), end=True)
                chunks = [chunk async for chunk in stream]
            summary = chunks[-1]
            assert "".join(c.delta for c in chunks[:-1]).split()
        else:
            summary = await h.stub.Complete(gpt4o())
            assert summary.content
    assert summary.provider == "openrouter"
    assert [(a.provider, a.kind, a.outcome) for a in summary.attempts] == [
        ("openai", "primary", "failed"),
        ("openai", "retry", "failed"),
        ("openrouter", "fallback", "won"),
    ]
    assert all("HTTP 503" in a.error for a in summary.attempts[:2])


async def test_a_caller_error_is_not_retried_elsewhere() -> None:
    async with open_harness(("openai", "openrouter")) as h:
        h.controls["openai"].fail_next(1, Fault.HTTP_ERROR, error_status=400)
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(gpt4o())
        assert h.fakes["openrouter"].stats.request_count == 0
    assert raised.value.status is Status.INVALID_ARGUMENT


async def test_quality_routing_prefers_the_configured_order() -> None:
    async with open_harness(("openai", "openrouter", "together")) as h:
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    messages=[pb.Message(role="user", content="hi")],
                    routing=pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED,
                )
            )
        )
    assert response.provider == "openai"  # anthropic is not configured; openai comes next


async def test_cost_routing_picks_the_cheapest_default_model() -> None:
    async with open_harness(("openai", "openrouter", "together")) as h:
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    messages=[pb.Message(role="user", content="hi")], max_tokens=50
                )
            )
        )
    # gpt-4o-mini ($0.00015/$0.0006) beats Llama 3.3 70B ($0.00088) and gpt-4o on OpenRouter.
    assert (response.provider, response.model) == ("openai", "gpt-4o-mini-2024-07-18")


async def test_a_model_family_is_served_by_any_provider_that_has_it() -> None:
    async with open_harness(("together", "openrouter")) as h:
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    messages=[pb.Message(role="user", content="hi")], model="llama-3.1-405b"
                )
            )
        )
    # OpenRouter's Llama 3.1 405B ($0.0008) is cheaper than Together's ($0.0035).
    assert response.provider == "openrouter"
    assert response.attempts[0].model == "meta-llama/llama-3.1-405b-instruct"
