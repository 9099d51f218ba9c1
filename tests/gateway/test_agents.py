"""A whole agent loop through the gateway, for every provider, unary and streamed: a tool is
declared, the fake calls it (once, or twice in parallel), the results go back in the provider's
own format and the final answer arrives; and a conversation that moves between providers."""

from __future__ import annotations

import json

import pytest

from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Fault
from tests.gateway.harness import Harness, open_harness

pytestmark = pytest.mark.anyio

PROVIDERS = (
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "vertex",
    "together",
    "openrouter",
    "ollama",
)
WEATHER = pb.Tool(
    name="get_weather",
    description="The weather in a city",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)


QUALITY = pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the gateway's edge is grpclib: asyncio only


def params(messages: list[pb.Message], provider: str, **fields: object) -> pb.CompletionParams:
    return pb.CompletionParams(
        messages=messages,
        provider=provider,
        tools=[WEATHER],
        **fields,  # type: ignore[arg-type]
    )


async def complete(harness: Harness, request: pb.CompletionParams) -> pb.CompleteResponse:
    return await harness.stub.Complete(pb.CompleteRequest(params=request))


async def stream(
    harness: Harness, request: pb.CompletionParams
) -> tuple[list[pb.StreamChunk], pb.StreamChunk]:
    chunks = list(await harness.stub.CompleteStream(pb.CompleteRequest(params=request)))
    return chunks[:-1], chunks[-1]


def results_for(calls: list[pb.ToolCall]) -> list[pb.Message]:
    return [
        pb.Message(
            role="tool",
            content=f"sunny in {json.loads(c.arguments_json)['city']}",
            tool_call_id=c.id,
        )
        for c in calls
    ]


def assembled(deltas: list[pb.StreamChunk]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each streamed call, from its deltas alone."""
    calls: dict[int, list[str]] = {}
    for chunk in deltas:
        if chunk.HasField("tool_call"):
            delta = chunk.tool_call
            entry = calls.setdefault(delta.index, ["", "", ""])
            entry[0] = entry[0] or delta.id
            entry[1] = entry[1] or delta.name
            entry[2] += delta.arguments_delta
    return [tuple(calls[i]) for i in sorted(calls)]  # type: ignore[misc]


#: Each provider on its default model, and Vertex's Claude models besides its Gemini ones.
TARGETS = [(provider, "") for provider in PROVIDERS] + [("vertex", "claude-sonnet-4-5@20250929")]


@pytest.mark.parametrize(("provider", "model"), TARGETS)
@pytest.mark.parametrize("question", ["Weather in Paris?", "Weather in Paris, parallel please"])
async def test_a_unary_agent_loop(provider: str, model: str, question: str) -> None:
    async with open_harness((provider,)) as harness:
        user = pb.Message(role="user", content=question)
        first = await complete(harness, params([user], provider, model=model))
        expected = 2 if "parallel" in question.split(", ")[-1].split() else 1
        assert first.finish_reason == "tool_calls", first
        assert len(first.tool_calls) == expected
        assert all(c.name == "get_weather" and c.id for c in first.tool_calls)
        assert all(json.loads(c.arguments_json) == {"city": question} for c in first.tool_calls)
        assert len({c.id for c in first.tool_calls}) == expected

        turn = pb.Message(
            role="assistant",
            tool_calls=first.tool_calls,
            parts=[pb.ContentPart(thinking=t) for t in first.thinking],
        )
        final = await complete(
            harness, params([user, turn, *results_for(list(first.tool_calls))], provider)
        )
        assert final.finish_reason == "stop"
        assert final.content.startswith("Tool said: sunny in ")
        assert not final.tool_calls


@pytest.mark.parametrize(("provider", "model"), TARGETS)
async def test_a_streamed_agent_loop_with_parallel_calls(provider: str, model: str) -> None:
    async with open_harness((provider,)) as harness:
        user = pb.Message(role="user", content="Weather in Paris, parallel please")
        deltas, final_chunk = await stream(harness, params([user], provider, model=model))
        assert final_chunk.finish_reason == "tool_calls"
        calls = list(final_chunk.tool_calls)
        assert len(calls) == 2
        assert assembled(deltas) == [(c.id, c.name, c.arguments_json) for c in calls]

        turn = pb.Message(role="assistant", tool_calls=calls)
        history = [user, turn, *results_for(calls)]
        deltas, end = await stream(harness, params(history, provider, model=model))
        text = "".join(c.delta for c in deltas)
        assert end.finish_reason == "stop"
        assert text.startswith("Tool said: sunny in ")


async def test_a_conversation_falls_back_to_another_provider_between_turns() -> None:
    async with open_harness(("anthropic", "openai")) as harness:
        user = pb.Message(role="user", content="Weather in Paris?")
        first = await complete(
            harness,
            params(
                [user], "", model="claude-3-5-sonnet", routing=pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED
            ),
        )
        assert first.provider == "anthropic" and first.tool_calls
        turn = pb.Message(role="assistant", tool_calls=first.tool_calls)
        harness.controls["anthropic"].fail_next(5, Fault.HTTP_ERROR, error_status=529)
        # Anthropic overloaded: the same conversation, in OpenAI's format, on OpenAI.
        final = await complete(
            harness,
            params(
                [user, turn, *results_for(list(first.tool_calls))],
                "",
                routing=QUALITY,
            ),
        )
        assert final.provider == "openai"
        assert final.content.startswith("Tool said: sunny in ")
        sent = harness.fakes["openai"].stats.requests[-1].json()
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == first.tool_calls[0].id


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_cache_reads_and_writes_are_counted_and_priced_exactly(streamed: bool) -> None:

    from delos.runtime.catalog import Catalog, usage_cost_usd
    from delos.runtime.values import Usage

    model_id = "claude-sonnet-4-5-20250929"
    model = Catalog.load(None).model("anthropic", model_id)
    assert model is not None and model.cached_input_per_1k and model.cache_write_per_1k
    rules = pb.Message(role="system", content="Rules. " * 600, cache_breakpoint=True)
    async with open_harness(("anthropic",)) as harness:
        answers = []
        for _ in range(2):
            request = pb.CompletionParams(
                messages=[rules, pb.Message(role="user", content="hello")],
                provider="anthropic",
                model=model_id,
            )
            if streamed:
                _, answer = await stream(harness, request)
            else:
                answer = await complete(harness, request)
            answers.append(answer)
    write, read = answers[0].usage, answers[1].usage
    assert write.cache_write_tokens > 0 and write.cache_read_tokens == 0
    assert read.cache_read_tokens == write.cache_write_tokens and read.cache_write_tokens == 0
    for answer in answers:
        usage = answer.usage
        expected = usage_cost_usd(
            model,
            Usage(
                usage.prompt_tokens,
                usage.completion_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            ),
        )
        assert answer.cost_usd == pytest.approx(float(expected), rel=1e-9)
        assert usage.prompt_tokens >= usage.cache_read_tokens + usage.cache_write_tokens
        assert not answer.cost_estimated
    # A cache read costs less than the write of the same prompt.
    assert answers[1].cost_usd < answers[0].cost_usd
