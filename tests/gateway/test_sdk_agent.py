"""The SDK's agent API against a scripted in-process server: every new request field reaches the
wire exactly, answers come back typed (tool calls, thinking, usage, stream deltas), and
``run_tools`` drives the tool loop (parallel calls run concurrently, failures go to the model,
``max_turns`` ends it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from delos import (
    Document,
    Image,
    Message,
    Reasoning,
    RuntimeClient,
    RuntimeClientError,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceBase
from tests.observability.servers import serving

pytestmark = pytest.mark.anyio

Answer = pb.CompleteResponse | GRPCError | Callable[[pb.CompleteRequest], pb.CompleteResponse]


class ScriptedRuntime(RuntimeServiceBase):
    """Records every request; ``Complete`` gives the scripted answers in turn (an error is
    raised, a callable is called with the request), ``CompleteStream`` the scripted chunks."""

    def __init__(
        self, answers: list[Answer] | None = None, chunks: list[pb.StreamChunk] | None = None
    ) -> None:
        self.answers = list(answers or ())
        self.chunks = list(chunks or ())
        self.requests: list[pb.CompleteRequest] = []

    async def _receive(self, stream: Stream[pb.CompleteRequest, Any]) -> pb.CompleteRequest:
        request = await stream.recv_message()
        assert request is not None
        self.requests.append(request)
        return request

    async def Complete(self, stream: Stream[pb.CompleteRequest, pb.CompleteResponse]) -> None:
        request = await self._receive(stream)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, GRPCError):
            raise answer
        await stream.send_message(
            answer if isinstance(answer, pb.CompleteResponse) else answer(request)
        )

    async def CompleteStream(self, stream: Stream[pb.CompleteRequest, pb.StreamChunk]) -> None:
        await self._receive(stream)
        for chunk in self.chunks:
            await stream.send_message(chunk)

    async def Embed(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def ListProviders(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def Health(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)


@asynccontextmanager
async def open_client(runtime: ScriptedRuntime) -> AsyncIterator[RuntimeClient]:
    async with serving(Server([runtime])) as port:
        async with RuntimeClient(f"127.0.0.1:{port}", timeout=10) as client:
            yield client


def answer(content: str = "", **fields: Any) -> pb.CompleteResponse:
    fields = {"provider": "openai", "model": "gpt-4o-mini", "finish_reason": "stop", **fields}
    return pb.CompleteResponse(content=content, **fields)


PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF-1.7"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
THOUGHT = pb.Thinking(text="Two lookups.", signature="c2ln", provider="anthropic")
CALL_WEATHER = pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city": "Paris"}')
CALL_TIME = pb.ToolCall(
    id="call_2", name="get_time", arguments_json='{"zone":"Europe/Paris"}', signature="gem"
)

#: One conversation in every form a message takes, and the protobuf it must become.
MESSAGES_AS_DICTS: list[Any] = [
    {"role": "system", "content": "Be brief.", "cache_breakpoint": True},
    {
        "role": "user",
        "content": "Look:",
        "parts": [
            {"text": "and"},
            "this",
            {"image": {"url": "https://example.com/a.png"}},
            {"image": {"data": PNG, "media_type": "image/png"}},
            {"document": {"data": PDF, "media_type": "application/pdf", "name": "a.pdf"}},
        ],
    },
    {
        "role": "assistant",
        "parts": [
            {"thinking": {"text": "Two lookups.", "signature": "c2ln", "provider": "anthropic"}}
        ],
        "tool_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {
                "id": "call_2",
                "name": "get_time",
                "arguments": '{"zone":"Europe/Paris"}',
                "signature": "gem",
            },
        ],
    },
    {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    {"role": "tool", "content": "12:00", "tool_call_id": "call_2"},
]
MESSAGES_AS_VALUES: list[Any] = [
    Message("system", "Be brief.", cache_breakpoint=True),
    Message(
        "user",
        "Look:",
        parts=(
            "and",
            "this",
            Image(url="https://example.com/a.png"),
            Image(data=PNG, media_type="image/png"),
            Document(PDF, "application/pdf", "a.pdf"),
        ),
    ),
    Message(
        "assistant",
        parts=(Thinking("Two lookups.", "c2ln", provider="anthropic"),),
        tool_calls=(
            ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
            ToolCall("call_2", "get_time", '{"zone":"Europe/Paris"}', "gem"),
        ),
    ),
    Message("tool", "sunny", tool_call_id="call_1"),
    Message("tool", "12:00", tool_call_id="call_2"),
]
MESSAGES_AS_PROTOBUF = [
    pb.Message(role="system", content="Be brief.", cache_breakpoint=True),
    pb.Message(
        role="user",
        content="Look:",
        parts=[
            pb.ContentPart(text="and"),
            pb.ContentPart(text="this"),
            pb.ContentPart(image=pb.Image(url="https://example.com/a.png")),
            pb.ContentPart(image=pb.Image(data=PNG, media_type="image/png")),
            pb.ContentPart(
                document=pb.Document(data=PDF, media_type="application/pdf", name="a.pdf")
            ),
        ],
    ),
    pb.Message(
        role="assistant",
        parts=[pb.ContentPart(thinking=THOUGHT)],
        # A dict's arguments are serialized compactly; a JSON string goes as it is.
        tool_calls=[
            pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city":"Paris"}'),
            CALL_TIME,
        ],
    ),
    pb.Message(role="tool", content="sunny", tool_call_id="call_1"),
    pb.Message(role="tool", content="12:00", tool_call_id="call_2"),
]
TOOLS_AS_PROTOBUF = [
    pb.Tool(
        name="get_weather",
        description="The weather in a city",
        parameters_json='{"type":"object","properties":{"city":{"type":"string"}},'
        '"required":["city"]}',
    ),
    pb.Tool(name="get_time", description="The time in a zone", parameters_json=""),
    pb.Tool(name="noop", parameters_json='{"type": "object"}'),
]
AGENT_FIELDS: dict[str, Any] = {
    "tools": [
        {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER},
        Tool("get_time", "The time in a zone"),
        pb.Tool(name="noop", parameters_json='{"type": "object"}'),
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "budget_tokens": 2048, "include_thoughts": True},
    "session_id": "agent-7",
}
EXPECTED_PARAMS = pb.CompletionParams(
    messages=MESSAGES_AS_PROTOBUF,
    provider="anthropic",
    tools=TOOLS_AS_PROTOBUF,
    tool_choice="required",
    parallel_tool_calls=False,
    reasoning=pb.Reasoning(effort="high", budget_tokens=2048, include_thoughts=True),
    session_id="agent-7",
)


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["complete", "complete_stream"])
async def test_every_agent_field_reaches_the_request_exactly(call: str) -> None:
    runtime = ScriptedRuntime([answer("ok")], [pb.StreamChunk(finish_reason="stop")])
    async with open_client(runtime) as client:
        if call == "complete":
            await client.complete(MESSAGES_AS_DICTS, provider="anthropic", **AGENT_FIELDS)
        else:
            async for _ in client.complete_stream(
                MESSAGES_AS_DICTS, provider="anthropic", **AGENT_FIELDS
            ):
                pass
    assert runtime.requests == [pb.CompleteRequest(params=EXPECTED_PARAMS)]


@pytest.mark.parametrize(
    "messages", [MESSAGES_AS_VALUES, MESSAGES_AS_PROTOBUF], ids=["values", "protobuf"]
)
async def test_typed_and_protobuf_messages_make_the_same_request(messages: list[Any]) -> None:
    runtime = ScriptedRuntime([answer("ok")])
    async with open_client(runtime) as client:
        await client.complete(
            messages,
            provider="anthropic",
            **{**AGENT_FIELDS, "reasoning": Reasoning("high", 2048, include_thoughts=True)},
        )
    assert runtime.requests[0].params == EXPECTED_PARAMS


async def test_agent_fields_left_out_are_absent_from_the_request() -> None:
    runtime = ScriptedRuntime([answer("ok")])
    async with open_client(runtime) as client:
        await client.complete([{"role": "user", "content": "hi"}])
        await client.complete([{"role": "user", "content": "hi"}], parallel_tool_calls=True)
    unset, set_true = (request.params for request in runtime.requests)
    assert not unset.HasField("parallel_tool_calls") and not unset.HasField("reasoning")
    assert (list(unset.tools), unset.tool_choice, unset.session_id) == ([], "", "")
    assert set_true.HasField("parallel_tool_calls") and set_true.parallel_tool_calls


@pytest.mark.parametrize(
    ("message", "error", "match"),
    [
        ({"role": "user", "content": "hi", "cache_breakpoints": True}, ValueError, "no key"),
        ({"content": "hi"}, ValueError, "needs a role"),
        ({"role": "user", "parts": [{"video": {"url": "x"}}]}, ValueError, "not 'video'"),
        ({"role": "user", "parts": [{"text": "a", "image": {}}]}, ValueError, "one key"),
        ({"role": "user", "parts": [{"text": b"bytes"}]}, TypeError, "a text part is a str"),
        ({"role": "user", "parts": [{"image": {"uri": "x"}}]}, TypeError, "uri"),
        (
            {"role": "assistant", "tool_calls": [{"id": "1", "name": "f", "args": {}}]},
            ValueError,
            "no key 'args'",
        ),
    ],
)
async def test_a_malformed_message_is_refused_before_sending(
    message: dict[str, Any], error: type[Exception], match: str
) -> None:
    runtime = ScriptedRuntime([answer("ok")])
    async with open_client(runtime) as client:
        with pytest.raises(error, match=match):
            await client.complete([message])
    assert runtime.requests == []


# -- answers ----------------------------------------------------------------------------------

USAGE = pb.Usage(
    prompt_tokens=100,
    completion_tokens=40,
    total_tokens=140,
    cache_read_tokens=80,
    cache_write_tokens=20,
    reasoning_tokens=30,
)


async def test_an_answer_comes_back_typed() -> None:
    response = answer(
        "Let me look.",
        finish_reason="tool_calls",
        tool_calls=[CALL_WEATHER, CALL_TIME],
        thinking=[THOUGHT, pb.Thinking(redacted_data="b3BhcXVl", provider="anthropic")],
        usage=USAGE,
    )
    async with open_client(ScriptedRuntime([response])) as client:
        result = await client.complete([{"role": "user", "content": "hi"}])
    assert result.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", '{"zone":"Europe/Paris"}', "gem"),
    )
    assert result.tool_calls[0].arguments == {"city": "Paris"}
    assert result.tool_calls[0].arguments_json == '{"city": "Paris"}'
    assert result.thinking == (
        Thinking("Two lookups.", "c2ln", provider="anthropic"),
        Thinking(redacted_data="b3BhcXVl", provider="anthropic"),
    )
    assert result.usage == Usage(100, 40, 140, 80, 20, 30)
    assert (result.prompt_tokens, result.completion_tokens) == (100, 40)
    assert result.messages == ()
    # The assistant turn to send back: thinking first, verbatim, then the text and the calls.
    assert result.message == Message(
        "assistant", parts=(*result.thinking, "Let me look."), tool_calls=result.tool_calls
    )


async def test_an_answer_without_agent_fields_keeps_its_old_shape() -> None:
    async with open_client(ScriptedRuntime([answer("Hello")])) as client:
        result = await client.complete([{"role": "user", "content": "hi"}])
    assert (result.content, result.tool_calls, result.thinking) == ("Hello", (), ())
    assert result.usage == Usage()
    assert result.message == Message("assistant", "Hello")


@pytest.mark.parametrize(
    ("arguments_json", "expected"), [("", {}), ("  ", {}), ('{"a": [1]}', {"a": [1]})]
)
def test_tool_call_arguments_are_parsed(arguments_json: str, expected: dict[str, Any]) -> None:
    assert ToolCall("c", "f", arguments_json).arguments == expected


@pytest.mark.parametrize("arguments_json", ["[1, 2]", "{not json"])
def test_tool_call_arguments_that_are_not_an_object_raise_value_error(
    arguments_json: str,
) -> None:
    with pytest.raises(ValueError):
        _ = ToolCall("c", "f", arguments_json).arguments


async def test_stream_deltas_come_back_typed() -> None:
    chunks = [
        pb.StreamChunk(thinking_delta="Two ", index=0),
        pb.StreamChunk(thinking_delta="lookups.", index=1),
        pb.StreamChunk(delta="Let me look.", index=2),
        pb.StreamChunk(tool_call=pb.ToolCallDelta(index=0, id="call_1", name="get_weather")),
        pb.StreamChunk(tool_call=pb.ToolCallDelta(index=0, arguments_delta='{"city": ')),
        pb.StreamChunk(tool_call=pb.ToolCallDelta(index=0, arguments_delta='"Paris"}')),
        pb.StreamChunk(tool_call=pb.ToolCallDelta(index=1, id="call_2", name="get_time")),
        pb.StreamChunk(
            tool_call=pb.ToolCallDelta(index=1, arguments_delta='{"zone":"Europe/Paris"}')
        ),
        pb.StreamChunk(
            finish_reason="tool_calls",
            usage=USAGE,
            tool_calls=[CALL_WEATHER, CALL_TIME],
            thinking=[THOUGHT],
        ),
    ]
    async with open_client(ScriptedRuntime(chunks=chunks)) as client:
        received = [c async for c in client.complete_stream([{"role": "user", "content": "hi"}])]
    assert "".join(c.thinking_delta for c in received) == "Two lookups."
    assert "".join(c.delta for c in received) == "Let me look."
    deltas = [c.tool_call for c in received if c.tool_call is not None]
    assert deltas[0] == ToolCallDelta(0, "call_1", "get_weather")
    assert deltas[3] == ToolCallDelta(1, "call_2", "get_time")
    arguments = ["".join(d.arguments_delta for d in deltas if d.index == i) for i in (0, 1)]
    assert arguments == [CALL_WEATHER.arguments_json, CALL_TIME.arguments_json]
    # Only the last chunk carries the whole answer's calls, thinking and usage.
    *middle, last = received
    assert all(c.usage is None and c.tool_calls == () and c.thinking == () for c in middle)
    assert last.finish_reason == "tool_calls" and last.tool_call is None
    assert [call.arguments for call in last.tool_calls] == [
        {"city": "Paris"},
        {"zone": "Europe/Paris"},
    ]
    assert last.thinking == (Thinking("Two lookups.", "c2ln", provider="anthropic"),)
    assert last.usage == Usage(100, 40, 140, 80, 20, 30)


# -- run_tools --------------------------------------------------------------------------------

USER = {"role": "user", "content": "Weather in Paris, and the time?"}
TIME_SPEC = {
    "description": "The time in a zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


def calls_answer(*calls: pb.ToolCall, thinking: list[pb.Thinking] | None = None) -> Answer:
    return answer(
        "Let me look.", finish_reason="tool_calls", tool_calls=calls, thinking=thinking or []
    )


async def test_run_tools_runs_parallel_calls_concurrently_and_answers() -> None:
    runtime = ScriptedRuntime(
        [calls_answer(CALL_WEATHER, CALL_TIME, thinking=[THOUGHT]), answer("Sunny, 12:00.")]
    )
    weather_started, time_started = anyio.Event(), anyio.Event()
    seen: list[dict[str, str]] = []

    # Each tool waits until the other has started: run one after the other, they would hang.
    async def get_weather(city: str) -> dict[str, str]:
        weather_started.set()
        await time_started.wait()
        seen.append({"city": city})
        return {"city": city, "sky": "clear"}

    async def get_time(zone: str) -> str:
        time_started.set()
        await weather_started.wait()
        seen.append({"zone": zone})
        return "12:00"

    async with open_client(runtime) as client:
        with anyio.fail_after(10):
            result = await client.run_tools(
                [USER],
                {
                    "get_weather": (
                        Tool("get_weather", "The weather in a city", WEATHER),
                        get_weather,
                    ),
                    "get_time": (TIME_SPEC, get_time),
                },
                provider="anthropic",
                session_id="agent-7",
                tool_choice="required",
            )

    assert result.content == "Sunny, 12:00."
    assert sorted(seen, key=str) == [{"city": "Paris"}, {"zone": "Europe/Paris"}]
    first, second = (request.params for request in runtime.requests)
    tools = [
        TOOLS_AS_PROTOBUF[0],
        pb.Tool(
            name="get_time",
            description="The time in a zone",
            parameters_json='{"type":"object","properties":{"zone":{"type":"string"}}}',
        ),
    ]
    assert list(first.tools) == list(second.tools) == tools
    assert first.session_id == second.session_id == "agent-7"
    assert (first.provider, second.provider) == ("anthropic", "anthropic")
    # tool_choice forces the first turn only; the next one may answer.
    assert (first.tool_choice, second.tool_choice) == ("required", "")
    conversation = [
        pb.Message(role="user", content="Weather in Paris, and the time?"),
        # The assistant turn verbatim: signed thinking first, the calls with their signatures.
        pb.Message(
            role="assistant",
            parts=[pb.ContentPart(thinking=THOUGHT), pb.ContentPart(text="Let me look.")],
            tool_calls=[CALL_WEATHER, CALL_TIME],
        ),
        pb.Message(role="tool", content='{"city":"Paris","sky":"clear"}', tool_call_id="call_1"),
        pb.Message(role="tool", content="12:00", tool_call_id="call_2"),
    ]
    assert list(first.messages) == conversation[:1]
    assert list(second.messages) == conversation
    assert result.messages[:-1] == (
        Message("user", "Weather in Paris, and the time?"),
        Message(
            "assistant",
            parts=(Thinking("Two lookups.", "c2ln", provider="anthropic"), "Let me look."),
            tool_calls=(
                ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
                ToolCall("call_2", "get_time", '{"zone":"Europe/Paris"}', "gem"),
            ),
        ),
        Message("tool", '{"city":"Paris","sky":"clear"}', tool_call_id="call_1"),
        Message("tool", "12:00", tool_call_id="call_2"),
    )
    assert result.messages[-1] == Message("assistant", "Sunny, 12:00.")


async def test_failing_tools_and_unknown_tools_give_the_model_an_error_text() -> None:
    calls = [
        pb.ToolCall(id="1", name="get_weather", arguments_json='{"city": "Atlantis"}'),
        pb.ToolCall(id="2", name="get_weather", arguments_json='{"town": "Paris"}'),
        pb.ToolCall(id="3", name="get_weather", arguments_json="[1]"),
        pb.ToolCall(id="4", name="launch_rockets", arguments_json="{}"),
        pb.ToolCall(id="5", name="count", arguments_json="{}"),
    ]
    runtime = ScriptedRuntime([calls_answer(*calls), answer("Sorry.")])

    async def get_weather(city: str) -> str:
        raise LookupError(f"no such city: {city}")

    async def count() -> list[int]:
        return [1, 2, 3]

    async with open_client(runtime) as client:
        result = await client.run_tools(
            [USER],
            {"get_weather": ({"parameters": WEATHER}, get_weather), "count": ({}, count)},
        )
    assert result.content == "Sorry."
    replies = {m.tool_call_id: m.content for m in runtime.requests[1].params.messages[2:]}
    assert replies == {
        "1": "error: LookupError: no such city: Atlantis",
        "2": "error: TypeError: test_failing_tools_and_unknown_tools_give_the_model_an_error_text"
        ".<locals>.get_weather() got an unexpected keyword argument 'town'",
        "3": "error: ValueError: the arguments of tool call '3' are not a JSON object",
        "4": "error: unknown tool 'launch_rockets'; the tools are: get_weather, count",
        "5": "[1,2,3]",
    }


async def test_run_tools_stops_at_max_turns_without_running_the_last_calls() -> None:
    runtime = ScriptedRuntime([calls_answer(CALL_TIME)])  # the same answer every time
    runs = 0

    async def get_time(zone: str) -> str:
        nonlocal runs
        runs += 1
        return "12:00"

    async with open_client(runtime) as client:
        with pytest.raises(RuntimeClientError) as raised:
            await client.run_tools([USER], {"get_time": (TIME_SPEC, get_time)}, max_turns=3)
    assert raised.value.status is Status.RESOURCE_EXHAUSTED
    assert "max_turns reached" in raised.value.message and "get_time" in raised.value.message
    assert (len(runtime.requests), runs) == (3, 2)


async def test_a_server_error_on_a_later_turn_is_raised_typed() -> None:
    runtime = ScriptedRuntime(
        [calls_answer(CALL_TIME), GRPCError(Status.UNAVAILABLE, "every provider is down")]
    )

    async def get_time(zone: str) -> str:
        return "12:00"

    async with open_client(runtime) as client:
        with pytest.raises(RuntimeClientError) as raised:
            await client.run_tools([USER], {"get_time": (TIME_SPEC, get_time)})
    assert raised.value.status is Status.UNAVAILABLE
    assert len(runtime.requests) == 2


async def test_cancelling_run_tools_cancels_its_running_tools() -> None:
    runtime = ScriptedRuntime([calls_answer(CALL_TIME), answer("never")])
    started, cancelled = anyio.Event(), anyio.Event()

    async def get_time(zone: str) -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "unreachable"

    async with open_client(runtime) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: client.run_tools([USER], {"get_time": (TIME_SPEC, get_time)})
                )
                await started.wait()
                group.cancel_scope.cancel()
    # The cancellation ended the loop instead of going to the model as an error text.
    assert cancelled.is_set()
    assert len(runtime.requests) == 1


@pytest.mark.parametrize(
    ("tools", "max_turns", "match"),
    [
        ({"get_time": (Tool("get_clock"), None)}, 8, "names another tool"),
        ({"get_time": ({"name": "get_clock"}, None)}, 8, "names another tool"),
        ({"get_time": ({"parameter": {}}, None)}, 8, "parameter"),
        ({}, 0, "max_turns"),
    ],
)
async def test_run_tools_refuses_a_bad_spec_before_sending(
    tools: dict[str, Any], max_turns: int, match: str
) -> None:
    runtime = ScriptedRuntime([answer("ok")])
    async with open_client(runtime) as client:
        with pytest.raises((ValueError, TypeError), match=match):
            await client.run_tools([USER], tools, max_turns=max_turns)
    assert runtime.requests == []
