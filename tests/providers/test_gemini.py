"""The Gemini adapter, on the Gemini API and on Vertex AI, against the fake on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from delos.resilience import RateLimitHints
from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import (
    ProviderError,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.providers._gemini_answer import retry_delay
from delos.runtime.providers._gemini_request import generate_body
from delos.runtime.providers._vertex_host import vertex_base_url
from delos.runtime.providers.gemini import GeminiProvider, build_gemini
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    Usage,
)
from delos.testing import FakeControl, FakeRequest, FakeResponse, FakeServer, Fault
from delos.testing import open_fake_server as open_server
from delos.testing.fake_gemini import THOUGHT_TOKENS, fake_gemini_handler
from delos.testing.fake_openai import embedding_of

pytestmark = pytest.mark.anyio

KEY = "gemini-test-key"
TOKEN = "vertex-test-token"
CATALOG = Catalog.load()


@dataclass
class Setup:
    provider: GeminiProvider
    server: FakeServer
    control: FakeControl
    hints: list[RateLimitHints]


@pytest.fixture(params=["gemini", "vertex"])
def surface(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def chat_model(surface: str) -> str:
    return "gemini-1.5-flash-002" if surface == "vertex" else "gemini-1.5-flash"


def ask(surface: str, text: str = "say hello", **fields: Any) -> ChatRequest:
    return ChatRequest(chat_model(surface), (ChatMessage("user", text),), **fields)


def make_provider(
    surface: str, server: FakeServer, client: httpx.AsyncClient, hints: list[RateLimitHints]
) -> GeminiProvider:
    if surface == "vertex":
        return GeminiProvider.for_vertex(
            "proj", "us-central1", TOKEN, client, CATALOG, server.url, on_rate_limits=hints.append
        )
    return GeminiProvider(
        api_key=KEY,
        client=client,
        catalog=CATALOG,
        base_url=server.url,
        on_rate_limits=hints.append,
    )


@asynccontextmanager
async def open_setup(surface: str, control: FakeControl | None = None) -> AsyncIterator[Setup]:
    control = control or FakeControl()
    handler = fake_gemini_handler(control, api_key=KEY, access_token=TOKEN)
    async with open_server(handler) as server, httpx.AsyncClient() as client:
        hints: list[RateLimitHints] = []
        yield Setup(make_provider(surface, server, client, hints), server, control, hints)


@asynccontextmanager
async def open_raw(
    surface: str, answer: Callable[[FakeRequest], FakeResponse]
) -> AsyncIterator[tuple[GeminiProvider, FakeServer]]:
    """The adapter against a handler that answers fixed bytes, for parser edge cases."""

    async def handler(request: FakeRequest) -> FakeResponse:
        return answer(request)

    async with open_server(handler) as server, httpx.AsyncClient() as client:
        yield make_provider(surface, server, client, []), server


async def stream_all(provider: GeminiProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\r\n\r\n" for p in payloads)


def sse_response(body: bytes) -> FakeResponse:
    return FakeResponse(200, [("content-type", "text/event-stream")], body)


def json_response(payload: object) -> FakeResponse:
    return FakeResponse.json(payload)


def unary_or_stream(request: FakeRequest, payload: object) -> FakeResponse:
    """``payload`` as a whole answer, or as the one event of a stream."""
    if ":streamGenerateContent" in request.path:
        return sse_response(sse(payload))
    return json_response(payload)


def chunk(text: str, finish: str | None = None, **extra: object) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], **extra}


# -- completions ----------------------------------------------------------------------------------


async def test_complete_returns_content_finish_reason_and_exact_usage(surface: str) -> None:
    async with open_setup(surface) as s:
        request = ChatRequest(
            chat_model(surface),
            (ChatMessage("system", "be very terse"), ChatMessage("user", "say hello")),
        )
        answer = await s.provider.complete(request)
    assert len(answer.content.split()) == 12
    assert answer.finish_reason == "stop"
    # Three system words and two user words; one token per generated word.
    assert answer.usage == Usage(5, 12)
    assert answer.model == ("gemini-1.5-flash-002")


async def test_max_tokens_becomes_max_output_tokens_and_finishes_with_length(surface: str) -> None:
    async with open_setup(surface) as s:
        answer = await s.provider.complete(ask(surface, max_tokens=4, temperature=0.3, top_p=0.9))
        body = s.server.stats.requests[-1].json()
    assert answer.finish_reason == "length" and answer.usage == Usage(2, 4)
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 4}


async def test_the_request_is_native_with_system_instruction_and_model_role(surface: str) -> None:
    request = ChatRequest(
        chat_model(surface),
        (
            ChatMessage("system", "rule one"),
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "hello"),
            ChatMessage("system", "rule two"),
            ChatMessage("user", "again"),
        ),
        stop=("END",),
    )
    async with open_setup(surface) as s:
        await s.provider.complete(request)
        sent = s.server.stats.requests[-1]
    body = sent.json()
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "again"}]},
        ],
        "systemInstruction": {"parts": [{"text": "rule one\n\nrule two"}]},
        "generationConfig": {"stopSequences": ["END"]},
    }
    assert sent.query == ""  # never ?key=: URLs get logged
    if surface == "vertex":
        assert sent.path == (
            "/v1/projects/proj/locations/us-central1/publishers/google/models/"
            "gemini-1.5-flash-002:generateContent"
        )
        assert sent.header("authorization") == f"Bearer {TOKEN}"
        assert sent.header("x-goog-api-key") is None
    else:
        assert sent.path == "/v1beta/models/gemini-1.5-flash:generateContent"
        assert sent.header("x-goog-api-key") == KEY
        assert sent.header("authorization") is None


async def test_a_request_of_system_messages_alone_is_sent_as_the_user_turn(surface: str) -> None:
    async with open_setup(surface) as s:
        await s.provider.complete(
            ChatRequest(chat_model(surface), (ChatMessage("system", "write a haiku"),))
        )
        body = s.server.stats.requests[-1].json()
    assert body == {"contents": [{"role": "user", "parts": [{"text": "write a haiku"}]}]}


async def test_structured_output_is_sent_as_response_json_schema(surface: str) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "minItems": 1}},
        "required": ["name", "tags"],
        "additionalProperties": False,
    }
    async with open_setup(surface) as s:
        answer = await s.provider.complete(ask(surface, output_schema=schema))
        config = s.server.stats.requests[-1].json()["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert json.loads(answer.content) == {"name": "x", "tags": [{}]}


async def test_thinking_tokens_count_as_completion_tokens() -> None:
    async with open_setup("gemini") as s:
        answer = await s.provider.complete(
            ChatRequest("gemini-2.5-flash", (ChatMessage("user", "hi"),))
        )
    # candidatesTokenCount leaves the thoughts out; completion tokens include them.
    assert answer.usage == Usage(1, 12 + THOUGHT_TOKENS, reasoning_tokens=THOUGHT_TOKENS)


async def test_thought_parts_are_not_part_of_the_answer(surface: str) -> None:
    payload = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "pondering", "thought": True}, {"text": "4"}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 3,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 7,
        },
        "modelVersion": "gemini-2.5-pro",
    }
    async with open_raw(surface, lambda _: json_response(payload)) as (provider, _):
        answer = await provider.complete(ask(surface))
    thought = Thinking("pondering", provider=surface)
    assert answer == Completion(
        "4", "gemini-2.5-pro", "stop", Usage(3, 8, reasoning_tokens=7), thinking=(thought,)
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call"),
        ("OTHER", "other"),
    ],
)
async def test_finish_reasons_are_normalised(reason: str, expected: str) -> None:
    payload = {"candidates": [{"content": {"parts": []}, "finishReason": reason}]}
    async with open_raw("gemini", lambda _: json_response(payload)) as (provider, _):
        answer = await provider.complete(ask("gemini"))
    assert answer.finish_reason == expected
    assert answer.content == "" and answer.usage is None


async def test_zero_counts_left_out_by_proto3_json_read_as_zero() -> None:
    payload = {
        "candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "SAFETY"}],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    async with open_raw("gemini", lambda _: json_response(payload)) as (provider, _):
        answer = await provider.complete(ask("gemini"))
    assert answer.usage == Usage(9, 0)


async def test_a_missing_usage_is_reported_as_none(surface: str) -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NO_FINAL_USAGE)
    async with open_setup(surface, control) as s:
        answer = await s.provider.complete(ask(surface))
        events = await stream_all(s.provider, ask(surface))
    assert answer.usage is None
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.usage is None


async def test_a_blocked_prompt_is_rejected_with_its_block_reason(surface: str) -> None:
    payload = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
    }
    async with open_raw(surface, lambda r: unary_or_stream(r, payload)) as (provider, _):
        with pytest.raises(UpstreamRejected) as raised:
            await provider.complete(ask(surface))
        with pytest.raises(UpstreamRejected):
            await stream_all(provider, ask(surface))
    assert "blockReason PROHIBITED_CONTENT" in raised.value.message
    assert raised.value.provider == surface


async def test_an_answer_without_candidates_or_block_reason_is_a_protocol_error() -> None:
    async with open_raw("gemini", lambda _: json_response({"modelVersion": "x"})) as (provider, _):
        with pytest.raises(UpstreamProtocolError, match="no candidates"):
            await provider.complete(ask("gemini"))


# -- streams --------------------------------------------------------------------------------------


async def test_stream_deltas_join_to_the_content_and_the_last_usage_is_the_total(
    surface: str,
) -> None:
    async with open_setup(surface) as s:
        events = await stream_all(s.provider, ask(surface))
        completion = await s.provider.complete(ask(surface))
        sent = s.server.stats.requests[0]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 12 and all(isinstance(e, TextDelta) for e in events[:-1])
    assert "".join(d.text for d in deltas) == completion.content
    # The fake reports running counts on every chunk; summing them would give 78.
    assert events[-1] == StreamFinished("stop", Usage(2, 12), "gemini-1.5-flash-002")
    assert sent.path.endswith(":streamGenerateContent") and sent.query == "alt=sse"


async def test_stream_length_finish(surface: str) -> None:
    async with open_setup(surface) as s:
        events = await stream_all(s.provider, ask(surface, max_tokens=3))
    assert events[-1] == StreamFinished("length", Usage(2, 3), "gemini-1.5-flash-002")


async def test_stream_parser_keeps_u2028_and_split_utf8_and_crlf_across_reads() -> None:
    text = "a\u2028b é"
    body = sse(chunk(text), chunk("!", "STOP", usageMetadata={"promptTokenCount": 1}))
    # One byte per write: a CRLF and the two bytes of "é" are split between reads.
    pieces = [body[i : i + 1] for i in range(len(body))]

    async def drip() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def answer(_: FakeRequest) -> FakeResponse:
        return FakeResponse(200, [("content-type", "text/event-stream")], drip())

    async with open_raw("gemini", answer) as (provider, _):
        events = await stream_all(provider, ask("gemini"))
    assert events == [
        TextDelta(text),
        TextDelta("!"),
        StreamFinished("stop", Usage(1, 0), "gemini-1.5-flash"),
    ]


async def test_a_stream_that_ends_without_a_finish_reason_is_truncated(surface: str) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.TRUNCATED, tokens_before_fault=3)
    received: list[StreamEvent] = []
    async with open_setup(surface, control) as s:
        with pytest.raises(UpstreamProtocolError, match="without a finishReason") as raised:
            async with s.provider.open_stream(ask(surface)) as events:
                async for event in events:
                    received.append(event)
    assert len(received) == 3 and all(isinstance(e, TextDelta) for e in received)
    assert raised.value.provider == surface


async def test_a_stream_cut_in_the_middle_of_an_event_is_truncated() -> None:
    body = sse(chunk("one")) + b'data: {"candidates": [{"content": {"parts": [{"te'
    async with open_raw("gemini", lambda _: sse_response(body)) as (provider, _):
        with pytest.raises(UpstreamProtocolError, match="middle of an event"):
            await stream_all(provider, ask("gemini"))


async def test_a_mid_stream_error_event_names_the_status_and_message(surface: str) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=2)
    received: list[StreamEvent] = []
    async with open_setup(surface, control) as s:
        with pytest.raises(UpstreamProtocolError) as raised:
            async with s.provider.open_stream(ask(surface)) as events:
                async for event in events:
                    received.append(event)
    assert len(received) == 2
    assert "error in the stream: INTERNAL: An internal error" in raised.value.message


async def test_an_error_event_wrapped_in_a_list_is_still_an_error() -> None:
    error = [{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}]
    async with open_raw("gemini", lambda _: sse_response(sse(error))) as (provider, _):
        with pytest.raises(UpstreamProtocolError, match="RESOURCE_EXHAUSTED: quota"):
            await stream_all(provider, ask("gemini"))


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        (Fault.INVALID_JSON, UpstreamProtocolError, "not valid JSON"),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError, "expected text/event-stream"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable, "connection"),
    ],
)
async def test_broken_streams_raise(
    surface: str, fault: Fault, error: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault, tokens_before_fault=2)
    async with open_setup(surface, control) as s:
        with pytest.raises(error, match=fragment):
            await stream_all(s.provider, ask(surface))


async def test_leaving_a_stream_early_closes_the_upstream_request(surface: str) -> None:
    control = FakeControl()
    control.behaviour = control.behaviour.with_fault(Fault.SLOW_DRIP)
    async with open_setup(surface, control) as s:
        async with s.provider.open_stream(ask(surface)) as events:
            async for event in events:
                assert isinstance(event, TextDelta)
                break
        with anyio.fail_after(5):
            await s.server.wait_until(lambda stats: stats.client_disconnects >= 1)
        assert s.server.stats.completed_responses == 0


async def test_cancelling_a_silent_stream_closes_the_upstream_request(surface: str) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HEADERS_THEN_SILENCE)
    async with open_setup(surface, control) as s:
        with anyio.CancelScope() as scope:
            async with s.provider.open_stream(ask(surface)) as events:
                scope.cancel()  # as a caller's deadline would, while the body is awaited
                async for _ in events:
                    pytest.fail("a silent stream yields nothing")
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            await s.server.wait_until(lambda stats: stats.client_disconnects >= 1)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, UpstreamRejected),
        (401, UpstreamAuthenticationError),
        (403, UpstreamAuthenticationError),
        (404, UpstreamModelNotFound),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (504, UpstreamUnavailable),
    ],
)
async def test_each_error_status_maps_to_its_class_naming_the_provider(
    surface: str, status: int, error: type[ProviderError]
) -> None:
    control = FakeControl()
    control.fail_next(2, Fault.HTTP_ERROR, error_status=status)
    async with open_setup(surface, control) as s:
        with pytest.raises(error) as unary:
            await s.provider.complete(ask(surface))
        with pytest.raises(error) as streamed:
            await stream_all(s.provider, ask(surface))
    for raised in (unary, streamed):
        assert type(raised.value) is error
        assert raised.value.provider == surface and raised.value.http_status == status
        assert raised.value.message.startswith(f"{surface}: ")
        assert f"HTTP {status}" in raised.value.message


async def test_an_invalid_key_is_an_authentication_error_not_a_bad_request() -> None:
    async with open_server(fake_gemini_handler(FakeControl(), api_key="right")) as server:
        async with httpx.AsyncClient() as client:
            provider = GeminiProvider(
                api_key="wrong", client=client, catalog=CATALOG, base_url=server.url
            )
            with pytest.raises(UpstreamAuthenticationError) as raised:
                await provider.complete(ask("gemini"))
            with pytest.raises(UpstreamAuthenticationError):
                await stream_all(provider, ask("gemini"))
    assert raised.value.http_status == 400
    assert "API_KEY_INVALID" in raised.value.message and "wrong" not in raised.value.message


async def test_a_429_takes_its_retry_delay_from_retry_info(surface: str) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429, retry_after=37.5)
    async with open_setup(surface, control) as s:
        with pytest.raises(UpstreamRateLimited) as raised:
            await s.provider.complete(ask(surface))
    assert raised.value.retry_after == 37.5
    assert "RESOURCE_EXHAUSTED" in raised.value.message
    assert s.hints == [RateLimitHints(retry_after=37.5)]


async def test_a_retry_after_header_wins_over_the_body() -> None:
    def answer(_: FakeRequest) -> FakeResponse:
        error = {
            "error": {
                "code": 429,
                "message": "slow down",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"}
                ],
            }
        }
        return FakeResponse.json(error, 429, [("retry-after", "3")])

    async with open_raw("gemini", answer) as (provider, _):
        with pytest.raises(UpstreamRateLimited) as raised:
            await provider.complete(ask("gemini"))
    assert raised.value.retry_after == 3.0


async def test_an_unsupported_location_is_about_the_gateways_account_not_the_request() -> None:
    def answer(_: FakeRequest) -> FakeResponse:
        error = {
            "error": {
                "code": 400,
                "message": "User location is not supported for the API use.",
                "status": "FAILED_PRECONDITION",
            }
        }
        return FakeResponse.json(error, 400)

    async with open_raw("gemini", answer) as (provider, _):
        with pytest.raises(UpstreamAuthenticationError, match="User location is not supported"):
            await provider.complete(ask("gemini"))


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("37s", 37.0), ("45.837906927s", 45.837906927), ("0s", 0.0), ("1m", None), (37, None)],
)
def test_retry_info_delays_are_protobuf_durations(delay: object, seconds: float | None) -> None:
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    payload = {"error": {"code": 429, "details": [{"@type": "other"}, detail]}}
    assert retry_delay(payload) == seconds
    assert retry_delay([payload]) == seconds  # as streaming calls send it


def test_a_request_without_options_sends_no_generation_config() -> None:
    body = generate_body("gemini", ChatRequest("m", (ChatMessage("user", "hi"),)))
    assert body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_an_unknown_model_is_model_not_found(surface: str) -> None:
    async with open_setup(surface) as s:
        with pytest.raises(UpstreamModelNotFound, match=r"(is|was) not found"):
            await s.provider.complete(ChatRequest("gemini-9", (ChatMessage("user", "hi"),)))


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.INVALID_JSON, UpstreamProtocolError),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError),
        (Fault.OVERSIZED_BODY, UpstreamProtocolError),
        (Fault.TRUNCATED, UpstreamUnavailable),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable),
    ],
)
async def test_malformed_unary_answers_raise(fault: Fault, error: type[ProviderError]) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_setup("gemini", control) as s:
        with pytest.raises(error):
            await s.provider.complete(ask("gemini"))


async def test_a_transport_timeout_is_an_upstream_timeout() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
    async with open_server(fake_gemini_handler(control)) as server:
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.1)) as client:
            provider = GeminiProvider(
                api_key=KEY, client=client, catalog=CATALOG, base_url=server.url
            )
            with pytest.raises(UpstreamTimeout):
                await provider.complete(ask("gemini"))


# -- embeddings -----------------------------------------------------------------------------------


async def test_gemini_embeddings_use_batch_embed_contents_and_report_no_usage() -> None:
    async with open_setup("gemini") as s:
        result = await s.provider.embed(EmbedRequest("text-embedding-004", ("a b", "c")))
        sent = s.server.stats.requests[-1]
    assert result.vectors == [embedding_of("a b", 8), embedding_of("c", 8)]
    assert result.usage is None and result.model == "text-embedding-004"
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.json() == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "c"}]}},
        ]
    }


async def test_vertex_embeddings_use_predict_and_sum_token_counts() -> None:
    async with open_setup("vertex") as s:
        result = await s.provider.embed(EmbedRequest("text-embedding-005", ("a b", "c d e")))
        sent = s.server.stats.requests[-1]
    assert result.vectors == [embedding_of("a b", 8), embedding_of("c d e", 8)]
    assert result.usage == Usage(5, 0)
    assert sent.path.endswith("/publishers/google/models/text-embedding-005:predict")
    assert sent.json() == {"instances": [{"content": "a b"}, {"content": "c d e"}]}


@pytest.mark.parametrize(("surface_name", "batch"), [("gemini", 100), ("vertex", 250)])
async def test_many_texts_are_split_into_batches_in_order(surface_name: str, batch: int) -> None:
    texts = tuple(f"text number {i}" for i in range(batch + 3))
    model = "text-embedding-005" if surface_name == "vertex" else "text-embedding-004"
    async with open_setup(surface_name) as s:
        result = await s.provider.embed(EmbedRequest(model, texts))
        calls = s.server.stats.request_count
    assert calls == 2
    assert result.vectors == [embedding_of(t, 8) for t in texts]
    if surface_name == "vertex":
        assert result.usage == Usage(3 * len(texts), 0)


async def test_an_embeddings_answer_with_the_wrong_count_is_a_protocol_error() -> None:
    answer = {"embeddings": [{"values": [0.5]}]}
    async with open_raw("gemini", lambda _: json_response(answer)) as (provider, _):
        with pytest.raises(UpstreamProtocolError, match="wrong count"):
            await provider.embed(EmbedRequest("text-embedding-004", ("a", "b")))


async def test_a_vertex_prediction_without_statistics_gives_no_usage() -> None:
    answer = {"predictions": [{"embeddings": {"values": [0.5]}}]}
    async with open_raw("vertex", lambda _: json_response(answer)) as (provider, _):
        result = await provider.embed(EmbedRequest("text-embedding-005", ("a",)))
    assert result.usage is None and result.vectors == [[0.5]]


# -- construction ---------------------------------------------------------------------------------


async def test_build_gemini_reads_the_key_and_base_url_from_settings() -> None:
    control = FakeControl()
    async with open_server(fake_gemini_handler(control, api_key="from-settings")) as server:
        settings = Settings.model_validate(
            {"gemini_key": "from-settings", "gemini_base_url": server.url}
        )
        async with httpx.AsyncClient() as client:
            provider = build_gemini(settings, CATALOG, client)
            answer = await provider.complete(ask("gemini"))
    assert provider.name == "gemini" and provider.supports_embeddings
    assert answer.finish_reason == "stop"


async def test_default_hosts() -> None:
    async with httpx.AsyncClient() as client:
        gemini = GeminiProvider(api_key=KEY, client=client, catalog=CATALOG)
        vertex = GeminiProvider.for_vertex("p", "europe-west4", TOKEN, client, CATALOG)
    assert gemini.base_url == "https://generativelanguage.googleapis.com"
    assert vertex.base_url == "https://europe-west4-aiplatform.googleapis.com"
    assert vertex.name == "vertex"
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com"
    assert vertex_base_url("eu") == "https://aiplatform.eu.rep.googleapis.com"


async def test_vertex_lists_only_its_gemini_models() -> None:
    async with httpx.AsyncClient() as client:
        vertex = GeminiProvider.for_vertex("p", "us-central1", TOKEN, client, CATALOG)
        gemini = GeminiProvider(api_key=KEY, client=client, catalog=CATALOG)
    on_vertex = {m.id for m in CATALOG.chat_models("vertex")}
    assert any(m.startswith("claude") for m in on_vertex)  # Claude is the other adapter's
    assert set(vertex.models()) == {m for m in on_vertex if m.startswith("gemini")}
    assert {"gemini-1.5-flash-002", "gemini-2.5-flash"} <= set(vertex.models())
    assert "gemini-1.5-flash" in gemini.models()
    assert "text-embedding-005" in vertex.embedding_models()
