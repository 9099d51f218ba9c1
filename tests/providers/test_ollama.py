"""The Ollama adapter against the Ollama fake on loopback, on asyncio and trio."""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal

import anyio
import httpx
import pytest

from delos.runtime.catalog import DISCOVERED_CONTEXT_WINDOW, Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import (
    ProviderError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from delos.runtime.providers.base import Provider
from delos.runtime.providers.ollama import (
    AVAILABILITY_TTL_SECONDS,
    DISCOVERY_INTERVAL_SECONDS,
    OllamaProvider,
    build_ollama,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.testing import (
    FakeControl,
    FakeRequest,
    FakeResponse,
    FakeServer,
    Fault,
    open_fake_server,
)
from delos.testing._behaviour import count_tokens, reply_words
from delos.testing._server import Handler
from delos.testing.fake_ollama import embedding_of, fake_ollama_handler, go_json

pytestmark = pytest.mark.anyio

SYSTEM = "answer briefly"
PROMPT = "say hello to the world"
REQUEST = ChatRequest(
    "llama3.2",
    (ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)),
)
PROMPT_TOKENS = count_tokens([SYSTEM, PROMPT])


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def open_ollama(
    handler: Handler, *, clock: FakeClock | None = None, probe_timeout: float = 1.0
) -> AsyncIterator[tuple[FakeServer, OllamaProvider]]:
    async with open_fake_server(handler) as server:
        provider = OllamaProvider(
            client=httpx.AsyncClient(),
            catalog=Catalog.load(),
            base_url=server.url,
            clock=clock or FakeClock(),
            probe_timeout=probe_timeout,
        )
        try:
            yield server, provider
        finally:
            await provider.aclose()


@asynccontextmanager
async def open_fake(
    control: FakeControl | None = None,
    models: Sequence[str] = ("llama3.2:latest", "nomic-embed-text:latest"),
    **options: object,
) -> AsyncIterator[tuple[FakeServer, OllamaProvider]]:
    handler = fake_ollama_handler(control or FakeControl(), models=models)
    async with open_ollama(handler, **options) as opened:  # type: ignore[arg-type]
        yield opened


async def collect(provider: OllamaProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def sent_body(server: FakeServer) -> dict[str, object]:
    body = server.stats.requests[-1].json()
    assert isinstance(body, dict)
    return body


def expected_words(count: int = 12) -> str:
    return " ".join(reply_words(PROMPT, count))


# -- chat ---------------------------------------------------------------------------------------


async def test_complete_returns_the_content_finish_and_exact_usage() -> None:
    async with open_fake() as (server, provider):
        completion = await provider.complete(REQUEST)
    assert completion.content == expected_words()
    assert completion.finish_reason == "stop"
    assert completion.model == "llama3.2"
    assert completion.usage == Usage(PROMPT_TOKENS, 12)
    assert server.stats.requests[-1].path == "/api/chat"


async def test_sampling_goes_inside_options_and_max_tokens_is_num_predict() -> None:
    request = ChatRequest(
        "llama3.2:latest",
        (ChatMessage("user", PROMPT), ChatMessage("system", SYSTEM)),
        temperature=0.3,
        top_p=0.9,
        max_tokens=4,
        stop=("\n\n", "END"),
    )
    async with open_fake() as (server, provider):
        completion = await provider.complete(request)
        body = sent_body(server)
    assert body == {
        "model": "llama3.2:latest",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "stream": False,
        "options": {"temperature": 0.3, "top_p": 0.9, "num_predict": 4, "stop": ["\n\n", "END"]},
    }
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(PROMPT_TOKENS, 4)
    assert completion.model == "llama3.2:latest"


async def test_a_request_without_sampling_sends_no_options() -> None:
    async with open_fake() as (server, provider):
        await provider.complete(ChatRequest("llama3.2", (ChatMessage("user", "hi"),)))
        body = sent_body(server)
    assert "options" not in body and "format" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_stream_yields_deltas_then_one_finished_event_with_usage() -> None:
    async with open_fake() as (server, provider):
        events = await collect(provider, REQUEST)
        body = sent_body(server)
    assert body["stream"] is True
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 12  # one flushed line per word
    assert "".join(d.text for d in deltas) == expected_words()
    assert events[-1] == StreamFinished("stop", Usage(PROMPT_TOKENS, 12), "llama3.2")
    assert sum(isinstance(e, StreamFinished) for e in events) == 1


async def test_stream_capped_by_max_tokens_finishes_with_length() -> None:
    async with open_fake() as (_, provider):
        events = await collect(provider, ChatRequest(REQUEST.model, REQUEST.messages, max_tokens=5))
    assert events[-1] == StreamFinished("length", Usage(PROMPT_TOKENS, 5), "llama3.2")


async def test_structured_output_is_sent_as_the_native_format_field() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    request = ChatRequest("llama3.2", (ChatMessage("user", "where?"),), output_schema=schema)
    async with open_fake() as (server, provider):
        completion = await provider.complete(request)
        assert sent_body(server)["format"] == schema
        events = await collect(provider, request)
        assert sent_body(server)["format"] == schema
    assert set(json.loads(completion.content)) == {"city", "population"}
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == completion.content


async def test_nonconforming_json_is_returned_as_is_for_validation_elsewhere() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.NONCONFORMING_JSON)
    request = ChatRequest("llama3.2", (ChatMessage("user", "x"),), output_schema={"type": "object"})
    async with open_fake(control) as (_, provider):
        completion = await provider.complete(request)
    assert json.loads(completion.content) == {"unexpected": True}


async def test_no_final_usage_gives_usage_none_never_a_guess() -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NO_FINAL_USAGE)
    async with open_fake(control) as (_, provider):
        completion = await provider.complete(REQUEST)
        events = await collect(provider, REQUEST)
    assert completion.usage is None
    assert events[-1] == StreamFinished("stop", None, "llama3.2")


# -- embeddings ---------------------------------------------------------------------------------


async def test_embed_returns_the_vectors_in_order_and_the_prompt_count() -> None:
    async with open_fake() as (server, provider):
        result = await provider.embed(EmbedRequest("nomic-embed-text", ("a b", "c")))
        body = sent_body(server)
    assert server.stats.requests[-1].path == "/api/embed"
    assert body == {"model": "nomic-embed-text", "input": ["a b", "c"]}
    assert result.vectors == [embedding_of("a b"), embedding_of("c")]
    assert result.model == "nomic-embed-text"
    assert result.usage == Usage(3, 0)


async def test_embed_of_an_unpulled_model_is_model_not_found() -> None:
    async with open_fake() as (_, provider):
        with pytest.raises(UpstreamModelNotFound, match="try pulling it first"):
            await provider.embed(EmbedRequest("mxbai-embed-large", ("a",)))


async def test_embed_without_a_count_has_no_usage() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.NO_FINAL_USAGE)
    async with open_fake(control) as (_, provider):
        result = await provider.embed(EmbedRequest("nomic-embed-text", ("a",)))
    assert result.usage is None


# -- HTTP errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, UpstreamRejected),
        (404, UpstreamModelNotFound),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (502, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (529, UpstreamUnavailable),
    ],
)
@pytest.mark.parametrize("mode", ["complete", "stream", "embed"])
async def test_each_error_status_becomes_its_error_class_naming_ollama(
    status: int, error_class: type[ProviderError], mode: str
) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=7)
    async with open_fake(control) as (_, provider):
        with pytest.raises(ProviderError) as raised:
            if mode == "complete":
                await provider.complete(REQUEST)
            elif mode == "stream":
                await collect(provider, REQUEST)
            else:
                await provider.embed(EmbedRequest("nomic-embed-text", ("a",)))
    error = raised.value
    assert type(error) is error_class
    assert error.provider == "ollama" and error.message.startswith("ollama: ")
    assert error.http_status == status
    assert f"HTTP {status}: " in error.message  # with Ollama's own words
    if status == 429:
        assert error.retry_after == 7


async def test_an_unknown_model_is_model_not_found_with_ollamas_message() -> None:
    async with open_fake() as (_, provider):
        with pytest.raises(UpstreamModelNotFound) as raised:
            await provider.complete(ChatRequest("mistral", (ChatMessage("user", "hi"),)))
    assert "model 'mistral' not found" in raised.value.message


async def test_a_refused_request_is_rejected_with_ollamas_message() -> None:
    async with open_fake() as (_, provider):
        with pytest.raises(UpstreamRejected) as raised:
            await collect(provider, ChatRequest("nomic-embed-text", (ChatMessage("user", "x"),)))
    assert "does not support chat" in raised.value.message


# -- broken answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_class", "fragment"),
    [
        (Fault.STREAM_ERROR_EVENT, UpstreamProtocolError, "error in the stream: an error was"),
        (Fault.TRUNCATED, UpstreamProtocolError, "truncated"),
        (Fault.INVALID_JSON, UpstreamProtocolError, "malformed stream"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
    ],
)
async def test_a_stream_that_breaks_after_some_deltas_raises_never_ends_quietly(
    fault: Fault, error_class: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault, tokens_before_fault=3)
    received: list[StreamEvent] = []
    async with open_fake(control) as (_, provider):
        with pytest.raises(ProviderError) as raised:
            async with provider.open_stream(REQUEST) as events:
                async for event in events:
                    received.append(event)
    assert type(raised.value) is error_class
    assert fragment in raised.value.message
    assert len(received) == 3 and all(isinstance(e, TextDelta) for e in received)


async def test_a_line_longer_than_the_decoder_allows_is_a_protocol_error() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.OVERSIZED_BODY, tokens_before_fault=0)
    async with open_fake(control) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="exceeds"):
            await collect(provider, REQUEST)


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        (Fault.INVALID_JSON, UpstreamProtocolError),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError),
        (Fault.TRUNCATED, UpstreamProtocolError),
        (Fault.OVERSIZED_BODY, UpstreamProtocolError),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable),
        (Fault.RESET_MID_BODY, UpstreamUnavailable),
    ],
)
async def test_a_broken_unary_answer_raises_the_right_error(
    fault: Fault, error_class: type[ProviderError]
) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_fake(control) as (_, provider):
        with pytest.raises(ProviderError) as raised:
            await provider.complete(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.provider == "ollama"


async def test_the_in_stream_error_fault_leaves_a_unary_answer_alone() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.STREAM_ERROR_EVENT)
    async with open_fake(control) as (_, provider):
        completion = await provider.complete(REQUEST)
    assert completion.content == expected_words()


async def test_a_stream_of_the_wrong_content_type_is_a_protocol_error() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.WRONG_CONTENT_TYPE)
    async with open_fake(control) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="expected application/x-ndjson"):
            await collect(provider, REQUEST)


# -- closing and cancelling ---------------------------------------------------------------------


async def test_a_consumer_stopping_at_the_finish_leaves_no_iterator_unexhausted() -> None:
    # Overrides the module's tolerance: on trio, an httpx iterator left before its end fails this.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        async with open_fake() as (server, provider):
            async with provider.open_stream(REQUEST) as events:
                async for event in events:
                    if isinstance(event, StreamFinished):
                        break
            assert server.stats.client_disconnects == 0


async def test_leaving_a_stream_early_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SLOW_DRIP)
    async with open_fake(control) as (server, provider):
        async with provider.open_stream(REQUEST) as events:
            first = await anext(aiter(events))
            assert isinstance(first, TextDelta)
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)
        assert server.stats.completed_responses == 0


async def test_a_cancelled_completion_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
    async with open_fake(control) as (server, provider):
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.complete, REQUEST)
            with anyio.fail_after(5):
                await server.wait_until(lambda s: s.request_count >= 1)
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)


# -- NDJSON edges, with hand-written bodies -----------------------------------------------------


def line(content: str, **fields: object) -> bytes:
    payload: dict[str, object] = {
        "model": "llama3.2",
        "created_at": "2025-06-20T10:00:00.5Z",
        "message": {"role": "assistant", "content": content},
        "done": False,
    }
    payload.update(fields)
    # Raw UTF-8, U+2028 included: what a server other than Go's may well send.
    return json.dumps(payload, ensure_ascii=False).encode() + b"\n"


def final(**fields: object) -> bytes:
    fields = {"done_reason": "stop", "done": True, **fields}
    return line("", **fields)


def ndjson(*items: bytes, chunked: bool = True) -> Handler:
    """A handler answering every request with ``items``, one write each (or one whole body)."""

    async def handle(request: FakeRequest) -> FakeResponse:
        headers = [("content-type", "application/x-ndjson")]
        if not chunked:
            return FakeResponse(200, headers, b"".join(items))

        async def body() -> AsyncIterator[bytes]:
            for item in items:
                yield item

        return FakeResponse(200, headers, body())

    return handle


async def stream_of(handler: Handler) -> list[StreamEvent]:
    async with open_ollama(handler) as (_, provider):
        return await collect(provider, REQUEST)


async def stream_error(handler: Handler) -> ProviderError:
    """The error the stream raises (caught inside the server's block, which would wrap it)."""
    async with open_ollama(handler) as (_, provider):
        with pytest.raises(ProviderError) as raised:
            await collect(provider, REQUEST)
    return raised.value


async def test_lines_and_characters_split_across_writes_are_reassembled() -> None:
    # "é" is two bytes and U+2028 three: both are cut between writes, as is a CRLF line end.
    body = line("caf\u00e9 \u2028 ok").replace(b"\n", b"\r\n") + final(eval_count=3)
    cut_in_e_acute = body.index("é".encode()) + 1
    cut_in_separator = body.index("\u2028".encode()) + 2
    cut_in_crlf = body.index(b"\r\n") + 1
    cuts = [0, cut_in_e_acute, cut_in_separator, cut_in_crlf, len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(cuts)]
    events = await stream_of(ndjson(*pieces))
    assert events == [
        TextDelta("caf\u00e9 \u2028 ok"),
        StreamFinished("stop", Usage(0, 3), "llama3.2"),
    ]


async def test_a_stream_fed_byte_by_byte_gives_the_same_events() -> None:
    body = line("one") + b"\n" + line(" two") + final(prompt_eval_count=2, eval_count=2)
    whole = await stream_of(ndjson(body))
    byte_by_byte = await stream_of(ndjson(*(body[i : i + 1] for i in range(len(body)))))
    assert (
        whole
        == byte_by_byte
        == [
            TextDelta("one"),
            TextDelta(" two"),
            StreamFinished("stop", Usage(2, 2), "llama3.2"),
        ]
    )


async def test_text_on_the_done_line_is_delivered_before_the_finish() -> None:
    events = await stream_of(ndjson(line("a"), line(" b", done=True, done_reason="length")))
    assert events == [TextDelta("a"), TextDelta(" b"), StreamFinished("length", None, "llama3.2")]


async def test_a_done_line_without_a_reason_is_a_stop_and_others_are_lowercased() -> None:
    assert (await stream_of(ndjson(line("a"), line("", done=True))))[-1] == StreamFinished(
        "stop", None, "llama3.2"
    )
    assert (await stream_of(ndjson(final(done_reason="Unload"))))[-1] == StreamFinished(
        "unload", None, "llama3.2"
    )


async def test_the_model_the_server_names_is_reported() -> None:
    events = await stream_of(ndjson(line("a"), final(model="llama3.2:latest")))
    assert events[-1] == StreamFinished("stop", None, "llama3.2:latest")


async def test_a_clean_end_without_a_done_line_is_truncation() -> None:
    error = await stream_error(ndjson(line("a"), line(" b"), chunked=False))
    assert type(error) is UpstreamProtocolError and "without its done line" in error.message


async def test_a_clean_end_inside_a_line_is_truncation() -> None:
    error = await stream_error(ndjson(line("a"), b'{"model":"llama3.2","mess', chunked=False))
    assert type(error) is UpstreamProtocolError and "in the middle of a line" in error.message


async def test_a_line_that_is_not_an_object_is_a_protocol_error() -> None:
    error = await stream_error(ndjson(line("a"), b"[1, 2]\n", final()))
    assert type(error) is UpstreamProtocolError and "not a JSON object" in error.message


async def test_counts_that_are_not_counts_are_a_protocol_error() -> None:
    error = await stream_error(ndjson(final(eval_count="many")))
    assert type(error) is UpstreamProtocolError and "token counts" in error.message


async def test_an_error_line_before_any_text_is_a_protocol_error() -> None:
    error = await stream_error(ndjson(go_json({"error": "out of memory"}) + b"\n"))
    assert (
        type(error) is UpstreamProtocolError
        and "error in the stream: out of memory" in error.message
    )


async def test_an_answer_not_marked_done_is_a_protocol_error() -> None:
    async def handle(request: FakeRequest) -> FakeResponse:
        return FakeResponse.json({"model": "llama3.2", "message": {"content": "x"}, "done": False})

    async with open_ollama(handle) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="not marked done"):
            await provider.complete(REQUEST)


# -- discovery and availability -----------------------------------------------------------------

INSTALLED = ["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest", "mxbai-embed-large:latest"]


async def test_before_discovery_the_catalog_models_are_served() -> None:
    async with open_fake(models=INSTALLED) as (server, provider):
        assert provider.models() == ("llama3.2",)
        assert provider.embedding_models() == ("nomic-embed-text",)
        assert provider.discovered_catalog() is provider._catalog
        assert server.stats.request_count == 0


async def test_refresh_lists_installed_models_under_tagged_and_bare_names() -> None:
    async with open_fake(models=INSTALLED) as (server, provider):
        assert await provider.refresh_models() == ("llama3.2:latest", "llama3.2", "qwen2.5:7b")
        assert server.stats.requests[-1].path == "/api/tags"
    assert provider.models() == ("llama3.2:latest", "llama3.2", "qwen2.5:7b")
    assert provider.embedding_models() == (
        "nomic-embed-text",
        "nomic-embed-text:latest",
        "mxbai-embed-large:latest",
        "mxbai-embed-large",
    )


async def test_the_discovered_catalog_prices_every_discovered_model_at_zero() -> None:
    async with open_fake(models=INSTALLED) as (_, provider):
        await provider.refresh_models()
        catalog = provider.discovered_catalog()
        assert provider.discovered_catalog() is catalog  # cached while nothing changes
    qwen = catalog.model("ollama", "qwen2.5:7b")
    assert qwen is not None and qwen.kind == "chat" and qwen.family == "qwen2.5"
    assert qwen.context_window == DISCOVERED_CONTEXT_WINDOW
    tagged = catalog.model("ollama", "llama3.2:latest")
    assert tagged is not None and tagged.family == "llama3.2" and tagged.context_window == 131072
    embedding = catalog.model("ollama", "nomic-embed-text:latest")
    assert embedding is not None and embedding.kind == "embedding"
    # An embedding family the catalog does not know would be taken for a chat model: left out.
    assert catalog.model("ollama", "mxbai-embed-large:latest") is None
    assert [m.provider for m in catalog.resolve("qwen2.5:7b", kind="chat")] == ["ollama"]
    assert (qwen.input_per_1k, qwen.output_per_1k) == (Decimal(0), Decimal(0))
    priced = {m.id for m in (*catalog.chat_models("ollama"), *catalog.embedding_models("ollama"))}
    assert priced >= {"llama3.2", "llama3.2:latest", "qwen2.5:7b", "nomic-embed-text"}


async def test_the_discovered_catalog_extends_a_given_base_catalog() -> None:
    base = Catalog.load()
    async with open_fake(models=INSTALLED) as (_, provider):
        await provider.refresh_models()
        view = provider.discovered_catalog(base)
    assert view.model("ollama", "qwen2.5:7b") is not None
    assert base.model("ollama", "qwen2.5:7b") is None  # catalogs are immutable


async def test_availability_is_asked_at_most_once_per_ttl() -> None:
    clock = FakeClock()
    async with open_fake(clock=clock) as (server, provider):
        assert await provider.available() is True
        assert await provider.available() is True
        assert server.stats.request_count == 1
        clock.advance(AVAILABILITY_TTL_SECONDS)
        assert await provider.available() is True
        assert server.stats.request_count == 2
        assert {r.path for r in server.stats.requests} == {"/api/tags"}


async def test_the_first_probe_discovers_and_later_ones_refresh_every_interval() -> None:
    clock = FakeClock()
    installed = ["llama3.2:latest"]
    async with open_fake(models=installed, clock=clock) as (_, provider):
        await provider.available()
        assert provider.models() == ("llama3.2:latest", "llama3.2")
        installed.append("phi4:latest")  # pulled while the gateway runs
        clock.advance(AVAILABILITY_TTL_SECONDS)
        await provider.available()
        assert "phi4" not in provider.models()  # the list is kept for the discovery interval
        clock.advance(DISCOVERY_INTERVAL_SECONDS)
        await provider.available()
        assert provider.models() == ("llama3.2:latest", "llama3.2", "phi4:latest", "phi4")
        installed.remove("phi4:latest")
        await provider.refresh_models()  # on demand, whatever the age
        assert provider.models() == ("llama3.2:latest", "llama3.2")


@pytest.mark.parametrize(
    "fault", [Fault.HTTP_ERROR, Fault.RESET_BEFORE_HEADERS, Fault.INVALID_JSON]
)
async def test_a_failing_server_is_unavailable_and_keeps_the_known_models(fault: Fault) -> None:
    control = FakeControl()
    clock = FakeClock()
    async with open_fake(control, models=INSTALLED, clock=clock) as (_, provider):
        await provider.refresh_models()
        control.fail_next(1, fault)
        clock.advance(DISCOVERY_INTERVAL_SECONDS)
        assert await provider.available() is False
    assert provider.models() == ("llama3.2:latest", "llama3.2", "qwen2.5:7b")


async def test_a_silent_server_is_unavailable_within_the_probe_bound() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
    async with open_fake(control, probe_timeout=0.05) as (server, provider):
        with anyio.fail_after(5):
            assert await provider.available() is False
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)


async def test_a_server_that_is_not_running_is_unavailable() -> None:
    async with open_fake_server(fake_ollama_handler(FakeControl())) as server:
        url = server.url
    provider = OllamaProvider(client=httpx.AsyncClient(), catalog=Catalog.load(), base_url=url)
    try:
        assert await provider.available() is False
        with pytest.raises(UpstreamUnavailable, match="connection failed"):
            await provider.refresh_models()
    finally:
        await provider.aclose()


async def test_refresh_raises_the_error_of_a_failed_listing() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=500)
    async with open_fake(control) as (_, provider):
        with pytest.raises(UpstreamUnavailable, match="HTTP 500"):
            await provider.refresh_models()
        assert provider.models() == ("llama3.2",)


# -- builder ------------------------------------------------------------------------------------


async def test_the_builder_reads_the_url_from_the_settings() -> None:
    async with open_fake_server(fake_ollama_handler(FakeControl())) as server:
        settings = Settings(ollama_enabled=True, ollama_url=server.url + "/")
        provider = build_ollama(settings, Catalog.load(), httpx.AsyncClient())
        try:
            assert isinstance(provider, Provider) and isinstance(provider, OllamaProvider)
            assert provider.name == "ollama" and provider.supports_embeddings
            assert provider.base_url == server.url
            assert (await provider.complete(REQUEST)).usage == Usage(PROMPT_TOKENS, 12)
        finally:
            await provider.aclose()
