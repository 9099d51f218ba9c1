"""Sending response messages, compressed in the encoding the client compressed its request with.

Every response carries ``grpc-accept-encoding`` (what we read). A client that compressed its
request and accepts the same encoding back gets messages of :data:`MIN_COMPRESSED_BYTES` or more
compressed; smaller ones go as they are (each message's flag says which).
"""

from __future__ import annotations

import struct
from typing import Any, Final, Generic, TypeVar

from google.protobuf.message import Message
from grpclib.server import Stream

from delos.runtime.grpc import _grpclib_private as private
from delos.runtime.grpc.compression import (
    ACCEPT_ENCODING_HEADER,
    MIN_COMPRESSED_BYTES,
    compress,
    response_encoding,
)

__all__ = ["Responder"]

M = TypeVar("M", bound=Message)
#: A message's frame prefix: compressed flag, length.
_PREFIX: Final = struct.Struct(">?I")


class Responder(Generic[M]):
    """Sends the messages of one call's response.

    Messages are framed here and written straight to the stream: serialising them is all
    grpclib's ``send_message`` adds (and its ``SendMessage`` event, which the gateway does not
    listen to), so a streamed answer saves that per chunk.
    """

    __slots__ = ("_encoding", "_started", "_stream")

    def __init__(self, stream: Stream[Any, M]) -> None:
        self._stream = stream
        encoding = private.request_header(stream, "grpc-encoding")
        if encoding is not None:  # what the client accepts back matters only then
            accepted = private.request_header(stream, "grpc-accept-encoding")
            encoding = response_encoding(encoding, accepted)
        self._encoding = encoding
        self._started = False

    def _headers(self) -> list[tuple[str, str]]:
        headers = [("grpc-accept-encoding", ACCEPT_ENCODING_HEADER)]
        if self._encoding is not None:
            headers.append(("grpc-encoding", self._encoding))
        return headers

    def _frame(self, message: M) -> bytes:
        body = message.SerializeToString()
        compressed = self._encoding is not None and len(body) >= MIN_COMPRESSED_BYTES
        if compressed:
            assert self._encoding is not None
            body = compress(self._encoding, body)
        return _PREFIX.pack(compressed, len(body)) + body

    async def send(self, message: M) -> None:
        """One message of a streamed answer (the headers go first, once). The first leaves at
        once; the others with whatever else this event-loop turn sends."""
        stream = self._stream
        first = not self._started
        if first:
            await private.send_initial_headers(stream, self._headers())
            self._started = True
        await private.send_frame(stream, self._frame(message), at_once=first)

    async def answer(self, message: M) -> None:
        """A unary call's one message, with the headers and the OK trailers: the call is over."""
        self._started = True
        await private.send_whole_answer(self._stream, self._headers(), self._frame(message))
