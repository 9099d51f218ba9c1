"""The Bedrock adapter in agent conversations against the Bedrock fake, on asyncio and trio:
tool calls and results (unary and streamed), parallel calls, thinking round trips (signed and
redacted), images and documents, prompt caching, and the settings refused before sending."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError, UpstreamRejected
from delos.runtime.providers._sigv4 import RequestSigner
from delos.runtime.providers.bedrock import BedrockProvider
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    DocumentPart,
    ImagePart,
    Reasoning,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.wire import encode_event
from delos.testing import FakeControl, FakeRequest, FakeResponse, FakeServer, open_fake_server
from delos.testing._agent import sign, thought_about
from delos.testing._behaviour import count_tokens
from delos.testing.fake_bedrock import REDACTED_THINKING_TRIGGER, fake_bedrock_handler

pytestmark = pytest.mark.anyio

CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
CATALOG = Catalog.load()
WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool(
    "get_time",
    "",
    {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)
PNG = b"\x89PNG\r\n\x1a\nfake-image"


@asynccontextmanager
async def open_bedrock(handler: Any = None) -> AsyncIterator[tuple[FakeServer, BedrockProvider]]:
    handler = handler or fake_bedrock_handler(FakeControl())
    async with open_fake_server(handler) as server:
        provider = BedrockProvider(
            signer=RequestSigner(
                access_key_id="AKIDEXAMPLE",
                secret_access_key="secret",
                session_token=None,
                region="us-east-1",
            ),
            client=httpx.AsyncClient(),
            catalog=CATALOG,
            base_url=server.url,
        )
        try:
            yield server, provider
        finally:
            await provider.aclose()


def chat(*messages: ChatMessage, **fields: Any) -> ChatRequest:
    return ChatRequest(fields.pop("model", CLAUDE), messages, **fields)


def user(text: str, **fields: Any) -> ChatMessage:
    return ChatMessage("user", text, **fields)


async def collect(provider: BedrockProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def sent(server: FakeServer) -> Any:
    return server.stats.requests[-1].json()


def tool_id(sequence: int, index: int) -> str:
    """The fake's id for call ``index`` of its ``sequence``-th answer."""
    return f"tooluse_{sequence:016d}{index:06d}"


def results_for(calls: Sequence[ToolCall], *texts: str) -> tuple[ChatMessage, ...]:
    return tuple(
        ChatMessage("tool", text, tool_call_id=call.id)
        for call, text in zip(calls, texts, strict=True)
    )


# -- tool calls ----------------------------------------------------------------------------------


async def test_an_agent_loop_calls_one_tool_then_answers_from_its_result() -> None:
    question = user("weather in Paris")
    async with open_bedrock() as (server, provider):
        first = await provider.complete(chat(question, tools=(WEATHER,)))
        call = ToolCall(tool_id(1, 0), "get_weather", '{"city":"weather in Paris"}')
        assert first.tool_calls == (call,)
        assert first.finish_reason == "tool_calls" and first.content == ""
        history = (question, ChatMessage("assistant", "", tool_calls=first.tool_calls))
        final = await provider.complete(
            chat(*history, *results_for(first.tool_calls, "18 C"), tools=(WEATHER,))
        )
        body = sent(server)
    assert final.content == "Tool said: 18 C" and final.finish_reason == "stop"
    assert final.tool_calls == () and final.thinking == ()
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": call.id,
                        "name": "get_weather",
                        "input": {"city": "weather in Paris"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "18 C"}]}}],
        },
    ]


async def test_a_streamed_agent_loop_yields_call_deltas_then_the_answer() -> None:
    question = user("weather in Paris")
    async with open_bedrock() as (_, provider):
        events = await collect(provider, chat(question, tools=(WEATHER,)))
        *deltas, finished = events
        assert isinstance(finished, StreamFinished)
        arguments = '{"city":"weather in Paris"}'
        assert deltas == [
            ToolCallDelta(0, id=tool_id(1, 0), name="get_weather"),
            *(ToolCallDelta(0, arguments_delta=arguments[i : i + 8]) for i in range(0, 27, 8)),
        ]
        assert finished.finish_reason == "tool_calls"
        assert finished.tool_calls == (ToolCall(tool_id(1, 0), "get_weather", arguments),)
        history = (question, ChatMessage("assistant", "", tool_calls=finished.tool_calls))
        request = chat(*history, *results_for(finished.tool_calls, "18 C"), tools=(WEATHER,))
        final = await collect(provider, request)
    text = "".join(e.text for e in final if isinstance(e, TextDelta))
    assert text == "Tool said: 18 C"
    assert final[-1] == StreamFinished("stop", final[-1].usage, CLAUDE)  # type: ignore[union-attr]


async def test_two_parallel_calls_unary_and_streamed_then_both_results() -> None:
    question = user("weather and time in parallel")
    tools = (WEATHER, CLOCK)
    async with open_bedrock() as (_, provider):
        unary = await provider.complete(chat(question, tools=tools))
        events = await collect(provider, chat(question, tools=tools))
        final = await provider.complete(
            chat(
                question,
                ChatMessage("assistant", "", tool_calls=unary.tool_calls),
                *results_for(unary.tool_calls, "sunny", "noon"),
                tools=tools,
            )
        )
    arguments = '"weather and time in parallel"'
    assert unary.tool_calls == (
        ToolCall(tool_id(1, 0), "get_weather", '{"city":' + arguments + "}"),
        ToolCall(tool_id(1, 1), "get_time", '{"zone":' + arguments + "}"),
    )
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert [(c.name, c.arguments_json) for c in finished.tool_calls] == [
        (c.name, c.arguments_json) for c in unary.tool_calls
    ]
    starts = [e for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert [(e.index, e.id, e.name) for e in starts] == [
        (0, tool_id(2, 0), "get_weather"),
        (1, tool_id(2, 1), "get_time"),
    ]
    for ordinal, call in enumerate(finished.tool_calls):
        pieces = [e.arguments_delta for e in events if isinstance(e, ToolCallDelta)]
        mine = [
            e.arguments_delta for e in events if isinstance(e, ToolCallDelta) and e.index == ordinal
        ]
        assert "".join(mine) == call.arguments_json and len(pieces) > len(mine)
    assert final.content == "Tool said: sunny; noon"


async def test_a_named_tool_choice_forces_that_tool_even_when_parallel_is_asked() -> None:
    async with open_bedrock() as (server, provider):
        answer = await provider.complete(
            chat(user("time in parallel"), tools=(WEATHER, CLOCK), tool_choice="get_time")
        )
        assert sent(server)["toolConfig"]["toolChoice"] == {"tool": {"name": "get_time"}}
        required = await provider.complete(
            chat(user("time"), tools=(WEATHER, CLOCK), tool_choice="required")
        )
        assert sent(server)["toolConfig"]["toolChoice"] == {"any": {}}
    assert [c.name for c in answer.tool_calls] == ["get_time"]
    assert [c.name for c in required.tool_calls] == ["get_weather"]


async def test_tool_choice_none_sends_no_tools_and_gets_text() -> None:
    async with open_bedrock() as (server, provider):
        answer = await provider.complete(chat(user("hi"), tools=(WEATHER,), tool_choice="none"))
    assert "toolConfig" not in sent(server)
    assert answer.tool_calls == () and answer.finish_reason == "stop" and answer.content


async def test_a_result_for_an_unknown_call_is_refused_by_the_fake() -> None:
    question = user("weather")
    async with open_bedrock() as (_, provider):
        first = await provider.complete(chat(question, tools=(WEATHER,)))
        history = (question, ChatMessage("assistant", "", tool_calls=first.tool_calls))
        with pytest.raises(UpstreamRejected, match="unexpected `tool_use_id`"):
            await provider.complete(
                chat(
                    *history,
                    ChatMessage("tool", "x", tool_call_id="tooluse_other"),
                    tools=(WEATHER,),
                )
            )
        with pytest.raises(UpstreamRejected, match=r"Expected toolResult blocks at messages\.2"):
            await provider.complete(chat(*history, user("never mind"), tools=(WEATHER,)))


# -- thinking ------------------------------------------------------------------------------------


async def test_thinking_is_signed_and_round_trips_through_a_tool_call() -> None:
    question = user("weather in Oslo")
    reasoning = Reasoning(effort="low")
    thought = thought_about("weather in Oslo")
    async with open_bedrock() as (server, provider):
        first = await provider.complete(chat(question, tools=(WEATHER,), reasoning=reasoning))
        assert sent(server)["additionalModelRequestFields"] == {
            "thinking": {"type": "enabled", "budget_tokens": 2048}
        }
        assert first.thinking == (Thinking(thought, sign(thought), provider="bedrock"),)
        history = (
            question,
            ChatMessage("assistant", "", parts=first.thinking, tool_calls=first.tool_calls),
        )
        final = await provider.complete(
            chat(
                *history,
                *results_for(first.tool_calls, "cold"),
                tools=(WEATHER,),
                reasoning=reasoning,
            )
        )
        assert sent(server)["messages"][1]["content"][0] == {
            "reasoningContent": {"reasoningText": {"text": thought, "signature": sign(thought)}}
        }
        # Claude (and the fake) want the thinking back before the calls it led to.
        with pytest.raises(UpstreamRejected, match="Expected `thinking` or `redacted_thinking`"):
            await provider.complete(
                chat(
                    question,
                    ChatMessage("assistant", "", tool_calls=first.tool_calls),
                    *results_for(first.tool_calls, "cold"),
                    tools=(WEATHER,),
                    reasoning=reasoning,
                )
            )
    assert final.content == "Tool said: cold"
    assert first.usage is not None
    # Thinking, then '{"city":"weather in Oslo"}' in 8-character fragments: 4 of them.
    assert first.usage.completion_tokens == count_tokens([thought]) + 4


async def test_streamed_thinking_arrives_as_deltas_and_whole_with_its_signature() -> None:
    thought = thought_about("tell me")
    async with open_bedrock() as (_, provider):
        events = await collect(
            provider, chat(user("tell me"), reasoning=Reasoning(budget_tokens=1500))
        )
    thinking = [e.text for e in events if isinstance(e, ThinkingDelta)]
    assert thinking == ["Thinking", " about:", " tell", " me"]
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ThinkingDelta) for e in events[:first_text])
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.thinking == (Thinking(thought, sign(thought), provider="bedrock"),)


async def test_a_tampered_signature_is_refused() -> None:
    forged = Thinking("I decided otherwise", sign("something else"), provider="bedrock")
    request = chat(user("a"), ChatMessage("assistant", "ok", parts=(forged,)), user("b"))
    async with open_bedrock() as (_, provider):
        with pytest.raises(UpstreamRejected, match="Invalid `signature` in `thinking` block"):
            await provider.complete(request)


async def test_redacted_thinking_comes_back_verbatim_unary_and_streamed() -> None:
    question = user(f"secret {REDACTED_THINKING_TRIGGER}")
    reasoning = Reasoning(effort="medium")
    async with open_bedrock() as (server, provider):
        first = await provider.complete(chat(question, reasoning=reasoning))
        (redacted,) = first.thinking
        assert redacted.text == "" and redacted.signature == "" and redacted.provider == "bedrock"
        raw = server.stats.requests[-1]
        await provider.complete(
            chat(
                question,
                ChatMessage("assistant", first.content, parts=first.thinking),
                user("go on"),
            )
        )
        assert sent(server)["messages"][1]["content"][0] == {
            "reasoningContent": {"redactedContent": redacted.redacted_data}
        }
        events = await collect(provider, chat(question, reasoning=reasoning))
    assert raw.path.endswith("/converse")
    base64.b64decode(redacted.redacted_data, validate=True)
    assert not any(isinstance(e, ThinkingDelta) for e in events)
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.thinking == first.thinking


async def test_only_this_provider_s_thinking_is_sent_back() -> None:
    foreign = Thinking("elsewhere", "sig", provider="anthropic")
    async with open_bedrock() as (server, provider):
        await provider.complete(
            chat(user("a"), ChatMessage("assistant", "ok", parts=(foreign,)), user("b"))
        )
    assert sent(server)["messages"][1]["content"] == [{"text": "ok"}]


# -- images, documents, caching ------------------------------------------------------------------


async def test_images_and_documents_reach_the_fake_in_native_form() -> None:
    parts = (
        ImagePart(data=PNG, media_type="image/png"),
        DocumentPart(b"%PDF-1.7 quarterly", "application/pdf", "Q3 report.pdf"),
        DocumentPart(b"plain notes here", "text/plain", "notes_v2.txt"),
    )
    async with open_bedrock() as (server, provider):
        answer = await provider.complete(chat(user("summarise", parts=parts)))
    assert answer.finish_reason == "stop"
    assert sent(server)["messages"][0]["content"] == [
        {"text": "summarise"},
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}},
        {
            "document": {
                "format": "pdf",
                "name": "Q3 report",
                "source": {"bytes": base64.b64encode(b"%PDF-1.7 quarterly").decode()},
            }
        },
        {
            "document": {
                "format": "txt",
                "name": "notes v2",
                "source": {"bytes": base64.b64encode(b"plain notes here").decode()},
            }
        },
    ]


async def test_a_cache_breakpoint_writes_the_prefix_then_reads_it() -> None:
    system = ChatMessage("system", "you are a careful assistant", cache_breakpoint=True)
    long_context = user("here is a long shared context", cache_breakpoint=True)
    prefix = count_tokens(["you are a careful assistant", "here is a long shared context"])
    async with open_bedrock() as (server, provider):
        first = await provider.complete(chat(system, long_context))
        assert sent(server)["system"] == [
            {"text": "you are a careful assistant"},
            {"cachePoint": {"type": "default"}},
        ]
        assert sent(server)["messages"][0]["content"][-1] == {"cachePoint": {"type": "default"}}
        follow_up = (long_context, ChatMessage("assistant", first.content), user("and then?"))
        second = await provider.complete(chat(system, *follow_up))
        events = await collect(provider, chat(system, *follow_up))
    answer_tokens = count_tokens([first.content])
    assert first.usage == Usage(prefix, 12, cache_write_tokens=prefix)
    total = prefix + answer_tokens + 2
    assert second.usage == Usage(total, 12, cache_read_tokens=prefix)
    assert events[-1] == StreamFinished("stop", second.usage, CLAUDE)


async def test_a_longer_breakpoint_reads_the_old_prefix_and_writes_the_rest() -> None:
    system = ChatMessage("system", "shared rules", cache_breakpoint=True)
    async with open_bedrock() as (_, provider):
        await provider.complete(chat(system, user("first question")))
        answer = await provider.complete(
            chat(system, user("second question", cache_breakpoint=True))
        )
    assert answer.usage == Usage(4, 12, cache_read_tokens=2, cache_write_tokens=2)


# -- refused before sending ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "setting"),
    [
        (chat(user("a", parts=(ImagePart(url="https://example.com/cat.png"),))), "image url"),
        (chat(user("a"), tools=(WEATHER,), parallel_tool_calls=False), "parallel_tool_calls"),
        (chat(user("a"), reasoning=Reasoning(effort="high"), model=LLAMA), "reasoning"),
        (chat(user("a", cache_breakpoint=True), model=LLAMA), "cache_breakpoint"),
        (
            chat(
                user("a"),
                ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "get_weather", "{}"),)),
                ChatMessage("tool", "x", tool_call_id="t1"),
                tools=(WEATHER,),
                tool_choice="none",
            ),
            "tool_choice",
        ),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_settings_converse_cannot_express_are_refused_before_sending(
    request_: ChatRequest, setting: str, streaming: bool
) -> None:
    async with open_bedrock() as (server, provider):
        with pytest.raises(UnsupportedByProvider) as raised:
            if streaming:
                await collect(provider, request_)
            else:
                await provider.complete(request_)
    assert raised.value.setting == setting
    assert server.stats.request_count == 0


# -- stream parsing edges, with hand-made event streams -------------------------------------------


def frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_event(event_type, json.dumps(payload).encode())


def scripted(items: Sequence[bytes]) -> Any:
    async def handler(request: FakeRequest) -> FakeResponse:
        async def body() -> AsyncIterator[bytes]:
            for item in items:
                yield item

        return FakeResponse(200, [("content-type", "application/vnd.amazon.eventstream")], body())

    return handler


START = frame("messageStart", {"role": "assistant"})


def delta(index: int, value: dict[str, Any]) -> bytes:
    return frame("contentBlockDelta", {"contentBlockIndex": index, "delta": value})


async def test_stream_blocks_are_assembled_by_their_block_index() -> None:
    usage = {
        "inputTokens": 5,
        "outputTokens": 9,
        "totalTokens": 44,
        "cacheReadInputTokens": 20,
        "cacheWriteInputTokens": 10,
    }
    items = [
        START,
        delta(0, {"reasoningContent": {"text": "let me "}}),
        delta(0, {"reasoningContent": {"text": "see"}}),
        delta(0, {"reasoningContent": {"signature": "sig=="}}),
        frame("contentBlockStop", {"contentBlockIndex": 0}),
        delta(1, {"reasoningContent": {"redactedContent": "AAEC"}}),
        delta(2, {"text": "Sure."}),
        frame(
            "contentBlockStart",
            {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "a", "name": "f"}}},
        ),
        frame(
            "contentBlockStart",
            {"contentBlockIndex": 4, "start": {"toolUse": {"toolUseId": "b", "name": "g"}}},
        ),
        delta(4, {"toolUse": {"input": '{"y":'}}),
        delta(3, {"toolUse": {"input": '{"x":"\u2028"}'}}),
        delta(4, {"toolUse": {"input": "2}"}}),
        frame("messageStop", {"stopReason": "tool_use"}),
        frame("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}),
    ]
    async with open_bedrock(handler=scripted(items)) as (_, provider):
        events = await collect(provider, chat(user("x")))
    assert events == [
        ThinkingDelta("let me "),
        ThinkingDelta("see"),
        TextDelta("Sure."),
        ToolCallDelta(0, id="a", name="f"),
        ToolCallDelta(1, id="b", name="g"),
        ToolCallDelta(1, arguments_delta='{"y":'),
        ToolCallDelta(0, arguments_delta='{"x":"\u2028"}'),
        ToolCallDelta(1, arguments_delta="2}"),
        StreamFinished(
            "tool_calls",
            Usage(35, 9, cache_read_tokens=20, cache_write_tokens=10),
            CLAUDE,
            (ToolCall("a", "f", '{"x":"\u2028"}'), ToolCall("b", "g", '{"y":2}')),
            (
                Thinking("let me see", "sig==", provider="bedrock"),
                Thinking(redacted_data="AAEC", provider="bedrock"),
            ),
        ),
    ]


async def test_a_tool_input_fragment_without_its_start_is_a_protocol_error() -> None:
    items = [START, delta(1, {"toolUse": {"input": "{}"}})]
    async with open_bedrock(handler=scripted(items)) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="never started"):
            await collect(provider, chat(user("x")))


async def test_a_completion_equals_its_stream_for_a_thinking_tool_answer() -> None:
    request = chat(user("weather please"), tools=(WEATHER,), reasoning=Reasoning(effort="minimal"))
    async with open_bedrock() as (_, provider):
        unary = await provider.complete(request)
        events = await collect(provider, request)
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert unary == Completion(
        content="",
        model=CLAUDE,
        finish_reason=finished.finish_reason,
        usage=finished.usage,
        tool_calls=(ToolCall(tool_id(1, 0), "get_weather", finished.tool_calls[0].arguments_json),),
        thinking=finished.thinking,
    )
