"""The Anthropic adapter against the fake Messages API, direct and on Vertex AI, on two backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from delos.resilience._limiter import RateLimitHints
from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import (
    EmbeddingsNotSupported,
    ProviderError,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from delos.runtime.providers._anthropic_answer import MessageStreamReader, parse_message
from delos.runtime.providers._anthropic_request import OutputTool
from delos.runtime.providers._vertex_host import vertex_base_url
from delos.runtime.providers.anthropic import (
    AnthropicEndpoint,
    AnthropicProvider,
    build_anthropic,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.wire import SseEvent
from delos.testing import FakeControl, FakeRequest, FakeResponse, FakeServer, Fault
from delos.testing import open_fake_server as open_server
from delos.testing._behaviour import reply_words
from delos.testing.fake_anthropic import fake_anthropic_handler

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
KEY = "sk-ant-test-key"
TOKEN = "ya29.test-token"
MODEL = "claude-3-5-haiku-20241022"
VERTEX_MODEL = "claude-3-5-haiku@20241022"
OBJECT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
    "required": ["city", "rank"],
}


def chat(*messages: tuple[str, str], model: str = MODEL, **fields: Any) -> ChatRequest:
    pairs = messages or (("user", "say hi"),)
    return ChatRequest(model, tuple(ChatMessage(r, c) for r, c in pairs), **fields)


@asynccontextmanager
async def open_anthropic(
    control: FakeControl | None = None,
    *,
    vertex: bool = False,
    hints: list[RateLimitHints] | None = None,
) -> AsyncIterator[tuple[AnthropicProvider, FakeServer]]:
    handler = fake_anthropic_handler(control or FakeControl(), api_key=KEY, access_token=TOKEN)
    async with open_server(handler) as server, httpx.AsyncClient() as client:
        listener = hints.append if hints is not None else None
        if vertex:
            provider = AnthropicProvider.for_vertex(
                project="proj-1",
                location="us-east5",
                access_token=TOKEN,
                client=client,
                catalog=CATALOG,
                base_url=server.url,
                on_rate_limits=listener,
            )
        else:
            endpoint = AnthropicEndpoint.direct(KEY, server.url)
            provider = AnthropicProvider(
                endpoint, client=client, catalog=CATALOG, on_rate_limits=listener
            )
        yield provider, server


async def collect(provider: AnthropicProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def split(events: Sequence[StreamEvent]) -> tuple[str, StreamFinished]:
    """The joined text of a well-formed stream and its one final event."""
    *deltas, last = events
    assert all(isinstance(d, TextDelta) for d in deltas)
    assert isinstance(last, StreamFinished)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), last


# -- completions and streams ----------------------------------------------------------------------


async def test_complete_returns_the_text_the_finish_reason_and_exact_usage() -> None:
    async with open_anthropic() as (provider, _):
        answer = await provider.complete(chat(("system", "be brief please"), ("user", "say hi")))
    assert answer == Completion(
        content=" ".join(reply_words("say hi", 12)),
        model=MODEL,
        finish_reason="stop",
        usage=Usage(prompt_tokens=5, completion_tokens=12),  # 3 system + 2 user words
    )


async def test_the_request_is_native_messages_api() -> None:
    request = chat(
        ("system", "rule one"),
        ("user", "a"),
        ("user", "b"),
        ("assistant", "c"),
        ("system", "rule two"),
        ("user", "d"),
        temperature=0.7,
        top_p=0.9,
        stop=("END",),
    )
    async with open_anthropic() as (provider, server):
        await provider.complete(request)
    sent = server.stats.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.header("x-api-key") == KEY
    assert sent.header("anthropic-version") == "2023-06-01"
    assert sent.header("content-type") == "application/json"
    assert sent.json() == {
        "model": MODEL,
        "max_tokens": 4096,
        "system": "rule one\n\nrule two",
        "messages": [
            {"role": "user", "content": "a\n\nb"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ],
        "temperature": 0.7,  # as asked: never clamped
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }


async def test_max_tokens_caps_the_answer_and_finishes_with_length() -> None:
    async with open_anthropic() as (provider, server):
        answer = await provider.complete(chat(max_tokens=5))
    assert server.stats.requests[-1].json()["max_tokens"] == 5
    assert len(answer.content.split()) == 5
    assert answer.finish_reason == "length"
    assert answer.usage == Usage(2, 5)


async def test_a_stop_sequence_finishes_with_stop() -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NONE, reply="one two END three")
    async with open_anthropic(control) as (provider, _):
        answer = await provider.complete(chat(stop=("END",)))
        text, finished = split(await collect(provider, chat(stop=("END",))))
    assert (answer.content, answer.finish_reason) == ("one two ", "stop")
    assert (text, finished.finish_reason) == ("one two ", "stop")


async def test_stream_deltas_join_to_the_completion_and_end_with_usage() -> None:
    request = chat(("system", "be brief please"), ("user", "say hi"))
    async with open_anthropic() as (provider, _):
        answer = await provider.complete(request)
        events = await collect(provider, request)
    text, finished = split(events)
    assert len(events) == 13  # one delta per word, then the finish
    assert text == answer.content
    assert finished == StreamFinished("stop", Usage(5, 12), MODEL)


async def test_a_stream_without_usage_reports_none_rather_than_a_guess() -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NO_FINAL_USAGE)
    async with open_anthropic(control) as (provider, _):
        answer = await provider.complete(chat())
        _, finished = split(await collect(provider, chat()))
    assert answer.usage is None and finished.usage is None


# -- structured output ----------------------------------------------------------------------------


async def test_structured_output_forces_the_output_tool_and_returns_its_input_as_json() -> None:
    request = chat(output_schema=OBJECT_SCHEMA)
    async with open_anthropic() as (provider, server):
        answer = await provider.complete(request)
        body = server.stats.requests[-1].json()
        text, finished = split(await collect(provider, request))
    assert body["tools"] == [
        {
            "name": "output",
            "description": "Give the answer as this tool's input, following its schema.",
            "input_schema": OBJECT_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "output"}
    expected = {"city": "say hi", "rank": 1}  # strings are the user's text (testing._agent)
    assert json.loads(answer.content) == expected and answer.finish_reason == "stop"
    assert json.loads(text) == expected and finished.finish_reason == "stop"


async def test_a_schema_that_is_not_an_object_is_wrapped_and_unwrapped() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2}
    request = chat(output_schema=schema)
    async with open_anthropic() as (provider, server):
        answer = await provider.complete(request)
        sent = server.stats.requests[-1].json()["tools"][0]["input_schema"]
        events = await collect(provider, request)
    assert sent == {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    assert json.loads(answer.content) == [1, 1]
    text, _ = split(events)
    assert len(events) == 2 and json.loads(text) == [1, 1]  # sent whole, once unwrapped


async def test_non_conforming_json_is_passed_through_for_validation_elsewhere() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.NONCONFORMING_JSON)
    async with open_anthropic(control) as (provider, _):
        answer = await provider.complete(chat(output_schema=OBJECT_SCHEMA))
    assert json.loads(answer.content) == {"unexpected": True}


# -- errors ---------------------------------------------------------------------------------------


ERROR_CASES = [
    (400, UpstreamRejected, "invalid_request_error"),
    (401, UpstreamAuthenticationError, "authentication_error"),
    (402, UpstreamRejected, "billing_error"),
    (403, UpstreamAuthenticationError, "permission_error"),
    (404, UpstreamModelNotFound, "not_found_error"),
    (413, UpstreamRejected, "request_too_large"),
    (429, UpstreamRateLimited, "rate_limit_error"),
    (500, UpstreamUnavailable, "api_error"),
    (504, UpstreamUnavailable, "timeout_error"),
    (529, UpstreamUnavailable, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "error_class", "error_type"), ERROR_CASES)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_each_error_status_raises_its_error_class_naming_the_provider(
    status: int, error_class: type[ProviderError], error_type: str, streamed: bool
) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=7)
    async with open_anthropic(control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            if streamed:
                await collect(provider, chat())
            else:
                await provider.complete(chat())
    error = raised.value
    assert type(error) is error_class
    assert error.provider == "anthropic" and error.http_status == status
    assert error.message.startswith("anthropic: ") and error_type in error.message
    if status in (429, 529):
        assert error.retry_after == 7.0


async def test_a_529_says_overloaded() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=529)
    async with open_anthropic(control) as (provider, _):
        with pytest.raises(UpstreamUnavailable) as raised:
            await provider.complete(chat())
    assert raised.value.message == (
        "anthropic: overloaded (HTTP 529: overloaded_error: Overloaded)"
    )


async def test_an_unknown_model_is_model_not_found() -> None:
    async with open_anthropic() as (provider, _):
        with pytest.raises(UpstreamModelNotFound) as raised:
            await provider.complete(chat(model="claude-2"))
    assert "not_found_error: model: claude-2" in raised.value.message


async def test_a_mid_stream_error_event_raises_a_protocol_error_after_the_deltas() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=3)
    received: list[StreamEvent] = []
    async with open_anthropic(control) as (provider, _):
        with pytest.raises(UpstreamProtocolError) as raised:
            async with provider.open_stream(chat()) as events:
                async for event in events:
                    received.append(event)
    assert len(received) == 3 and all(isinstance(e, TextDelta) for e in received)
    assert "overloaded" in raised.value.message
    assert "overloaded_error: Overloaded" in raised.value.message


@pytest.mark.parametrize(
    ("fault", "error_class", "fragment"),
    [
        (Fault.TRUNCATED, UpstreamProtocolError, "truncated"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
        (Fault.INVALID_JSON, UpstreamProtocolError, "not valid JSON"),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError, "expected text/event-stream"),
        (Fault.OVERSIZED_BODY, UpstreamProtocolError, "malformed stream"),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable, ""),
    ],
)
async def test_a_broken_stream_never_ends_silently(
    fault: Fault, error_class: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_anthropic(control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            await collect(provider, chat())
    assert type(raised.value) is error_class and fragment in raised.value.message


@pytest.mark.parametrize(
    ("fault", "error_class", "fragment"),
    [
        (Fault.TRUNCATED, UpstreamUnavailable, "connection lost"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
        (Fault.INVALID_JSON, UpstreamProtocolError, "not valid JSON"),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError, "unexpected content type"),
        (Fault.OVERSIZED_BODY, UpstreamProtocolError, "larger than"),
    ],
)
async def test_a_broken_answer_raises(
    fault: Fault, error_class: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_anthropic(control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            await provider.complete(chat())
    assert type(raised.value) is error_class and fragment in raised.value.message


async def test_leaving_a_stream_early_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SLOW_DRIP)
    async with open_anthropic(control) as (provider, server):
        async with provider.open_stream(chat()) as events:
            first = await events.__anext__()
        assert isinstance(first, TextDelta)
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)
        assert server.stats.completed_responses == 0


async def test_rate_limit_headers_reach_the_listener() -> None:
    hints: list[RateLimitHints] = []
    async with open_anthropic(hints=hints) as (provider, _):
        await provider.complete(chat())
        await collect(provider, chat())
    assert [h.remaining_requests for h in hints] == [3999, 3998]
    assert hints[0].remaining_tokens == 479999
    assert hints[0].requests_reset_after is not None and 0 <= hints[0].requests_reset_after <= 2


# -- the stream parser's edges, over a socket ------------------------------------------------------


CANONICAL_STREAM = (
    "event: message_start\r\n"
    'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    '"model":"claude-3-5-haiku-20241022","content":[],"stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":7,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,'
    '"output_tokens":1}}}\r\n\r\n'
    ": a comment line\r\n\r\n"
    "event: content_block_start\r\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\r\n'
    "\r\n"
    "event: content_block_delta\r\n"
    'data: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"caf\u00e9\u2028line"}}\r\n\r\n'
    'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
    "event: some_future_event\r\ndata: {}\r\n\r\n"
    "event: content_block_delta\r\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" \u2713"}}'
    "\r\n\r\n"
    'event: content_block_stop\r\ndata: {"type":"content_block_stop","index":0}\r\n\r\n'
    "event: message_delta\r\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"refusal","stop_sequence":null},'
    '"usage":{"output_tokens":4}}\r\n\r\n'
    'event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r\n'
).encode()


@asynccontextmanager
async def serving(body: bytes, chunk_size: int) -> AsyncIterator[AnthropicProvider]:
    """An adapter reading ``body`` as a stream, sent in writes of ``chunk_size`` bytes."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]

    async def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, [("content-type", "text/event-stream")], chunks())

    async with open_server(handler) as server, httpx.AsyncClient() as client:
        endpoint = AnthropicEndpoint.direct(KEY, server.url)
        yield AnthropicProvider(endpoint, client=client, catalog=CATALOG)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 4096])
async def test_crlf_events_split_anywhere_decode_the_same(chunk_size: int) -> None:
    async with serving(CANONICAL_STREAM, chunk_size) as provider:
        text, finished = split(await collect(provider, chat()))
    assert text == "caf\u00e9\u2028line \u2713"  # U+2028 stays inside the text
    # Cache writes and reads count as prompt tokens; refusal is a content filter.
    usage = Usage(12, 4, cache_read_tokens=3, cache_write_tokens=2)
    assert finished == StreamFinished("content_filter", usage, MODEL)


async def test_trailing_bytes_after_message_stop_are_ignored() -> None:
    async with serving(CANONICAL_STREAM + b"event: ping\r\ndata: {", 64) as provider:
        text, _ = split(await collect(provider, chat()))
    assert text.endswith("\u2713")


async def test_a_stream_that_ends_cleanly_before_message_stop_is_truncated() -> None:
    cut = CANONICAL_STREAM.index(b"event: message_stop")
    async with serving(CANONICAL_STREAM[:cut], 64) as provider:
        with pytest.raises(UpstreamProtocolError, match="truncated"):
            await collect(provider, chat())


async def test_a_finished_stream_leaves_its_connection_reusable() -> None:
    async with open_anthropic() as (provider, server):
        for _ in range(3):
            async with provider.open_stream(chat()) as events:
                async for event in events:
                    if isinstance(event, StreamFinished):
                        break  # a consumer that stops at the finish
    assert server.stats.connections_opened == 1


# -- Claude on Vertex AI --------------------------------------------------------------------------


async def test_vertex_posts_to_raw_predict_with_a_bearer_token_and_no_model_in_the_body() -> None:
    async with open_anthropic(vertex=True) as (provider, server):
        answer = await provider.complete(chat(model=VERTEX_MODEL, temperature=0.2))
        sent = server.stats.requests[-1]
    assert provider.name == "vertex"
    assert sent.path == (
        "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/"
        f"{VERTEX_MODEL}:rawPredict"
    )
    assert sent.header("authorization") == f"Bearer {TOKEN}"
    assert sent.header("x-api-key") is None and sent.header("anthropic-version") is None
    body = sent.json()
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    assert answer.content == " ".join(reply_words("say hi", 12))
    assert answer.usage == Usage(2, 12)


async def test_vertex_streams_from_stream_raw_predict() -> None:
    async with open_anthropic(vertex=True) as (provider, server):
        text, finished = split(await collect(provider, chat(model=VERTEX_MODEL)))
        sent = server.stats.requests[-1]
    assert sent.path.endswith(f"/models/{VERTEX_MODEL}:streamRawPredict")
    assert sent.json()["stream"] is True
    assert text == " ".join(reply_words("say hi", 12))
    assert finished == StreamFinished("stop", Usage(2, 12), VERTEX_MODEL)


async def test_vertex_platform_errors_in_the_google_shape_map_too() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429)
    async with open_anthropic(control, vertex=True) as (provider, _):
        with pytest.raises(UpstreamRateLimited) as raised:
            await provider.complete(chat(model=VERTEX_MODEL))
    assert raised.value.provider == "vertex"
    assert "RESOURCE_EXHAUSTED: Resource exhausted" in raised.value.message


async def test_vertex_serves_only_the_claude_models_of_the_vertex_catalog() -> None:
    async with httpx.AsyncClient() as client:
        provider = AnthropicProvider.for_vertex(
            project="p", location="us-east5", access_token="t", client=client, catalog=CATALOG
        )
    assert provider.models() == (
        "claude-opus-4-5@20251101",
        "claude-sonnet-4-5@20250929",
        "claude-haiku-4-5@20251001",
        "claude-opus-4-1@20250805",
        "claude-3-5-sonnet-v2@20241022",
        "claude-3-5-haiku@20241022",
        "claude-3-opus@20240229",
    )
    assert provider.base_url == "https://us-east5-aiplatform.googleapis.com"


def test_vertex_hosts_follow_the_location() -> None:
    assert vertex_base_url("europe-west1") == "https://europe-west1-aiplatform.googleapis.com"
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com"
    assert vertex_base_url("eu") == "https://aiplatform.eu.rep.googleapis.com"


def test_the_endpoint_keeps_credentials_out_of_its_repr() -> None:
    assert KEY not in repr(AnthropicEndpoint.direct(KEY))
    assert TOKEN not in repr(AnthropicEndpoint.for_vertex("p", "us-east5", TOKEN))


# -- embeddings and the builder -------------------------------------------------------------------


async def test_embeddings_are_not_supported_and_the_error_names_who_has_them() -> None:
    async with open_anthropic() as (direct, _), open_anthropic(vertex=True) as (vertex, _):
        with pytest.raises(EmbeddingsNotSupported, match="openai, gemini"):
            await direct.embed(EmbedRequest("any", ("text",)))
        with pytest.raises(EmbeddingsNotSupported, match="Vertex AI embedding model"):
            await vertex.embed(EmbedRequest("any", ("text",)))


async def test_the_builder_reads_key_and_base_url_from_the_settings() -> None:
    async with open_anthropic() as (_, server), httpx.AsyncClient() as client:
        settings = Settings(anthropic_key=KEY, anthropic_base_url=server.url)  # type: ignore[arg-type]
        provider = build_anthropic(settings, CATALOG, client)
        answer = await provider.complete(chat())
    assert provider.name == "anthropic" and answer.finish_reason == "stop"
    assert MODEL in provider.models()
    default = build_anthropic(Settings(), CATALOG, client)
    assert isinstance(default, AnthropicProvider)
    assert default.base_url == "https://api.anthropic.com"


# -- the wire format without a socket -------------------------------------------------------------


def sse(name: str | None, payload: dict[str, Any]) -> SseEvent:
    return SseEvent(name, json.dumps(payload))


def read_all(events: Sequence[SseEvent], output_tool: OutputTool | None = None) -> list[Any]:
    reader = MessageStreamReader("anthropic", model=MODEL, output_tool=output_tool)
    return [item for event in events for item in reader.feed(event)]


START = sse("message_start", {"type": "message_start", "message": {"model": MODEL, "usage": {}}})
STOP = sse("message_stop", {"type": "message_stop"})


def delta(kind: str, index: int = 0, **fields: str) -> SseEvent:
    body = {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}
    return sse("content_block_delta", body)


def finish(reason: str, usage: dict[str, int] | None = None) -> SseEvent:
    body: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": reason}}
    if usage is not None:
        body["usage"] = usage
    return sse("message_delta", body)


def test_the_reader_ignores_unknown_and_unnamed_events() -> None:
    items = read_all(
        [
            START,
            sse(None, {"type": "content_block_delta", "delta": {"text": "unnamed"}}),
            sse("citations_soon", {"type": "citations_soon"}),
            delta("text_delta", index=1, text="answer"),
            finish("end_turn", {"output_tokens": 3}),
            STOP,
            delta("text_delta", text="after the end"),
        ]
    )
    assert items == [TextDelta("answer"), StreamFinished("stop", None, MODEL)]


def test_repeated_input_counts_in_message_delta_are_the_final_word() -> None:
    start = sse(
        "message_start",
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
    )
    usage = {"input_tokens": 6, "cache_read_input_tokens": 4, "output_tokens": 9}
    *_, last = read_all([start, finish("max_tokens", usage), STOP])
    assert last == StreamFinished("length", Usage(10, 9, cache_read_tokens=4), MODEL)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),
        ("Model_Context_Window_Exceeded", "model_context_window_exceeded"),
    ],
)
def test_stop_reasons_are_normalised(stop_reason: str, finish_reason: str) -> None:
    *_, last = read_all([START, finish(stop_reason), STOP])
    assert last.finish_reason == finish_reason
    payload = {"content": [], "stop_reason": stop_reason}
    parsed = parse_message("anthropic", payload, model=MODEL, output_tool=None)
    assert parsed.finish_reason == finish_reason


def test_message_stop_without_a_stop_reason_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="without a stop reason"):
        read_all([START, delta("text_delta", text="x"), STOP])


def test_an_error_event_names_its_type_and_message() -> None:
    error = sse("error", {"type": "error", "error": {"type": "api_error", "message": "Boom"}})
    with pytest.raises(UpstreamProtocolError) as raised:
        read_all([START, error])
    assert raised.value.message == "anthropic: error in the stream (api_error: Boom)"


def test_an_event_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="not valid JSON"):
        read_all([SseEvent("message_start", "{nope")])


def test_structured_output_falls_back_to_text_when_the_model_never_calls_the_tool() -> None:
    tool = OutputTool.for_schema(OBJECT_SCHEMA)
    events = [START, delta("text_delta", text="I can't "), delta("text_delta", text="help.")]
    items = read_all([*events, finish("refusal"), STOP], tool)
    assert items == [TextDelta("I can't help."), StreamFinished("content_filter", None, MODEL)]


def test_a_tool_the_client_declared_is_a_tool_call_not_the_answer() -> None:
    start = sse(
        "content_block_start",
        {"index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "lookup"}},
    )
    call = delta("input_json_delta", partial_json='{"q":1}')
    items = read_all(
        [START, start, call, finish("tool_use"), STOP], OutputTool.for_schema(OBJECT_SCHEMA)
    )
    assert items == [
        ToolCallDelta(0, id="t1", name="lookup"),
        ToolCallDelta(0, arguments_delta='{"q":1}'),
        StreamFinished("tool_calls", None, MODEL, (ToolCall("t1", "lookup", '{"q":1}'),)),
    ]


def test_wrapping_a_schema_keeps_its_definitions_at_the_root() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}}
    tool = OutputTool.for_schema(schema)
    assert tool.wrapped and tool.schema["$defs"] == {"n": {"type": "integer"}}
    assert tool.schema["properties"]["value"] == {"type": "array", "items": {"$ref": "#/$defs/n"}}
    assert tool.answer({"value": [1, 2]}) == "[1, 2]"


def test_parse_message_reads_text_blocks_and_cache_counts() -> None:
    payload = {
        "model": "claude-3-5-haiku-20241022",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "s"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 3,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 20,
            "output_tokens": 2,
        },
    }
    parsed = parse_message("anthropic", payload, model=MODEL, output_tool=None)
    usage = Usage(33, 2, cache_read_tokens=20, cache_write_tokens=10)
    thinking = (Thinking("…", "s", provider="anthropic"),)
    assert parsed == Completion("Hello, world", MODEL, "stop", usage, thinking=thinking)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "error", "error": {"type": "api_error", "message": "Boom"}},
        {"id": "msg_1", "type": "message"},
        {"content": [{"type": "text"}]},
        ["not", "an", "object"],
    ],
)
def test_parse_message_rejects_errors_and_odd_shapes(payload: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_message("anthropic", payload, model=MODEL, output_tool=None)
