"""Bedrock's Converse wire modules without I/O: exact request bodies for every agent setting,
answers and usage parsed, and every setting Converse cannot express refused before sending."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError
from delos.runtime.providers._bedrock_answer import (
    ConverseStreamReader,
    parse_converse,
    parse_usage,
)
from delos.runtime.providers._bedrock_request import converse_body, document_name
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
from delos.runtime.wire import EventStreamDecoder, encode_event

CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = ToolCall("tooluse_abc", "get_weather", '{"city":"Paris"}')
PNG = b"\x89PNG\r\n\x1a\nfake"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request(*messages: ChatMessage, **fields: Any) -> ChatRequest:
    return ChatRequest(fields.pop("model", CLAUDE), messages, **fields)


def user(text: str = "weather in Paris?", **fields: Any) -> ChatMessage:
    return ChatMessage("user", text, **fields)


def body(*messages: ChatMessage, **fields: Any) -> dict[str, Any]:
    return converse_body("bedrock", request(*messages, **fields))


# -- request bodies ----------------------------------------------------------------------------


def test_a_whole_tool_round_trip_is_native_converse() -> None:
    thought = Thinking("I should look it up.", "sig-1", provider="bedrock")
    result = body(
        ChatMessage("system", "be terse", cache_breakpoint=True),
        user(),
        ChatMessage("assistant", "Let me check.", parts=(thought,), tool_calls=(CALL,)),
        ChatMessage("tool", "18 C and sunny", tool_call_id="tooluse_abc"),
        user("and tomorrow?", cache_breakpoint=True),
        tools=(WEATHER,),
        tool_choice="auto",
        reasoning=Reasoning(budget_tokens=2000),
        max_tokens=4000,
    )
    assert result == {
        "messages": [
            {"role": "user", "content": [{"text": "weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "reasoningContent": {
                            "reasoningText": {"text": "I should look it up.", "signature": "sig-1"}
                        }
                    },
                    {"text": "Let me check."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_abc",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "tooluse_abc",
                            "content": [{"text": "18 C and sunny"}],
                        }
                    },
                    {"text": "and tomorrow?"},
                    {"cachePoint": {"type": "default"}},
                ],
            },
        ],
        "system": [{"text": "be terse"}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 4000},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "The weather in a city",
                        "inputSchema": {"json": WEATHER.parameters},
                    }
                }
            ],
            "toolChoice": {"auto": {}},
        },
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2000}},
    }


@pytest.mark.parametrize(
    ("choice", "native"),
    [
        ("", None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ("get_weather", {"tool": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_maps_to_converse_tool_choice(choice: str, native: Any) -> None:
    config = body(user(), tools=(WEATHER,), tool_choice=choice)["toolConfig"]
    assert config.get("toolChoice") == native
    assert body(user(), tools=(WEATHER,), parallel_tool_calls=True)["toolConfig"] == {
        "tools": [{"toolSpec": {**config["tools"][0]["toolSpec"]}}]
    }


def test_tool_choice_none_without_tool_history_sends_no_tools() -> None:
    assert "toolConfig" not in body(user(), tools=(WEATHER,), tool_choice="none")


def test_parallel_tool_results_join_one_user_turn_in_order() -> None:
    second = ToolCall("tooluse_def", "get_weather", '{"city":"Rome"}')
    result = body(
        user(),
        ChatMessage("assistant", "", tool_calls=(CALL, second)),
        ChatMessage("tool", "sunny", tool_call_id="tooluse_abc"),
        ChatMessage("tool", "", tool_call_id="tooluse_def"),
        tools=(WEATHER,),
    )
    assert result["messages"][1]["content"] == [
        {
            "toolUse": {
                "toolUseId": "tooluse_abc",
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        },
        {"toolUse": {"toolUseId": "tooluse_def", "name": "get_weather", "input": {"city": "Rome"}}},
    ]
    assert result["messages"][2] == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "tooluse_abc", "content": [{"text": "sunny"}]}},
            {"toolResult": {"toolUseId": "tooluse_def", "content": []}},
        ],
    }


def test_images_and_documents_go_as_bytes_in_base64() -> None:
    pdf = DocumentPart(b"%PDF-1.7 report", "application/pdf", "Q3 report (final).pdf")
    text = DocumentPart(b"plain notes", "text/plain", "")
    message = user(
        "compare",
        parts=(
            ImagePart(data=PNG, media_type="image/png"),
            ImagePart(url="data:image/webp;base64," + b64(b"RIFFwebp")),
            pdf,
            text,
        ),
    )
    assert body(message)["messages"][0]["content"] == [
        {"text": "compare"},
        {"image": {"format": "png", "source": {"bytes": b64(PNG)}}},
        {"image": {"format": "webp", "source": {"bytes": b64(b"RIFFwebp")}}},
        {
            "document": {
                "format": "pdf",
                "name": "Q3 report (final)",
                "source": {"bytes": b64(b"%PDF-1.7 report")},
            }
        },
        {
            "document": {
                "format": "txt",
                "name": document_name(text),
                "source": {"bytes": b64(b"plain notes")},
            }
        },
    ]


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("notes.txt", "notes"),
        ("John's  report #3.pdf", "John s report 3"),
        ("a\tb\u3000c_d", "a b c d"),
        ("[draft]-(v2)", "[draft]-(v2)"),
        ("x" * 250, "x" * 200),
    ],
)
def test_document_names_keep_only_what_bedrock_allows(name: str, sent: str) -> None:
    assert document_name(DocumentPart(b"data", "text/plain", name)) == sent


def test_a_document_without_a_usable_name_gets_one_from_its_bytes() -> None:
    derived = document_name(DocumentPart(b"data", "text/plain", "résumé.pdf"))
    assert derived == "r sum"
    nameless = document_name(DocumentPart(b"data", "text/plain", "...."))
    assert nameless == document_name(DocumentPart(b"data", "application/pdf", ""))
    assert nameless.startswith("document-") and len(nameless) == len("document-") + 12
    assert nameless != document_name(DocumentPart(b"other", "text/plain", ""))


def test_redacted_thinking_goes_back_verbatim_and_others_thinking_is_dropped() -> None:
    redacted = Thinking(redacted_data="ZW5jcnlwdGVk", provider="bedrock")
    foreign = Thinking("from elsewhere", "sig", provider="anthropic")
    result = body(user(), ChatMessage("assistant", "hi", parts=(foreign, redacted)), user("more"))
    assert result["messages"][1]["content"] == [
        {"reasoningContent": {"redactedContent": "ZW5jcnlwdGVk"}},
        {"text": "hi"},
    ]


@pytest.mark.parametrize(
    ("effort", "budget"), [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort_becomes_a_thinking_budget(effort: str, budget: int) -> None:
    fields = body(user(), reasoning=Reasoning(effort=effort))["additionalModelRequestFields"]
    assert fields == {"thinking": {"type": "enabled", "budget_tokens": budget}}


# -- refusals ----------------------------------------------------------------------------------

HISTORY = (
    user(),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", "sunny", tool_call_id="tooluse_abc"),
)


@pytest.mark.parametrize(
    ("messages", "fields", "setting"),
    [
        (HISTORY, {"tools": (WEATHER,), "tool_choice": "none"}, "tool_choice"),
        (HISTORY, {}, "tools"),
        ((user(),), {"tools": (WEATHER,), "parallel_tool_calls": False}, "parallel_tool_calls"),
        ((user(),), {"tools": (WEATHER,), "output_schema": {"type": "object"}}, "output_schema"),
        (
            (user(parts=(ImagePart(url="https://example.com/a.png"),)),),
            {},
            "image url",
        ),
        ((user(parts=(ImagePart(data=b"BM", media_type="image/bmp"),)),), {}, "images"),
        (
            (
                user(),
                ChatMessage("assistant", "", parts=(ImagePart(data=PNG, media_type="image/png"),)),
                user(),
            ),
            {},
            "assistant parts",
        ),
        ((user("", parts=(DocumentPart(b"%PDF", "application/pdf", "a"),)),), {}, "documents"),
        ((user(parts=(DocumentPart(b"x", "text/csv", "a"),)),), {}, "documents"),
        ((user(),), {"reasoning": Reasoning(), "model": LLAMA}, "reasoning"),
        (
            (user(),),
            {"reasoning": Reasoning(), "model": "anthropic.claude-3-5-sonnet-20241022-v2:0"},
            "reasoning",
        ),
        ((user(),), {"reasoning": Reasoning(budget_tokens=1000)}, "reasoning"),
        ((user(),), {"reasoning": Reasoning(budget_tokens=4096), "max_tokens": 4096}, "reasoning"),
        (
            (user(),),
            {"reasoning": Reasoning(), "tools": (WEATHER,), "tool_choice": "required"},
            "reasoning",
        ),
        ((user(),), {"reasoning": Reasoning(), "output_schema": {"type": "object"}}, "reasoning"),
        ((user(),), {"reasoning": Reasoning(), "temperature": 0.5}, "temperature"),
        ((user(),), {"reasoning": Reasoning(), "top_p": 0.9}, "top_p"),
        ((user(cache_breakpoint=True),), {"model": LLAMA}, "cache_breakpoint"),
        (
            (ChatMessage("system", "s", cache_breakpoint=True), user()),
            {"model": LLAMA},
            "cache_breakpoint",
        ),
        (
            (
                user(),
                ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "get_weather", "[1]"),)),
                ChatMessage("tool", "x", tool_call_id="t1"),
            ),
            {"tools": (WEATHER,)},
            "tool_calls",
        ),
        (
            (
                user(),
                ChatMessage("assistant", "", tool_calls=(ToolCall("call/1", "get_weather", "{}"),)),
                ChatMessage("tool", "x", tool_call_id="call/1"),
            ),
            {"tools": (WEATHER,)},
            "tool_calls",
        ),
        (
            (user(parts=(Thinking("t", "s", provider="bedrock"),)),),
            {},
            "thinking",
        ),
    ],
)
def test_settings_without_an_exact_converse_form_are_refused(
    messages: tuple[ChatMessage, ...], fields: dict[str, Any], setting: str
) -> None:
    with pytest.raises(UnsupportedByProvider) as raised:
        body(*messages, **fields)
    assert raised.value.setting == setting and raised.value.provider == "bedrock"


def test_reasoning_accepts_claude_s_own_sampling_limits() -> None:
    result = body(user(), reasoning=Reasoning(effort="low"), temperature=1.0, top_p=0.95)
    assert result["inferenceConfig"] == {"temperature": 1.0, "topP": 0.95}


# -- answers -----------------------------------------------------------------------------------


def test_an_answer_with_thinking_text_and_calls_parses_exactly() -> None:
    payload = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s1"}}},
                    {"reasoningContent": {"redactedContent": "AAEC"}},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "a", "input": {"q": "é", "n": 1.5}}},
                    {"toolUse": {"toolUseId": "t2", "name": "b", "input": {}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 7,
            "totalTokens": 40,
            "cacheReadInputTokens": 20,
            "cacheWriteInputTokens": 10,
        },
        "metrics": {"latencyMs": 1},
    }
    answer = parse_converse("bedrock", payload, request(user()))
    assert answer == Completion(
        content="Checking.",
        model=CLAUDE,
        finish_reason="tool_calls",
        usage=Usage(33, 7, cache_read_tokens=20, cache_write_tokens=10),
        tool_calls=(ToolCall("t1", "a", '{"q":"é","n":1.5}'), ToolCall("t2", "b", "{}")),
        thinking=(
            Thinking("hmm", "s1", provider="bedrock"),
            Thinking(redacted_data="AAEC", provider="bedrock"),
        ),
    )


def test_usage_without_cache_fields_counts_no_cache() -> None:
    assert parse_usage({"inputTokens": 4, "outputTokens": 2}) == Usage(4, 2)
    assert parse_usage({"outputTokens": 2}) is None


def test_a_malformed_tool_use_is_a_protocol_error() -> None:
    payload = {
        "output": {"message": {"content": [{"toolUse": {"name": "a", "input": {}}}]}},
        "stopReason": "tool_use",
    }
    with pytest.raises(UpstreamProtocolError, match="unexpected shape"):
        parse_converse("bedrock", payload, request(user()))


def test_structured_output_reads_the_output_tool_and_reports_no_calls() -> None:
    payload = {
        "output": {
            "message": {
                "content": [{"toolUse": {"toolUseId": "t", "name": "output", "input": {"a": 1}}}]
            }
        },
        "stopReason": "tool_use",
    }
    answer = parse_converse("bedrock", payload, request(user(), output_schema={"type": "object"}))
    assert (answer.content, answer.finish_reason, answer.tool_calls) == ('{"a":1}', "stop", ())
    assert json.loads(answer.content) == {"a": 1}


# -- the stream reader, fed three ways ---------------------------------------------------------


def frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_event(event_type, json.dumps(payload, ensure_ascii=False).encode())


def delta(index: int, value: dict[str, Any]) -> bytes:
    return frame("contentBlockDelta", {"contentBlockIndex": index, "delta": value, "p": "abc"})


STREAM = b"".join(
    [
        frame("messageStart", {"role": "assistant"}),
        delta(0, {"reasoningContent": {"text": "über\u2028"}}),
        delta(0, {"reasoningContent": {"signature": "c2ln"}}),
        frame("contentBlockStop", {"contentBlockIndex": 0}),
        frame(
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}},
        ),
        delta(1, {"toolUse": {"input": '{"q":"é'}}),
        delta(1, {"toolUse": {"input": '\u2028"}'}}),
        frame("contentBlockStop", {"contentBlockIndex": 1}),
        frame("messageStop", {"stopReason": "tool_use"}),
        frame("metadata", {"usage": {"inputTokens": 2, "outputTokens": 3}, "metrics": {}}),
    ]
)
EXPECTED: list[StreamEvent] = [
    ThinkingDelta("über\u2028"),
    ToolCallDelta(0, id="t1", name="f"),
    ToolCallDelta(0, arguments_delta='{"q":"é'),
    ToolCallDelta(0, arguments_delta='\u2028"}'),
    StreamFinished(
        "tool_calls",
        Usage(2, 3),
        CLAUDE,
        (ToolCall("t1", "f", '{"q":"é\u2028"}'),),
        (Thinking("über\u2028", "c2ln", provider="bedrock"),),
    ),
]


def read(chunks: list[bytes]) -> list[StreamEvent]:
    decoder = EventStreamDecoder()
    reader = ConverseStreamReader("bedrock", CLAUDE, structured=False)
    events: list[StreamEvent] = []
    for chunk in chunks:
        for message in decoder.feed(chunk):
            events += reader.feed(message)
    decoder.close()
    return events + reader.end()


@pytest.mark.parametrize(
    "chunks",
    [
        [STREAM],
        [STREAM[i : i + 1] for i in range(len(STREAM))],
        [STREAM + frame("messageStart", {"role": "assistant"})],
    ],
    ids=["whole", "byte-by-byte", "trailing-data"],
)
def test_the_reader_gives_the_same_events_however_the_bytes_arrive(chunks: list[bytes]) -> None:
    assert read(chunks) == EXPECTED


def test_text_deltas_still_stream_beside_tool_blocks() -> None:
    stream = STREAM.replace(
        frame("contentBlockStop", {"contentBlockIndex": 1}),
        frame("contentBlockStop", {"contentBlockIndex": 1}) + delta(2, {"text": "done"}),
    )
    assert read([stream])[4] == TextDelta("done")
