"""The gRPC edge: the one status table, the grpclib internals it relies on, and its boundary."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server

import delos.runtime
from delos.runtime import errors
from delos.runtime.errors import AllCandidatesFailed, DelosError, ErrorKind
from delos.runtime.grpc._grpclib_private import (
    GrpclibChanged,
    TunedServer,
    check_supported,
    decode_request,
    send_frame,
    send_initial_headers,
    send_whole_answer,
    stop_accepting,
)
from delos.runtime.grpc.convert import STATUS_OF_KIND, status_of
from delos.runtime.grpc.server import listening_socket

pytestmark = pytest.mark.anyio

RUNTIME = Path(delos.runtime.__file__).parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib runs on asyncio only


def _error_classes() -> list[type[DelosError]]:
    found = []
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, DelosError):
            found.append(value)
    return found


def test_every_error_kind_has_one_grpc_status() -> None:
    assert set(STATUS_OF_KIND) == set(ErrorKind)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequest("x"), Status.INVALID_ARGUMENT),
        (errors.RequestTooLarge("x"), Status.RESOURCE_EXHAUSTED),
        (errors.UnknownModel("x"), Status.NOT_FOUND),
        (errors.ProviderNotConfigured("x"), Status.FAILED_PRECONDITION),
        (errors.NoProvidersConfigured("x"), Status.UNAVAILABLE),
        (errors.Unauthenticated("x"), Status.UNAUTHENTICATED),
        (errors.UpstreamAuthenticationError("p", "x"), Status.FAILED_PRECONDITION),
        (errors.UpstreamRejected("p", "x"), Status.INVALID_ARGUMENT),
        (errors.UpstreamModelNotFound("p", "x"), Status.NOT_FOUND),
        (errors.UpstreamRateLimited("p", "x"), Status.RESOURCE_EXHAUSTED),
        (errors.LocalRateLimited("p", "x"), Status.RESOURCE_EXHAUSTED),
        (errors.CircuitOpen("p", "x"), Status.UNAVAILABLE),
        (errors.UpstreamTimeout("p", "x"), Status.UNAVAILABLE),
        (errors.UpstreamProtocolError("p", "x"), Status.UNAVAILABLE),
    ],
)
def test_error_status_table(error: DelosError, status: Status) -> None:
    assert status_of(error) is status


def test_every_error_class_maps_to_a_status() -> None:
    for cls in _error_classes():
        assert cls.kind in STATUS_OF_KIND, cls.__name__


def test_failed_candidates_report_the_most_telling_status() -> None:
    same = AllCandidatesFailed(
        [errors.UpstreamRejected("a", "x"), errors.UpstreamRejected("b", "y")]
    )
    assert status_of(same) is Status.INVALID_ARGUMENT
    mixed = AllCandidatesFailed(
        [errors.UpstreamRejected("a", "x"), errors.UpstreamRateLimited("b", "y")]
    )
    assert status_of(mixed) is Status.RESOURCE_EXHAUSTED
    transient = AllCandidatesFailed(
        [errors.UpstreamRateLimited("a", "x"), errors.UpstreamTimeout("b", "y")]
    )
    assert status_of(transient) is Status.UNAVAILABLE


def test_only_the_edge_sees_protobuf_and_grpclib() -> None:
    offenders = []
    for path in RUNTIME.rglob("*.py"):
        relative = path.relative_to(RUNTIME)
        if relative.parts[0] in ("grpc", "v1"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.startswith("grpclib") or n.endswith("runtime_pb2") for n in names):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


async def test_the_installed_grpclib_has_the_internals_the_edge_uses() -> None:
    check_supported(Server([]))


def test_a_grpclib_without_those_internals_fails_loudly() -> None:
    class Refactored:
        pass

    with pytest.raises(GrpclibChanged, match="_server"):
        check_supported(Refactored())  # type: ignore[arg-type]
    with pytest.raises(GrpclibChanged, match="_server"):
        stop_accepting(Refactored())  # type: ignore[arg-type]
    with pytest.raises(GrpclibChanged, match="_stream, _codec, _recv_type, _dispatch"):
        decode_request(Refactored(), b"")  # type: ignore[arg-type]


async def test_answering_through_a_grpclib_without_those_internals_fails_loudly() -> None:
    class Refactored:
        pass

    missing = "_stream, _dispatch, _content_type"
    with pytest.raises(GrpclibChanged, match=missing):
        await send_initial_headers(Refactored(), [])  # type: ignore[arg-type]
    with pytest.raises(GrpclibChanged, match=missing):
        await send_whole_answer(Refactored(), [], b"")  # type: ignore[arg-type]
    with pytest.raises(GrpclibChanged, match=missing):
        await send_frame(Refactored(), b"")  # type: ignore[arg-type]


async def test_a_grpclib_stream_without_its_http2_internals_fails_loudly() -> None:
    class RefactoredCall:
        _dispatch = _content_type = None
        _stream = object()

    missing = "_h2_connection, _transport, connection, send_data"
    with pytest.raises(GrpclibChanged, match=missing):
        await send_frame(RefactoredCall(), b"")  # type: ignore[arg-type]
    with pytest.raises(GrpclibChanged, match=missing):
        await send_whole_answer(RefactoredCall(), [], b"")  # type: ignore[arg-type]


async def test_stop_accepting_refuses_new_connections_and_keeps_open_ones() -> None:
    health = Health()
    server = Server([health])
    listening = listening_socket("127.0.0.1", 0)
    port = listening.getsockname()[1]
    await server.start(sock=listening)
    channel = Channel("127.0.0.1", port)
    try:
        stub = HealthStub(channel)
        before = await stub.Check(HealthCheckRequest())
        assert before.status == HealthCheckResponse.SERVING
        stop_accepting(server)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        after = await stub.Check(HealthCheckRequest())  # the open connection still serves
        assert after.status == HealthCheckResponse.SERVING
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


def test_listening_socket_reports_an_address_in_use() -> None:
    first = listening_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", first.getsockname()[1]).close()
    finally:
        first.close()


async def test_a_stopped_server_closes_the_connections_its_clients_left_open() -> None:
    """grpclib's close leaves each connection to its client; ours says GOAWAY and closes it,
    so no socket outlives the server in a process that carries on."""
    server = TunedServer([Health()], max_concurrent_streams=100)
    listening = listening_socket("127.0.0.1", 0)
    host, port = listening.getsockname()[:2]
    await server.start(sock=listening)
    async with await anyio.connect_tcp(host, port) as idle:
        await idle.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04" + bytes(5))
        await idle.receive()  # the server's SETTINGS: the connection is made
        server.close()
        await server.wait_closed()
        server.close_connections()
        received = b""
        with anyio.fail_after(5):
            try:
                while True:
                    received += await idle.receive()
            except anyio.EndOfStream:
                pass  # closed by the server
    assert b"\x07\x00\x00\x00\x00\x00" in received  # a GOAWAY frame (type 7, stream 0)
