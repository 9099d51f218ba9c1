"""The only place that reaches into grpclib's private attributes; a test fails when they move.

grpclib has no public way to
- advertise a higher ``SETTINGS_MAX_CONCURRENT_STREAMS`` than h2's default of 100 (one gRPC channel
  multiplexes every call of a client): :class:`TunedServer` makes its connections send the
  configured value right after the connection preface;
- stop accepting connections while letting running calls finish (``Server.close`` also cancels
  every call): a graceful drain closes the listening ``asyncio.Server`` it keeps in ``_server``;
- close the connections once stopped (``Server.close`` leaves each open until its client closes
  it): :meth:`TunedServer.close_connections` says GOAWAY on each and closes it;
- read a request message with a size limit (``Stream.recv_message`` buffers whatever length the
  client declares): :mod:`.receive` reads the length prefix from the HTTP/2 stream itself, then
  decodes and dispatches the body as ``Stream.recv_message`` does;
- compress messages: grpclib reads request headers such as ``grpc-encoding`` but does not keep
  them (:class:`TunedServer` keeps them on the HTTP/2 stream), refuses ``grpc-*`` keys in
  response metadata, and writes every message uncompressed. :func:`request_header` reads the
  kept headers; :func:`send_initial_headers` and :func:`send_frame` send headers and a framed
  message as ``Stream.send_initial_metadata`` and ``Stream.send_message`` do, events and
  counters included;
- answer a unary call in one write (grpclib writes headers, message and trailers apart, three
  system calls where one does): :func:`send_whole_answer`.

:func:`check_supported` verifies the server's attributes at start-up, and every function here
raises :class:`GrpclibChanged` naming what is missing, so a grpclib upgrade that moves one fails
loudly (the edge tests exercise each) instead of misbehaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from asyncio import BaseTransport
from collections.abc import Collection
from typing import Any

from grpclib.const import Status
from grpclib.metadata import encode_metadata
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream
from h2.settings import SettingCodes
from multidict import MultiDict

__all__ = [
    "GrpclibChanged",
    "TunedServer",
    "check_supported",
    "decode_request",
    "dispatch_received",
    "receive_bytes",
    "request_header",
    "send_frame",
    "send_initial_headers",
    "send_whole_answer",
    "stop_accepting",
]

_SERVER_ATTRIBUTES = ("_server",)
_STREAM_ATTRIBUTES = ("_stream", "_codec", "_recv_type", "_dispatch")
_SEND_ATTRIBUTES = ("_stream", "_dispatch", "_content_type")
#: What sending reaches on grpclib's HTTP/2 stream behind a call.
_RAW_ATTRIBUTES = ("_h2_connection", "_transport", "connection", "send_data")


class GrpclibChanged(RuntimeError):
    """The installed grpclib lacks an internal attribute this gateway relies on."""


def _require(owner: object, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise GrpclibChanged(
            f"grpclib {type(owner).__name__} has no {', '.join(missing)}: this grpclib version "
            "is not supported (see delos/runtime/grpc/_grpclib_private.py)"
        )


class _AdvertisingProtocol(H2Protocol):
    max_concurrent_streams = 100
    transport: BaseTransport | None = None

    def connection_made(self, transport: BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)
        connection = self.connection._connection
        connection.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams}
        )
        self.connection.flush()

    def close(self) -> None:
        """Say GOAWAY and close the connection (grpclib leaves it to the client)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(Exception):  # a connection h2 already ended has no GOAWAY
            self.connection._connection.close_connection()
            self.connection.flush()
        transport.close()


class TunedServer(Server):
    """A grpclib server whose connections allow ``max_concurrent_streams`` calls at once, and
    which can close its connections once stopped (:meth:`close_connections`)."""

    def __init__(self, handlers: Collection[Any], *, max_concurrent_streams: int) -> None:
        super().__init__(handlers)
        self._protocol_class = type(
            "_AdvertisingProtocol",
            (_AdvertisingProtocol,),
            {"max_concurrent_streams": max_concurrent_streams},
        )
        self._connections: weakref.WeakSet[_AdvertisingProtocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        handler = _HeaderKeepingHandler(made.handler)
        protocol: _AdvertisingProtocol = self._protocol_class(handler, made.config, made.h2_config)
        self._connections.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close every client connection still open. grpclib's ``close`` stops listening and
        cancels the calls but leaves each connection open until its client closes it: in a
        process that goes on after the server (an embedding application, a test), its sockets
        would stay open until collected."""
        for protocol in list(self._connections):
            protocol.close()


class _HeaderKeepingHandler:
    """grpclib's request handler, keeping each request's headers on its HTTP/2 stream (where
    grpclib keeps a response's headers on the client side) for :func:`request_header`."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    def accept(self, stream: Any, headers: Any, release_stream: Any) -> None:
        stream.headers = headers
        self._handler.accept(stream, headers, release_stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


def check_supported(server: Server) -> None:
    """Raise :class:`GrpclibChanged` unless the server's internals are the expected ones."""
    _require(server, _SERVER_ATTRIBUTES)
    _require(server, ("_protocol_factory",))
    probe = Server.__dict__.get("_protocol_factory")
    if probe is None:
        raise GrpclibChanged("grpclib Server has no _protocol_factory")
    listening = server._server
    if listening is not None and not hasattr(listening, "close"):
        raise GrpclibChanged("grpclib Server._server is no longer a listening server")


def stop_accepting(server: Server) -> None:
    """Close the listening socket; running calls and open connections carry on."""
    _require(server, _SERVER_ATTRIBUTES)
    if server._server is not None:
        server._server.close()


async def receive_bytes(stream: Stream[Any, Any], count: int) -> bytes:
    """Up to ``count`` bytes of the request body (fewer at its end)."""
    try:
        raw = stream._stream
    except AttributeError:
        _require(stream, _STREAM_ATTRIBUTES)
        raise
    data: bytes = await raw.recv_data(count)
    return data


def decode_request(stream: Stream[Any, Any], body: bytes) -> Any:
    """Decode ``body`` with the stream's codec into its request type (may raise DecodeError)."""
    try:
        codec, request_type = stream._codec, stream._recv_type
    except AttributeError:
        _require(stream, _STREAM_ATTRIBUTES)
        raise
    return codec.decode(body, request_type)


async def dispatch_received(stream: Stream[Any, Any], message: Any) -> Any:
    """Run grpclib's ``RecvMessage`` event listeners, as ``Stream.recv_message`` does."""
    try:
        dispatch = stream._dispatch
    except AttributeError:
        _require(stream, _STREAM_ATTRIBUTES)
        raise
    (message,) = await dispatch.recv_message(message)
    return message


def request_header(stream: Stream[Any, Any], name: str) -> str | None:
    """The request's ``name`` header (lower case), also the ``grpc-*`` ones metadata omits."""
    try:
        headers = stream._stream.headers
    except AttributeError:
        _require(stream, _STREAM_ATTRIBUTES)
        raise
    for key, value in headers or ():
        if key == name:
            return str(value)
    return None


async def send_initial_headers(stream: Stream[Any, Any], extra: list[tuple[str, str]]) -> None:
    """Send the response headers with ``extra`` (``grpc-*`` headers allowed)."""
    try:
        content_type, raw, dispatch = stream._content_type, stream._stream, stream._dispatch
    except AttributeError:
        _require(stream, _SEND_ATTRIBUTES)
        raise
    await raw.send_headers(await _response_headers(content_type, dispatch, extra))
    stream._send_initial_metadata_done = True


async def send_frame(stream: Stream[Any, Any], frame: bytes, *, at_once: bool = False) -> None:
    """Send one length-prefixed message frame, counted as ``Stream.send_message`` counts.

    A frame that fits the flow-control window is framed by h2 at once and written with the
    other frames of the same event-loop turn: the events an upstream read delivered together
    leave in one write, where grpclib would make one per message. ``at_once`` writes it now
    (a stream's first token must not wait for the rest of its read). Otherwise grpclib's
    ``send_data`` waits for the window.
    """
    try:
        raw = stream._stream
        h2, connection = raw._h2_connection, raw.connection
    except AttributeError:
        _require(stream, _SEND_ATTRIBUTES)
        _require(stream._stream, _RAW_ATTRIBUTES)
        raise
    size, stream_id = len(frame), raw.id
    assert stream_id is not None  # a call's stream has its id once the request came
    if _fits_now(stream_id, h2, connection, size):
        h2.send_data(stream_id, frame)
        if at_once:
            raw._transport.write(h2.data_to_send())
        else:
            _write_soon(raw)
        _count_data(raw, connection, size)
    else:
        await raw.send_data(frame)
    _count_message(stream, connection)


async def _response_headers(
    content_type: str, dispatch: Any, extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The response headers as grpclib sends them, ``extra`` and the metadata added by its
    ``SendInitialMetadata`` listeners included."""
    headers = [(":status", "200"), ("content-type", content_type), *extra]
    (metadata,) = await dispatch.send_initial_metadata(MultiDict())
    headers.extend(encode_metadata(metadata))
    return headers


def _count_data(raw: Any, connection: Any, size: int) -> None:
    """What grpclib's ``send_data`` counts for ``size`` bytes framed without it."""
    raw.data_sent += size
    connection.data_sent += size
    connection.data_send_process()


def _count_message(stream: Stream[Any, Any], connection: Any) -> None:
    """What grpclib's ``Stream.send_message`` counts for one message."""
    stream._send_message_done = True
    stream._messages_sent += 1
    connection.messages_sent += 1
    connection.last_message_sent = time.monotonic()


def _fits_now(stream_id: int, h2: Any, connection: Any, size: int) -> bool:
    """Whether ``size`` bytes of data can be framed on the stream right now: the connection
    takes writes, the stream is open, and one frame within its flow-control window holds them."""
    return bool(
        connection.write_ready.is_set()
        and stream_id in h2.streams
        and size <= h2.local_flow_control_window(stream_id)
        and size <= h2.max_outbound_frame_size
    )


#: Connections whose h2 output waits for the end of this event-loop turn.
_WRITES_PENDING: weakref.WeakSet[Any] = weakref.WeakSet()


def _write_soon(raw: Any) -> None:
    connection = raw.connection
    if connection in _WRITES_PENDING:
        return
    _WRITES_PENDING.add(connection)
    asyncio.get_running_loop().call_soon(_write_pending, raw)


def _write_pending(raw: Any) -> None:
    """Write what h2 framed since (anything grpclib wrote meanwhile took it along, in order)."""
    _WRITES_PENDING.discard(raw.connection)
    data = raw._h2_connection.data_to_send()
    if data and not raw._transport.is_closing():
        raw._transport.write(data)


async def send_whole_answer(
    stream: Stream[Any, Any], extra: list[tuple[str, str]], frame: bytes
) -> None:
    """A unary call's whole answer, headers (with ``extra``), its one message frame and OK
    trailers, in one write to the connection where grpclib makes three.

    Falls back to those three steps when the frame does not fit the stream's flow-control
    window at once or the connection is not ready for writing.
    """
    try:
        content_type, raw, dispatch = stream._content_type, stream._stream, stream._dispatch
        h2, transport, connection = raw._h2_connection, raw._transport, raw.connection
    except AttributeError:
        _require(stream, _SEND_ATTRIBUTES)
        _require(stream._stream, _RAW_ATTRIBUTES)
        raise
    size, stream_id = len(frame), raw.id
    assert stream_id is not None  # a call's stream has its id once the request came
    if not _fits_now(stream_id, h2, connection, size):
        await send_initial_headers(stream, extra)
        await send_frame(stream, frame)
        return  # grpclib sends the trailers as the handler returns
    headers = await _response_headers(content_type, dispatch, extra)
    (trailing,) = await dispatch.send_trailing_metadata(
        MultiDict(), status=Status.OK, status_message=None, status_details=None
    )
    trailers = [("grpc-status", "0"), *encode_metadata(trailing)]
    h2.send_headers(stream_id, headers)
    h2.send_data(stream_id, frame)
    h2.send_headers(stream_id, trailers, end_stream=True)
    transport.write(h2.data_to_send())
    _count_data(raw, connection, size)
    _count_message(stream, connection)
    stream._send_initial_metadata_done = True
    stream._send_trailing_metadata_done = True
