"""A real server on an ephemeral port answers all five RPCs through the fake OpenAI."""

from __future__ import annotations

import pytest
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from delos.runtime.v1 import runtime_pb2 as pb
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio


def user(text: str) -> pb.Message:
    return pb.Message(role="user", content=text)


async def test_complete_returns_content_usage_and_exact_cost() -> None:
    async with open_harness() as h:
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    messages=[
                        pb.Message(role="system", content="be brief"),
                        user("what is two plus two"),
                    ],
                    provider="openai",
                    model="gpt-4o-mini",
                    max_tokens=5,
                )
            )
        )
    assert response.provider == "openai"
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert len(response.content.split()) == 5
    assert response.finish_reason == "length"
    # The fake counts one token per word: 2 + 5 prompt words, 5 completion words.
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 5)
    assert response.usage.total_tokens == 12
    # gpt-4o-mini: $0.00015 in, $0.0006 out per 1K tokens.
    assert response.cost_usd == pytest.approx((7 * 0.00015 + 5 * 0.0006) / 1000, rel=1e-12)
    assert not response.cached and not response.cost_estimated
    assert [a.outcome for a in response.attempts] == ["won"]


async def test_stream_sends_deltas_then_a_final_chunk_with_usage_and_cost() -> None:
    async with open_harness() as h:
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(
                pb.CompleteRequest(
                    params=pb.CompletionParams(
                        messages=[user("tell me a story")], provider="openai", model="gpt-4o"
                    )
                ),
                end=True,
            )
            chunks = [chunk async for chunk in stream]
    *deltas, final = chunks
    assert len(deltas) == 12 and all(c.delta for c in deltas)
    assert [c.index for c in chunks] == list(range(13))
    assert final.delta == "" and final.finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (4, 12)
    assert final.provider == "openai" and final.model == "gpt-4o-2024-08-06"
    assert final.cost_usd == pytest.approx((4 * 0.0025 + 12 * 0.01) / 1000, rel=1e-12)


async def test_embed_returns_one_vector_per_text_in_order() -> None:
    async with open_harness() as h:
        response = await h.stub.Embed(pb.EmbedRequest(texts=["hello world", "goodbye"]))
    assert response.provider == "openai"
    assert response.model == "text-embedding-3-small"
    assert [e.index for e in response.embeddings] == [0, 1]
    assert len(response.embeddings[0].values) == 8
    assert response.embeddings[0].values != response.embeddings[1].values
    assert response.usage.prompt_tokens == 3
    assert response.cost_usd == pytest.approx(3 * 0.00002 / 1000, rel=1e-9)


async def test_list_providers_shows_every_provider_with_models_and_prices() -> None:
    async with open_harness() as h:
        response = await h.stub.ListProviders(pb.ListProvidersRequest())
    by_name = {p.name: p for p in response.providers}
    assert list(by_name) == [
        "openai",
        "anthropic",
        "gemini",
        "bedrock",
        "vertex",
        "together",
        "openrouter",
        "ollama",
    ]
    openai = by_name["openai"]
    assert openai.available and "gpt-4o" in openai.models
    assert openai.default_model == "gpt-4o-mini"
    assert any(p.model == "gpt-4o" and p.input_per_1k_usd > 0 for p in openai.prices)
    assert not by_name["anthropic"].available
    assert "DELOS_RUNTIME_ANTHROPIC_KEY" in by_name["anthropic"].detail


async def test_health_is_serving_with_a_status_per_provider() -> None:
    async with open_harness(("openai", "together")) as h:
        response = await h.stub.Health(pb.HealthRequest())
    assert response.status == pb.HealthResponse.STATUS_SERVING
    assert {p.name: p.available for p in response.providers} == {"openai": True, "together": True}


async def test_standard_grpc_health_answers_for_the_service_and_overall() -> None:
    async with open_harness() as h:
        health = HealthStub(h.channel)
        overall = await health.Check(HealthCheckRequest())
        service = await health.Check(HealthCheckRequest(service="delos.runtime.v1.RuntimeService"))
    assert overall.status == HealthCheckResponse.SERVING
    assert service.status == HealthCheckResponse.SERVING


async def test_reflection_lists_the_runtime_service() -> None:
    async with open_harness() as h:
        reflection = ServerReflectionStub(h.channel)
        async with reflection.ServerReflectionInfo.open() as stream:
            await stream.send_message(ServerReflectionRequest(list_services=""), end=True)
            answer = await stream.recv_message()
    assert answer is not None
    names = {s.name for s in answer.list_services_response.service}
    assert {"delos.runtime.v1.RuntimeService", "grpc.health.v1.Health"} <= names


async def test_without_providers_health_says_not_serving_and_complete_says_how_to_fix() -> None:
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    async with open_harness(providers=()) as h:
        health = await h.stub.Health(pb.HealthRequest())
        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(
                pb.CompleteRequest(params=pb.CompletionParams(messages=[user("hi")]))
            )
    assert health.status == pb.HealthResponse.STATUS_NOT_SERVING
    assert "no providers configured" in health.detail
    assert raised.value.status is Status.UNAVAILABLE
    assert "no providers configured" in (raised.value.message or "")
    assert "DELOS_RUNTIME_OPENAI_KEY" in (raised.value.message or "")
