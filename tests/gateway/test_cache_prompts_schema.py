"""Response cache, prompt references and structured output, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Behaviour, Fault, Latency
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio


def cached_request(
    text: str = "what is the capital of france", **fields: object
) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            messages=[pb.Message(role="user", content=text)], use_cache=True, **fields
        )
    )  # type: ignore[arg-type]


async def test_a_repeated_request_is_a_cache_hit_that_costs_nothing() -> None:
    async with open_harness() as h:
        first = await h.stub.Complete(cached_request(metadata={"team": "a"}))
        second = await h.stub.Complete(cached_request(metadata={"team": "b"}))
        different = await h.stub.Complete(cached_request(temperature=0.5))
        assert h.fakes["openai"].stats.request_count == 2
    assert not first.cached and first.cost_usd > 0
    assert second.cached and second.cost_usd == 0 and second.total_cost_usd == 0
    assert second.cost_saved_usd == pytest.approx(first.cost_usd)
    assert second.content == first.content and second.usage == first.usage
    assert not different.cached  # temperature shapes the answer; metadata does not


async def test_a_streamed_hit_is_replayed_as_chunks_with_usage() -> None:
    async with open_harness() as h:
        unary = await h.stub.Complete(cached_request())
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(cached_request(), end=True)
            chunks = [chunk async for chunk in stream]
        assert h.fakes["openai"].stats.request_count == 1
    final = chunks[-1]
    assert "".join(c.delta for c in chunks[:-1]) == unary.content
    assert final.cached and final.cost_usd == 0 and final.usage == unary.usage


async def test_a_streamed_miss_fills_the_cache_only_when_it_completed_well() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.TRUNCATED)
        with pytest.raises(GRPCError):
            async with h.stub.CompleteStream.open() as stream:
                await stream.send_message(cached_request(provider="openai"), end=True)
                [chunk async for chunk in stream]
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(cached_request(provider="openai"), end=True)
            streamed = [chunk async for chunk in stream]
        unary = await h.stub.Complete(cached_request(provider="openai"))
    assert not streamed[-1].cached
    assert unary.cached and unary.content == "".join(c.delta for c in streamed[:-1])


async def test_fifty_identical_requests_in_flight_reach_the_provider_once() -> None:
    async with open_harness() as h:
        h.controls["openai"].behaviour = Behaviour(latency=Latency(base=0.2))
        answers: list[pb.CompleteResponse] = []

        async def ask() -> None:
            answers.append(await h.stub.Complete(cached_request()))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(ask)
        assert h.fakes["openai"].stats.request_count == 1
    assert len(answers) == 50 and len({a.content for a in answers}) == 1
    assert sum(not a.cached for a in answers) == 1


async def test_a_failed_leader_does_not_poison_its_followers() -> None:
    async with open_harness() as h:
        h.controls["openai"].queue(
            [
                Behaviour(latency=Latency(base=0.2), fault=Fault.HTTP_ERROR, error_status=400),
            ]
        )
        results: list[pb.CompleteResponse | GRPCError] = []

        async def ask() -> None:
            try:
                results.append(await h.stub.Complete(cached_request(provider="openai")))
            except GRPCError as error:
                results.append(error)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(ask)
    failures = [r for r in results if isinstance(r, GRPCError)]
    assert len(failures) == 1 and failures[0].status is Status.INVALID_ARGUMENT
    assert all(isinstance(r, pb.CompleteResponse) for r in results if r not in failures)


def write_prompt(directory: Path, name: str, version: str, body: dict[str, object]) -> None:
    (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / name / f"{version}.json").write_text(json.dumps(body))


async def test_a_prompt_reference_is_rendered_and_the_request_messages_follow(
    tmp_path: Path,
) -> None:
    write_prompt(
        tmp_path,
        "summarizer",
        "v1",
        {
            "messages": [
                {"role": "system", "content": "Summarise in {{ words }} words."},
                {"role": "user", "content": "Text: {{text}}"},
            ]
        },
    )
    write_prompt(
        tmp_path,
        "summarizer",
        "v2.1",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Summarise {{text}}"}]},
    )
    async with open_harness(settings={"prompts_dir": str(tmp_path)}) as h:
        latest = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(prompt_ref="summarizer", variables={"text": "a b c"})
            )
        )
        pinned = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    prompt_ref="summarizer:v1",
                    variables={"text": "x", "words": "ten"},
                    messages=[pb.Message(role="user", content="and be kind")],
                )
            )
        )
        sent = [r.json() for r in h.fakes["openai"].stats.requests]
        with pytest.raises(GRPCError) as missing:
            await h.stub.Complete(
                pb.CompleteRequest(
                    params=pb.CompletionParams(prompt_ref="summarizer:v1", variables={"text": "x"})
                )
            )
        with pytest.raises(GRPCError) as unknown:
            await h.stub.Complete(
                pb.CompleteRequest(params=pb.CompletionParams(prompt_ref="summarizer:v9"))
            )
    assert latest.model == "gpt-4o-2024-08-06"  # the prompt's default model
    assert sent[0]["messages"] == [{"role": "user", "content": "Summarise a b c"}]
    assert pinned.content
    assert sent[1]["messages"] == [
        {"role": "system", "content": "Summarise in ten words."},
        {"role": "user", "content": "Text: x"},
        {"role": "user", "content": "and be kind"},
    ]
    assert missing.value.status is Status.INVALID_ARGUMENT
    assert "words" in (missing.value.message or "")
    assert unknown.value.status is Status.NOT_FOUND
    assert "v1" in (unknown.value.message or "") and "v2.1" in (unknown.value.message or "")


SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
)


async def test_structured_output_is_requested_natively_and_validated() -> None:
    async with open_harness() as h:
        response = await h.stub.Complete(
            pb.CompleteRequest(
                params=pb.CompletionParams(
                    messages=[pb.Message(role="user", content="largest city?")],
                    provider="openai",
                    output_schema=SCHEMA,
                )
            )
        )
        sent = h.fakes["openai"].stats.requests[-1].json()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == json.loads(SCHEMA)
    assert set(json.loads(response.content)) == {"city", "population"}


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_nonconforming_answer_is_retried_on_the_next_candidate(streamed: bool) -> None:
    async with open_harness(("openai", "openrouter")) as h:
        h.controls["openai"].fail_next(1, Fault.NONCONFORMING_JSON)
        params = pb.CompletionParams(
            messages=[pb.Message(role="user", content="city?")],
            model="gpt-4o",
            output_schema=SCHEMA,
        )
        if streamed:
            async with h.stub.CompleteStream.open() as stream:
                await stream.send_message(pb.CompleteRequest(params=params), end=True)
                chunks = [chunk async for chunk in stream]
            content, attempts = "".join(c.delta for c in chunks), chunks[-1].attempts
        else:
            response = await h.stub.Complete(pb.CompleteRequest(params=params))
            content, attempts = response.content, response.attempts
    assert set(json.loads(content)) == {"city", "population"}
    assert [(a.provider, a.outcome) for a in attempts] == [
        ("openai", "failed"),
        ("openrouter", "won"),
    ]
    assert "does not conform" in attempts[0].error


async def test_when_every_answer_is_nonconforming_the_error_says_why() -> None:
    async with open_harness(("openai", "openrouter")) as h:
        for control in h.controls.values():
            control.behaviour = control.behaviour.with_fault(Fault.NONCONFORMING_JSON)
        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(
                pb.CompleteRequest(
                    params=pb.CompletionParams(
                        messages=[pb.Message(role="user", content="city?")],
                        model="gpt-4o",
                        output_schema=SCHEMA,
                    )
                )
            )
    message = raised.value.message or ""
    assert raised.value.status is Status.UNAVAILABLE
    assert "does not conform to output_schema" in message and "'city' is a required" in message
