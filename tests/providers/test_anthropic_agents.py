"""The Anthropic adapter in agent conversations: tools, tool results, images and documents,
thinking, prompt caching, and what it refuses; against the fake, direct and on Vertex AI."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.errors import UnsupportedByProvider, UpstreamRejected
from delos.runtime.providers.anthropic import AnthropicEndpoint, AnthropicProvider
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
from delos.testing.fake_anthropic import REDACTION_TRIGGER, fake_anthropic_handler

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
KEY = "sk-ant-test-key"
TOKEN = "ya29.test-token"
MODEL = "claude-sonnet-4-20250514"
VERTEX_MODEL = "claude-sonnet-4@20250514"
LOOKUP = Tool(
    "lookup",
    "Look a city up.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool(
    "clock",
    "Tell the time.",
    {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)
LOOKUP_NATIVE = {
    "name": "lookup",
    "description": "Look a city up.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG = b"\x89PNG\r\n\x1a\nfake image bytes"
PDF = b"%PDF-1.7 fake"


@asynccontextmanager
async def open_anthropic(
    *, vertex: bool = False
) -> AsyncIterator[tuple[AnthropicProvider, FakeServer]]:
    handler = fake_anthropic_handler(FakeControl(), api_key=KEY, access_token=TOKEN)
    async with open_server(handler) as server, httpx.AsyncClient() as client:
        if vertex:
            provider = AnthropicProvider.for_vertex(
                project="proj-1",
                location="us-east5",
                access_token=TOKEN,
                client=client,
                catalog=CATALOG,
                base_url=server.url,
            )
        else:
            endpoint = AnthropicEndpoint.direct(KEY, server.url)
            provider = AnthropicProvider(endpoint, client=client, catalog=CATALOG)
        yield provider, server


def ask(*messages: ChatMessage, vertex: bool = False, **fields: Any) -> ChatRequest:
    return ChatRequest(VERTEX_MODEL if vertex else MODEL, messages, **fields)


def user(text: str, **fields: Any) -> ChatMessage:
    return ChatMessage("user", text, **fields)


async def collect(provider: AnthropicProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def finished(events: Sequence[StreamEvent]) -> StreamFinished:
    last = events[-1]
    assert isinstance(last, StreamFinished)
    return last


def sent_body(server: FakeServer) -> Any:
    return server.stats.requests[-1].json()


def fragments(value: dict[str, str]) -> list[str]:
    """The fake's ``input_json_delta`` fragments of a tool input (8 characters each)."""
    text = json.dumps(value)
    return [text[i : i + 8] for i in range(0, len(text), 8)]


# -- tool declarations and choices ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "native"),
    [
        ("", None, None),
        ("", True, None),
        ("", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),  # no call at all: nothing to run in parallel
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("lookup", None, {"type": "tool", "name": "lookup"}),
    ],
)
async def test_tools_and_tool_choice_are_sent_natively(
    tool_choice: str, parallel: bool | None, native: dict[str, Any] | None
) -> None:
    request = ask(
        user("weather in Paris"),
        tools=(LOOKUP,),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
    )
    async with open_anthropic() as (provider, server):
        await provider.complete(request)
    body = sent_body(server)
    assert body["tools"] == [LOOKUP_NATIVE]
    assert body.get("tool_choice") == native


async def test_a_schema_without_type_is_sent_as_an_object() -> None:
    tool = Tool("ping", "", {"properties": {}})
    async with open_anthropic() as (provider, server):
        await provider.complete(ask(user("hello"), tools=(tool,)))
    assert sent_body(server)["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
    ]


# -- the agent loop -------------------------------------------------------------------------------


async def test_an_agent_loop_calls_a_tool_then_answers_from_its_result() -> None:
    question = user("weather in Paris")
    async with open_anthropic() as (provider, server):
        called = await provider.complete(ask(question, tools=(LOOKUP,)))
        call = ToolCall("toolu_01Fake0000000000000100", "lookup", '{"city":"weather in Paris"}')
        assert called == Completion(
            content="",
            model=MODEL,
            finish_reason="tool_calls",
            usage=Usage(3, 4),  # 3 prompt words; 4 fragments of the input
            tool_calls=(call,),
        )
        history = (
            question,
            ChatMessage("assistant", "", tool_calls=called.tool_calls),
            ChatMessage("tool", "sunny, 21 C", tool_call_id=call.id),
        )
        answer = await provider.complete(ask(*history, tools=(LOOKUP,)))
        body = sent_body(server)
    assert body["messages"] == [
        {"role": "user", "content": "weather in Paris"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": "lookup",
                    "input": {"city": "weather in Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}],
        },
    ]
    assert (answer.content, answer.finish_reason, answer.tool_calls) == (
        "Tool said: sunny, 21 C",
        "stop",
        (),
    )


async def test_a_streamed_agent_loop_carries_each_fragment_byte_for_byte() -> None:
    question = user("weather in Paris")
    async with open_anthropic() as (provider, _):
        events = await collect(provider, ask(question, tools=(LOOKUP,)))
        end = finished(events)
        history = (
            question,
            ChatMessage("assistant", "", tool_calls=end.tool_calls),
            ChatMessage("tool", "sunny", tool_call_id=end.tool_calls[0].id),
        )
        answer = await collect(provider, ask(*history, tools=(LOOKUP,)))
    pieces = fragments({"city": "weather in Paris"})
    call_id = "toolu_01Fake0000000000000100"
    assert events[:-1] == [
        ToolCallDelta(0, id=call_id, name="lookup"),
        *(ToolCallDelta(0, arguments_delta=piece) for piece in pieces),
    ]
    assert end == StreamFinished(
        "tool_calls",
        Usage(3, len(pieces)),
        MODEL,
        (ToolCall(call_id, "lookup", "".join(pieces)),),
    )
    assert end.tool_calls[0].arguments_json == '{"city": "weather in Paris"}'  # as streamed
    assert "".join(e.text for e in answer if isinstance(e, TextDelta)) == "Tool said: sunny"
    assert finished(answer).finish_reason == "stop"


async def test_parallel_calls_are_answered_by_one_user_turn_of_tool_results() -> None:
    question = user("parallel lookups")
    async with open_anthropic() as (provider, server):
        called = await provider.complete(ask(question, tools=(LOOKUP, CLOCK)))
        first, second = called.tool_calls
        history = (
            question,
            ChatMessage("assistant", "Checking both.", tool_calls=called.tool_calls),
            ChatMessage("tool", "sunny", tool_call_id=first.id),
            ChatMessage("tool", "noon", tool_call_id=second.id),
        )
        answer = await provider.complete(ask(*history, tools=(LOOKUP, CLOCK)))
        body = sent_body(server)
    assert [(c.name, c.arguments_json) for c in called.tool_calls] == [
        ("lookup", '{"city":"parallel lookups"}'),
        ("clock", '{"zone":"parallel lookups"}'),
    ]
    assert first.id != second.id
    assert [b["type"] for b in body["messages"][1]["content"]] == ["text", "tool_use", "tool_use"]
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": first.id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": second.id, "content": "noon"},
        ],
    }
    assert answer.content == "Tool said: sunny; noon"


async def test_parallel_calls_stream_with_ordinals_not_block_indexes() -> None:
    async with open_anthropic() as (provider, _):
        events = await collect(
            provider,
            ask(user("parallel lookups"), tools=(LOOKUP, CLOCK), reasoning=Reasoning("low")),
        )
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    # Thinking is block 0, the calls blocks 1 and 2; their ordinals are 0 and 1.
    assert [(c.index, c.name) for c in calls if c.name] == [(0, "lookup"), (1, "clock")]
    end = finished(events)
    for ordinal, call in enumerate(end.tool_calls):
        pieces = [c.arguments_delta for c in calls if c.index == ordinal]
        assert "".join(pieces) == call.arguments_json


async def test_without_parallel_calls_the_model_calls_one_tool() -> None:
    request = ask(user("parallel lookups"), tools=(LOOKUP, CLOCK), parallel_tool_calls=False)
    async with open_anthropic() as (provider, _):
        answer = await provider.complete(request)
    assert [c.name for c in answer.tool_calls] == ["lookup"]


async def test_a_user_remark_after_tool_results_follows_them_in_the_same_turn() -> None:
    call = ToolCall("toolu_1", "lookup", '{"city":"Paris"}')
    history = (
        user("weather in Paris"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage(
            "tool",
            "",
            parts=(TextPart("sunny"), ImagePart(data=PNG, media_type="image/png")),
            tool_call_id="toolu_1",
        ),
        user("and tomorrow?"),
    )
    async with open_anthropic() as (provider, server):
        await provider.complete(ask(*history, tools=(LOOKUP,)))
    png = base64.b64encode(PNG).decode()
    assert sent_body(server)["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "sunny"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": png},
                    },
                ],
            },
            {"type": "text", "text": "and tomorrow?"},
        ],
    }


async def test_structured_output_with_tools_lets_the_model_call_them_or_answer() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    async with open_anthropic() as (provider, server):
        called = await provider.complete(
            ask(user("weather"), tools=(LOOKUP,), output_schema=schema)
        )
        body = sent_body(server)
    assert [t["name"] for t in body["tools"]] == ["lookup", "output"]
    assert body["tool_choice"] == {"type": "any"}
    assert called.finish_reason == "tool_calls" and called.tool_calls[0].name == "lookup"


# -- images and documents -------------------------------------------------------------------------


async def test_images_and_documents_reach_the_fake_in_native_form() -> None:
    message = user(
        "describe these",
        parts=(
            ImagePart(data=PNG, media_type="image/png"),
            ImagePart(url="https://example.com/cat.jpg"),
            ImagePart(url="data:image/gif;base64," + base64.b64encode(b"GIF89a").decode()),
            DocumentPart(PDF, "application/pdf", name="report.pdf"),
            DocumentPart(b"plain notes", "text/plain", name="notes"),
            DocumentPart(b"untitled", "text/plain"),
        ),
    )
    async with open_anthropic() as (provider, server):
        answer = await provider.complete(ask(message))
    assert answer.finish_reason == "stop"
    assert sent_body(server)["messages"][0]["content"] == [
        {"type": "text", "text": "describe these"},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(PNG).decode(),
            },
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"},
        },
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(PDF).decode(),
            },
            "title": "report.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"},
            "title": "notes",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "untitled"},
        },
    ]


async def test_vertex_takes_image_bytes_and_refuses_image_urls_before_sending() -> None:
    with_bytes = user("look", parts=(ImagePart(data=PNG, media_type="image/png"),))
    with_url = user("look", parts=(ImagePart(url="https://example.com/cat.jpg"),))
    async with open_anthropic(vertex=True) as (provider, server):
        answer = await provider.complete(ask(with_bytes, vertex=True))
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(ask(with_url, vertex=True))
    assert answer.finish_reason == "stop"
    assert server.stats.request_count == 1
    assert raised.value.setting == "image url" and raised.value.provider == "vertex"
    assert "DELOS_RUNTIME_FETCH_IMAGE_URLS=true" in raised.value.message


# -- thinking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "thinking", "sent_max_tokens"),
    [
        (Reasoning(effort="minimal"), None, 1024, 5120),
        (Reasoning(effort="low"), None, 2048, 6144),
        (Reasoning(effort="medium"), None, 8192, 12288),
        (Reasoning(effort="high"), None, 24576, 28672),
        (Reasoning(include_thoughts=True), None, 8192, 12288),
        (Reasoning(effort="high", budget_tokens=2000), 3000, 2000, 3000),
    ],
)
async def test_reasoning_becomes_a_thinking_budget_below_max_tokens(
    reasoning: Reasoning, max_tokens: int | None, thinking: int, sent_max_tokens: int
) -> None:
    async with open_anthropic() as (provider, server):
        await provider.complete(ask(user("think"), reasoning=reasoning, max_tokens=max_tokens))
    body = sent_body(server)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": thinking}
    assert body["max_tokens"] == sent_max_tokens


async def test_no_reasoning_asked_sends_no_thinking() -> None:
    async with open_anthropic() as (provider, server):
        answer = await provider.complete(ask(user("hi"), reasoning=Reasoning()))
    assert "thinking" not in sent_body(server) and answer.thinking == ()


@pytest.mark.parametrize("vertex", [False, True], ids=["direct", "vertex"])
async def test_thinking_round_trips_signed_before_the_tool_calls(vertex: bool) -> None:
    question = user("weather in Paris")
    reasoning = Reasoning(effort="low")
    name = "vertex" if vertex else "anthropic"
    async with open_anthropic(vertex=vertex) as (provider, server):
        called = await provider.complete(
            ask(question, tools=(LOOKUP,), reasoning=reasoning, vertex=vertex)
        )
        thought = "Thinking about: weather in Paris"
        assert called.thinking == (Thinking(thought, sign(thought), provider=name),)
        assert called.usage == Usage(3, 9, reasoning_tokens=5)  # 5 thought words, 4 fragments
        history = (
            question,
            ChatMessage("assistant", "", parts=called.thinking, tool_calls=called.tool_calls),
            ChatMessage("tool", "sunny", tool_call_id=called.tool_calls[0].id),
        )
        answer = await provider.complete(
            ask(*history, tools=(LOOKUP,), reasoning=reasoning, vertex=vertex)
        )
        body = sent_body(server)
    assert body["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": thought,
        "signature": sign(thought),
    }
    assert body["messages"][1]["content"][1]["type"] == "tool_use"
    assert answer.content == "Tool said: sunny"


async def test_thinking_streams_as_deltas_and_its_signature_arrives_with_the_finish() -> None:
    async with open_anthropic() as (provider, _):
        events = await collect(provider, ask(user("say hi"), reasoning=Reasoning(effort="low")))
    thinking = [e.text for e in events if isinstance(e, ThinkingDelta)]
    assert thinking == ["Thinking", " about:", " say", " hi"]
    assert isinstance(events[len(thinking)], TextDelta)  # the answer comes after the thinking
    end = finished(events)
    thought = "Thinking about: say hi"
    assert end.thinking == (Thinking(thought, sign(thought), provider="anthropic"),)
    assert end.usage == Usage(2, 16, reasoning_tokens=4)


async def test_redacted_thinking_is_returned_and_sent_back_verbatim() -> None:
    question = user(f"weather {REDACTION_TRIGGER}")
    reasoning = Reasoning(effort="low")
    async with open_anthropic() as (provider, server):
        called = await provider.complete(ask(question, tools=(LOOKUP,), reasoning=reasoning))
        streamed = finished(
            await collect(provider, ask(question, tools=(LOOKUP,), reasoning=reasoning))
        )
        visible, redacted = called.thinking
        history = (
            question,
            ChatMessage("assistant", "", parts=called.thinking, tool_calls=called.tool_calls),
            ChatMessage("tool", "sunny", tool_call_id=called.tool_calls[0].id),
        )
        answer = await provider.complete(ask(*history, tools=(LOOKUP,), reasoning=reasoning))
        body = sent_body(server)
    assert redacted.redacted_data and not redacted.text and redacted.provider == "anthropic"
    assert streamed.thinking == called.thinking
    assert body["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": visible.text, "signature": visible.signature},
        {"type": "redacted_thinking", "data": redacted.redacted_data},
    ]
    assert answer.content == "Tool said: sunny"


async def test_thinking_made_elsewhere_is_not_sent_and_the_fake_says_it_is_missing() -> None:
    thought = "Thinking about: weather in Paris"
    call = ToolCall("toolu_1", "lookup", '{"city":"Paris"}')
    for made_by, signature in (("vertex", sign(thought)), ("anthropic", "forged")):
        history = (
            user("weather in Paris"),
            ChatMessage(
                "assistant",
                "",
                parts=(Thinking(thought, signature, provider=made_by),),
                tool_calls=(call,),
            ),
            ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
        )
        async with open_anthropic() as (provider, _):
            with pytest.raises(UpstreamRejected) as raised:
                await provider.complete(
                    ask(*history, tools=(LOOKUP,), reasoning=Reasoning(effort="low"))
                )
        if made_by == "vertex":  # dropped: the turn lacks its thinking
            assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in (
                raised.value.message
            )
        else:  # sent, and refused
            assert "messages.1.content.0: Invalid `signature` in `thinking` block" in (
                raised.value.message
            )


# -- prompt caching -------------------------------------------------------------------------------


@pytest.mark.parametrize("vertex", [False, True], ids=["direct", "vertex"])
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_cache_breakpoint_writes_the_prefix_then_reads_it(
    vertex: bool, streamed: bool
) -> None:
    messages = (
        ChatMessage("system", "you answer in five words", cache_breakpoint=True),
        user("a long shared document of eight words", cache_breakpoint=True),
        ChatMessage("assistant", "noted"),
        user("so?"),
    )
    request = ask(*messages, vertex=vertex)
    async with open_anthropic(vertex=vertex) as (provider, server):
        usages = []
        for _ in range(2):
            if streamed:
                usages.append(finished(await collect(provider, request)).usage)
            else:
                usages.append((await provider.complete(request)).usage)
        body = sent_body(server)
    assert body["system"] == [
        {"type": "text", "text": "you answer in five words", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["messages"][0] == {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "a long shared document of eight words",
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "so?"},
    ]
    # 5 system + 7 user words up to the breakpoint; 2 more after it.
    assert usages == [
        Usage(14, 12, cache_write_tokens=12),
        Usage(14, 12, cache_read_tokens=12),
    ]


async def test_a_breakpoint_on_a_tool_result_or_an_assistant_turn_marks_its_last_block() -> None:
    call = ToolCall("toolu_1", "lookup", '{"city":"Paris"}')
    thought = Thinking("hmm", sign("hmm"), provider="anthropic")
    history = (
        user("weather in Paris"),
        ChatMessage("assistant", "", parts=(thought,), tool_calls=(call,), cache_breakpoint=True),
        ChatMessage("tool", "sunny", tool_call_id="toolu_1", cache_breakpoint=True),
    )
    async with open_anthropic() as (provider, server):
        await provider.complete(ask(*history, tools=(LOOKUP,)))
    messages = sent_body(server)["messages"]
    assert [("cache_control" in b) for b in messages[1]["content"]] == [False, True]
    assert messages[2]["content"][-1]["cache_control"] == {"type": "ephemeral"}


# -- what has no native form ----------------------------------------------------------------------


CALL = ToolCall("toolu_1", "lookup", '{"city":"Paris"}')

UNSUPPORTED: list[tuple[str, dict[str, Any], str]] = [
    ("budget", {"reasoning": Reasoning(budget_tokens=512)}, "reasoning"),
    ("max-tokens", {"reasoning": Reasoning(budget_tokens=2048), "max_tokens": 2048}, "max_tokens"),
    ("temperature", {"reasoning": Reasoning(effort="low"), "temperature": 0.5}, "temperature"),
    ("top-p", {"reasoning": Reasoning(effort="low"), "top_p": 0.9}, "top_p"),
    (
        "forced-tool",
        {"reasoning": Reasoning(effort="low"), "tools": (LOOKUP,), "tool_choice": "required"},
        "tool_choice",
    ),
    (
        "named-tool",
        {"reasoning": Reasoning(effort="low"), "tools": (LOOKUP,), "tool_choice": "lookup"},
        "tool_choice",
    ),
    (
        "schema-thinking",
        {"reasoning": Reasoning(effort="low"), "output_schema": {"type": "object"}},
        "output_schema",
    ),
    (
        "schema-required",
        {"tools": (LOOKUP,), "tool_choice": "required", "output_schema": {"type": "object"}},
        "output_schema",
    ),
    (
        "output-name",
        {"tools": (Tool("output", "", {"type": "object"}),), "output_schema": {"type": "object"}},
        "tools",
    ),
    ("choice-without-tools", {"tool_choice": "required"}, "tool_choice"),
    ("unknown-tool", {"tools": (LOOKUP,), "tool_choice": "clock"}, "tool_choice"),
    ("array-schema", {"tools": (Tool("list", "", {"type": "array"}),)}, "tools"),
]


@pytest.mark.parametrize(
    ("fields", "setting"), [(f, s) for _, f, s in UNSUPPORTED], ids=[i for i, _, _ in UNSUPPORTED]
)
async def test_settings_without_a_native_form_are_refused_before_sending(
    fields: dict[str, Any], setting: str
) -> None:
    async with open_anthropic() as (provider, server):
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(ask(user("hi"), **fields))
        with pytest.raises(UnsupportedByProvider):
            await collect(provider, ask(user("hi"), **fields))
    assert raised.value.setting == setting and raised.value.provider == "anthropic"
    assert server.stats.request_count == 0


UNSUPPORTED_MESSAGES: list[tuple[str, tuple[ChatMessage, ...], str]] = [
    (
        "tiff",
        (user("x", parts=(ImagePart(data=b"II*", media_type="image/tiff"),)),),
        "images",
    ),
    (
        "docx",
        (user("x", parts=(DocumentPart(b"PK", "application/msword"),)),),
        "documents",
    ),
    (
        "assistant-image",
        (
            user("x"),
            ChatMessage("assistant", "y", parts=(ImagePart(data=PNG, media_type="image/png"),)),
            user("z"),
        ),
        "images",
    ),
    (
        "system-image",
        (
            ChatMessage("system", "s", parts=(ImagePart(data=PNG, media_type="image/png"),)),
            user("x"),
        ),
        "system",
    ),
    (
        "user-thinking",
        (user("x", parts=(Thinking("t", "s", provider="anthropic"),)),),
        "thinking",
    ),
    (
        "bad-arguments",
        (
            user("x"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "lookup", "[1]"),)),
            ChatMessage("tool", "r", tool_call_id="t1"),
        ),
        "tool_calls",
    ),
    (
        "five-breakpoints",
        tuple(
            ChatMessage(role, f"turn {n}", cache_breakpoint=True)
            for n, role in enumerate(["user", "assistant", "user", "assistant", "user"])
        ),
        "cache_breakpoint",
    ),
]


@pytest.mark.parametrize(
    ("messages", "setting"),
    [(m, s) for _, m, s in UNSUPPORTED_MESSAGES],
    ids=[i for i, _, _ in UNSUPPORTED_MESSAGES],
)
async def test_contents_without_a_native_form_are_refused_before_sending(
    messages: tuple[ChatMessage, ...], setting: str
) -> None:
    async with open_anthropic() as (provider, server):
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(ask(*messages, tools=(LOOKUP,)))
    assert raised.value.setting == setting
    assert server.stats.request_count == 0
