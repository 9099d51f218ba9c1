"""Every provider through the gateway: content, finish reason, usage and cost, unary and streamed.

Prices are written out by hand from the catalog (USD per 1K tokens), so a catalog or arithmetic
change that alters what a user is billed makes these tests fail.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.v1 import runtime_pb2 as pb
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio

# provider → (model, input per 1K, output per 1K)
CHAT = {
    "openai": ("gpt-4o", "0.0025", "0.01"),
    "anthropic": ("claude-3-5-haiku-20241022", "0.0008", "0.004"),
    "gemini": ("gemini-1.5-flash", "0.000075", "0.0003"),
    "bedrock": ("anthropic.claude-3-5-sonnet-20241022-v2:0", "0.003", "0.015"),
    "vertex": ("gemini-1.5-flash-002", "0.000075", "0.0003"),
    "vertex-claude": ("claude-3-5-haiku@20241022", "0.0008", "0.004"),
    "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "0.00088", "0.00088"),
    "openrouter": ("openai/gpt-4o", "0.0025", "0.01"),
    "ollama": ("llama3.2", "0", "0"),
}
# provider → (embedding model, input per 1K)
EMBEDDINGS = {
    "openai": ("text-embedding-3-small", "0.00002"),
    "gemini": ("text-embedding-004", "0"),
    "bedrock": ("amazon.titan-embed-text-v2:0", "0.00002"),
    "vertex": ("text-embedding-005", "0.0001"),
    "together": ("togethercomputer/m2-bert-80M-8k-retrieval", "0.000008"),
    "ollama": ("nomic-embed-text", "0"),
}
MESSAGES = [
    pb.Message(role="system", content="Answer briefly."),
    pb.Message(role="user", content="Name three colours of the rainbow"),
]


def expected_cost(usage: pb.Usage, prices: tuple[str, str]) -> float:
    cost = (
        usage.prompt_tokens * Decimal(prices[0]) + usage.completion_tokens * Decimal(prices[1])
    ) / 1000
    return float(cost)


def request(case: str, **fields: object) -> pb.CompleteRequest:
    provider = case.split("-")[0]
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            messages=MESSAGES, provider=provider, model=CHAT[case][0], **fields
        )
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(CHAT))
async def test_complete_through_each_provider(case: str) -> None:
    provider = case.split("-")[0]
    async with open_harness((provider,)) as h:
        response = await h.stub.Complete(request(case))
        capped = await h.stub.Complete(request(case, max_tokens=3))
    assert response.provider == provider and response.content.strip()
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens == 12
    assert not response.usage.estimated and not response.cost_estimated
    assert response.cost_usd == pytest.approx(
        expected_cost(response.usage, CHAT[case][1:]), rel=1e-9, abs=1e-15
    )
    assert capped.finish_reason == "length" and capped.usage.completion_tokens == 3


@pytest.mark.parametrize("case", list(CHAT))
async def test_stream_through_each_provider(case: str) -> None:
    provider = case.split("-")[0]
    async with open_harness((provider,)) as h:
        unary = await h.stub.Complete(request(case))
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(request(case), end=True)
            chunks = [chunk async for chunk in stream]
    *deltas, final = chunks
    assert "".join(c.delta for c in deltas) == unary.content
    assert final.finish_reason == "stop" and final.provider == provider
    assert final.usage == unary.usage and not final.cost_estimated
    assert final.cost_usd == pytest.approx(
        expected_cost(final.usage, CHAT[case][1:]), rel=1e-9, abs=1e-15
    )


@pytest.mark.parametrize("provider", list(EMBEDDINGS))
async def test_embed_through_each_provider(provider: str) -> None:
    model, price = EMBEDDINGS[provider]
    async with open_harness((provider,)) as h:
        response = await h.stub.Embed(
            pb.EmbedRequest(texts=["hello world", "goodbye cruel world"], provider=provider)
        )
    assert response.provider == provider and response.model.startswith(model.split(":")[0])
    assert len(response.embeddings) == 2
    assert all(len(e.values) > 0 for e in response.embeddings)
    assert response.embeddings[0].values != response.embeddings[1].values
    assert response.usage.prompt_tokens > 0
    assert response.cost_usd == pytest.approx(
        float(response.usage.prompt_tokens * Decimal(price) / 1000), rel=1e-9, abs=1e-15
    )


@pytest.mark.parametrize("provider", ["anthropic", "openrouter"])
async def test_embeddings_from_a_provider_without_them_name_those_that_have_them(
    provider: str,
) -> None:
    async with open_harness((provider,)) as h:
        with pytest.raises(GRPCError) as raised:
            await h.stub.Embed(pb.EmbedRequest(texts=["hi"], provider=provider))
    message = raised.value.message or ""
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert f"{provider} has no embeddings API" in message
    assert all(
        name in message for name in ("openai", "gemini", "bedrock", "vertex", "together", "ollama")
    )


async def test_ollama_models_are_discovered_and_routable() -> None:
    async with open_harness(("ollama",)) as h:
        listed = await h.stub.ListProviders(pb.ListProvidersRequest())
        ollama = next(p for p in listed.providers if p.name == "ollama")
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(messages=MESSAGES, model="llama3.2:latest")
            )
        )
    assert "llama3.2:latest" in ollama.models and ollama.available
    assert response.provider == "ollama" and response.cost_usd == 0


SCHEMA = (
    '{"type": "object", "properties": {"colour": {"type": "string"}, '
    '"count": {"type": "integer"}}, "required": ["colour", "count"]}'
)


@pytest.mark.parametrize("case", list(CHAT))
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_structured_output_through_each_provider(case: str, streamed: bool) -> None:
    import json

    from delos.testing import Fault

    provider = case.split("-")[0]
    async with open_harness((provider,)) as h:
        params = request(case, output_schema=SCHEMA).params
        if streamed:
            async with h.stub.CompleteStream.open() as stream:
                await stream.send_message(pb.CompleteRequest(params=params), end=True)
                chunks = [chunk async for chunk in stream]
            content = "".join(c.delta for c in chunks)
        else:
            content = (await h.stub.Complete(pb.CompleteRequest(params=params))).content
        h.controls[provider].fail_next(2, Fault.NONCONFORMING_JSON)
        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(pb.CompleteRequest(params=params))
    assert set(json.loads(content)) == {"colour", "count"}
    message = raised.value.message or ""
    assert raised.value.status is Status.UNAVAILABLE
    assert message.startswith(f"{provider}: answer does not conform to output_schema")
