"""The Python SDK: the product spec's example, routing names, typed errors."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from delos import RuntimeClient, RuntimeClientError
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio


async def test_the_spec_example_works() -> None:
    async with open_harness(("openai", "together")) as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            response = await client.complete(
                messages=[{"role": "user", "content": "Hello!"}],
                provider="openai",
                model="gpt-4o-mini",
            )
            assert response.content and response.provider == "openai"
            chunks = [
                c
                async for c in client.complete_stream(
                    messages=[{"role": "user", "content": "Tell me a story"}],
                    routing="cost_optimized",
                )
            ]
            assert "".join(c.delta for c in chunks).split()
            assert chunks[-1].finish_reason == "stop"
            assert chunks[-1].raw.usage.completion_tokens == 12
            embedded = await client.embed(["Hello world", "Goodbye world"], provider="openai")
            assert len(embedded.embeddings) == 2
            providers = await client.list_providers()
            assert {p.name for p in providers.providers if p.available} == {"openai", "together"}
            assert (await client.health()).status == 1


@pytest.mark.parametrize(
    "routing", ["cost_optimized", "COST", "ROUTING_STRATEGY_QUALITY_OPTIMIZED", "latency", 3]
)
async def test_routing_accepts_names_and_enum_numbers(routing: str | int) -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            response = await client.complete(
                messages=[{"role": "user", "content": "hi"}], routing=routing
            )
    assert response.provider == "openai"


async def test_an_unknown_routing_name_is_refused_before_sending() -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            with pytest.raises(ValueError, match="unknown routing"):
                await client.complete(
                    messages=[{"role": "user", "content": "hi"}], routing="fastest-please"
                )
        assert h.fakes["openai"].stats.request_count == 0


async def test_errors_are_typed_with_status_and_message() -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            with pytest.raises(RuntimeClientError) as raised:
                await client.complete(messages=[{"role": "user", "content": "hi"}], temperature=3.0)
            with pytest.raises(RuntimeClientError) as streamed:
                async for _ in client.complete_stream(messages=[], provider="openai"):
                    pass
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert "temperature" in raised.value.message
    assert streamed.value.status is Status.INVALID_ARGUMENT
