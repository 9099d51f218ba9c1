"""The OpenAI-compatible adapter in agent conversations, against the loopback fake, on two backends.

Tool calls (one, parallel; unary and streamed), images and documents in each dialect's native
parts, reasoning settings, thinking sent back verbatim, prompt caching reported in usage, and every
setting a dialect has no native form for refused before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.errors import UnsupportedByProvider, UpstreamRejected
from delos.runtime.providers.openai_compatible import (
    OPENAI,
    OPENROUTER,
    TOGETHER,
    OpenAICompatibleProvider,
)
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
    TextPart,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.testing import FakeControl, FakeServer
from delos.testing import open_fake_server as open_server
from delos.testing._agent import sign
from delos.testing.fake_openai import OpenAIFlavour, fake_openai_handler

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
KEY = "sk-test-openai-key"
DIALECTS = {
    OpenAIFlavour.OPENAI: OPENAI,
    OpenAIFlavour.TOGETHER: TOGETHER,
    OpenAIFlavour.OPENROUTER: OPENROUTER,
}
#: Models that call tools and reason, per flavour.
MODELS = {
    OpenAIFlavour.OPENAI: "gpt-5",
    OpenAIFlavour.TOGETHER: "openai/gpt-oss-120b",
    OpenAIFlavour.OPENROUTER: "anthropic/claude-sonnet-4.5",
}
FLAVOURS = list(OpenAIFlavour)
IDS = [f.value for f in FLAVOURS]
WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool(
    "get_time",
    "The time in a zone",
    {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)
CALL_ID = re.compile(r"call_[0-9a-f]{24}")
PNG = b"\x89PNG\r\n\x1a\n-fake-image"
PDF = b"%PDF-1.4 fake document"


@asynccontextmanager
async def open_openai(
    flavour: OpenAIFlavour,
) -> AsyncIterator[tuple[OpenAICompatibleProvider, FakeServer]]:
    handler = fake_openai_handler(FakeControl(), flavour, api_key=KEY)
    async with open_server(handler) as server, httpx.AsyncClient() as client:
        provider = OpenAICompatibleProvider(
            DIALECTS[flavour],
            api_key=KEY,
            client=client,
            catalog=CATALOG,
            base_url=server.url + flavour.prefix,
        )
        yield provider, server


def ask(
    flavour: OpenAIFlavour, *messages: ChatMessage, model: str = "", **fields: Any
) -> ChatRequest:
    fields.setdefault("tools", (WEATHER, CLOCK))
    return ChatRequest(model or MODELS[flavour], messages, **fields)


async def collect(provider: OpenAICompatibleProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def assembled(events: Sequence[StreamEvent]) -> dict[int, str]:
    """Each streamed call's arguments, joined from its deltas by ordinal."""
    joined: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            joined[event.index] = joined.get(event.index, "") + event.arguments_delta
    return joined


def sent(server: FakeServer, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = server.stats.requests[index].json()
    return body


# -- tool calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS, ids=IDS)
async def test_an_agent_loop_calls_one_tool_then_answers_from_its_result(
    flavour: OpenAIFlavour,
) -> None:
    question = ChatMessage("user", "what is the weather")
    async with open_openai(flavour) as (provider, server):
        first = await provider.complete(ask(flavour, question))
        (call,) = first.tool_calls
        result = ChatMessage("tool", "sunny and warm", tool_call_id=call.id)
        turn = ChatMessage("assistant", "", tool_calls=first.tool_calls)
        second = await provider.complete(ask(flavour, question, turn, result))
    assert CALL_ID.fullmatch(call.id)
    assert call == ToolCall(call.id, "get_weather", '{"city":"what is the weather"}')
    assert (first.content, first.finish_reason) == ("", "tool_calls")
    assert sent(server, 0)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "The time in a zone",
                "parameters": CLOCK.parameters,
            },
        },
    ]
    assert sent(server)["messages"] == [
        {"role": "user", "content": "what is the weather"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments_json},
                }
            ],
        },
        {"role": "tool", "content": "sunny and warm", "tool_call_id": call.id},
    ]
    assert second.content == "Tool said: sunny and warm"
    assert second.finish_reason == "stop" and second.tool_calls == ()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=IDS)
async def test_a_streamed_agent_loop_relays_each_fragment_and_assembles_the_call(
    flavour: OpenAIFlavour,
) -> None:
    question = ChatMessage("user", "what is the weather")
    async with open_openai(flavour) as (provider, _):
        events = await collect(provider, ask(flavour, question))
        *deltas, finished = events
        assert isinstance(finished, StreamFinished)
        (call,) = finished.tool_calls
        turn = ChatMessage("assistant", "", tool_calls=finished.tool_calls)
        result = ChatMessage("tool", "rain", tool_call_id=call.id)
        answer = await collect(provider, ask(flavour, question, turn, result))
    assert deltas[0] == ToolCallDelta(0, id=call.id, name="get_weather")
    assert all(isinstance(d, ToolCallDelta) and not d.id and not d.name for d in deltas[1:])
    assert assembled(deltas) == {0: '{"city":"what is the weather"}'}
    if flavour is not OpenAIFlavour.TOGETHER:  # OpenAI's 8-character argument fragments
        assert len(deltas) == 1 + 4
    assert call == ToolCall(call.id, "get_weather", '{"city":"what is the weather"}')
    assert finished.finish_reason == "tool_calls" and finished.usage is not None
    *text, end = answer
    assert "".join(e.text for e in text if isinstance(e, TextDelta)) == "Tool said: rain"
    assert isinstance(end, StreamFinished) and end.finish_reason == "stop"


@pytest.mark.parametrize("flavour", FLAVOURS, ids=IDS)
async def test_parallel_calls_get_ordinals_unary_and_streamed(flavour: OpenAIFlavour) -> None:
    """Together sends both calls whole in one chunk: one delta each, split by the reader."""
    question = ChatMessage("user", "weather and time in parallel please")
    async with open_openai(flavour) as (provider, _):
        answer = await provider.complete(ask(flavour, question))
        events = await collect(provider, ask(flavour, question))
    arguments = '"weather and time in parallel please"}'
    expected = [("get_weather", '{"city":' + arguments), ("get_time", '{"zone":' + arguments)]
    assert [(c.name, c.arguments_json) for c in answer.tool_calls] == expected
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert [(c.name, c.arguments_json) for c in finished.tool_calls] == expected
    starts = [e for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert [(s.index, s.id, s.name) for s in starts] == [
        (0, finished.tool_calls[0].id, "get_weather"),
        (1, finished.tool_calls[1].id, "get_time"),
    ]
    assert assembled(events) == {0: expected[0][1], 1: expected[1][1]}
    assert len({c.id for c in finished.tool_calls}) == 2


@pytest.mark.parametrize(
    ("choice", "wire", "calls"),
    [
        ("required", "required", ["get_weather", "get_time"]),
        ("none", "none", []),
        ("auto", "auto", ["get_weather", "get_time"]),
        ("get_time", {"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
    ],
)
async def test_tool_choice_takes_its_native_forms(choice: str, wire: Any, calls: list[str]) -> None:
    flavour = OpenAIFlavour.OPENAI
    request = ask(flavour, ChatMessage("user", "parallel now"), tool_choice=choice)
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(request)
    assert sent(server)["tool_choice"] == wire
    assert [c.name for c in answer.tool_calls] == calls
    assert (answer.finish_reason == "tool_calls") == bool(calls)


@pytest.mark.parametrize("flavour", [OpenAIFlavour.OPENAI, OpenAIFlavour.OPENROUTER])
async def test_parallel_tool_calls_false_is_sent_and_honoured(flavour: OpenAIFlavour) -> None:
    request = ask(flavour, ChatMessage("user", "parallel now"), parallel_tool_calls=False)
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(request)
    assert sent(server)["parallel_tool_calls"] is False
    assert [c.name for c in answer.tool_calls] == ["get_weather"]


async def test_together_cannot_forbid_parallel_calls_and_nothing_is_sent() -> None:
    flavour = OpenAIFlavour.TOGETHER
    async with open_openai(flavour) as (provider, server):
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(
                ask(flavour, ChatMessage("user", "hi"), parallel_tool_calls=False)
            )
        allowed = await provider.complete(
            ask(flavour, ChatMessage("user", "parallel"), parallel_tool_calls=True)
        )
    assert raised.value.setting == "parallel_tool_calls" and server.stats.request_count == 1
    assert "parallel_tool_calls" not in sent(server) and len(allowed.tool_calls) == 2


# -- images and documents -------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS, ids=IDS)
async def test_images_and_text_documents_reach_the_api_as_native_parts(
    flavour: OpenAIFlavour,
) -> None:
    parts = (
        ImagePart(data=PNG, media_type="image/png"),
        ImagePart(url="https://example.org/cat.jpg"),
        DocumentPart(b"line one\nline two", "text/plain", name="notes.txt"),
    )
    request = ask(flavour, ChatMessage("user", "describe these", parts=parts), tools=())
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(request)
    png_url = "data:image/png;base64,iVBORw0KGgotZmFrZS1pbWFnZQ=="
    assert sent(server)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe these"},
                {"type": "image_url", "image_url": {"url": png_url}},
                {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}},
                {"type": "text", "text": "notes.txt\n\nline one\nline two"},
            ],
        }
    ]
    # The fakes' tokenizer: 2 + 5 words of text, 85 per image.
    assert answer.usage is not None and answer.usage.prompt_tokens == 2 + 85 + 85 + 5


@pytest.mark.parametrize("flavour", [OpenAIFlavour.OPENAI, OpenAIFlavour.OPENROUTER])
async def test_a_pdf_goes_as_a_file_part_with_a_data_url(flavour: OpenAIFlavour) -> None:
    document = DocumentPart(PDF, "application/pdf", name="report.pdf")
    request = ask(flavour, ChatMessage("user", "summarise", parts=(document,)), tools=())
    async with open_openai(flavour) as (provider, server):
        await provider.complete(request)
    assert sent(server)["messages"][0]["content"] == [
        {"type": "text", "text": "summarise"},
        {
            "type": "file",
            "file": {
                "filename": "report.pdf",
                "file_data": "data:application/pdf;base64,JVBERi0xLjQgZmFrZSBkb2N1bWVudA==",
            },
        },
    ]


CALLED = ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "get_weather", "{}"),))
UNSUPPORTED = [
    (
        OpenAIFlavour.TOGETHER,
        [ChatMessage("user", "read", parts=(DocumentPart(PDF, "application/pdf"),))],
        {},
        "documents",
    ),
    (
        OpenAIFlavour.OPENAI,
        [
            ChatMessage("user", "look"),
            CALLED,
            ChatMessage(
                "tool", "see", parts=(ImagePart(url="https://x.org/a.png"),), tool_call_id="c1"
            ),
        ],
        {},
        "images",
    ),
    (
        OpenAIFlavour.TOGETHER,
        [ChatMessage("user", "hi")],
        {"reasoning": Reasoning("minimal")},
        "reasoning.effort",
    ),
    (
        OpenAIFlavour.OPENROUTER,
        [ChatMessage("user", "hi"), replace(CALLED, cache_breakpoint=True)],
        {},
        "cache_breakpoint",
    ),
]


@pytest.mark.parametrize(("flavour", "messages", "fields", "setting"), UNSUPPORTED)
async def test_what_a_dialect_cannot_express_is_refused_before_any_request(
    flavour: OpenAIFlavour, messages: list[ChatMessage], fields: dict[str, Any], setting: str
) -> None:
    request = ask(flavour, *messages, **fields)
    async with open_openai(flavour) as (provider, server):
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(request)
        with pytest.raises(UnsupportedByProvider):
            await collect(provider, request)
    assert (raised.value.provider, raised.value.setting) == (flavour.value, setting)
    assert server.stats.request_count == 0


# -- reasoning and thinking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavour", "reasoning", "wire"),
    [
        (OpenAIFlavour.OPENAI, Reasoning("high"), {"reasoning_effort": "high"}),
        (OpenAIFlavour.OPENAI, Reasoning(budget_tokens=100), {"reasoning_effort": "minimal"}),
        (OpenAIFlavour.OPENAI, Reasoning(budget_tokens=2000), {"reasoning_effort": "low"}),
        (OpenAIFlavour.OPENAI, Reasoning(budget_tokens=8000), {"reasoning_effort": "medium"}),
        (OpenAIFlavour.OPENAI, Reasoning(budget_tokens=32000), {"reasoning_effort": "high"}),
        (OpenAIFlavour.OPENAI, Reasoning(include_thoughts=True), {}),
        (OpenAIFlavour.TOGETHER, Reasoning(budget_tokens=100), {"reasoning_effort": "low"}),
        (
            OpenAIFlavour.TOGETHER,
            Reasoning(include_thoughts=True),
            {"reasoning": {"enabled": True}},
        ),
        (OpenAIFlavour.OPENROUTER, Reasoning("low"), {"reasoning": {"effort": "low"}}),
        (
            OpenAIFlavour.OPENROUTER,
            Reasoning("low", budget_tokens=3000),
            {"reasoning": {"max_tokens": 3000}},
        ),
        (
            OpenAIFlavour.OPENROUTER,
            Reasoning(include_thoughts=True),
            {"reasoning": {"enabled": True}},
        ),
    ],
)
async def test_reasoning_takes_each_dialects_native_form(
    flavour: OpenAIFlavour, reasoning: Reasoning, wire: dict[str, Any]
) -> None:
    request = ask(flavour, ChatMessage("user", "think hard"), tools=(), reasoning=reasoning)
    async with open_openai(flavour) as (provider, server):
        await provider.complete(request)
    body = sent(server)
    assert {k: body[k] for k in ("reasoning_effort", "reasoning") if k in body} == wire


async def test_openai_reports_reasoning_tokens_but_never_thinking_text() -> None:
    flavour = OpenAIFlavour.OPENAI
    request = ask(
        flavour,
        ChatMessage("user", "think hard"),
        tools=(),
        reasoning=Reasoning("high", include_thoughts=True),
    )
    async with open_openai(flavour) as (provider, _):
        answer = await provider.complete(request)
        finished = (await collect(provider, request))[-1]
    # "Thinking about: think hard" is 4 words; the fake counts 8 reasoning tokens a word at high.
    usage = Usage(prompt_tokens=2, completion_tokens=12 + 32, reasoning_tokens=32)
    assert answer.usage == usage and answer.thinking == ()
    assert isinstance(finished, StreamFinished)
    assert finished.usage == usage and finished.thinking == ()


async def test_together_returns_its_reasoning_text_and_never_takes_it_back() -> None:
    flavour = OpenAIFlavour.TOGETHER
    reasoning = Reasoning("medium")
    question = ChatMessage("user", "why is the sky blue")
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(ask(flavour, question, tools=(), reasoning=reasoning))
        events = await collect(provider, ask(flavour, question, tools=(), reasoning=reasoning))
        turn = ChatMessage("assistant", answer.content, parts=answer.thinking)
        await provider.complete(
            ask(flavour, question, turn, ChatMessage("user", "and why red at dusk"), tools=())
        )
    thought = Thinking("Thinking about: why is the sky blue", provider="together")
    assert answer.thinking == (thought,)
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thinking == thought.text
    assert isinstance(events[-1], StreamFinished) and events[-1].thinking == (thought,)
    assert sent(server)["messages"][1] == {"role": "assistant", "content": answer.content}


async def test_openrouter_thinking_round_trips_signed_and_verbatim() -> None:
    flavour = OpenAIFlavour.OPENROUTER
    question = ChatMessage("user", "what is the weather")
    reasoning = Reasoning(budget_tokens=2048)
    async with open_openai(flavour) as (provider, server):
        first = await provider.complete(ask(flavour, question, reasoning=reasoning))
        streamed = await collect(provider, ask(flavour, question, reasoning=reasoning))
        (call,) = first.tool_calls
        foreign = Thinking("elsewhere", signature="sig", provider="anthropic")
        turn = ChatMessage(
            "assistant", "", parts=(foreign, *first.thinking), tool_calls=first.tool_calls
        )
        result = ChatMessage("tool", "fog", tool_call_id=call.id)
        second = await provider.complete(ask(flavour, question, turn, result, reasoning=reasoning))
        back = sent(server)["messages"][1]
        forged = ChatMessage(
            "assistant",
            "",
            parts=(Thinking(first.thinking[0].text, "forged", provider="openrouter"),),
            tool_calls=first.tool_calls,
        )
        with pytest.raises(UpstreamRejected, match="Invalid `signature`"):
            await provider.complete(ask(flavour, question, forged, result, reasoning=reasoning))
    text = "Thinking about: what is the weather"
    assert first.thinking == (Thinking(text, signature=sign(text), provider="openrouter"),)
    assert back["reasoning_details"] == [
        {"type": "reasoning.text", "text": text, "signature": sign(text)}
    ]
    assert second.content == "Tool said: fog"
    finished = streamed[-1]
    assert isinstance(finished, StreamFinished) and finished.thinking == first.thinking
    assert "".join(e.text for e in streamed if isinstance(e, ThinkingDelta)) == text
    assert finished.usage is not None and finished.usage.reasoning_tokens == 6  # its words


# -- prompt caching -------------------------------------------------------------------------------


LONG_RULES = " ".join(f"rule{i}" for i in range(1300))


@pytest.mark.parametrize("flavour", [OpenAIFlavour.OPENAI, OpenAIFlavour.OPENROUTER])
async def test_automatic_caching_ignores_the_breakpoint_and_reports_the_read(
    flavour: OpenAIFlavour,
) -> None:
    model = "openai/gpt-4o" if flavour is OpenAIFlavour.OPENROUTER else "gpt-4o"
    system = ChatMessage("system", LONG_RULES, cache_breakpoint=True)
    async with open_openai(flavour) as (provider, server):
        first = await provider.complete(
            ask(flavour, system, ChatMessage("user", "one"), model=model, tools=())
        )
        second = await provider.complete(
            ask(flavour, system, ChatMessage("user", "two"), model=model, tools=())
        )
        streamed = await collect(
            provider, ask(flavour, system, ChatMessage("user", "three"), model=model, tools=())
        )
    assert sent(server)["messages"][0] == {"role": "system", "content": LONG_RULES}
    assert first.usage is not None and first.usage.cache_read_tokens == 0
    # 1300 shared tokens: cached as 1024 plus two whole blocks of 128.
    assert second.usage is not None
    assert (second.usage.prompt_tokens, second.usage.cache_read_tokens) == (1301, 1280)
    finished = streamed[-1]
    assert isinstance(finished, StreamFinished) and finished.usage is not None
    assert finished.usage.cache_read_tokens == 1280


async def test_openrouter_marks_anthropic_cache_breakpoints_and_reports_write_then_read() -> None:
    flavour = OpenAIFlavour.OPENROUTER
    system = ChatMessage("system", LONG_RULES, cache_breakpoint=True)
    async with open_openai(flavour) as (provider, server):
        first = await provider.complete(ask(flavour, system, ChatMessage("user", "one"), tools=()))
        second = await provider.complete(ask(flavour, system, ChatMessage("user", "two"), tools=()))
        streamed = await collect(provider, ask(flavour, system, ChatMessage("user", "3"), tools=()))
    assert sent(server)["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": LONG_RULES, "cache_control": {"type": "ephemeral"}}],
    }
    assert first.usage is not None and second.usage is not None
    assert (first.usage.cache_write_tokens, first.usage.cache_read_tokens) == (1300, 0)
    assert (second.usage.cache_write_tokens, second.usage.cache_read_tokens) == (0, 1300)
    assert second.usage.prompt_tokens == 1301  # reads and writes are inside prompt_tokens
    finished = streamed[-1]
    assert isinstance(finished, StreamFinished) and finished.usage is not None
    assert finished.usage.cache_read_tokens == 1300


async def test_a_breakpoint_after_an_image_marks_the_image_part() -> None:
    flavour = OpenAIFlavour.OPENROUTER
    message = ChatMessage(
        "user", "look", parts=(ImagePart(url="https://example.org/a.png"),), cache_breakpoint=True
    )
    async with open_openai(flavour) as (provider, server):
        await provider.complete(ask(flavour, message, tools=()))
    assert sent(server)["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.org/a.png"},
            "cache_control": {"type": "ephemeral"},
        },
    ]


async def test_several_text_parts_join_into_one_string_where_together_needs_one() -> None:
    flavour = OpenAIFlavour.TOGETHER
    call = ToolCall("c1", "get_weather", "{}")
    messages = (
        ChatMessage("user", "one", parts=(TextPart("two"),)),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "three", parts=(TextPart("four"),), tool_call_id="c1"),
    )
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(ask(flavour, *messages))
    assert [m["content"] for m in sent(server)["messages"]] == [
        [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        None,
        "three\n\nfour",
    ]
    assert answer == Completion(
        "Tool said: three\n\nfour", MODELS[flavour], "stop", Usage(1 + 1 + 1 + 2, 3)
    )
