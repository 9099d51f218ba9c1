"""The Bedrock adapter against the Bedrock fake, on asyncio and trio: signed Converse,
ConverseStream event-streams, InvokeModel embeddings, and every failure mapped to our errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import (
    EmbeddingsNotSupported,
    ProviderError,
    ProviderNotConfigured,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.providers._sigv4 import RequestSigner
from delos.runtime.providers.bedrock import BedrockProvider, build_bedrock
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)
from delos.runtime.wire import encode_event, encode_event_stream_message
from delos.testing import (
    FakeControl,
    FakeRequest,
    FakeResponse,
    FakeServer,
    Fault,
    open_fake_server,
)
from delos.testing._behaviour import count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing.fake_bedrock import fake_bedrock_handler
from delos.testing.fake_openai import embedding_of

pytestmark = pytest.mark.anyio

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CATALOG = Catalog.load()
EVENT_STREAM = "application/vnd.amazon.eventstream"


def chat(*messages: tuple[str, str], **fields: Any) -> ChatRequest:
    pairs = messages or (("user", "hello there"),)
    return ChatRequest(
        fields.pop("model", MODEL), tuple(ChatMessage(r, c) for r, c in pairs), **fields
    )


def signer(**changes: Any) -> RequestSigner:
    values: dict[str, Any] = {
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "session_token": None,
        "region": "us-east-1",
        **changes,
    }
    return RequestSigner(**values)


@asynccontextmanager
async def open_bedrock(
    control: FakeControl | None = None,
    *,
    request_signer: RequestSigner | None = None,
    handler: Any = None,
    **fake_options: Any,
) -> AsyncIterator[tuple[FakeServer, BedrockProvider]]:
    """A verifying fake (it knows the secret) and an adapter pointed at it."""
    concurrency = fake_options.pop("embed_concurrency", 8)
    options = {"access_key_id": KEY_ID, "secret_access_key": SECRET, **fake_options}
    handler = handler or fake_bedrock_handler(control or FakeControl(), **options)
    async with open_fake_server(handler) as server:
        provider = BedrockProvider(
            signer=request_signer or signer(),
            client=httpx.AsyncClient(),
            catalog=CATALOG,
            base_url=server.url,
            embed_concurrency=concurrency,
        )
        try:
            yield server, provider
        finally:
            await provider.aclose()


async def collect(provider: BedrockProvider, request: ChatRequest) -> list[StreamEvent]:
    async with provider.open_stream(request) as events:
        return [event async for event in events]


def body_of(server: FakeServer) -> Any:
    return server.stats.requests[-1].json()


# -- Converse -----------------------------------------------------------------------------------


async def test_complete_returns_the_answer_with_exact_usage() -> None:
    async with open_bedrock() as (_, provider):
        answer = await provider.complete(chat(("system", "be terse"), ("user", "hello there")))
    assert answer.content == " ".join(reply_words("hello there", 12))
    assert answer.finish_reason == "stop"
    assert answer.model == MODEL
    assert answer.usage == Usage(count_tokens(["be terse", "hello there"]), 12)


async def test_the_request_is_native_converse_signed_for_bedrock() -> None:
    request = chat(
        ("system", "be terse"),
        ("user", "hi"),
        temperature=0.5,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
    )
    async with open_bedrock() as (server, provider):
        await provider.complete(request)
    seen = server.stats.requests[-1]
    assert seen.path == "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert seen.json() == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "system": [{"text": "be terse"}],
        "inferenceConfig": {
            "maxTokens": 64,
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }
    authorization = seen.header("authorization") or ""
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request, SignedHeaders=" in authorization
    assert "host" in authorization and "x-amz-date" in authorization
    assert seen.header("x-amz-security-token") is None


async def test_consecutive_turns_of_one_role_are_merged_so_turns_alternate() -> None:
    request = chat(("user", "first"), ("user", "second"), ("assistant", "ok"), ("user", "third"))
    async with open_bedrock() as (server, provider):
        await provider.complete(request)
    assert body_of(server)["messages"] == [
        {"role": "user", "content": [{"text": "first"}, {"text": "second"}]},
        {"role": "assistant", "content": [{"text": "ok"}]},
        {"role": "user", "content": [{"text": "third"}]},
    ]


async def test_max_tokens_ends_with_length_and_a_stop_sequence_with_stop() -> None:
    words = reply_words("hello there", 12)
    async with open_bedrock() as (_, provider):
        capped = await provider.complete(chat(max_tokens=3))
        stopped = await provider.complete(chat(stop=(words[4],)))
    assert capped.content == " ".join(words[:3]) and capped.finish_reason == "length"
    assert capped.usage == Usage(2, 3)
    assert stopped.content == " ".join(words[:4]) and stopped.finish_reason == "stop"


async def test_an_inference_profile_id_reaches_the_fake_percent_encoded() -> None:
    async with open_bedrock() as (server, provider):
        answer = await provider.complete(chat(model="us.anthropic.claude-3-5-haiku-20241022-v1:0"))
    assert server.stats.requests[-1].path.startswith(
        "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/"
    )
    assert answer.model == "us.anthropic.claude-3-5-haiku-20241022-v1:0"


async def test_a_session_token_is_sent_and_signed() -> None:
    token_signer = signer(access_key_id="ASIAEXAMPLE", session_token="session-token")
    async with open_bedrock(
        request_signer=token_signer, access_key_id="ASIAEXAMPLE", session_token="session-token"
    ) as (server, provider):
        await provider.complete(chat())
    seen = server.stats.requests[-1]
    assert seen.header("x-amz-security-token") == "session-token"
    assert "x-amz-security-token" in (seen.header("authorization") or "")


# -- streams ------------------------------------------------------------------------------------


async def test_a_stream_yields_the_completion_then_one_finish_with_usage() -> None:
    request = chat(("system", "be terse"), ("user", "hello there"))
    async with open_bedrock() as (server, provider):
        events = await collect(provider, request)
        answer = await provider.complete(request)
    assert server.stats.requests[0].path.endswith("/converse-stream")
    *deltas, last = events
    assert all(isinstance(e, TextDelta) for e in deltas) and len(deltas) == 12
    assert "".join(e.text for e in deltas if isinstance(e, TextDelta)) == answer.content
    assert last == StreamFinished("stop", answer.usage, MODEL)
    assert (
        server.stats.connections_opened == 1
    )  # read to its end, the stream's connection was reused


async def test_a_stream_without_metadata_finishes_without_usage() -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NO_FINAL_USAGE)
    async with open_bedrock(control) as (_, provider):
        unary = await provider.complete(chat())
        events = await collect(provider, chat())
    assert unary.usage is None
    assert events[-1] == StreamFinished("stop", None, MODEL)


async def test_an_early_closed_stream_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SLOW_DRIP)
    async with open_bedrock(control) as (server, provider):
        async with provider.open_stream(chat()) as events:
            async for event in events:
                assert isinstance(event, TextDelta)
                break
        with anyio.fail_after(5):
            await server.wait_until(lambda s: s.client_disconnects >= 1)


async def test_a_cancelled_call_closes_the_upstream_request() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
    async with open_bedrock(control) as (server, provider):
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(provider.complete, chat())
                await server.wait_until(lambda s: s.request_count >= 1)
                group.cancel_scope.cancel()
            await server.wait_until(lambda s: s.client_disconnects >= 1)


# -- structured output --------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["city", "count"],
}


async def test_structured_output_forces_the_output_tool_and_returns_its_input() -> None:
    async with open_bedrock() as (server, provider):
        answer = await provider.complete(chat(output_schema=SCHEMA))
        tool_config = body_of(server)["toolConfig"]
        events = await collect(provider, chat(output_schema=SCHEMA))
    assert tool_config["tools"][0]["toolSpec"]["name"] == "output"
    assert tool_config["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    assert tool_config["toolChoice"] == {"tool": {"name": "output"}}
    # The fake fills the forced tool's schema as it fills any tool's: strings say the user's text.
    expected = {**sample_instance(SCHEMA), "city": "hello there"}
    assert answer.content == json.dumps(expected, separators=(",", ":"))
    assert answer.finish_reason == "stop" and answer.tool_calls == ()
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == answer.content
    assert events[-1] == StreamFinished("stop", answer.usage, MODEL)


async def test_a_nonconforming_answer_is_returned_as_is() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.NONCONFORMING_JSON)
    async with open_bedrock(control) as (_, provider):
        answer = await provider.complete(chat(output_schema=SCHEMA))
    assert json.loads(answer.content) == {"unexpected": True}


# -- embeddings ---------------------------------------------------------------------------------


async def test_titan_embeds_one_text_per_call_in_order_with_summed_usage() -> None:
    texts = ("a b", "c", "d e f")
    async with open_bedrock() as (server, provider):
        result = await provider.embed(EmbedRequest("amazon.titan-embed-text-v2:0", texts))
    assert result.vectors == [embedding_of(text, 1024) for text in texts]
    assert result.usage == Usage(6, 0)
    bodies = sorted(r.json()["inputText"] for r in server.stats.requests)
    assert bodies == sorted(texts)
    assert all(
        r.path == "/model/amazon.titan-embed-text-v2%3A0/invoke" for r in server.stats.requests
    )


async def test_titan_calls_run_concurrently_within_the_bound() -> None:
    inner = fake_bedrock_handler(FakeControl(), access_key_id=KEY_ID, secret_access_key=SECRET)
    gate = anyio.Event()

    async def gated(request: FakeRequest) -> FakeResponse:
        await gate.wait()
        return await inner(request)

    texts = tuple(f"text {i}" for i in range(6))
    async with open_bedrock(handler=gated, embed_concurrency=2) as (server, provider):
        result: list[Any] = []

        async def embed() -> None:
            result.append(await provider.embed(EmbedRequest("amazon.titan-embed-text-v2:0", texts)))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(embed)
                await server.wait_until(lambda s: s.request_count >= 2)
                await anyio.wait_all_tasks_blocked()
                assert server.stats.request_count == 2
                gate.set()
    assert result[0].vectors == [embedding_of(text, 1024) for text in texts]
    assert server.stats.request_count == 6
    assert server.stats.connections_opened == 2  # the two slots reuse their connections


async def test_cohere_embeds_in_batches_of_96_with_usage_from_the_header() -> None:
    texts = tuple(f"w{i}" for i in range(100))
    async with open_bedrock() as (server, provider):
        result = await provider.embed(EmbedRequest("cohere.embed-english-v3", texts))
    assert len(result.vectors) == 100
    assert result.vectors[0] == embedding_of("w0", 1024)
    assert result.vectors[99] == embedding_of("w99", 1024)
    assert result.usage == Usage(100, 0)
    sizes = sorted(len(r.json()["texts"]) for r in server.stats.requests)
    assert sizes == [4, 96]
    assert all(r.json()["input_type"] == "search_document" for r in server.stats.requests)


async def test_embeddings_without_a_token_count_have_no_usage() -> None:
    control = FakeControl()
    control.fail_next(2, Fault.NO_FINAL_USAGE)
    async with open_bedrock(control) as (_, provider):
        titan = await provider.embed(EmbedRequest("amazon.titan-embed-text-v2:0", ("a",)))
        cohere = await provider.embed(EmbedRequest("cohere.embed-english-v3", ("a",)))
    assert titan.usage is None and cohere.usage is None


async def test_one_failed_titan_call_fails_the_request_with_our_error() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429)
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(UpstreamRateLimited, match="ThrottlingException"):
            await provider.embed(EmbedRequest("amazon.titan-embed-text-v2:0", ("a", "b", "c")))


async def test_an_unknown_embedding_family_is_not_supported() -> None:
    async with open_bedrock() as (server, provider):
        with pytest.raises(EmbeddingsNotSupported, match="titan-embed"):
            await provider.embed(EmbedRequest(MODEL, ("a",)))
    assert server.stats.request_count == 0


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "name"),
    [
        (400, UpstreamRejected, "ValidationException"),
        (403, UpstreamAuthenticationError, "AccessDeniedException"),
        (404, UpstreamModelNotFound, "ResourceNotFoundException"),
        (408, UpstreamTimeout, "ModelTimeoutException"),
        (424, UpstreamUnavailable, "ModelErrorException"),
        (429, UpstreamRateLimited, "ThrottlingException"),
        (500, UpstreamUnavailable, "InternalServerException"),
        (503, UpstreamUnavailable, "ServiceUnavailableException"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_each_http_error_becomes_our_error_naming_the_exception(
    status: int, error: type[ProviderError], name: str, streaming: bool
) -> None:
    control = FakeControl()
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status)
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(error) as raised:
            if streaming:
                await collect(provider, chat())
            else:
                await provider.complete(chat())
    assert type(raised.value) is error
    assert raised.value.provider == "bedrock" and raised.value.http_status == status
    assert name in raised.value.message


def answering(status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
    async def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(status, headers, body)

    return handler


AWS_JSON = [("content-type", "application/json")]


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "fragment"),
    [
        (
            403,
            AWS_JSON,
            b'{"__type":"com.amazon.coral.service#ExpiredTokenException",'
            b'"message":"The security token included in the request is expired"}',
            UpstreamAuthenticationError,
            "ExpiredTokenException: The security token included in the request is expired",
        ),
        (
            400,
            [*AWS_JSON, ("x-amzn-ErrorType", "ServiceQuotaExceededException:http://x/")],
            b'{"message":"Your request exceeds the service quota for your account."}',
            UpstreamRateLimited,
            "ServiceQuotaExceededException",
        ),
        (
            429,
            [*AWS_JSON, ("x-amzn-ErrorType", "ModelNotReadyException:http://x/")],
            b'{"message":"Model is not ready to serve inference requests."}',
            UpstreamUnavailable,
            "ModelNotReadyException",
        ),
        (
            502,
            [("content-type", "text/html")],
            b"<html>502 Bad Gateway</html>",
            UpstreamUnavailable,
            "HTTP 502",
        ),
    ],
    ids=["body-type", "quota", "not-ready", "html"],
)
async def test_errors_are_mapped_by_their_aws_type_else_by_status(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    error: type[ProviderError],
    fragment: str,
) -> None:
    async with open_bedrock(handler=answering(status, headers, body)) as (_, provider):
        with pytest.raises(error) as raised:
            await provider.complete(chat())
    assert type(raised.value) is error and fragment in raised.value.message


async def test_a_wrong_secret_is_an_authentication_error() -> None:
    async with open_bedrock(request_signer=signer(secret_access_key="wrong")) as (_, provider):
        with pytest.raises(UpstreamAuthenticationError, match="InvalidSignatureException"):
            await provider.complete(chat())


async def test_a_signature_for_another_region_is_refused() -> None:
    async with open_bedrock(request_signer=signer(region="eu-west-1")) as (_, provider):
        with pytest.raises(UpstreamAuthenticationError, match="region"):
            await provider.complete(chat())


async def test_temporary_credentials_without_their_token_are_unrecognized() -> None:
    async with open_bedrock(
        request_signer=signer(access_key_id="ASIAEXAMPLE"), access_key_id=None
    ) as (
        _,
        provider,
    ):
        with pytest.raises(UpstreamAuthenticationError, match="UnrecognizedClientException"):
            await provider.complete(chat())


async def test_an_invalid_conversation_is_rejected_by_bedrock() -> None:
    async with open_bedrock() as (_, provider):
        with pytest.raises(UpstreamRejected, match="must start with a user message"):
            await provider.complete(chat(("assistant", "hi")))


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.INVALID_JSON, UpstreamProtocolError),
        (Fault.WRONG_CONTENT_TYPE, UpstreamProtocolError),
        (Fault.OVERSIZED_BODY, UpstreamProtocolError),
        (Fault.TRUNCATED, UpstreamUnavailable),
        (Fault.RESET_MID_BODY, UpstreamUnavailable),
        (Fault.RESET_BEFORE_HEADERS, UpstreamUnavailable),
    ],
)
async def test_malformed_unary_answers(fault: Fault, error: type[ProviderError]) -> None:
    control = FakeControl()
    control.fail_next(1, fault)
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(error) as raised:
            await provider.complete(chat())
    assert raised.value.provider == "bedrock"


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        (Fault.TRUNCATED, UpstreamProtocolError, "truncated"),
        (Fault.BAD_CRC, UpstreamProtocolError, "message CRC mismatch"),
        (Fault.INVALID_JSON, UpstreamProtocolError, "not valid JSON"),
        (Fault.STREAM_ERROR_EVENT, UpstreamProtocolError, "internalServerException"),
        (Fault.RESET_MID_BODY, UpstreamUnavailable, "connection lost"),
    ],
)
async def test_a_stream_that_breaks_after_output_raises_after_the_deltas_before_it(
    fault: Fault, error: type[ProviderError], fragment: str
) -> None:
    control = FakeControl()
    control.fail_next(1, fault, tokens_before_fault=3)
    received: list[StreamEvent] = []
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(error, match=fragment):
            async with provider.open_stream(chat()) as events:
                async for event in events:
                    received.append(event)
    assert len(received) == 3 and all(isinstance(e, TextDelta) for e in received)


async def test_an_oversized_first_event_is_refused_before_any_output() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.OVERSIZED_BODY)
    received: list[StreamEvent] = []
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="exceeds the limit"):
            async with provider.open_stream(chat()) as events:
                async for item in events:
                    received.append(item)
    assert received == []


async def test_throttling_mid_stream_is_a_stream_failure_not_a_rate_limit() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, error_status=429)
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(UpstreamProtocolError) as raised:
            await collect(provider, chat())
    assert "throttled mid-stream (throttlingException)" in raised.value.message


async def test_a_stream_with_the_wrong_content_type_is_a_protocol_error() -> None:
    control = FakeControl()
    control.fail_next(1, Fault.WRONG_CONTENT_TYPE)
    async with open_bedrock(control) as (_, provider):
        with pytest.raises(
            UpstreamProtocolError, match=r"expected application/vnd\.amazon\.eventstream"
        ):
            await collect(provider, chat())


# -- parser edges, with hand-made event streams --------------------------------------------------


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_event(event_type, json.dumps(payload).encode())


def scripted(items: Sequence[bytes]) -> Any:
    """A handler that answers every request with an event stream of ``items``, one write each."""

    async def handler(request: FakeRequest) -> FakeResponse:
        async def body() -> AsyncIterator[bytes]:
            for item in items:
                yield item

        return FakeResponse(200, [("content-type", EVENT_STREAM)], body())

    return handler


START = event("messageStart", {"role": "assistant", "p": "abc"})
STOP = event("messageStop", {"stopReason": "end_turn", "p": "abcdef"})
METADATA = event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 2}, "metrics": {}})


def delta(text: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}, "p": "x"})


async def test_a_frame_split_across_writes_and_frames_sharing_a_write_are_decoded() -> None:
    first, second = delta("Hel"), delta("lo\u2028world")
    items = [START + first[:7], first[7:] + second[:-1], second[-1:], STOP + METADATA]
    async with open_bedrock(handler=scripted(items)) as (_, provider):
        events = await collect(provider, chat())
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo\u2028world"),
        StreamFinished("stop", Usage(5, 2), MODEL),
    ]


async def test_unknown_events_and_padding_are_ignored() -> None:
    items = [
        START,
        event("contentBlockStart", {"contentBlockIndex": 0, "start": {}}),
        event("somethingNew", {"x": 1}),
        delta("ok"),
        event("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefgh"}),
        STOP,
        METADATA,
    ]
    async with open_bedrock(handler=scripted(items)) as (_, provider):
        events = await collect(provider, chat())
    assert events == [TextDelta("ok"), StreamFinished("stop", Usage(5, 2), MODEL)]


async def test_a_stream_that_ends_cleanly_before_message_stop_is_truncated() -> None:
    async with open_bedrock(handler=scripted([START, delta("partial")])) as (_, provider):
        received: list[StreamEvent] = []
        with pytest.raises(UpstreamProtocolError, match="before messageStop"):
            async with provider.open_stream(chat()) as events:
                async for item in events:
                    received.append(item)
    assert received == [TextDelta("partial")]


async def test_a_generic_error_message_names_its_code() -> None:
    error = encode_event_stream_message(
        {
            ":message-type": "error",
            ":error-code": "InternalFailure",
            ":error-message": "An internal error occurred.",
        },
        b"",
    )
    async with open_bedrock(handler=scripted([START, delta("a"), error])) as (_, provider):
        with pytest.raises(UpstreamProtocolError, match="InternalFailure: An internal error"):
            await collect(provider, chat())


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("tool_use", "tool_calls"),
        ("malformed_model_output", "malformed_model_output"),
    ],
)
async def test_stop_reasons_are_normalised(stop_reason: str, finish: str) -> None:
    items = [START, delta("a"), event("messageStop", {"stopReason": stop_reason}), METADATA]
    async with open_bedrock(handler=scripted(items)) as (_, provider):
        events = await collect(provider, chat())
    assert events[-1] == StreamFinished(finish, Usage(5, 2), MODEL)


# -- builder ------------------------------------------------------------------------------------


async def test_the_builder_reads_credentials_region_and_base_url_from_settings() -> None:
    settings = Settings(
        aws_access_key_id=KEY_ID,  # type: ignore[arg-type]
        aws_secret_access_key=SECRET,  # type: ignore[arg-type]
        aws_region="eu-west-1",
    )
    async with httpx.AsyncClient() as client:
        provider = build_bedrock(settings, CATALOG, client)
        assert isinstance(provider, BedrockProvider)
        assert provider.name == "bedrock" and provider.supports_embeddings
        assert provider.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
        assert MODEL in provider.models()
        with pytest.raises(ProviderNotConfigured, match="AWS_SECRET_ACCESS_KEY"):
            build_bedrock(Settings(aws_access_key_id=KEY_ID), CATALOG, client)  # type: ignore[arg-type]


async def test_a_built_provider_with_a_session_token_talks_to_the_fake() -> None:
    control = FakeControl()
    handler = fake_bedrock_handler(
        control,
        region="eu-west-1",
        access_key_id="ASIAEXAMPLE",
        secret_access_key=SECRET,
        session_token="tok",
    )
    async with open_fake_server(handler) as server:
        settings = Settings.model_validate(
            {
                "aws_access_key_id": "ASIAEXAMPLE",
                "aws_secret_access_key": SECRET,
                "aws_session_token": "tok",
                "aws_region": "eu-west-1",
                "bedrock_base_url": server.url,
            }
        )
        provider = build_bedrock(settings, CATALOG, httpx.AsyncClient())
        try:
            answer = await provider.complete(chat())
        finally:
            await provider.aclose()
    assert answer.finish_reason == "stop"
