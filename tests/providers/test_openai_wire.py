"""The OpenAI chat wire format without sockets: bodies built, answers and streams parsed.

Streams are fed as bytes three ways (whole, byte by byte, with a CRLF split and trailing data),
through the same SSE decoder the adapter uses.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.providers._openai_answer import ChatStreamReader, parse_completion
from delos.runtime.providers._openai_request import chat_body, effort_for_budget
from delos.runtime.providers._parts import deterministic_call_id
from delos.runtime.providers.openai_compatible import OPENAI, OPENROUTER, TOGETHER
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.wire import SseDecoder, SseEvent, encode_sse


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return encode_sse(json.dumps({"id": "gen-1", "model": "m-1", "choices": [choice], **extra}))


def read(body: bytes, sizes: int | None = None) -> list[StreamEvent]:
    """The events of a stream given as ``body``, fed in pieces of ``sizes`` bytes (None: whole)."""
    decoder, reader = SseDecoder(), ChatStreamReader("openrouter", model="asked")
    step = sizes or len(body)
    events: list[StreamEvent] = []
    for start in range(0, len(body), step):
        for event in decoder.feed(body[start : start + step]):
            if isinstance(event, SseEvent):
                events += reader.feed(event)
    return events


def whole_calls(*calls: tuple[int, str, str, str]) -> list[dict[str, Any]]:
    return [
        {"index": i, "id": id, "type": "function", "function": {"name": n, "arguments": a}}
        for i, id, n, a in calls
    ]


SEVERAL_IN_ONE_CHUNK = (
    chunk({"role": "assistant", "content": ""})
    + chunk({"tool_calls": whole_calls((0, "a", "one", '{"x":"é"}'), (1, "b", "two", "{}"))})
    + chunk({"tool_calls": [{"index": 2, "type": "function", "function": {"name": "three"}}]})
    + chunk({"tool_calls": [{"index": 2, "function": {"arguments": '{"y":'}}]})
    + chunk({"tool_calls": [{"index": 2, "function": {"arguments": "1}"}}]})
    + chunk({}, "stop")
    + encode_sse(json.dumps({"model": "m-1", "choices": [], "usage": {"prompt_tokens": 3}}))
    + encode_sse("[DONE]")
)


@pytest.mark.parametrize("sizes", [None, 1, 7], ids=["whole", "bytewise", "sevens"])
def test_calls_arriving_together_give_one_delta_each_in_any_split(sizes: int | None) -> None:
    events = read(SEVERAL_IN_ONE_CHUNK, sizes)
    third_id = deterministic_call_id("gen-1", 2, "three", "")
    assert events == [
        ToolCallDelta(0, id="a", name="one"),
        ToolCallDelta(0, arguments_delta='{"x":"é"}'),
        ToolCallDelta(1, id="b", name="two"),
        ToolCallDelta(1, arguments_delta="{}"),
        ToolCallDelta(2, id=third_id, name="three"),
        ToolCallDelta(2, arguments_delta='{"y":'),
        ToolCallDelta(2, arguments_delta="1}"),
        StreamFinished(
            "tool_calls",  # a server that says "stop" after calling tools
            None,  # a usage without completion_tokens is no usage
            "m-1",
            tool_calls=(
                ToolCall("a", "one", '{"x":"é"}'),
                ToolCall("b", "two", "{}"),
                ToolCall(third_id, "three", '{"y":1}'),
            ),
        ),
    ]


def test_crlf_line_endings_split_across_reads_and_trailing_data_change_nothing() -> None:
    body = SEVERAL_IN_ONE_CHUNK.replace(b"\n", b"\r\n")
    cut = body.index(b"\r\n") + 1  # between the CR and the LF
    decoder, reader = SseDecoder(), ChatStreamReader("openai", model="m")
    events: list[StreamEvent] = []
    for piece in (body[:cut], body[cut:], encode_sse('{"ignored": true}')):
        for event in decoder.feed(piece):
            if isinstance(event, SseEvent):
                events += reader.feed(event)
    assert events == read(SEVERAL_IN_ONE_CHUNK)


THINKING_STREAM = (
    chunk({"role": "assistant", "content": ""})
    + chunk(
        {
            "reasoning": "Let me",
            "reasoning_details": [
                {"type": "reasoning.text", "text": "Let me", "format": "x", "index": 0}
            ],
        }
    )
    + chunk(
        {
            "reasoning": " think\u2028",
            "reasoning_details": [{"type": "reasoning.text", "text": " think\u2028", "index": 0}],
        }
    )
    + chunk({"reasoning_details": [{"type": "reasoning.text", "signature": "sig", "index": 0}]})
    + chunk({"reasoning_details": [{"type": "reasoning.encrypted", "data": "b64==", "index": 1}]})
    + chunk({"content": "Hi"})
    + chunk(
        {},
        "stop",
        usage={
            "prompt_tokens": 2000,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 1536, "cache_write_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 25},
        },
    )
    + encode_sse("[DONE]")
)


@pytest.mark.parametrize("sizes", [None, 1], ids=["whole", "bytewise"])
def test_openrouter_reasoning_details_stream_as_thinking_with_signature_and_data(
    sizes: int | None,
) -> None:
    events = read(THINKING_STREAM, sizes)
    assert events == [
        ThinkingDelta("Let me"),
        ThinkingDelta(" think\u2028"),
        TextDelta("Hi"),
        StreamFinished(
            "stop",
            Usage(2000, 30, cache_read_tokens=1536, cache_write_tokens=400, reasoning_tokens=25),
            "m-1",
            thinking=(
                Thinking("Let me think\u2028", signature="sig", provider="openrouter"),
                Thinking(redacted_data="b64==", provider="openrouter"),
            ),
        ),
    ]


def test_plain_reasoning_text_streams_as_one_thinking_block() -> None:
    body = (
        chunk({"role": "assistant", "reasoning": "a"})
        + chunk({"reasoning": "b"})
        + chunk({"content": "c"}, "eos")
        + encode_sse("[DONE]")
    )
    decoder, reader = SseDecoder(), ChatStreamReader("together", model="m")
    events = [e for s in decoder.feed(body) if isinstance(s, SseEvent) for e in reader.feed(s)]
    assert events[-1] == StreamFinished(
        "stop", None, "m-1", thinking=(Thinking("ab", provider="together"),)
    )


def test_a_tool_call_fragment_that_is_not_an_object_is_a_protocol_error() -> None:
    reader = ChatStreamReader("openai", model="m")
    event = SseEvent(None, json.dumps({"choices": [{"delta": {"tool_calls": ["x"]}}]}))
    with pytest.raises(UpstreamProtocolError, match="tool call fragment"):
        reader.feed(event)


def test_a_whole_answer_keeps_calls_byte_exact_and_reads_every_thinking_kind() -> None:
    payload = {
        "id": "gen-9",
        "model": "anthropic/claude-sonnet-4.5",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning": "ignored when details are given",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "t", "signature": "s", "index": 0},
                        {"type": "reasoning.summary", "summary": "short", "index": 1},
                        {"type": "reasoning.encrypted", "data": "enc", "index": 2},
                    ],
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{ "a" :1}'},
                        },
                        {"type": "function", "function": {"name": "g", "arguments": {"b": 2}}},
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    }
    answer = parse_completion("openrouter", payload, model="asked")
    assert answer.tool_calls == (
        ToolCall("c1", "f", '{ "a" :1}'),
        ToolCall(deterministic_call_id("gen-9", 1, "g", '{"b":2}'), "g", '{"b":2}'),
    )
    assert answer.thinking == (
        Thinking("t", signature="s", provider="openrouter"),
        Thinking("short", provider="openrouter"),
        Thinking(redacted_data="enc", provider="openrouter"),
    )
    assert (answer.content, answer.finish_reason) == ("", "tool_calls")


def test_thinking_goes_back_only_to_openrouter_and_only_its_own() -> None:
    turn = ChatMessage(
        "assistant",
        "ok",
        parts=(
            Thinking("mine", signature="s1", provider="openrouter"),
            Thinking(redacted_data="enc", provider="openrouter"),
            Thinking("theirs", signature="s2", provider="anthropic"),
            Thinking("unsigned text"),
        ),
    )
    request = ChatRequest("anthropic/claude-sonnet-4.5", (ChatMessage("user", "q"), turn))
    openrouter = chat_body(request, OPENROUTER, stream=False)["messages"][1]
    assert openrouter == {
        "role": "assistant",
        "content": "ok",
        "reasoning_details": [
            {"type": "reasoning.text", "text": "mine", "signature": "s1"},
            {"type": "reasoning.encrypted", "data": "enc"},
        ],
    }
    for dialect in (OPENAI, TOGETHER):
        assert chat_body(request, dialect, stream=False)["messages"][1] == {
            "role": "assistant",
            "content": "ok",
        }


@pytest.mark.parametrize(
    ("budget", "effort", "together"),
    [
        (1, "minimal", "low"),
        (700, "minimal", "low"),
        (1024, "minimal", "low"),
        (1500, "low", "low"),  # log-nearer 2048 than 1024
        (2048, "low", "low"),
        (4096, "medium", "medium"),  # as near 2048 as 8192: the larger wins
        (16384, "high", "high"),  # log-nearer 24576 than 8192
        (100_000, "high", "high"),
    ],
)
def test_a_budget_maps_to_the_log_nearest_effort_the_dialect_has(
    budget: int, effort: str, together: str
) -> None:
    assert effort_for_budget(budget) == effort
    assert effort_for_budget(budget, TOGETHER.efforts) == together
