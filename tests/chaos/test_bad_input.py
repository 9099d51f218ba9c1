"""Hostile and nonsensical clients: every input gets a clean status, and the server keeps serving.

The gateway runs in a background event loop; the official grpcio client sends the requests, so
the bytes on the wire are not shaped by our own SDK.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import anyio.from_thread
import grpc  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delos.runtime.v1 import runtime_pb2 as pb
from tests.gateway.harness import open_harness

#: Statuses a bad request may get; INTERNAL or UNKNOWN would mean an unhandled error.
CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
MAX_MESSAGE = 256 * 1024
#: One gateway serves every example (module fixture); hypothesis need not warn about it.
SHARED_GATEWAY = [HealthCheck.function_scoped_fixture]


@dataclass
class Gateway:
    port: int
    complete: grpc.UnaryUnaryMultiCallable
    stream: grpc.UnaryStreamMultiCallable
    embed: grpc.UnaryUnaryMultiCallable
    raw_complete: grpc.UnaryUnaryMultiCallable
    health: grpc.UnaryUnaryMultiCallable


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with anyio.from_thread.start_blocking_portal() as portal:
        harness = open_harness(("openai", "together"), settings={"max_message_bytes": MAX_MESSAGE})
        with portal.wrap_async_context_manager(harness) as h:
            channel = grpc.insecure_channel(f"127.0.0.1:{h.running.port}")
            method = "/delos.runtime.v1.RuntimeService/"
            yield Gateway(
                h.running.port,
                channel.unary_unary(
                    method + "Complete",
                    request_serializer=pb.CompleteRequest.SerializeToString,
                    response_deserializer=pb.CompleteResponse.FromString,
                ),
                channel.unary_stream(
                    method + "CompleteStream",
                    request_serializer=pb.CompleteRequest.SerializeToString,
                    response_deserializer=pb.StreamChunk.FromString,
                ),
                channel.unary_unary(
                    method + "Embed",
                    request_serializer=pb.EmbedRequest.SerializeToString,
                    response_deserializer=pb.EmbedResponse.FromString,
                ),
                channel.unary_unary(method + "Complete"),
                channel.unary_unary(
                    method + "Health",
                    request_serializer=pb.HealthRequest.SerializeToString,
                    response_deserializer=pb.HealthResponse.FromString,
                ),
            )
            channel.close()


def status_of(call: object) -> grpc.StatusCode:
    try:
        result = call()  # type: ignore[operator]
        if not isinstance(result, pb.CompleteResponse | pb.EmbedResponse):
            list(result)
    except grpc.RpcError as error:
        assert error.details(), "every error status says what is wrong"
        assert "Traceback" not in error.details()
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


text = st.text(max_size=200)
messages = st.lists(
    st.builds(
        pb.Message,
        role=st.sampled_from(["user", "assistant", "system", "", "User", "tool", "🤖"]) | text,
        content=text,
    ),
    max_size=8,
)


@st.composite
def params(draw: st.DrawFn) -> pb.CompletionParams:
    result = pb.CompletionParams(
        messages=draw(messages),
        provider=draw(st.sampled_from(["", "openai", "acme"]) | text),
        model=draw(st.sampled_from(["", "gpt-4o", "no-such-model"]) | text),
        routing=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        prompt_ref=draw(st.sampled_from(["", "x", "x:1"])),
        output_schema=draw(st.sampled_from(["", "{", '{"type": "object"}', "[]"]) | text),
        cache_ttl_seconds=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        stop=draw(st.lists(text, max_size=20)),
        metadata=draw(st.dictionaries(text, text, max_size=5)),
    )
    if draw(st.booleans()):
        result.temperature = draw(st.floats(allow_nan=True, allow_infinity=True))
    if draw(st.booleans()):
        result.top_p = draw(st.floats(allow_nan=True, allow_infinity=True))
    if draw(st.booleans()):
        result.max_tokens = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    return result


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request_params=params())
def test_arbitrary_completion_requests_get_clean_statuses(
    gateway: Gateway, request_params: pb.CompletionParams
) -> None:
    request = pb.CompleteRequest(params=request_params)
    assert status_of(lambda: gateway.complete(request, timeout=10)) in CLEAN
    assert status_of(lambda: gateway.stream(request, timeout=10)) in CLEAN


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(text, max_size=5), model=text, provider=text)
def test_arbitrary_embed_requests_get_clean_statuses(
    gateway: Gateway, texts: list[str], model: str, provider: str
) -> None:
    request = pb.EmbedRequest(texts=texts, model=model, provider=provider)
    assert status_of(lambda: gateway.embed(request, timeout=10)) in CLEAN


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=300))
def test_undecodable_messages_get_clean_statuses(gateway: Gateway, payload: bytes) -> None:
    status = status_of(lambda: gateway.raw_complete(payload, timeout=10))
    assert status in CLEAN


def test_ten_thousand_messages_are_served_or_refused_cleanly(gateway: Gateway) -> None:
    many = pb.CompleteRequest(
        params=pb.CompletionParams(messages=[pb.Message(role="user", content="hi")] * 10_000)
    )
    assert status_of(lambda: gateway.complete(many, timeout=30)) == grpc.StatusCode.OK
    too_many = pb.CompleteRequest(
        params=pb.CompletionParams(messages=[pb.Message(role="user", content="")] * 10_001)
    )
    assert status_of(lambda: gateway.complete(too_many, timeout=30)) in CLEAN - {grpc.StatusCode.OK}


def test_a_message_over_the_configured_maximum_is_resource_exhausted(gateway: Gateway) -> None:
    huge = pb.CompleteRequest(
        params=pb.CompletionParams(
            messages=[pb.Message(role="user", content="x" * (MAX_MESSAGE + 1))]
        )
    )
    try:
        gateway.complete(huge, timeout=30)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "DELOS_RUNTIME_MAX_MESSAGE_BYTES" in error.details()
    else:
        pytest.fail("an oversized request was accepted")


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * 64,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100,
        bytes(range(256)),
    ],
)
def test_undecodable_bytes_at_the_http2_level_leave_the_server_serving(
    gateway: Gateway, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as connection:
        connection.sendall(garbage)
        connection.settimeout(5)
        try:
            while connection.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    answer = gateway.health(pb.HealthRequest(), timeout=10)
    assert answer.status == pb.HealthResponse.STATUS_SERVING
