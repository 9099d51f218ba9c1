"""Sending response messages, compressed in the encoding the client compressed its request with.

Every response carries ``grpc-accept-encoding`` (what we read). A client that compressed its
request and accepts the same encoding back gets messages of :data:`MIN_COMPRESSED_BYTES` or more
compressed; smaller ones go as they are (each message's flag says which).
"""

from __future__ import annotations

import struct
from typing import Any, Generic, TypeVar

from grpclib.server import Stream

from delos.runtime.grpc import _grpclib_private as private
from delos.runtime.grpc.compression import (
    ACCEPT_ENCODING_HEADER,
    MIN_COMPRESSED_BYTES,
    compress,
    response_encoding,
)

__all__ = ["Responder"]

T = TypeVar("T")


class Responder(Generic[T]):
    """Sends the messages of one call's response."""

    __slots__ = ("_encoding", "_started", "_stream")

    def __init__(self, stream: Stream[Any, T]) -> None:
        self._stream = stream
        self._encoding = response_encoding(
            private.request_header(stream, "grpc-encoding"),
            private.request_header(stream, "grpc-accept-encoding"),
        )
        self._started = False

    async def send(self, message: T) -> None:
        stream = self._stream
        if not self._started:
            headers = [("grpc-accept-encoding", ACCEPT_ENCODING_HEADER)]
            if self._encoding is not None:
                headers.append(("grpc-encoding", self._encoding))
            await private.send_initial_headers(stream, headers)
            self._started = True
        if self._encoding is None:
            await stream.send_message(message)
            return
        body = await private.encode_response(stream, message)
        if len(body) >= MIN_COMPRESSED_BYTES:
            body = compress(self._encoding, body)
            await private.send_frame(stream, struct.pack(">?I", True, len(body)) + body)
        else:
            await private.send_frame(stream, struct.pack(">?I", False, len(body)) + body)
