"""The OpenAI-compatible adapter (OpenAI, Together AI, OpenRouter) on two backends.

Against the loopback fake for what a real server does; against ``respx`` for what only a mocked
transport can show: the exact bytes sent, a transport failure inside a body, a connection refused.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import respx

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
    UpstreamUnavailable,
)
from delos.runtime.providers.openai_compatible import (
    OPENAI,
    OPENROUTER,
    TOGETHER,
    OpenAICompatibleProvider,
    OpenAIDialect,
    build_openrouter,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import encode_sse, encode_sse_comment
from delos.testing import FakeControl, FakeRequest, FakeResponse, FakeServer, Fault
from delos.testing import open_fake_server as open_server
from delos.testing._behaviour import reply_words
from delos.testing._schema import sample_instance
from delos.testing.fake_openai import OpenAIFlavour, embedding_of, fake_openai_handler

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
KEY = "sk-test-openai-key"
DIALECTS = {
    OpenAIFlavour.OPENAI: OPENAI,
    OpenAIFlavour.TOGETHER: TOGETHER,
    OpenAIFlavour.OPENROUTER: OPENROUTER,
}
MODELS = {
    OpenAIFlavour.OPENAI: "gpt-4o",
    OpenAIFlavour.TOGETHER: "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    OpenAIFlavour.OPENROUTER: "openai/gpt-4o",
}
#: What the fake answers for each model (OpenAI names a dated snapshot).
SERVED = {
    OpenAIFlavour.OPENAI: "gpt-4o-2024-08-06",
    OpenAIFlavour.TOGETHER: "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    OpenAIFlavour.OPENROUTER: "openai/gpt-4o",
}
EMBEDDING_MODELS = {
    OpenAIFlavour.OPENAI: "text-embedding-3-small",
    OpenAIFlavour.TOGETHER: "togethercomputer/m2-bert-80M-8k-retrieval",
}
OBJECT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
    "required": ["city", "rank"],
}
FLAVOURS = list(OpenAIFlavour)


def chat(
    *messages: tuple[str, str], flavour: OpenAIFlavour = OpenAIFlavour.OPENAI, **fields: Any
) -> ChatRequest:
    pairs = messages or (("user", "say hi"),)
    return ChatRequest(MODELS[flavour], tuple(ChatMessage(r, c) for r, c in pairs), **fields)


@asynccontextmanager
async def open_openai(
    flavour: OpenAIFlavour = OpenAIFlavour.OPENAI,
    control: FakeControl | None = None,
    *,
    hints: list[RateLimitHints] | None = None,
    api_key: str = KEY,
) -> AsyncIterator[tuple[OpenAICompatibleProvider, FakeServer]]:
    handler = fake_openai_handler(control or FakeControl(), flavour, api_key=KEY)
    async with open_server(handler) as server, httpx.AsyncClient() as client:
        provider = OpenAICompatibleProvider(
            DIALECTS[flavour],
            api_key=api_key,
            client=client,
            catalog=CATALOG,
            base_url=server.url + flavour.prefix,
            on_rate_limits=hints.append if hints is not None else None,
        )
        yield provider, server


async def collect(provider: OpenAICompatibleProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def split(events: Sequence[StreamEvent]) -> tuple[str, StreamFinished]:
    """The joined text of a well-formed stream and its one final event."""
    *deltas, last = events
    assert all(isinstance(d, TextDelta) for d in deltas)
    assert isinstance(last, StreamFinished)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), last


# -- completions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.value for f in FLAVOURS])
async def test_complete_returns_the_text_the_served_model_and_exact_usage(
    flavour: OpenAIFlavour,
) -> None:
    request = chat(("system", "be brief please"), ("user", "say hi"), flavour=flavour)
    async with open_openai(flavour) as (provider, _):
        answer = await provider.complete(request)
    assert answer == Completion(
        content=" ".join(reply_words("say hi", 12)),
        model=SERVED[flavour],
        finish_reason="stop",
        usage=Usage(prompt_tokens=5, completion_tokens=12),  # 3 system + 2 user words
    )


@pytest.mark.parametrize(
    ("flavour", "limit_field"),
    [(OpenAIFlavour.OPENAI, "max_completion_tokens"), (OpenAIFlavour.TOGETHER, "max_tokens")],
)
async def test_the_request_is_a_native_chat_completion(
    flavour: OpenAIFlavour, limit_field: str
) -> None:
    request = chat(
        ("system", "rule"),
        ("user", "a"),
        flavour=flavour,
        temperature=1.5,
        top_p=0.9,
        max_tokens=5,
        stop=("END",),
    )
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(request)
    sent = server.stats.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"{flavour.prefix}/chat/completions")
    assert sent.header("authorization") == f"Bearer {KEY}"
    assert sent.header("content-type") == "application/json"
    assert sent.json() == {
        "model": MODELS[flavour],
        "messages": [{"role": "system", "content": "rule"}, {"role": "user", "content": "a"}],
        "temperature": 1.5,
        "top_p": 0.9,
        limit_field: 5,
        "stop": ["END"],
    }
    assert answer.finish_reason == "length" and answer.usage == Usage(2, 5)


async def test_structured_output_asks_for_a_json_schema_answer() -> None:
    request = chat(output_schema=OBJECT_SCHEMA)
    async with open_openai() as (provider, server):
        answer = await provider.complete(request)
        text, finished = split(await collect(provider, request))
    assert server.stats.requests[0].json()["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": OBJECT_SCHEMA, "strict": False},
    }
    assert json.loads(answer.content) == sample_instance(OBJECT_SCHEMA)
    assert json.loads(text) == sample_instance(OBJECT_SCHEMA)
    assert finished.finish_reason == "stop"


# -- streams --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.value for f in FLAVOURS])
async def test_stream_deltas_join_to_the_completion_and_end_with_the_usage(
    flavour: OpenAIFlavour,
) -> None:
    """OpenAI and OpenRouter report usage in a last chunk without choices, Together in the
    finishing chunk; OpenRouter also sends comment lines. All end with the same finish."""
    request = chat(("system", "be brief please"), ("user", "say hi"), flavour=flavour)
    async with open_openai(flavour) as (provider, server):
        answer = await provider.complete(request)
        events = await collect(provider, request)
    text, finished = split(events)
    assert len(events) == 13  # one delta per word, then the finish
    assert text == answer.content
    assert finished == StreamFinished("stop", Usage(5, 12), SERVED[flavour])
    sent = server.stats.requests[-1].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.value for f in FLAVOURS])
async def test_a_stream_without_usage_reports_none_rather_than_a_guess(
    flavour: OpenAIFlavour,
) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.NO_FINAL_USAGE)
    async with open_openai(flavour, control) as (provider, _):
        _, finished = split(await collect(provider, chat(flavour=flavour)))
    assert finished.usage is None and finished.finish_reason == "stop"


async def test_a_mid_stream_error_event_raises_a_protocol_error_after_the_deltas() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=3)
    received: list[StreamEvent] = []
    async with open_openai(control=control) as (provider, _):
        with pytest.raises(UpstreamProtocolError) as raised:
            async with provider.open_stream(chat()) as events:
                async for event in events:
                    received.append(event)
    assert len(received) == 3 and all(isinstance(e, TextDelta) for e in received)
    assert "error in the stream: The server had an error" in raised.value.message


@pytest.mark.parametrize(
    ("fault", "error_class", "fragment"),
    [
        (Fault.TRUNCATED, UpstreamUnavailable, "connection lost"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
        (Fault.INVALID_JSON, UpstreamProtocolError, "not valid JSON"),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError, "expected text/event-stream"),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable, ""),
    ],
)
async def test_a_broken_stream_never_ends_silently(
    fault: Fault, error_class: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_openai(control=control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            await collect(provider, chat())
    assert type(raised.value) is error_class and fragment in raised.value.message


@asynccontextmanager
async def serving(body: bytes, chunk_size: int = 4096) -> AsyncIterator[OpenAICompatibleProvider]:
    """An adapter reading ``body`` as a stream that ends cleanly, in writes of ``chunk_size``."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]

    async def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, [("content-type", "text/event-stream")], chunks())

    async with open_server(handler) as server, httpx.AsyncClient() as client:
        yield OpenAICompatibleProvider(
            OPENAI, api_key=KEY, client=client, catalog=CATALOG, base_url=server.url
        )


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return encode_sse(json.dumps({"model": "gpt-4o-x", "choices": [choice], **extra}))


USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
CANONICAL_STREAM = (
    encode_sse_comment("keep-alive")
    + chunk("caf\u00e9\u2028")
    + chunk(" \u2713")
    + chunk(finish="length")
    + encode_sse(json.dumps({"model": "gpt-4o-x", "choices": [], "usage": USAGE}))
    + encode_sse("[DONE]")
)


@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
async def test_events_split_anywhere_decode_the_same(chunk_size: int) -> None:
    async with serving(CANONICAL_STREAM, chunk_size) as provider:
        text, finished = split(await collect(provider, chat()))
    assert text == "caf\u00e9\u2028 \u2713"  # U+2028 stays inside the text
    assert finished == StreamFinished("length", Usage(4, 2), "gpt-4o-x")


async def test_a_stream_that_ends_cleanly_without_done_is_truncated() -> None:
    cut = CANONICAL_STREAM.index(b"data: [DONE]")
    async with serving(CANONICAL_STREAM[:cut]) as provider:
        with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]: the answer is trunc"):
            await collect(provider, chat())


async def test_done_before_any_finish_reason_is_a_protocol_error() -> None:
    async with serving(chunk("hi") + encode_sse("[DONE]")) as provider:
        with pytest.raises(UpstreamProtocolError, match="without a finish"):
            await collect(provider, chat())


async def test_leaving_a_stream_early_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SLOW_DRIP)
    async with open_openai(control=control) as (provider, server):
        async with provider.open_stream(chat()) as events:
            first = await events.__anext__()
        assert isinstance(first, TextDelta)
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)
        assert server.stats.completed_responses == 0


# -- embeddings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", [OpenAIFlavour.OPENAI, OpenAIFlavour.TOGETHER])
async def test_embeddings_are_asked_in_base64_and_decoded_exactly(flavour: OpenAIFlavour) -> None:
    texts = ("hello world", "goodbye cruel world")
    request = EmbedRequest(EMBEDDING_MODELS[flavour], texts)
    async with open_openai(flavour) as (provider, server):
        answer = await provider.embed(request)
    sent = server.stats.requests[-1]
    assert sent.path == f"{flavour.prefix}/embeddings"
    assert sent.json() == {
        "model": EMBEDDING_MODELS[flavour],
        "input": list(texts),
        "encoding_format": "base64",
    }
    assert answer.vectors == [embedding_of(text, 8) for text in texts]  # exact in float32
    assert answer.model == EMBEDDING_MODELS[flavour] and answer.usage == Usage(5, 0)


async def test_openrouter_has_no_embeddings_and_names_the_providers_that_have() -> None:
    async with open_openai(OpenAIFlavour.OPENROUTER) as (provider, server):
        with pytest.raises(EmbeddingsNotSupported, match="openai, gemini, bedrock") as raised:
            await provider.embed(EmbedRequest("openai/text-embedding-3-small", ("hi",)))
    assert raised.value.message.startswith("openrouter has no embeddings API")
    assert server.stats.request_count == 0 and not provider.supports_embeddings


# -- errors ---------------------------------------------------------------------------------------


ERROR_CASES = [
    (401, UpstreamAuthenticationError, "Incorrect API key provided."),
    (404, UpstreamModelNotFound, "does not exist"),
    (429, UpstreamRateLimited, "Rate limit reached"),
    (500, UpstreamUnavailable, "The server had an error"),
]


@pytest.mark.parametrize(("status", "error_class", "fragment"), ERROR_CASES)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.value for f in FLAVOURS])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_each_error_status_raises_its_error_class_with_the_upstream_message(
    status: int,
    error_class: type[ProviderError],
    fragment: str,
    flavour: OpenAIFlavour,
    streamed: bool,
) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=7)
    async with open_openai(flavour, control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            if streamed:
                await collect(provider, chat(flavour=flavour))
            else:
                await provider.complete(chat(flavour=flavour))
    error = raised.value
    assert type(error) is error_class and error.http_status == status
    assert error.message.startswith(f"{flavour.value}: ") and f"HTTP {status}: " in error.message
    if status != 404:  # the fake's own 404 says which model it does not have
        assert fragment in error.message
    if status in (429, 500):
        assert error.retry_after == 7.0


async def test_a_wrong_key_is_an_authentication_error_that_does_not_repeat_it() -> None:
    async with open_openai(api_key="sk-wrong-key") as (provider, _):
        with pytest.raises(UpstreamAuthenticationError) as raised:
            await provider.complete(chat())
    assert "HTTP 401: Incorrect API key provided." in raised.value.message
    assert "sk-wrong-key" not in raised.value.message


@pytest.mark.parametrize(
    ("fault", "error_class", "fragment"),
    [
        (Fault.TRUNCATED, UpstreamUnavailable, "connection lost"),
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
    async with open_openai(control=control) as (provider, _):
        with pytest.raises(ProviderError) as raised:
            await provider.complete(chat())
    assert type(raised.value) is error_class and fragment in raised.value.message


# -- rate limits and dialect headers ---------------------------------------------------------------


async def test_openai_rate_limit_headers_reach_the_listener() -> None:
    hints: list[RateLimitHints] = []
    async with open_openai(hints=hints) as (provider, _):
        await provider.complete(chat())
        await collect(provider, chat())
        await provider.embed(EmbedRequest("text-embedding-3-small", ("hi",)))
    assert len(hints) == 3
    assert hints[0] == RateLimitHints(
        remaining_requests=9999,
        remaining_tokens=29999990,
        requests_reset_after=0.006,
        tokens_reset_after=0.0,
    )


async def test_together_rate_limit_headers_reach_the_listener() -> None:
    hints: list[RateLimitHints] = []
    async with open_openai(OpenAIFlavour.TOGETHER, hints=hints) as (provider, _):
        await provider.complete(chat(flavour=OpenAIFlavour.TOGETHER))
    assert hints == [RateLimitHints(remaining_requests=99, requests_reset_after=1.0)]


async def test_a_429_retry_after_reaches_the_listener_and_the_error() -> None:
    hints: list[RateLimitHints] = []
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429, retry_after=3)
    async with open_openai(OpenAIFlavour.OPENROUTER, control, hints=hints) as (provider, _):
        with pytest.raises(UpstreamRateLimited) as raised:
            await provider.complete(chat(flavour=OpenAIFlavour.OPENROUTER))
    assert raised.value.retry_after == 3.0
    assert hints == [RateLimitHints(retry_after=3.0)]


async def test_openrouter_sends_the_attribution_headers_from_the_settings() -> None:
    flavour = OpenAIFlavour.OPENROUTER
    handler = fake_openai_handler(FakeControl(), flavour, api_key=KEY)
    async with open_server(handler) as server:
        settings = Settings.model_validate(
            {
                "openrouter_key": KEY,
                "openrouter_base_url": server.url + flavour.prefix,
                "openrouter_site_url": "https://example.org/app",
                "openrouter_site_name": "Delos test",
            }
        )
        provider = build_openrouter(settings, CATALOG, httpx.AsyncClient())
        try:
            await provider.complete(chat(flavour=flavour))
        finally:
            await provider.aclose()
    sent = server.stats.requests[-1]
    assert sent.header("http-referer") == "https://example.org/app"
    assert sent.header("x-title") == "Delos test"
    assert sent.header("authorization") == f"Bearer {KEY}"


async def test_a_dialect_can_carry_its_own_headers() -> None:
    dialect = OpenAIDialect("openai", "http://unused", extra_headers={"x-dialect": "yes"})
    router = respx.Router(base_url="https://api.test/v1", assert_all_called=True)
    route = router.post("/chat/completions").respond(json=completion_payload())
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        provider = OpenAICompatibleProvider(
            dialect, api_key=KEY, client=client, catalog=CATALOG, base_url="https://api.test/v1"
        )
        await provider.complete(chat())
    assert route.calls.last.request.headers["x-dialect"] == "yes"


# -- what only a mocked transport shows ------------------------------------------------------------


BASE_URL = "https://api.openai.test/v1"


def completion_payload(content: str = "hello") -> dict[str, Any]:
    return {
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }


@asynccontextmanager
async def mocked(router: respx.Router) -> AsyncIterator[OpenAICompatibleProvider]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        yield OpenAICompatibleProvider(
            OPENAI, api_key=KEY, client=client, catalog=CATALOG, base_url=BASE_URL
        )


async def test_the_body_goes_out_as_compact_utf8_json() -> None:
    router = respx.Router(base_url=BASE_URL, assert_all_called=True)
    route = router.post("/chat/completions").respond(json=completion_payload())
    async with mocked(router) as provider:
        await provider.complete(chat(("user", "caf\u00e9 \u2028"), max_tokens=3))
    sent = route.calls.last.request
    assert (
        sent.content
        == (
            '{"model":"gpt-4o","messages":[{"role":"user","content":"caf\u00e9 \u2028"}],'
            '"max_completion_tokens":3}'
        ).encode()
    )
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["content-length"] == str(len(sent.content))


async def test_float_embeddings_out_of_order_are_put_back_in_input_order() -> None:
    router = respx.Router(base_url=BASE_URL, assert_all_called=True)
    vectors = [[0.5, -1.0], [0.25, 2.0]]
    base64_first = base64.b64encode(struct.pack("<2f", *vectors[0])).decode()
    router.post("/embeddings").respond(
        json={
            "data": [
                {"index": 1, "embedding": vectors[1]},  # a float list
                {"index": 0, "embedding": base64_first},  # and base64 float32 in one answer
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4},
        }
    )
    async with mocked(router) as provider:
        answer = await provider.embed(EmbedRequest("text-embedding-3-small", ("a", "b")))
    assert answer.vectors == vectors and answer.usage == Usage(4, 0)


async def test_an_embeddings_answer_with_the_wrong_count_is_a_protocol_error() -> None:
    router = respx.Router(base_url=BASE_URL)
    router.post("/embeddings").respond(json={"data": [{"index": 0, "embedding": [1.0]}]})
    async with mocked(router) as provider:
        with pytest.raises(UpstreamProtocolError, match="wrong count"):
            await provider.embed(EmbedRequest("text-embedding-3-small", ("a", "b")))


class _BreaksMidBody(httpx.AsyncByteStream):
    """A body that delivers ``head`` and then fails as a dropped connection does."""

    def __init__(self, head: bytes) -> None:
        self._head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        raise httpx.ReadError("connection reset by peer")


async def test_a_transport_error_inside_an_answer_is_unavailable() -> None:
    router = respx.Router(base_url=BASE_URL)
    body = _BreaksMidBody(json.dumps(completion_payload()).encode()[:20])
    router.post("/chat/completions").respond(
        200, headers={"content-type": "application/json"}, stream=body
    )
    async with mocked(router) as provider:
        with pytest.raises(UpstreamUnavailable, match="connection lost before the answer"):
            await provider.complete(chat())


async def test_a_transport_error_inside_a_stream_is_unavailable_after_the_deltas() -> None:
    router = respx.Router(base_url=BASE_URL)
    body = _BreaksMidBody(chunk("one") + chunk(" two"))
    router.post("/chat/completions").respond(
        200, headers={"content-type": "text/event-stream"}, stream=body
    )
    received: list[StreamEvent] = []
    async with mocked(router) as provider:
        with pytest.raises(UpstreamUnavailable, match="connection lost"):
            async with provider.open_stream(chat()) as events:
                async for event in events:
                    received.append(event)
    assert received == [TextDelta("one"), TextDelta(" two")]


async def test_a_refused_connection_is_unavailable() -> None:
    router = respx.Router(base_url=BASE_URL)
    router.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    async with mocked(router) as provider:
        with pytest.raises(UpstreamUnavailable, match="connection failed"):
            await provider.complete(chat())


async def test_an_error_in_a_200_answer_is_a_protocol_error() -> None:
    router = respx.Router(base_url=BASE_URL)
    router.post("/chat/completions").respond(json={"error": {"message": "upstream model died"}})
    async with mocked(router) as provider:
        with pytest.raises(UpstreamProtocolError, match="error in answer: upstream model died"):
            await provider.complete(chat())


async def test_a_long_error_message_is_clipped_on_one_line() -> None:
    router = respx.Router(base_url=BASE_URL)
    message = "bad\nrequest " + "x" * 400
    router.post("/chat/completions").respond(400, json={"error": {"message": message}})
    async with mocked(router) as provider:
        with pytest.raises(ProviderError) as raised:
            await provider.complete(chat())
    detail = raised.value.message.split("HTTP 400: ", 1)[1].rstrip(")")
    assert detail.startswith("bad request xxx") and detail.endswith("…")
    assert len(detail) == 301  # 300 characters and the ellipsis
