"""AWS event-stream (`application/vnd.amazon.eventstream`, as Bedrock streams): decoder and encoder.

A message is length-prefixed binary, all integers big-endian:

    [total length u32][headers length u32][prelude CRC32 u32]   prelude CRC covers bytes 0..8
    [headers: (name length u8, name, value type u8, value)*]
    [payload]
    [message CRC32 u32]                                          covers everything before it

Both CRCs are checked. The prelude is checked as soon as its 12 bytes arrive, so garbage is
reported at once instead of after waiting for a bogus length's worth of bytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias
from uuid import UUID

from delos.runtime.wire._errors import WireProtocolError

__all__ = [
    "EventStreamDecoder",
    "EventStreamMessage",
    "HeaderValue",
    "encode_event",
    "encode_event_stream_message",
    "encode_exception",
]

HeaderValue: TypeAlias = bool | int | str | bytes | datetime | UUID
"""A decoded header value. Integers of every width decode to `int`; timestamps to an aware UTC
`datetime` (millisecond precision); UUIDs to `UUID`; byte arrays to `bytes`."""

_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_PRELUDE_SIZE = _PRELUDE.size
_OVERHEAD = _PRELUDE_SIZE + _U32.size  # prelude plus the trailing message CRC
_DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MILLISECOND = timedelta(milliseconds=1)

_TRUE, _FALSE, _BYTE, _SHORT, _INTEGER, _LONG, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)
_FIXED_WIDTH = {
    _BYTE: struct.Struct(">b"),
    _SHORT: struct.Struct(">h"),
    _INTEGER: struct.Struct(">i"),
    _LONG: struct.Struct(">q"),
    _TIMESTAMP: struct.Struct(">q"),
}
_INT32_RANGE = range(-(2**31), 2**31)
_INT64_RANGE = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    """One decoded message: its headers in wire order, and its raw payload."""

    headers: Mapping[str, HeaderValue]
    payload: bytes

    def _string_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str | None:
        """`:message-type`: "event", "exception" or "error"."""
        return self._string_header(":message-type")

    @property
    def event_type(self) -> str | None:
        """`:event-type` of an event, such as "contentBlockDelta" or "chunk"."""
        return self._string_header(":event-type")

    @property
    def exception_type(self) -> str | None:
        """`:exception-type` of a modelled exception, such as "throttlingException"."""
        return self._string_header(":exception-type")

    @property
    def content_type(self) -> str | None:
        """`:content-type` of the payload, normally "application/json"."""
        return self._string_header(":content-type")

    @property
    def error_code(self) -> str | None:
        """`:error-code` of a generic error message (`:message-type` "error")."""
        return self._string_header(":error-code")

    @property
    def error_message(self) -> str | None:
        """`:error-message` of a generic error message (`:message-type` "error")."""
        return self._string_header(":error-message")


class EventStreamDecoder:
    """Turns event-stream bytes into `EventStreamMessage` values.

    Feed bytes as they arrive with `feed()`, then call `close()` once at end of input.
    A `WireProtocolError` is final: the stream is broken and the decoder must be discarded.
    """

    def __init__(self, *, max_message_size: int = _DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """`max_message_size` bounds one message's total length, in bytes."""
        self._max_message_size = max_message_size
        self._buffer = bytearray()
        # Total length of the message at the head of the buffer once its prelude has been
        # checked, else 0; saves re-checking the prelude while a long message trickles in.
        self._expected = 0
        self._closed = False

    def feed(self, data: bytes) -> list[EventStreamMessage]:
        """Consume the next bytes of the stream; return the messages they complete.

        Raises:
            WireProtocolError: a CRC does not match, a length is impossible or above
                `max_message_size`, or the headers are malformed.
            RuntimeError: called after `close()`.
        """
        if self._closed:
            raise RuntimeError("EventStreamDecoder.feed() called after close()")
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        if size < (self._expected or _PRELUDE_SIZE):
            return []
        out: list[EventStreamMessage] = []
        # Walk an offset through the buffer and trim it once at the end, so that one read
        # carrying many messages costs one copy rather than one per message.
        start = 0
        while True:
            if not self._expected:
                if size - start < _PRELUDE_SIZE:
                    break
                self._expected = self._check_prelude(buffer, start)
            if size - start < self._expected:
                break
            out.append(_decode_message(buffer, start, self._expected))
            start += self._expected
            self._expected = 0
        if start:
            del buffer[:start]
        return out

    def close(self) -> list[EventStreamMessage]:
        """Signal end of input. Returns [].

        Raises:
            WireProtocolError: bytes of an incomplete message remain ("truncated frame").
        """
        if self._closed:
            return []
        self._closed = True
        if self._buffer:
            raise WireProtocolError("truncated frame")
        return []

    def _check_prelude(self, buffer: bytearray, start: int) -> int:
        total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer, start)
        actual = zlib.crc32(buffer[start : start + 8])
        if actual != prelude_crc:
            raise WireProtocolError(
                f"prelude CRC mismatch: expected 0x{prelude_crc:08x}, computed 0x{actual:08x}"
            )
        if total > self._max_message_size:
            raise WireProtocolError(
                f"message of {total} bytes exceeds the limit of {self._max_message_size}"
            )
        if total < _OVERHEAD or headers_length > total - _OVERHEAD:
            raise WireProtocolError(f"impossible lengths: total {total}, headers {headers_length}")
        return int(total)


def _decode_message(buffer: bytearray, start: int, total: int) -> EventStreamMessage:
    # One copy of the frame; every later slice is of immutable bytes, so no view can pin the
    # buffer that the caller is about to trim.
    frame = bytes(buffer[start : start + total])
    crc_at = total - 4
    (message_crc,) = _U32.unpack_from(frame, crc_at)
    actual = zlib.crc32(memoryview(frame)[:crc_at])
    if actual != message_crc:
        raise WireProtocolError(
            f"message CRC mismatch: expected 0x{message_crc:08x}, computed 0x{actual:08x}"
        )
    (headers_length,) = _U32.unpack_from(frame, 4)
    headers_end = _PRELUDE_SIZE + headers_length
    headers = _decode_headers(frame, _PRELUDE_SIZE, headers_end)
    return EventStreamMessage(headers, frame[headers_end:crc_at])


def _decode_headers(frame: bytes, start: int, end: int) -> dict[str, HeaderValue]:
    try:
        return _decode_headers_unchecked_utf8(frame, start, end)
    except UnicodeDecodeError as exc:
        # One handler around the loop keeps the per-header path free of try blocks.
        raise WireProtocolError("a header name or string value is not valid UTF-8") from exc


def _decode_headers_unchecked_utf8(raw: bytes, pos: int, end: int) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    while pos < end:
        name_end = pos + 1 + raw[pos]
        if name_end >= end:  # the value type byte must follow the name
            raise WireProtocolError("header runs past the end of the headers section")
        name = raw[pos + 1 : name_end].decode()
        kind = raw[name_end]
        pos = name_end + 1
        value: HeaderValue
        # Strings first: they are nearly all that Bedrock sends.
        if kind == _STRING or kind == _BYTES:
            if pos + 2 > end:
                raise WireProtocolError(f"header {name!r} runs past the end of the headers")
            value_end = pos + 2 + (raw[pos] << 8 | raw[pos + 1])
            if value_end > end:
                raise WireProtocolError(f"header {name!r} runs past the end of the headers")
            value = raw[pos + 2 : value_end]
            if kind == _STRING:
                value = value.decode()
            pos = value_end
        elif kind == _TRUE:
            value = True
        elif kind == _FALSE:
            value = False
        elif kind in _FIXED_WIDTH:
            fixed = _FIXED_WIDTH[kind]
            if pos + fixed.size > end:
                raise WireProtocolError(f"header {name!r} runs past the end of the headers")
            (number,) = fixed.unpack_from(raw, pos)
            pos += fixed.size
            value = _timestamp(number, name) if kind == _TIMESTAMP else number
        elif kind == _UUID:
            if pos + 16 > end:
                raise WireProtocolError(f"header {name!r} runs past the end of the headers")
            value = UUID(bytes=raw[pos : pos + 16])
            pos += 16
        else:
            raise WireProtocolError(f"header {name!r} has unknown value type {kind}")
        if name in headers:
            raise WireProtocolError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


def _timestamp(milliseconds: int, name: str) -> datetime:
    try:
        return _EPOCH + milliseconds * _ONE_MILLISECOND
    except OverflowError as exc:
        raise WireProtocolError(f"header {name!r} is a timestamp out of range") from exc


def _encode_value(value: HeaderValue) -> bytes:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return bytes([_TRUE if value else _FALSE])
    if isinstance(value, int):
        if value in _INT32_RANGE:
            return bytes([_INTEGER]) + _FIXED_WIDTH[_INTEGER].pack(value)
        if value in _INT64_RANGE:
            return bytes([_LONG]) + _FIXED_WIDTH[_LONG].pack(value)
        raise ValueError(f"integer header value {value} does not fit in 64 bits")
    if isinstance(value, str):
        return _length_prefixed(_STRING, value.encode())
    if isinstance(value, bytes):
        return _length_prefixed(_BYTES, value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp header values must be timezone-aware")
        milliseconds = (value - _EPOCH) // _ONE_MILLISECOND
        if milliseconds not in _INT64_RANGE:
            raise ValueError(f"timestamp header value {value} is out of range")
        return bytes([_TIMESTAMP]) + _FIXED_WIDTH[_TIMESTAMP].pack(milliseconds)
    if isinstance(value, UUID):
        return bytes([_UUID]) + value.bytes
    raise TypeError(f"unsupported header value type {type(value).__name__}")


def _length_prefixed(kind: int, raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError(f"header value of {len(raw)} bytes exceeds 65535")
    return bytes([kind]) + _U16.pack(len(raw)) + raw


def encode_event_stream_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """Encode one message with both CRCs.

    Header values map to wire types by Python type: bool to true/false, int to integer (int32)
    or long (int64) by magnitude, str to string, bytes to byte array, aware datetime to
    timestamp (milliseconds), UUID to uuid.

    Raises:
        ValueError: a header name is empty or over 255 bytes, a value is out of range, or the
            message exceeds 4 GiB.
        TypeError: a header value has an unsupported type.
    """
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode()
        if not 0 < len(raw_name) <= 0xFF:
            raise ValueError(f"header name {name!r} must be 1 to 255 bytes of UTF-8")
        parts += (bytes([len(raw_name)]), raw_name, _encode_value(value))
    encoded_headers = b"".join(parts)
    total = _OVERHEAD + len(encoded_headers) + len(payload)
    if total > 0xFFFFFFFF:
        raise ValueError(f"message of {total} bytes does not fit the 32-bit length")
    lengths = _LENGTHS.pack(total, len(encoded_headers))
    message = b"".join((lengths, _U32.pack(zlib.crc32(lengths)), encoded_headers, payload))
    return message + _U32.pack(zlib.crc32(message))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """Encode an event message as Bedrock sends one: JSON `payload` under `:event-type`."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_event_stream_message(headers, payload)


def encode_exception(exception_type: str, message: str) -> bytes:
    """Encode an in-stream exception as Bedrock sends one, e.g. "throttlingException".

    The payload is `{"message": message}` as compact JSON.
    """
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    payload = json.dumps({"message": message}, separators=(",", ":")).encode()
    return encode_event_stream_message(headers, payload)
