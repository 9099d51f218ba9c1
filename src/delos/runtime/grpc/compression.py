"""gRPC message compression: which encodings we take and give, and bounded decompression.

Clients that enable compression (grpc-go, grpc-java and grpcio send ``grpc-encoding: gzip``)
compress each request message; a message says so with its compressed flag. We accept ``gzip``
and ``deflate`` (and ``identity``), advertise them in ``grpc-accept-encoding``, and answer in the
encoding the client compressed its request with, when it accepts it back. Decompression is
bounded by the request-size limit, so a small gzip bomb cannot take memory.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from typing import Final

__all__ = [
    "ACCEPTED_ENCODINGS",
    "ACCEPT_ENCODING_HEADER",
    "MIN_COMPRESSED_BYTES",
    "DecompressedTooLarge",
    "UnsupportedEncoding",
    "compress",
    "decompress",
    "response_encoding",
]

#: ``grpc-encoding`` values whose messages we can read.
ACCEPTED_ENCODINGS: Final = ("gzip", "deflate", "identity")
ACCEPT_ENCODING_HEADER: Final = ",".join(ACCEPTED_ENCODINGS)
#: Smaller response messages are sent uncompressed: gzip's framing would grow them.
MIN_COMPRESSED_BYTES: Final = 512

# zlib window bits: 16 + MAX_WBITS reads the gzip wrapper, MAX_WBITS the zlib one (gRPC's
# "deflate" is zlib-wrapped, as HTTP's is).
_WINDOW_BITS: Final[Mapping[str, int]] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class UnsupportedEncoding(Exception):
    """A compressed message in an encoding we do not read (gRPC says UNIMPLEMENTED)."""


class DecompressedTooLarge(Exception):
    """The message decompresses to more than the limit."""


def decompress(encoding: str, data: bytes, limit: int) -> bytes:
    """``data`` decompressed, at most ``limit`` bytes. Raises :class:`UnsupportedEncoding`,
    :class:`DecompressedTooLarge`, or ``zlib.error`` for a corrupt body."""
    bits = _WINDOW_BITS.get(encoding)
    if bits is None:
        raise UnsupportedEncoding(encoding)
    inflater = zlib.decompressobj(bits)
    result = inflater.decompress(data, limit + 1)
    if len(result) > limit or inflater.unconsumed_tail:
        raise DecompressedTooLarge
    if not inflater.eof:
        raise zlib.error("compressed message is truncated")
    return result


def compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data, 6)
    raise UnsupportedEncoding(encoding)


def response_encoding(request_encoding: str | None, accept_encoding: str | None) -> str | None:
    """The encoding to compress answers with: the one the client compressed its request with,
    when we support it and the client accepts it back; None to answer uncompressed."""
    if request_encoding is None or request_encoding not in _WINDOW_BITS:
        return None
    accepted = {part.strip() for part in (accept_encoding or "").split(",")}
    return request_encoding if request_encoding in accepted else None
