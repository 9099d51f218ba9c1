"""The only place that reaches into grpclib's private attributes; a test fails when they move.

grpclib has no public way to
- stop accepting connections while letting running calls finish (``Server.close`` also cancels
  every call): a graceful drain closes the listening ``asyncio.Server`` it keeps in ``_server``;
- read a request message with a size limit (``Stream.recv_message`` buffers whatever length the
  client declares): :mod:`.receive` reads the length prefix from the HTTP/2 stream itself, then
  decodes and dispatches the body as ``Stream.recv_message`` does.

:func:`check_supported` verifies every attribute used here, so a grpclib upgrade that moves one
fails loudly at start-up (and in the test suite) instead of at the first drain or request.
"""

from __future__ import annotations

from typing import Any

from grpclib.server import Server, Stream

__all__ = [
    "GrpclibChanged",
    "check_supported",
    "decode_request",
    "dispatch_received",
    "receive_bytes",
    "stop_accepting",
]

_SERVER_ATTRIBUTES = ("_server",)
_STREAM_ATTRIBUTES = ("_stream", "_codec", "_recv_type", "_dispatch")


class GrpclibChanged(RuntimeError):
    """The installed grpclib lacks an internal attribute this gateway relies on."""


def _require(owner: object, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise GrpclibChanged(
            f"grpclib {type(owner).__name__} has no {', '.join(missing)}: this grpclib version "
            "is not supported (see delos/runtime/grpc/_grpclib_private.py)"
        )


def check_supported(server: Server) -> None:
    """Raise :class:`GrpclibChanged` unless the server's internals are the expected ones."""
    _require(server, _SERVER_ATTRIBUTES)
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
    _require(stream, _STREAM_ATTRIBUTES)
    data: bytes = await stream._stream.recv_data(count)
    return data


def decode_request(stream: Stream[Any, Any], body: bytes) -> Any:
    """Decode ``body`` with the stream's codec into its request type (may raise DecodeError)."""
    return stream._codec.decode(body, stream._recv_type)


async def dispatch_received(stream: Stream[Any, Any], message: Any) -> Any:
    """Run grpclib's ``RecvMessage`` event listeners, as ``Stream.recv_message`` does."""
    (message,) = await stream._dispatch.recv_message(message)
    return message
