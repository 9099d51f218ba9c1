"""The official anthropic SDK parses the fake's tool calls, thinking and cache usage, unary and
streamed, direct and on Vertex AI; the fake refuses what the service refuses."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam, ThinkingBlock, ToolParam, ToolUseBlock

from delos.testing import FakeControl, FakeServer, serve_in_thread
from delos.testing._agent import sign
from delos.testing.fake_anthropic import REDACTION_TRIGGER, fake_anthropic_handler

MODEL = "claude-sonnet-4-20250514"
VERTEX_MODEL = "claude-sonnet-4@20250514"
KEY = "test-key"
TOKEN = "fake-token"
LOOKUP: ToolParam = {
    "name": "lookup",
    "description": "Look a city up.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CLOCK: ToolParam = {
    "name": "clock",
    "description": "Tell the time.",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}},
        "required": ["zone"],
    },
}
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
QUESTION: MessageParam = {"role": "user", "content": "weather in Paris"}
THOUGHT = "Thinking about: weather in Paris"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    handler = fake_anthropic_handler(FakeControl(), api_key=KEY, access_token=TOKEN)
    with serve_in_thread(handler) as server:
        yield server


@pytest.fixture
def sdk(fake: FakeServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def vertex(fake: FakeServer) -> Iterator[anthropic.AnthropicVertex]:
    with anthropic.AnthropicVertex(
        region="us-east5",
        project_id="p",
        access_token=TOKEN,
        base_url=fake.url + "/v1",
        max_retries=0,
    ) as client:
        yield client


def answered(message: anthropic.types.Message, results: list[str]) -> list[MessageParam]:
    """The conversation that answers ``message``'s tool calls with ``results``."""
    calls = [b for b in message.content if b.type == "tool_use"]
    tool_results: list[Any] = [
        {"type": "tool_result", "tool_use_id": call.id, "content": result}
        for call, result in zip(calls, results, strict=True)
    ]
    assistant: Any = [block.to_dict() for block in message.content]
    return [
        QUESTION,
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": tool_results},
    ]


# -- tool calls -----------------------------------------------------------------------------------


def test_create_parses_a_tool_use_block_and_its_stop_reason(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=MODEL, max_tokens=100, messages=[QUESTION], tools=[LOOKUP])
    (block,) = message.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == (
        "toolu_01Fake0000000000000100",
        "lookup",
        {"city": "weather in Paris"},
    )
    assert message.stop_reason == "tool_use"
    final = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=answered(message, ["sunny"]), tools=[LOOKUP]
    )
    assert final.content[0].type == "text" and final.content[0].text == "Tool said: sunny"
    assert final.stop_reason == "end_turn"


def test_parallel_tool_use_blocks_parse_and_their_results_are_accepted(
    sdk: anthropic.Anthropic,
) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "parallel please"}]
    message = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=messages, tools=[LOOKUP, CLOCK]
    )
    assert [(b.type, getattr(b, "name", None)) for b in message.content] == [
        ("tool_use", "lookup"),
        ("tool_use", "clock"),
    ]
    conversation = answered(message, ["sunny", "noon"])
    conversation[0] = messages[0]
    final = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=conversation, tools=[LOOKUP, CLOCK]
    )
    assert final.content[0].type == "text" and final.content[0].text == "Tool said: sunny; noon"


def test_the_stream_helper_reassembles_tool_input_from_its_fragments(
    sdk: anthropic.Anthropic,
) -> None:
    with sdk.messages.stream(
        model=MODEL, max_tokens=100, messages=[QUESTION], tools=[LOOKUP]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    fragments = [e.partial_json for e in events if e.type == "input_json"]
    assert "".join(fragments) == '{"city": "weather in Paris"}'
    (block,) = final.content
    assert block.type == "tool_use" and block.input == {"city": "weather in Paris"}
    assert final.stop_reason == "tool_use"


def test_raw_tool_stream_events_come_in_the_documented_order(sdk: anthropic.Anthropic) -> None:
    events = list(
        sdk.messages.create(
            model=MODEL, max_tokens=100, messages=[QUESTION], tools=[LOOKUP], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[1]
    assert start.type == "content_block_start" and start.content_block.type == "tool_use"
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert deltas[0].delta.type == "input_json_delta" and deltas[0].delta.partial_json == ""


def test_a_tool_result_for_an_unknown_call_is_a_bad_request(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=MODEL, max_tokens=100, messages=[QUESTION], tools=[LOOKUP])
    conversation = answered(message, ["sunny"])
    content: Any = conversation[2]["content"]
    content[0]["tool_use_id"] = "toolu_nope"
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(model=MODEL, max_tokens=100, messages=conversation, tools=[LOOKUP])
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["message"] == (
        "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
        "toolu_nope. Each `tool_result` block must have a corresponding `tool_use` block in "
        "the previous message."
    )


def test_an_unanswered_tool_call_is_a_bad_request(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=MODEL, max_tokens=100, messages=[QUESTION], tools=[LOOKUP])
    conversation = answered(message, ["sunny"])
    conversation[2] = {"role": "user", "content": "never mind"}
    with pytest.raises(anthropic.BadRequestError, match="`tool_use` ids were found without"):
        sdk.messages.create(model=MODEL, max_tokens=100, messages=conversation, tools=[LOOKUP])


# -- thinking -------------------------------------------------------------------------------------


def test_create_parses_signed_thinking_and_thinking_tokens(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model=MODEL, max_tokens=2048, messages=[QUESTION], tools=[LOOKUP], thinking=THINKING
    )
    thinking, call = message.content
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == (THOUGHT, sign(THOUGHT))
    assert call.type == "tool_use"
    assert message.usage.output_tokens == 9
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 5
    final = sdk.messages.create(
        model=MODEL,
        max_tokens=2048,
        messages=answered(message, ["sunny"]),
        tools=[LOOKUP],
        thinking=THINKING,
    )
    assert [b.type for b in final.content] == ["thinking", "text"]


def test_the_stream_helper_accumulates_thinking_and_its_signature(
    sdk: anthropic.Anthropic,
) -> None:
    with sdk.messages.stream(
        model=MODEL, max_tokens=2048, messages=[QUESTION], thinking=THINKING
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "".join(e.thinking for e in events if e.type == "thinking") == THOUGHT
    assert [e.signature for e in events if e.type == "signature"] == [sign(THOUGHT)]
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.signature == sign(THOUGHT)
    assert thinking.thinking == THOUGHT and text.type == "text"


def test_redacted_thinking_parses_unary_and_streamed(sdk: anthropic.Anthropic) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": f"hi {REDACTION_TRIGGER}"}]
    message = sdk.messages.create(
        model=MODEL, max_tokens=2048, messages=messages, thinking=THINKING
    )
    with sdk.messages.stream(
        model=MODEL, max_tokens=2048, messages=messages, thinking=THINKING
    ) as stream:
        final = stream.get_final_message()
    for answer in (message, final):
        kinds = [b.type for b in answer.content]
        assert kinds == ["thinking", "redacted_thinking", "text"]
    redacted = message.content[1]
    assert redacted.type == "redacted_thinking" and redacted.data


def test_a_forged_thinking_signature_is_a_bad_request(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model=MODEL, max_tokens=2048, messages=[QUESTION], tools=[LOOKUP], thinking=THINKING
    )
    conversation = answered(message, ["sunny"])
    content: Any = conversation[1]["content"]
    content[0]["signature"] = base64.b64encode(b"forged").decode()
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model=MODEL, max_tokens=2048, messages=conversation, tools=[LOOKUP], thinking=THINKING
        )
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
    }


def test_a_tool_turn_sent_back_without_its_thinking_is_a_bad_request(
    sdk: anthropic.Anthropic,
) -> None:
    message = sdk.messages.create(
        model=MODEL, max_tokens=2048, messages=[QUESTION], tools=[LOOKUP], thinking=THINKING
    )
    conversation = answered(message, ["sunny"])
    content: Any = conversation[1]["content"]
    del content[0]
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model=MODEL, max_tokens=2048, messages=conversation, tools=[LOOKUP], thinking=THINKING
        )
    assert "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found " in (
        str(raised.value)
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "`max_tokens` must be greater"),
        (
            {"thinking": THINKING, "extra_body": {"temperature": 0.5}},
            "`temperature` may only be set to 1",
        ),
        (
            {"thinking": THINKING, "extra_body": {"top_p": 0.5}},
            "`top_p` must be greater than or equal to 0.95",
        ),
        (
            {"thinking": THINKING, "tools": [LOOKUP], "tool_choice": {"type": "any"}},
            "Thinking may not be enabled when tool_choice forces tool use.",
        ),
        ({"thinking": THINKING, "model": "claude-3-5-haiku-20241022"}, "does not support thinking"),
    ],
)
def test_thinking_settings_the_service_refuses_are_bad_requests(
    sdk: anthropic.Anthropic, fields: dict[str, Any], fragment: str
) -> None:
    arguments: dict[str, Any] = {"model": MODEL, "max_tokens": 2048, "messages": [QUESTION]}
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(**{**arguments, **fields})
    assert fragment in str(raised.value)


# -- prompt caching -------------------------------------------------------------------------------


def cached_request(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "you answer briefly", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [QUESTION],
    }


def test_cache_usage_parses_unary_and_streamed(sdk: anthropic.Anthropic) -> None:
    first = sdk.messages.create(**cached_request(MODEL))
    with sdk.messages.stream(**cached_request(MODEL)) as stream:
        second = stream.get_final_message()
    usages = [first.usage, second.usage]
    assert [
        (u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens) for u in usages
    ] == [
        (3, 3, 0),
        (3, 0, 3),
    ]
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 3


def test_more_than_four_cache_markers_are_a_bad_request(sdk: anthropic.Anthropic) -> None:
    marked: Any = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model=MODEL,
            max_tokens=10,
            system=[marked, marked],
            messages=[{"role": "user", "content": [marked, marked, marked]}],
        )
    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in str(raised.value)


# -- Claude on Vertex AI --------------------------------------------------------------------------


def test_vertex_caches_calls_tools_and_thinks_like_the_direct_api(
    vertex: anthropic.AnthropicVertex, fake: FakeServer
) -> None:
    request = {**cached_request(VERTEX_MODEL), "max_tokens": 2048}
    first = vertex.messages.create(**request, tools=[LOOKUP], thinking=THINKING)
    body = fake.stats.requests[-1].json()
    with vertex.messages.stream(**request, tools=[LOOKUP], thinking=THINKING) as stream:
        second = stream.get_final_message()
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}  # not stripped
    assert (first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (3, 3)
    for message in (first, second):
        thinking, call = message.content
        assert isinstance(thinking, ThinkingBlock) and thinking.signature == sign(THOUGHT)
        assert isinstance(call, ToolUseBlock) and call.id.startswith("toolu_vrtx_01")


def test_vertex_refuses_image_urls(vertex: anthropic.AnthropicVertex) -> None:
    image: Any = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    with pytest.raises(anthropic.BadRequestError) as raised:
        vertex.messages.create(
            model=VERTEX_MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": [image]}],
        )
    assert "messages.0.content.0.image.source.base64.data: URL sources are not supported" in (
        str(raised.value)
    )


# -- the async client -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_client_streams_tool_calls_and_thinking(fake: FakeServer) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
        async with client.messages.stream(
            model=MODEL, max_tokens=2048, messages=[QUESTION], tools=[LOOKUP], thinking=THINKING
        ) as stream:
            final = await stream.get_final_message()
    thinking, call = final.content
    assert thinking.type == "thinking" and thinking.thinking == THOUGHT
    assert call.type == "tool_use" and call.input == {"city": "weather in Paris"}
    assert final.stop_reason == "tool_use"
