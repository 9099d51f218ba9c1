"""The Ollama adapter in agent conversations: tools, thinking, images and documents, against the
Ollama fake (and hand-written NDJSON), on asyncio and trio."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError, UpstreamRejected
from delos.runtime.providers._parts import deterministic_call_id
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
from delos.testing import FakeRequest, FakeResponse
from delos.testing._behaviour import count_tokens
from tests.providers.test_ollama import (
    collect,
    final,
    line,
    ndjson,
    open_fake,
    open_ollama,
    sent_body,
    stream_of,
)

pytestmark = pytest.mark.anyio

MODELS = ("llama3.2:latest", "qwen3:latest", "nomic-embed-text:latest")
CALL_ID = re.compile(r"call_[a-z0-9]{8}")
WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    "get_time",
    "The time in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "utc": {"type": "boolean"}},
        "required": ["city", "utc"],
    },
)
WIRE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": dict(WEATHER.parameters),
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a city",
            "parameters": dict(TIME.parameters),
        },
    },
]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR fake image bytes"
PNG_BASE64 = base64.b64encode(PNG).decode()


def ask(text: str, *, model: str = "llama3.2", **fields: Any) -> ChatRequest:
    fields.setdefault("tools", (WEATHER, TIME))
    return ChatRequest(model, (ChatMessage("user", text),), **fields)


def answered(request: ChatRequest, calls: tuple[ToolCall, ...], *results: str) -> ChatRequest:
    """``request`` continued with the assistant's ``calls`` and one tool message per result."""
    tool_messages = tuple(
        ChatMessage("tool", result, tool_call_id=call.id)
        for call, result in zip(calls, results, strict=True)
    )
    messages = (*request.messages, ChatMessage("assistant", "", tool_calls=calls), *tool_messages)
    return ChatRequest(request.model, messages, tools=request.tools)


def finished(events: list[StreamEvent]) -> StreamFinished:
    assert sum(isinstance(e, StreamFinished) for e in events) == 1
    last = events[-1]
    assert isinstance(last, StreamFinished)
    return last


# -- the agent loop -----------------------------------------------------------------------------


async def test_a_tool_call_then_its_result_unary() -> None:
    request = ask("weather in Oslo")
    async with open_fake(models=MODELS) as (server, provider):
        first = await provider.complete(request)
        body = sent_body(server)
        assert body["tools"] == WIRE_TOOLS
        assert body["messages"] == [{"role": "user", "content": "weather in Oslo"}]
        (call,) = first.tool_calls
        assert CALL_ID.fullmatch(call.id)
        assert (call.name, call.arguments_json) == ("get_weather", '{"city":"weather in Oslo"}')
        assert (first.content, first.finish_reason, first.thinking) == ("", "tool_calls", ())
        assert first.usage == Usage(3, 3)  # '{"city":"weather', 'in', 'Oslo"}'

        second = await provider.complete(answered(request, first.tool_calls, "12 degrees"))
        body = sent_body(server)
    assert body["messages"] == [
        {"role": "user", "content": "weather in Oslo"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "function": {
                        "index": 0,
                        "name": "get_weather",
                        "arguments": {"city": "weather in Oslo"},
                    },
                }
            ],
        },
        {
            "role": "tool",
            "content": "12 degrees",
            "tool_name": "get_weather",
            "tool_call_id": call.id,
        },
    ]
    assert second.content == "Tool said: 12 degrees"
    assert (second.finish_reason, second.tool_calls) == ("stop", ())


async def test_a_tool_call_then_its_result_streamed() -> None:
    request = ask("weather in Oslo")
    async with open_fake(models=MODELS) as (server, provider):
        events = await collect(provider, request)
        assert sent_body(server)["tools"] == WIRE_TOOLS
        (delta,) = [e for e in events if isinstance(e, ToolCallDelta)]
        end = finished(events)
        assert CALL_ID.fullmatch(delta.id)
        assert delta == ToolCallDelta(0, delta.id, "get_weather", '{"city":"weather in Oslo"}')
        assert end == StreamFinished(
            "tool_calls",
            Usage(3, 3),
            "llama3.2",
            tool_calls=(ToolCall(delta.id, "get_weather", '{"city":"weather in Oslo"}'),),
        )
        assert not any(isinstance(e, TextDelta) for e in events)

        events = await collect(provider, answered(request, end.tool_calls, "12 degrees"))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Tool said: 12 degrees"
    assert finished(events).finish_reason == "stop"


async def test_parallel_calls_have_ordinals_and_their_results_go_back_in_order() -> None:
    request = ask("Oslo in parallel")
    async with open_fake(models=MODELS) as (server, provider):
        unary = await provider.complete(request)
        events = await collect(provider, request)
        results = answered(request, unary.tool_calls, "12 degrees", "noon")
        answer = await provider.complete(results)
        body = sent_body(server)
    assert [(c.name, c.arguments_json) for c in unary.tool_calls] == [
        ("get_weather", '{"city":"Oslo in parallel"}'),
        ("get_time", '{"city":"Oslo in parallel","utc":true}'),
    ]
    assert len({c.id for c in unary.tool_calls}) == 2
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.name, d.arguments_delta) for d in deltas] == [
        (0, "get_weather", '{"city":"Oslo in parallel"}'),
        (1, "get_time", '{"city":"Oslo in parallel","utc":true}'),
    ]
    assert finished(events).tool_calls == tuple(
        ToolCall(d.id, d.name, d.arguments_delta) for d in deltas
    )
    messages = body["messages"]
    assert isinstance(messages, list)
    assistant, weather, time = messages[1:]
    assert [c["function"]["index"] for c in assistant["tool_calls"]] == [0, 1]
    assert assistant["tool_calls"][1]["function"]["arguments"] == {
        "city": "Oslo in parallel",
        "utc": True,
    }
    assert (weather["tool_name"], time["tool_name"]) == ("get_weather", "get_time")
    assert answer.content == "Tool said: 12 degrees; noon"


async def test_arguments_go_back_as_the_object_in_their_key_order() -> None:
    call = ToolCall("toolu_01", "get_time", '{"utc": false, "city": "Zürich <3"}')
    request = ChatRequest(
        "llama3.2",
        (
            ChatMessage("user", "time?"),
            ChatMessage("assistant", "Let me see.", tool_calls=(call,)),
            ChatMessage("tool", '{"time": "12:00"}', tool_call_id="toolu_01"),
        ),
        tools=(TIME,),
    )
    async with open_fake(models=MODELS) as (server, provider):
        answer = await provider.complete(request)
        raw = server.stats.requests[-1].body
    assert b'"arguments":{"utc":false,"city":"Z\xc3\xbcrich <3"}' in raw
    assert answer.content == 'Tool said: {"time": "12:00"}'


# -- settings without a native form -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": "get_weather"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"reasoning": Reasoning(budget_tokens=2048)}, "reasoning.budget_tokens"),
        ({"reasoning": Reasoning(effort="high", budget_tokens=2048)}, "reasoning.budget_tokens"),
        ({"reasoning": Reasoning(effort="minimal")}, "reasoning.effort"),
    ],
)
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_settings_without_a_native_form_are_refused_before_sending(
    changes: dict[str, Any], setting: str, mode: str
) -> None:
    request = ask("weather in Oslo", **changes)
    async with open_fake(models=MODELS) as (server, provider):
        with pytest.raises(UnsupportedByProvider) as raised:
            if mode == "complete":
                await provider.complete(request)
            else:
                await collect(provider, request)
        assert server.stats.request_count == 0
    assert raised.value.setting == setting and raised.value.provider == "ollama"


async def test_parallel_calls_allowed_explicitly_are_the_default() -> None:
    async with open_fake(models=MODELS) as (server, provider):
        answer = await provider.complete(ask("Oslo in parallel", parallel_tool_calls=True))
        assert "parallel_tool_calls" not in sent_body(server)
    assert len(answer.tool_calls) == 2


async def test_parallel_false_without_tools_is_already_honoured() -> None:
    request = ask("hi", tools=(), parallel_tool_calls=False)
    async with open_fake(models=MODELS) as (server, provider):
        await provider.complete(request)
        assert "tools" not in sent_body(server)


async def test_tool_choice_none_sends_no_tools_and_gets_text() -> None:
    async with open_fake(models=MODELS) as (server, provider):
        answer = await provider.complete(ask("weather in Oslo", tool_choice="none"))
        body = sent_body(server)
    assert "tools" not in body
    assert answer.tool_calls == () and answer.finish_reason == "stop" and answer.content


async def test_tool_choice_none_with_calls_in_the_history_is_refused() -> None:
    call = ToolCall("call_1", "get_weather", '{"city":"Oslo"}')
    request = ChatRequest(
        "llama3.2",
        (
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "12 degrees", tool_call_id="call_1"),
        ),
        tools=(WEATHER,),
        tool_choice="none",
    )
    async with open_fake(models=MODELS) as (server, provider):
        with pytest.raises(UnsupportedByProvider, match="tool_choice"):
            await provider.complete(request)
        assert server.stats.request_count == 0


async def test_history_arguments_that_are_not_an_object_are_refused() -> None:
    call = ToolCall("call_1", "get_weather", '["Oslo"]')
    request = ChatRequest(
        "llama3.2",
        (ChatMessage("user", "weather?"), ChatMessage("assistant", "", tool_calls=(call,))),
    )
    async with open_fake(models=MODELS) as (_, provider):
        with pytest.raises(UnsupportedByProvider, match="not a JSON object"):
            await provider.complete(request)


# -- thinking -----------------------------------------------------------------------------------

THOUGHT = "Thinking about: why is the sky blue"


@pytest.mark.parametrize(
    ("reasoning", "think"),
    [
        (Reasoning(effort="low"), "low"),
        (Reasoning(effort="medium"), "medium"),
        (Reasoning(effort="high", include_thoughts=True), "high"),
        (Reasoning(include_thoughts=True), True),
    ],
)
async def test_reasoning_is_think_and_the_thinking_comes_back(
    reasoning: Reasoning, think: object
) -> None:
    request = ChatRequest(
        "qwen3", (ChatMessage("user", "why is the sky blue"),), reasoning=reasoning
    )
    async with open_fake(models=MODELS) as (server, provider):
        completion = await provider.complete(request)
        assert sent_body(server)["think"] == think
    assert completion.thinking == (Thinking(THOUGHT, provider="ollama"),)
    assert completion.content and not completion.content.startswith("Thinking")
    # Ollama counts the thinking tokens in eval_count, and none apart.
    assert completion.usage == Usage(5, 7 + 12)


async def test_streamed_thinking_comes_first_and_is_assembled() -> None:
    request = ChatRequest(
        "qwen3:latest",
        (ChatMessage("user", "why is the sky blue"),),
        reasoning=Reasoning(effort="high"),
    )
    async with open_fake(models=MODELS) as (_, provider):
        events = await collect(provider, request)
    thinking = [e for e in events if isinstance(e, ThinkingDelta)]
    assert len(thinking) == 7  # one line per word
    assert "".join(t.text for t in thinking) == THOUGHT
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ThinkingDelta) for e in events[:first_text])
    end = finished(events)
    assert end.thinking == (Thinking(THOUGHT, provider="ollama"),)
    assert end.usage == Usage(5, 7 + 12) and end.finish_reason == "stop"


async def test_a_thinking_model_thinks_by_default_and_nothing_is_sent() -> None:
    async with open_fake(models=MODELS) as (server, provider):
        completion = await provider.complete(
            ChatRequest("qwen3", (ChatMessage("user", "why is the sky blue"),))
        )
        assert "think" not in sent_body(server)
    assert completion.thinking == (Thinking(THOUGHT, provider="ollama"),)


async def test_reasoning_asked_of_a_model_that_cannot_think_is_rejected_by_ollama() -> None:
    request = ask("hi", tools=(), reasoning=Reasoning(effort="low"))
    async with open_fake(models=MODELS) as (_, provider):
        with pytest.raises(UpstreamRejected) as raised:
            await provider.complete(request)
    assert '"llama3.2" does not support thinking' in raised.value.message


async def test_thinking_with_tool_calls_round_trips_as_the_message_thinking() -> None:
    request = ask("weather in Oslo", model="qwen3", reasoning=Reasoning(effort="low"))
    async with open_fake(models=MODELS) as (server, provider):
        first = await provider.complete(request)
        assert first.finish_reason == "tool_calls" and first.thinking
        assistant = ChatMessage(
            "assistant",
            "",
            parts=(*first.thinking, Thinking("other", signature="sig", provider="anthropic")),
            tool_calls=first.tool_calls,
        )
        history = (
            *request.messages,
            assistant,
            ChatMessage("tool", "sunny", tool_call_id=first.tool_calls[0].id),
        )
        second = await provider.complete(
            ChatRequest("qwen3", history, tools=request.tools, reasoning=request.reasoning)
        )
        body = sent_body(server)
    sent_assistant = body["messages"][1]  # type: ignore[index]
    assert sent_assistant["thinking"] == "Thinking about: weather in Oslo"  # Anthropic's dropped
    assert list(sent_assistant) == ["role", "content", "thinking", "tool_calls"]
    assert second.content == "Tool said: sunny"


# -- images, documents, cache breakpoints -------------------------------------------------------


async def test_images_by_bytes_or_data_url_go_as_base64_in_the_message() -> None:
    message = ChatMessage(
        "user",
        "what is this?",
        parts=(
            ImagePart(data=PNG, media_type="image/png"),
            TextPart("and this?"),
            ImagePart(url="data:image/png;base64," + PNG_BASE64),
        ),
    )
    async with open_fake(models=MODELS) as (server, provider):
        await provider.complete(ChatRequest("llama3.2", (message,)))
        body = sent_body(server)
    assert body["messages"] == [
        {
            "role": "user",
            "content": "what is this?\n\nand this?",
            "images": [PNG_BASE64, PNG_BASE64],
        }
    ]


async def test_an_image_only_a_url_names_is_refused() -> None:
    message = ChatMessage("user", "what?", parts=(ImagePart(url="https://example.com/a.png"),))
    async with open_fake(models=MODELS) as (server, provider):
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(ChatRequest("llama3.2", (message,)))
        assert server.stats.request_count == 0
    assert raised.value.setting == "image url"
    assert "DELOS_RUNTIME_FETCH_IMAGE_URLS" in raised.value.message


async def test_a_text_document_is_text_and_a_pdf_is_refused() -> None:
    text = DocumentPart(b"line one\nline two", "text/plain", name="notes.txt")
    pdf = DocumentPart(b"%PDF-1.7", "application/pdf", name="a.pdf")
    async with open_fake(models=MODELS) as (server, provider):
        await provider.complete(
            ChatRequest("llama3.2", (ChatMessage("user", "summarise", parts=(text,)),))
        )
        assert sent_body(server)["messages"] == [
            {"role": "user", "content": "summarise\n\nnotes.txt\n\nline one\nline two"}
        ]
        with pytest.raises(UnsupportedByProvider) as raised:
            await provider.complete(
                ChatRequest("llama3.2", (ChatMessage("user", "summarise", parts=(pdf,)),))
            )
        assert server.stats.request_count == 1
    assert raised.value.setting == "documents"


async def test_system_messages_join_first_with_their_documents() -> None:
    rules = DocumentPart(b"be kind", "text/plain")
    request = ChatRequest(
        "llama3.2",
        (
            ChatMessage("system", "answer briefly"),
            ChatMessage("user", "hi"),
            ChatMessage("system", "", parts=(rules,)),
        ),
    )
    async with open_fake(models=MODELS) as (server, provider):
        await provider.complete(request)
        body = sent_body(server)
    assert body["messages"] == [
        {"role": "system", "content": "answer briefly\n\nbe kind"},
        {"role": "user", "content": "hi"},
    ]


async def test_a_cache_breakpoint_changes_nothing_on_the_wire() -> None:
    plain = ChatRequest("llama3.2", (ChatMessage("system", "rules"), ChatMessage("user", "hi")))
    marked = ChatRequest(
        "llama3.2",
        (ChatMessage("system", "rules", cache_breakpoint=True), ChatMessage("user", "hi")),
    )
    async with open_fake(models=MODELS) as (server, provider):
        first = await provider.complete(plain)
        body = server.stats.requests[-1].body
        second = await provider.complete(marked)
        assert server.stats.requests[-1].body == body
    assert first.usage == second.usage == Usage(2, 12)
    assert (second.usage.cache_read_tokens, second.usage.cache_write_tokens) == (0, 0)


# -- hand-written answers -----------------------------------------------------------------------


def call(name: str, arguments: object, **fields: object) -> dict[str, object]:
    return {**fields, "function": {"index": 0, "name": name, "arguments": arguments}}


async def test_calls_without_ids_get_deterministic_ids_and_several_per_line_split() -> None:
    first = line(
        "",
        message={
            "role": "assistant",
            "content": "",
            "tool_calls": [
                call("get_weather", {"city": "Oslo"}),
                call("get_time", {"utc": True, "city": "Oslo"}),
            ],
        },
    )
    second = line(
        "",
        message={
            "role": "assistant",
            "content": "",
            "tool_calls": [
                call("get_weather", {"city": "Bergen"}, id="call_given1"),
            ],
        },
    )
    events = await stream_of(ndjson(first, second, final(eval_count=9)))
    key = "llama3.2\x002025-06-20T10:00:00.5Z"
    ids = [
        deterministic_call_id(key, 0, "get_weather", '{"city":"Oslo"}'),
        deterministic_call_id(key, 1, "get_time", '{"utc":true,"city":"Oslo"}'),
    ]
    calls = (
        ToolCall(ids[0], "get_weather", '{"city":"Oslo"}'),
        ToolCall(ids[1], "get_time", '{"utc":true,"city":"Oslo"}'),
        ToolCall("call_given1", "get_weather", '{"city":"Bergen"}'),
    )
    assert events == [
        *(ToolCallDelta(i, c.id, c.name, c.arguments_json) for i, c in enumerate(calls)),
        StreamFinished("tool_calls", Usage(0, 9), "llama3.2", tool_calls=calls),
    ]
    whole = first + second + final(eval_count=9)
    byte_by_byte = await stream_of(ndjson(*(whole[i : i + 1] for i in range(len(whole)))))
    assert byte_by_byte == events  # the same ids too: they depend on the answer alone


async def test_a_unary_answer_without_ids_and_with_escaped_text() -> None:
    payload = {
        "model": "llama3.2",
        "created_at": "2025-06-20T10:00:00.5Z",
        "message": {
            "role": "assistant",
            "content": "",
            "thinking": "hmm \u2028 ok",
            "tool_calls": [call("get_weather", {"city": "Z\u00fcrich <&>", "n": 1.5})],
        },
        "done": True,
        "done_reason": "stop",
        "eval_count": 4,
    }

    async def handle(request: FakeRequest) -> FakeResponse:
        return FakeResponse.json(payload)

    async with open_ollama(handle) as (_, provider):
        completion = await provider.complete(ask("x"))
    arguments = '{"city":"Z\u00fcrich <&>","n":1.5}'
    key = "llama3.2\x002025-06-20T10:00:00.5Z"
    assert completion == Completion(
        content="",
        model="llama3.2",
        finish_reason="tool_calls",
        usage=Usage(0, 4),
        tool_calls=(
            ToolCall(
                deterministic_call_id(key, 0, "get_weather", arguments), "get_weather", arguments
            ),
        ),
        thinking=(Thinking("hmm \u2028 ok", provider="ollama"),),
    )


async def test_a_length_finish_with_calls_stays_length() -> None:
    body = line(
        "",
        message={
            "role": "assistant",
            "content": "",
            "tool_calls": [
                call("get_weather", {}, id="call_a"),
            ],
        },
    )
    events = await stream_of(ndjson(body, final(done_reason="length")))
    assert finished(events).finish_reason == "length"
    assert finished(events).tool_calls == (ToolCall("call_a", "get_weather", "{}"),)


@pytest.mark.parametrize(
    ("tool_calls", "fragment"),
    [
        ([call("get_weather", '{"city":"Oslo"}')], "not a JSON object"),
        ([{"id": "call_a"}], "has no function"),
        ([call("", {})], "has no name"),
        ({"function": {}}, "not a list"),
    ],
)
async def test_a_malformed_tool_call_is_a_protocol_error(tool_calls: object, fragment: str) -> None:
    body = line("", message={"role": "assistant", "content": "", "tool_calls": tool_calls})
    async with open_ollama(ndjson(body, final())) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match=fragment):
            await collect(provider, ask("x"))


async def test_the_fake_counts_tokens_as_these_tests_assume() -> None:
    assert count_tokens(["why is the sky blue"]) == 5
    assert count_tokens([json.dumps({"city": "weather in Oslo"}, separators=(",", ":"))]) == 3
