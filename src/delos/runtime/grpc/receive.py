"""Reading a request message with a size limit, which grpclib does not have.

grpclib reads a message's declared length and then buffers that many bytes, so a client could make
the gateway hold gigabytes. HTTP/2 flow control means nothing beyond the window is accepted until
the handler reads, so checking the 5-byte length prefix first bounds memory: an oversized request
is refused before its body is read. A compressed message is decompressed with the same limit.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from delos.runtime.errors import InvalidRequest, RequestTooLarge
from delos.runtime.grpc._grpclib_private import (
    decode_request,
    dispatch_received,
    receive_bytes,
    request_header,
)
from delos.runtime.grpc.compression import (
    ACCEPT_ENCODING_HEADER,
    DecompressedTooLarge,
    UnsupportedEncoding,
    decompress,
)

__all__ = ["receive_request"]

T = TypeVar("T")


async def receive_request(stream: Stream[T, Any], limit: int) -> T:
    """The one request message of a unary-request RPC. Raises InvalidRequest, RequestTooLarge,
    or GRPCError(UNIMPLEMENTED) for a message compressed in an encoding we do not read."""
    prefix = await receive_bytes(stream, 5)
    if len(prefix) < 5:
        raise InvalidRequest("the request carried no message")
    compressed, length = struct.unpack(">?I", prefix)
    if length > limit:
        raise RequestTooLarge(
            f"request message of {length} bytes exceeds the maximum of {limit} bytes "
            "(DELOS_RUNTIME_MAX_MESSAGE_BYTES)"
        )
    body = await receive_bytes(stream, length)
    if len(body) != length:
        raise InvalidRequest("the request message was cut short")
    if compressed:
        body = _decompressed(stream, body, limit)
    try:
        message = decode_request(stream, body)
    except (DecodeError, ValueError, TypeError):
        raise InvalidRequest("the request is not a valid protobuf message of its type") from None
    return await dispatch_received(stream, message)  # type: ignore[no-any-return]


def _decompressed(stream: Stream[Any, Any], body: bytes, limit: int) -> bytes:
    encoding = request_header(stream, "grpc-encoding") or "identity"
    if encoding == "identity":
        raise InvalidRequest(
            "the request message is flagged compressed but grpc-encoding is identity"
        )
    try:
        return decompress(encoding, body, limit)
    except UnsupportedEncoding:
        raise GRPCError(
            Status.UNIMPLEMENTED,
            f"grpc-encoding {encoding[:40]!r} is not supported; "
            f"use one of {ACCEPT_ENCODING_HEADER}",
        ) from None
    except DecompressedTooLarge:
        raise RequestTooLarge(
            f"request message decompresses to more than the maximum of {limit} bytes "
            "(DELOS_RUNTIME_MAX_MESSAGE_BYTES)"
        ) from None
    except zlib.error:
        raise InvalidRequest(f"the request message is not valid {encoding} data") from None
