"""The Gemini adapter's agent features, on the Gemini API and on Vertex AI, against the fake:
function calls and results, thinking and signatures, media, implicit caching, refusals."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.errors import UnsupportedByProvider, UpstreamRejected
from delos.runtime.providers._gemini_answer import AnswerBuilder
from delos.runtime.providers._gemini_request import generate_body
from delos.runtime.providers._parts import deterministic_call_id
from delos.runtime.providers.gemini import GeminiProvider
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
from delos.testing import FakeControl, FakeServer, open_fake_server
from delos.testing._agent import sign, thought_about
from delos.testing.fake_gemini import (
    IMPLICIT_CACHE_MIN_TOKENS,
    THOUGHT_TOKENS,
    fake_gemini_handler,
)

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
THINKER = "gemini-2.5-flash"  # thinks by default, on both surfaces
WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    "get_time",
    "",
    {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


@dataclass
class Setup:
    provider: GeminiProvider
    server: FakeServer

    def sent(self, index: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = self.server.stats.requests[index].json()
        return body


@pytest.fixture(params=["gemini", "vertex"])
def surface(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def open_setup(surface: str) -> AsyncIterator[Setup]:
    handler = fake_gemini_handler(FakeControl(), api_key="key", access_token="token")
    async with open_fake_server(handler) as server, httpx.AsyncClient() as client:
        if surface == "vertex":
            provider = GeminiProvider.for_vertex(
                "proj", "us-central1", "token", client, CATALOG, server.url
            )
        else:
            provider = GeminiProvider(
                api_key="key", client=client, catalog=CATALOG, base_url=server.url
            )
        yield Setup(provider, server)


async def stream_all(provider: GeminiProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def ask(text: str, model: str = THINKER, **fields: Any) -> ChatRequest:
    return ChatRequest(model, (ChatMessage("user", text),), **fields)


def signature_for(user_text: str) -> str:
    return sign(thought_about(user_text))


def declarations(*tools: Tool) -> list[dict[str, Any]]:
    return [{"functionDeclarations": [dict(wire_declaration(t)) for t in tools]}]


def wire_declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    return {**declaration, "parametersJsonSchema": dict(tool.parameters)}


def answer_turn(answer: Completion) -> ChatMessage:
    """The assistant turn a client sends back after ``answer``."""
    return ChatMessage("assistant", answer.content, answer.thinking, answer.tool_calls)


# -- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "config", "called"),
    [
        ("", None, ["get_weather"]),
        ("auto", {"mode": "AUTO"}, ["get_weather"]),
        ("required", {"mode": "ANY"}, ["get_weather"]),
        ("get_time", {"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ["get_time"]),
        ("none", {"mode": "NONE"}, []),
    ],
)
async def test_tools_and_tool_choice_are_sent_natively(
    surface: str, choice: str, config: dict[str, Any] | None, called: list[str]
) -> None:
    model = "gemini-1.5-flash-002" if surface == "vertex" else "gemini-1.5-flash"
    request = ask("forecast", model, tools=(WEATHER, TIME), tool_choice=choice)
    async with open_setup(surface) as s:
        answer = await s.provider.complete(request)
        body = s.sent()
    assert body["tools"] == declarations(WEATHER, TIME)
    assert body.get("toolConfig") == (config and {"functionCallingConfig": config})
    assert [call.name for call in answer.tool_calls] == called
    assert answer.finish_reason == ("tool_calls" if called else "stop")


async def test_a_call_its_result_and_the_final_answer(surface: str) -> None:
    text = "weather in Paris"
    signature = signature_for(text)
    async with open_setup(surface) as s:
        first = await s.provider.complete(ask(text, tools=(WEATHER,)))
        call = first.tool_calls[0]
        assert first == Completion(
            content="",
            model=THINKER,
            finish_reason="tool_calls",
            # The fake's words of the arguments; thoughts are billed as completion tokens.
            usage=Usage(3, 3 + THOUGHT_TOKENS, reasoning_tokens=THOUGHT_TOKENS),
            tool_calls=(
                ToolCall(call.id, "get_weather", '{"city":"weather in Paris"}', signature),
            ),
        )
        second_request = ChatRequest(
            THINKER,
            (
                ChatMessage("user", text),
                answer_turn(first),
                ChatMessage("tool", "sunny", tool_call_id=call.id),
            ),
            tools=(WEATHER,),
        )
        second = await s.provider.complete(second_request)
        body = s.sent()
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": text}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": text}},
                    "thoughtSignature": signature,
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
            ],
        },
    ]
    assert second.content == "Tool said: sunny" and second.finish_reason == "stop"
    assert second.tool_calls == ()
    # The answer's own signature, on its text part, comes back as a Thinking without text.
    assert second.thinking == (Thinking("", signature, provider=surface),)


async def test_a_streamed_call_is_one_delta_with_id_name_and_whole_arguments(surface: str) -> None:
    text = "weather in Oslo"
    async with open_setup(surface) as s:
        events = await stream_all(s.provider, ask(text, tools=(WEATHER,)))
        sent = s.server.stats.requests[-1]
    call = ToolCall(events[0].id, "get_weather", '{"city":"weather in Oslo"}', signature_for(text))  # type: ignore[union-attr]
    assert events == [
        ToolCallDelta(0, call.id, "get_weather", call.arguments_json),
        StreamFinished(
            "tool_calls",
            Usage(3, 3 + THOUGHT_TOKENS, reasoning_tokens=THOUGHT_TOKENS),
            THINKER,
            (call,),
        ),
    ]
    assert sent.query == "alt=sse"


async def test_a_streamed_agent_loop_ends_with_the_signed_answer(surface: str) -> None:
    text = "weather in Rome"
    async with open_setup(surface) as s:
        events = await stream_all(s.provider, ask(text, tools=(WEATHER,)))
        finished = events[-1]
        assert isinstance(finished, StreamFinished)
        calls = finished.tool_calls
        follow_up = ChatRequest(
            THINKER,
            (
                ChatMessage("user", text),
                ChatMessage("assistant", "", tool_calls=calls),
                ChatMessage("tool", '{"celsius": 21}', tool_call_id=calls[0].id),
            ),
            tools=(WEATHER,),
        )
        events = await stream_all(s.provider, follow_up)
        body = s.sent()
    results = body["contents"][-1]["parts"]
    # A result that is a JSON object is sent as the response object itself.
    assert results == [{"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas) == 'Tool said: {"celsius":21}'
    # The fake counts words: 3 of the question, 3 of the call's JSON, 1 of the result's.
    assert events[-1] == StreamFinished(
        "stop",
        Usage(7, 3 + THOUGHT_TOKENS, reasoning_tokens=THOUGHT_TOKENS),
        THINKER,
        thinking=(Thinking("", signature_for(text), provider=surface),),
    )


async def test_parallel_calls_and_their_results_in_one_turn(surface: str) -> None:
    text = "time and weather in parallel"
    async with open_setup(surface) as s:
        answer = await s.provider.complete(ask(text, tools=(WEATHER, TIME)))
        events = await stream_all(s.provider, ask(text, tools=(WEATHER, TIME)))
        assert [c.name for c in answer.tool_calls] == ["get_weather", "get_time"]
        # Gemini signs the first of parallel calls only.
        assert [bool(c.signature) for c in answer.tool_calls] == [True, False]
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert [(d.index, d.name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
        finished = events[-1]
        assert isinstance(finished, StreamFinished) and finished.finish_reason == "tool_calls"
        assert [c.id for c in finished.tool_calls] == [d.id for d in deltas]
        first, second = answer.tool_calls
        follow_up = ChatRequest(
            THINKER,
            (
                ChatMessage("user", text),
                answer_turn(answer),
                ChatMessage("tool", "rainy", tool_call_id=first.id),
                ChatMessage("tool", "noon", tool_call_id=second.id),
            ),
            tools=(WEATHER, TIME),
        )
        final = await s.provider.complete(follow_up)
        body = s.sent()
    assert [len(c["parts"]) for c in body["contents"]] == [1, 2, 2]
    assert [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]] == [
        "get_weather",
        "get_time",
    ]
    assert final.content == "Tool said: rainy; noon"


async def test_call_ids_are_deterministic_for_the_answer() -> None:
    payload = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "f", "args": {"b": 1, "a": [1.5, "é"]}}},
                        {"functionCall": {"name": "f", "args": {"b": 1, "a": [1.5, "é"]}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "responseId": "resp-1",
    }
    ids = []
    for _ in range(2):
        builder = AnswerBuilder("gemini", "m")
        builder.feed(payload)
        ids.append([call.id for call in builder.tool_calls])
        # Key order kept, compact, non-ASCII as is.
        assert [c.arguments_json for c in builder.tool_calls] == ['{"b":1,"a":[1.5,"é"]}'] * 2
    assert ids[0] == ids[1]
    assert ids[0] == [
        deterministic_call_id("resp-1", 0, "f", '{"b":1,"a":[1.5,"é"]}'),
        deterministic_call_id("resp-1", 1, "f", '{"b":1,"a":[1.5,"é"]}'),
    ]
    assert ids[0][0] != ids[0][1]


@pytest.mark.parametrize(("reason", "expected"), [("STOP", "tool_calls"), ("MAX_TOKENS", "length")])
def test_a_finish_after_calls(reason: str, expected: str) -> None:
    builder = AnswerBuilder("gemini", "m")
    call = {"functionCall": {"name": "f"}}
    builder.feed({"candidates": [{"content": {"parts": [call]}, "finishReason": reason}]})
    assert builder.finish_reason == expected
    assert builder.tool_calls[0].arguments_json == "{}"


async def test_a_call_sent_back_without_its_signature_is_refused(surface: str) -> None:
    text = "weather in Lima"
    async with open_setup(surface) as s:
        first = await s.provider.complete(ask(text, tools=(WEATHER,)))
        call = first.tool_calls[0]
        for signature, fragment in [("", "thought_signature"), (sign("other"), "signature")]:
            request = ChatRequest(
                THINKER,
                (
                    ChatMessage("user", text),
                    ChatMessage(
                        "assistant",
                        "",
                        tool_calls=(ToolCall(call.id, call.name, call.arguments_json, signature),),
                    ),
                    ChatMessage("tool", "sunny", tool_call_id=call.id),
                ),
                tools=(WEATHER,),
            )
            with pytest.raises(UpstreamRejected, match=fragment) as raised:
                await s.provider.complete(request)
            assert raised.value.http_status == 400


# -- thinking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reasoning", "config"),
    [
        (Reasoning(effort="minimal"), {"thinkingBudget": 1024}),
        (Reasoning(effort="low"), {"thinkingBudget": 2048}),
        (Reasoning(effort="medium"), {"thinkingBudget": 8192}),
        (
            Reasoning(effort="high", include_thoughts=True),
            {"thinkingBudget": 24576, "includeThoughts": True},
        ),
        # An explicit budget wins over an effort.
        (Reasoning(effort="high", budget_tokens=2000), {"thinkingBudget": 2000}),
        (Reasoning(include_thoughts=True), {"includeThoughts": True}),
    ],
)
async def test_reasoning_becomes_the_thinking_config(
    surface: str, reasoning: Reasoning, config: dict[str, Any]
) -> None:
    async with open_setup(surface) as s:
        # 2.5 Pro cannot stop thinking: every mapped budget is one it accepts.
        await s.provider.complete(ask("hi", "gemini-2.5-pro", reasoning=reasoning))
        body = s.sent()
    assert body["generationConfig"] == {"thinkingConfig": config}


async def test_thoughts_and_signatures_come_back_and_go_back(surface: str) -> None:
    text = "why is the sky blue"
    thought = thought_about(text)
    request = ask(text, reasoning=Reasoning(include_thoughts=True))
    async with open_setup(surface) as s:
        answer = await s.provider.complete(request)
        events = await stream_all(s.provider, request)
        expected = (
            Thinking(thought, provider=surface),
            Thinking("", signature_for(text), provider=surface),
        )
        assert answer.thinking == expected
        assert events[0] == ThinkingDelta(thought)
        finished = events[-1]
        assert isinstance(finished, StreamFinished) and finished.thinking == expected
        content = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert content == answer.content
        foreign = Thinking("elsewhere", "c2lnbg==", provider="anthropic")
        turn = ChatMessage("assistant", answer.content, (*answer.thinking, foreign))
        await s.provider.complete(
            ChatRequest(THINKER, (request.messages[0], turn, ChatMessage("user", "and at night?")))
        )
        body = s.sent()
    # Thoughts lead the turn; the text's signature rides on the text; other providers' thinking
    # stays behind.
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": thought, "thought": True},
            {"text": answer.content, "thoughtSignature": signature_for(text)},
        ],
    }


async def test_a_signature_without_text_to_ride_on_gets_its_own_empty_part() -> None:
    request = ChatRequest(
        "m",
        (
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "", (Thinking("", "c2ln", provider="gemini"),)),
            ChatMessage("user", "again"),
        ),
    )
    body = generate_body("gemini", request)
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"text": "", "thoughtSignature": "c2ln"}],
    }


def test_thinking_of_no_endpoint_goes_only_as_plain_text() -> None:
    parts = (
        Thinking("plain notes"),
        Thinking("signed elsewhere", "c2ln"),
        Thinking("", "c2ln", provider="vertex"),
    )
    request = ChatRequest(
        "m",
        (
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "ok", parts),
            ChatMessage("user", "again"),
        ),
    )
    body = generate_body("gemini", request)
    assert body["contents"][1]["parts"] == [
        {"text": "plain notes", "thought": True},
        {"text": "ok"},
    ]


def test_streamed_thought_fragments_are_one_thinking() -> None:
    builder = AnswerBuilder("vertex", "m")
    events = []
    for part in (
        {"text": "Step one. ", "thought": True},
        {"text": "Step two.", "thought": True},
        {"text": "Answer"},
        {"text": "", "thoughtSignature": "c2ln"},
    ):
        events += builder.feed({"candidates": [{"content": {"parts": [part]}}]})
    assert events == [ThinkingDelta("Step one. "), ThinkingDelta("Step two."), TextDelta("Answer")]
    assert builder.thinking == (
        Thinking("Step one. Step two.", provider="vertex"),
        Thinking("", "c2ln", provider="vertex"),
    )


# -- media ----------------------------------------------------------------------------------------


async def test_images_and_documents_reach_the_fake_inline(surface: str) -> None:
    parts = (
        ImagePart(data=PNG, media_type="image/png"),
        ImagePart(url="data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff").decode()),
        DocumentPart(b"%PDF-1.7", "application/pdf", "report.pdf"),
        DocumentPart(b"plain words", "text/plain", "notes.txt"),
    )
    request = ChatRequest(THINKER, (ChatMessage("user", "describe", parts),))
    async with open_setup(surface) as s:
        answer = await s.provider.complete(request)
        body = s.sent()
    assert answer.finish_reason == "stop"
    assert body["contents"][0]["parts"] == [
        {"text": "describe"},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
        {
            "inlineData": {
                "mimeType": "application/pdf",
                "data": base64.b64encode(b"%PDF-1.7").decode(),
            }
        },
        {"text": "notes.txt\n\nplain words"},
    ]


# -- caching --------------------------------------------------------------------------------------


async def test_a_repeated_long_prefix_is_read_from_the_implicit_cache(surface: str) -> None:
    words = IMPLICIT_CACHE_MIN_TOKENS + 10
    system = ChatMessage("system", " ".join(f"w{i}" for i in range(words)), cache_breakpoint=True)

    def request(question: str) -> ChatRequest:
        return ChatRequest(THINKER, (system, ChatMessage("user", question)))

    async with open_setup(surface) as s:
        first = await s.provider.complete(request("first question"))
        second = await s.provider.complete(request("second question"))
        events = await stream_all(s.provider, request("third question"))
        body = s.sent()
    # No cache marker exists in Gemini's format: caching is implicit.
    assert body["systemInstruction"] == {"parts": [{"text": system.content}]}
    assert "cachedContent" not in body
    assert first.usage is not None and first.usage.cache_read_tokens == 0
    # The shared prefix is the system prompt: the questions differ from their first word.
    assert second.usage == Usage(
        words + 2, 12 + THOUGHT_TOKENS, cache_read_tokens=words, reasoning_tokens=THOUGHT_TOKENS
    )
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.usage is not None
    assert finished.usage.cache_read_tokens == words


def test_usage_reads_every_count() -> None:
    builder = AnswerBuilder("gemini", "m")
    usage = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "toolUsePromptTokenCount": 7,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 147,
    }
    builder.feed({"candidates": [{"content": {"parts": [{"text": "x"}]}}], "usageMetadata": usage})
    assert builder.usage == Usage(107, 40, cache_read_tokens=60, reasoning_tokens=30)


# -- refused before sending -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "setting"),
    [
        (ask("hi", tools=(WEATHER,), parallel_tool_calls=False), "parallel_tool_calls"),
        (
            ChatRequest(
                THINKER,
                (ChatMessage("user", "see", (ImagePart(url="https://example.com/a.png"),)),),
            ),
            "image url",
        ),
        (
            ChatRequest(
                THINKER,
                (ChatMessage("user", "see", (ImagePart(data=b"GIF89a", media_type="image/gif"),)),),
            ),
            "image type",
        ),
        (
            ChatRequest(
                THINKER,
                (
                    ChatMessage("user", "hi"),
                    ChatMessage(
                        "assistant", "ok", (Thinking(redacted_data="x", provider="gemini"),)
                    ),
                    ChatMessage("user", "again"),
                ),
            ),
            "thinking",
        ),
        (
            ChatRequest(
                THINKER,
                (
                    ChatMessage("user", "hi"),
                    ChatMessage("tool", "orphan", tool_call_id="call_unknown"),
                ),
            ),
            "tool results",
        ),
    ],
)
async def test_settings_without_a_native_form_are_refused_before_sending(
    request_: ChatRequest, setting: str
) -> None:
    async with open_setup("gemini") as s:
        with pytest.raises(UnsupportedByProvider) as unary:
            await s.provider.complete(request_)
        with pytest.raises(UnsupportedByProvider) as streamed:
            await stream_all(s.provider, request_)
        assert s.server.stats.request_count == 0
    assert unary.value.setting == streamed.value.setting == setting
    assert unary.value.provider == "gemini"


@pytest.mark.parametrize(
    "request_",
    [
        ask("hi", parallel_tool_calls=False),  # no tools: nothing to forbid
        ask("hi", tools=(WEATHER,), tool_choice="none", parallel_tool_calls=False),
    ],
)
async def test_no_parallel_calls_is_honoured_where_no_call_can_happen(
    request_: ChatRequest,
) -> None:
    async with open_setup("gemini") as s:
        answer = await s.provider.complete(request_)
    assert answer.tool_calls == () and answer.finish_reason == "stop"


def test_the_body_is_json_as_sent() -> None:
    request = ask("x", tools=(WEATHER,), reasoning=Reasoning(effort="low"))
    body = generate_body("gemini", request)
    assert json.loads(json.dumps(body)) == body
