"""Bad input and upstream failures get the right gRPC status and a message that says why."""

from __future__ import annotations

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Fault
from tests.gateway.harness import SENTINEL_KEYS, open_harness

pytestmark = pytest.mark.anyio


def params(**fields: object) -> pb.CompletionParams:
    fields.setdefault("messages", [pb.Message(role="user", content="hello")])
    return pb.CompletionParams(**fields)  # type: ignore[arg-type]


BAD_REQUESTS = [
    (params(messages=[]), Status.INVALID_ARGUMENT, "messages: at least one message"),
    (
        params(messages=[pb.Message(role="wizard", content="x")]),
        Status.INVALID_ARGUMENT,
        "messages[0].role: unknown role 'wizard'",
    ),
    (params(temperature=2.5), Status.INVALID_ARGUMENT, "temperature: must be between 0 and 2"),
    (params(temperature=-0.1), Status.INVALID_ARGUMENT, "temperature"),
    (params(max_tokens=-1), Status.INVALID_ARGUMENT, "max_tokens: must be between 1"),
    (params(top_p=1.5), Status.INVALID_ARGUMENT, "top_p"),
    (
        params(routing=pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER),
        Status.INVALID_ARGUMENT,
        "provider: required with ROUTING_STRATEGY_SPECIFIC_PROVIDER",
    ),
    (
        params(routing=pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER, provider="acme"),
        Status.NOT_FOUND,
        "unknown provider 'acme'",
    ),
    (params(provider="anthropic"), Status.FAILED_PRECONDITION, "DELOS_RUNTIME_ANTHROPIC_KEY"),
    (params(model="gpt4o"), Status.NOT_FOUND, "did you mean gpt-4o"),
    (params(routing=99), Status.INVALID_ARGUMENT, "routing: unknown strategy number 99"),
    (params(output_schema="{not json"), Status.INVALID_ARGUMENT, "output_schema: not valid JSON"),
    (params(output_schema='{"type": 12}'), Status.INVALID_ARGUMENT, "output_schema: invalid"),
    (params(stop=[""]), Status.INVALID_ARGUMENT, "stop"),
]


@pytest.mark.parametrize(("request_params", "status", "fragment"), BAD_REQUESTS)
async def test_bad_input_gets_a_clear_status(
    request_params: pb.CompletionParams, status: Status, fragment: str
) -> None:
    async with open_harness() as h:
        for call in (h.stub.Complete, _stream_call(h.stub)):
            with pytest.raises(GRPCError) as raised:
                await call(pb.CompleteRequest(params=request_params))
            assert raised.value.status is status
            assert fragment in (raised.value.message or "")
        assert h.fakes["openai"].stats.request_count == 0


def _stream_call(stub):  # type: ignore[no-untyped-def]
    async def call(request: pb.CompleteRequest) -> list[pb.StreamChunk]:
        async with stub.CompleteStream.open() as stream:
            await stream.send_message(request, end=True)
            return [chunk async for chunk in stream]

    return call


@pytest.mark.parametrize(
    ("status", "grpc_status", "fragment"),
    [
        (401, Status.FAILED_PRECONDITION, "rejected the gateway's credentials (HTTP 401"),
        (429, Status.RESOURCE_EXHAUSTED, "rate limited (HTTP 429"),
        (500, Status.UNAVAILABLE, "unavailable (HTTP 500"),
        (503, Status.UNAVAILABLE, "unavailable (HTTP 503"),
        (400, Status.INVALID_ARGUMENT, "rejected the request (HTTP 400"),
    ],
)
async def test_upstream_errors_map_to_documented_statuses_naming_the_provider(
    status: int, grpc_status: Status, fragment: str
) -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(4, Fault.HTTP_ERROR, error_status=status)
        for call in (h.stub.Complete, _stream_call(h.stub)):
            with pytest.raises(GRPCError) as raised:
                await call(pb.CompleteRequest(params=params(provider="openai")))
            message = raised.value.message or ""
            assert raised.value.status is grpc_status
            assert message.startswith("openai: ") and fragment in message
            assert SENTINEL_KEYS["openai"] not in message


async def test_a_429_with_retry_after_pauses_the_provider_for_that_long() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.HTTP_ERROR, error_status=429, retry_after=30)
        with pytest.raises(GRPCError) as first:
            await h.stub.Complete(pb.CompleteRequest(params=params(provider="openai")))
        with pytest.raises(GRPCError) as second:
            await h.stub.Complete(pb.CompleteRequest(params=params(provider="openai")))
        assert h.fakes["openai"].stats.request_count == 1  # the pause kept the second one home
    assert first.value.status is Status.RESOURCE_EXHAUSTED
    assert "rate limited (HTTP 429" in (first.value.message or "")
    assert second.value.status is Status.RESOURCE_EXHAUSTED
    assert "local rate limit" in (second.value.message or "")


async def test_a_key_echoed_by_the_provider_is_redacted() -> None:
    async with open_harness() as h:
        # The fake rejects a key it does not expect and the gateway's key is in no message;
        # an upstream that echoes a key-shaped string still never reaches the client.
        from delos.runtime.redaction import Redactor

        redact = h.running.gateway.redact
        assert isinstance(redact, Redactor)
        assert SENTINEL_KEYS["openai"] not in redact(f"bad key {SENTINEL_KEYS['openai']}")
        assert "sk-proj-abcdefghijklmnopqrstuvwx" not in redact(
            "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwx"
        )


@pytest.mark.parametrize("fault", [Fault.STREAM_ERROR_EVENT, Fault.TRUNCATED, Fault.RESET_MID_BODY])
async def test_a_stream_that_fails_after_output_ends_with_an_error_never_ok(fault: Fault) -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, fault, tokens_before_fault=3)
        received: list[pb.StreamChunk] = []
        with pytest.raises(GRPCError) as raised:
            async with h.stub.CompleteStream.open() as stream:
                await stream.send_message(
                    pb.CompleteRequest(params=params(provider="openai")), end=True
                )
                async for chunk in stream:
                    received.append(chunk)
    assert raised.value.status is Status.UNAVAILABLE
    assert (raised.value.message or "").startswith("openai: ")
    assert len(received) == 3 and not any(c.finish_reason for c in received)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.INVALID_JSON,
        Fault.WRONG_CONTENT_TYPE,
        Fault.RESET_BEFORE_HEADERS,
        Fault.TRUNCATED,
        Fault.OVERSIZED_BODY,
    ],
)
async def test_malformed_unary_answers_are_retried_once_then_unavailable(fault: Fault) -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, fault)
        recovered = await h.stub.Complete(pb.CompleteRequest(params=params(provider="openai")))
        h.controls["openai"].fail_next(2, fault)
        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(pb.CompleteRequest(params=params(provider="openai")))
        assert h.fakes["openai"].stats.request_count == 4
    assert [(a.kind, a.outcome) for a in recovered.attempts] == [
        ("primary", "failed"),
        ("retry", "won"),
    ]
    assert raised.value.status is Status.UNAVAILABLE
    assert (raised.value.message or "").startswith("openai: ")
    assert "(2 attempts)" in (raised.value.message or "")


async def test_a_client_deadline_becomes_deadline_exceeded_and_closes_the_upstream() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
        with pytest.raises(GRPCError) as raised:
            await h.stub.Complete(pb.CompleteRequest(params=params(provider="openai")), timeout=0.5)
        assert raised.value.status is Status.DEADLINE_EXCEEDED
        with anyio.fail_after(5):
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)


async def test_a_client_that_cancels_a_stream_closes_the_upstream_request() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.SLOW_DRIP)
        async with h.stub.CompleteStream.open() as stream:
            await stream.send_message(
                pb.CompleteRequest(params=params(provider="openai")), end=True
            )
            first = await stream.recv_message()
            assert first is not None and first.delta
            await stream.cancel()
        with anyio.fail_after(5):
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
        assert h.fakes["openai"].stats.completed_responses == 0
