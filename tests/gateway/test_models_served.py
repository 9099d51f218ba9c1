"""Every chat model of the shipped catalog answers through the gateway on its provider's fake:
the demo serves today's models, not only the defaults."""

from __future__ import annotations

import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.v1 import runtime_pb2 as pb
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load(None)
PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "vertex", "together", "openrouter")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_every_catalog_chat_model_answers(provider: str) -> None:
    models = [m.id for m in CATALOG.chat_models(provider)]
    assert models
    async with open_harness((provider,)) as harness:
        for model in models:
            params = pb.CompletionParams(
                messages=[pb.Message(role="user", content="hello")], provider=provider, model=model
            )
            answer = await harness.stub.Complete(pb.CompleteRequest(params=params))
            assert answer.content and answer.finish_reason == "stop", model
            assert answer.attempts[-1].model == model
