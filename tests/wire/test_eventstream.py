from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import UUID

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from delos.runtime.wire import (
    EventStreamDecoder,
    EventStreamMessage,
    HeaderValue,
    WireProtocolError,
    encode_event,
    encode_event_stream_message,
    encode_exception,
)

Decode = Callable[[bytes], list[EventStreamMessage]]

# --- frames built by hand, independently of the encoder under test --------------------------


def header(name: str, kind: int, value: bytes = b"") -> bytes:
    raw_name = name.encode()
    return bytes([len(raw_name)]) + raw_name + bytes([kind]) + value


def string_header(name: str, value: str) -> bytes:
    raw = value.encode()
    return header(name, 7, struct.pack(">H", len(raw)) + raw)


def frame(
    raw_headers: bytes,
    payload: bytes,
    *,
    total: int | None = None,
    prelude_crc: int | None = None,
    message_crc: int | None = None,
) -> bytes:
    if total is None:
        total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude) if prelude_crc is None else prelude_crc)
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message) if message_crc is None else message_crc)


def bedrock_event(event_type: str, payload: dict[str, Any]) -> bytes:
    raw_headers = (
        string_header(":event-type", event_type)
        + string_header(":content-type", "application/json")
        + string_header(":message-type", "event")
    )
    return frame(raw_headers, json.dumps(payload, separators=(",", ":")).encode())


# The empty message of the AWS event-stream test vectors: no headers, no payload.
EMPTY_MESSAGE = bytes.fromhex("00000010 00000000 05c248eb 7d98c8ff")

CONVERSE_STREAM = b"".join(
    [
        bedrock_event("messageStart", {"role": "assistant", "p": "abcd"}),
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
        bedrock_event("messageStop", {"stopReason": "end_turn"}),
        bedrock_event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2}}),
    ]
)
CONVERSE_EVENT_TYPES = [
    "messageStart",
    "contentBlockDelta",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
]

# --- three ways of feeding -------------------------------------------------------------------

TRAILING_PARTIAL_FRAME = bedrock_event("messageStart", {"role": "assistant"})[:20]


def decode_chunks(chunks: list[bytes]) -> list[EventStreamMessage]:
    decoder = EventStreamDecoder()
    out: list[EventStreamMessage] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.close()
    return out


def decode_whole(data: bytes) -> list[EventStreamMessage]:
    return decode_chunks([data])


def decode_byte_by_byte(data: bytes) -> list[EventStreamMessage]:
    return decode_chunks([data[i : i + 1] for i in range(len(data))])


def decode_with_trailing_partial_frame(data: bytes) -> list[EventStreamMessage]:
    decoder = EventStreamDecoder()
    out = decoder.feed(data + TRAILING_PARTIAL_FRAME)
    with pytest.raises(WireProtocolError, match="truncated frame"):
        decoder.close()
    return out


@pytest.fixture(
    params=[decode_whole, decode_byte_by_byte, decode_with_trailing_partial_frame],
    ids=["whole", "byte_by_byte", "with_trailing_partial_frame"],
)
def decode(request: pytest.FixtureRequest) -> Decode:
    function: Decode = request.param
    return function


def decode_with_botocore(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def as_botocore_headers(headers: Mapping[str, HeaderValue]) -> dict[str, Any]:
    """Our header values in botocore's representation: timestamps as ms, UUIDs as bytes."""
    converted: dict[str, Any] = {}
    for name, value in headers.items():
        if isinstance(value, datetime):
            converted[name] = (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
                milliseconds=1
            )
        elif isinstance(value, UUID):
            converted[name] = value.bytes
        else:
            converted[name] = value
    return converted


# --- decoding --------------------------------------------------------------------------------


def test_the_empty_test_vector_is_one_message_without_headers_or_payload(decode: Decode) -> None:
    assert decode(EMPTY_MESSAGE) == [EventStreamMessage({}, b"")]


def test_a_converse_stream_decodes_to_its_events_in_order(decode: Decode) -> None:
    messages = decode(CONVERSE_STREAM)
    assert [message.event_type for message in messages] == CONVERSE_EVENT_TYPES
    assert {message.message_type for message in messages} == {"event"}
    assert {message.content_type for message in messages} == {"application/json"}
    assert json.loads(messages[1].payload) == {"contentBlockIndex": 0, "delta": {"text": "Hel"}}


def test_payloads_holding_line_separators_and_split_utf8_survive(decode: Decode) -> None:
    text = "a\u2028b\x85c\r\né€😀"
    (message,) = decode(bedrock_event("contentBlockDelta", {"delta": {"text": text}}))
    assert json.loads(message.payload) == {"delta": {"text": text}}


def test_every_header_value_type_decodes() -> None:
    uuid = UUID("12345678-9abc-def0-1234-56789abcdef0")
    raw_headers = b"".join(
        [
            header("t", 0),
            header("f", 1),
            header("byte", 2, struct.pack(">b", -7)),
            header("short", 3, struct.pack(">h", -300)),
            header("integer", 4, struct.pack(">i", -70_000)),
            header("long", 5, struct.pack(">q", -(2**40))),
            header("bytes", 6, struct.pack(">H", 3) + b"\x00\xff\n"),
            string_header("string", "héllo\u2028"),
            header("timestamp", 8, struct.pack(">q", 1_700_000_000_123)),
            header("uuid", 9, uuid.bytes),
        ]
    )
    (message,) = decode_whole(frame(raw_headers, b"{}"))
    assert message.headers == {
        "t": True,
        "f": False,
        "byte": -7,
        "short": -300,
        "integer": -70_000,
        "long": -(2**40),
        "bytes": b"\x00\xff\n",
        "string": "héllo\u2028",
        "timestamp": datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC),
        "uuid": uuid,
    }
    assert list(message.headers) == [
        "t", "f", "byte", "short", "integer", "long", "bytes", "string", "timestamp", "uuid"
    ]  # fmt: skip
    assert message.payload == b"{}"
    [(botocore_headers, botocore_payload)] = decode_with_botocore(frame(raw_headers, b"{}"))
    assert as_botocore_headers(message.headers) == botocore_headers
    assert message.payload == botocore_payload


def test_an_in_stream_exception_exposes_its_type() -> None:
    raw_headers = (
        string_header(":exception-type", "throttlingException")
        + string_header(":content-type", "application/json")
        + string_header(":message-type", "exception")
    )
    (message,) = decode_whole(frame(raw_headers, b'{"message":"slow down"}'))
    assert message.message_type == "exception"
    assert message.exception_type == "throttlingException"
    assert message.event_type is None
    assert json.loads(message.payload) == {"message": "slow down"}


def test_a_generic_error_exposes_its_code_and_message() -> None:
    raw_headers = (
        string_header(":message-type", "error")
        + string_header(":error-code", "InternalFailure")
        + string_header(":error-message", "boom")
    )
    (message,) = decode_whole(frame(raw_headers, b""))
    assert (message.message_type, message.error_code, message.error_message) == (
        "error",
        "InternalFailure",
        "boom",
    )


def test_convenience_properties_ignore_headers_that_are_not_strings() -> None:
    (message,) = decode_whole(frame(header(":event-type", 0), b""))
    assert message.event_type is None


# --- damaged input ---------------------------------------------------------------------------


def test_a_bad_prelude_crc_raises_as_soon_as_the_prelude_arrives() -> None:
    damaged = frame(b"", b"x" * 1000, prelude_crc=0xDEADBEEF)
    with pytest.raises(WireProtocolError, match="prelude CRC mismatch"):
        EventStreamDecoder().feed(damaged[:12])


def test_a_bad_message_crc_raises() -> None:
    damaged = frame(string_header(":event-type", "chunk"), b"{}", message_crc=0)
    with pytest.raises(WireProtocolError, match="message CRC mismatch"):
        EventStreamDecoder().feed(damaged)


def test_a_flipped_payload_bit_fails_the_message_crc() -> None:
    good = bedrock_event("messageStop", {"stopReason": "end_turn"})
    damaged = bytearray(good)
    damaged[-6] ^= 0x01
    with pytest.raises(WireProtocolError, match="message CRC mismatch"):
        EventStreamDecoder().feed(bytes(damaged))


def test_a_message_above_the_size_limit_raises_before_its_body_arrives() -> None:
    prelude = frame(b"", b"x" * 200)[:12]
    with pytest.raises(WireProtocolError, match="exceeds the limit of 100"):
        EventStreamDecoder(max_message_size=100).feed(prelude)


@pytest.mark.parametrize(
    ("total", "headers_length"),
    [(15, 0), (0, 0), (20, 5)],
    ids=["shorter_than_overhead", "zero", "headers_longer_than_message"],
)
def test_impossible_lengths_raise(total: int, headers_length: int) -> None:
    prelude = struct.pack(">II", total, headers_length)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(WireProtocolError, match="impossible lengths"):
        EventStreamDecoder().feed(prelude + b"\x00" * 16)


@pytest.mark.parametrize(
    ("raw_headers", "error"),
    [
        (header("x", 10), "unknown value type 10"),
        (string_header("x", "a") + string_header("x", "b"), "duplicate header 'x'"),
        (b"\x05ab", "runs past the end"),
        (b"\x01x", "runs past the end"),
        (header("x", 4, b"\x00\x00"), "runs past the end"),
        (header("x", 7, b"\x00\x09abc"), "runs past the end"),
        (header("x", 6, b"\x00"), "runs past the end"),
        (header("x", 9, b"\x00" * 15), "runs past the end"),
        (b"\x01\xff\x00", "not valid UTF-8"),
        (header("x", 7, b"\x00\x01\xff"), "not valid UTF-8"),
        (header("x", 8, struct.pack(">q", 2**62)), "timestamp out of range"),
    ],
    ids=[
        "unknown_type",
        "duplicate",
        "name_past_end",
        "no_type_byte",
        "integer_past_end",
        "string_past_end",
        "bytes_length_past_end",
        "uuid_past_end",
        "name_not_utf8",
        "string_not_utf8",
        "timestamp_out_of_range",
    ],
)
def test_malformed_headers_raise_a_protocol_error(raw_headers: bytes, error: str) -> None:
    with pytest.raises(WireProtocolError, match=error):
        EventStreamDecoder().feed(frame(raw_headers, b"{}"))


@pytest.mark.parametrize(
    "cut", [1, 11, 12, 40], ids=["in_prelude", "before_crc", "prelude", "body"]
)
def test_close_inside_a_frame_raises_truncated_frame(cut: int) -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(EMPTY_MESSAGE + CONVERSE_STREAM[:cut]) == [EventStreamMessage({}, b"")]
    with pytest.raises(WireProtocolError, match="truncated frame"):
        decoder.close()


def test_close_between_frames_is_clean() -> None:
    decoder = EventStreamDecoder()
    assert len(decoder.feed(CONVERSE_STREAM)) == 6
    assert decoder.close() == []
    assert decoder.close() == []


def test_feed_after_close_is_a_programming_error() -> None:
    decoder = EventStreamDecoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(EMPTY_MESSAGE)


# --- encoding --------------------------------------------------------------------------------


def test_encode_event_matches_a_hand_built_bedrock_event_byte_for_byte() -> None:
    payload = {"contentBlockIndex": 0, "delta": {"text": "Hel"}}
    encoded = encode_event("contentBlockDelta", json.dumps(payload, separators=(",", ":")).encode())
    assert encoded == bedrock_event("contentBlockDelta", payload)


def test_encode_event_is_read_by_botocore() -> None:
    [(headers, payload)] = decode_with_botocore(encode_event("chunk", b'{"bytes":"e30="}'))
    assert headers == {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert payload == b'{"bytes":"e30="}'


def test_encode_exception_is_read_by_botocore() -> None:
    [(headers, payload)] = decode_with_botocore(
        encode_exception("modelStreamErrorException", 'model "x" failed')
    )
    assert headers == {
        ":exception-type": "modelStreamErrorException",
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    assert json.loads(payload) == {"message": 'model "x" failed'}


def test_integers_encode_as_int32_when_they_fit_and_int64_otherwise() -> None:
    def type_byte(value: int) -> int:
        return encode_event_stream_message({"n": value}, b"")[12 + 2]

    assert [type_byte(v) for v in (0, -(2**31), 2**31 - 1)] == [4, 4, 4]
    assert [type_byte(v) for v in (2**31, -(2**31) - 1, 2**63 - 1, -(2**63))] == [5, 5, 5, 5]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"n": 2**63}, ValueError),
        ({"": "x"}, ValueError),
        ({"x" * 256: "x"}, ValueError),
        ({"s": "x" * 65_536}, ValueError),
        ({"b": b"x" * 65_536}, ValueError),
        ({"t": datetime(2024, 1, 1)}, ValueError),
        ({"f": 1.5}, TypeError),
    ],
    ids=["int_too_big", "empty_name", "long_name", "long_string", "long_bytes", "naive", "float"],
)
def test_the_encoder_rejects_headers_the_format_cannot_carry(
    headers: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_event_stream_message(headers, b"")


# --- properties ------------------------------------------------------------------------------

header_values: st.SearchStrategy[HeaderValue] = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
    | st.uuids()
)
header_names = st.text(min_size=1, max_size=20).filter(lambda name: len(name.encode()) <= 255)
messages = st.builds(
    EventStreamMessage,
    headers=st.dictionaries(header_names, header_values, max_size=6),
    payload=st.binary(max_size=200),
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(messages=st.lists(messages, max_size=6), draw=st.data())
def test_any_split_of_encoded_messages_decodes_to_the_same_messages(
    messages: list[EventStreamMessage], draw: st.DataObject
) -> None:
    stream = b"".join(encode_event_stream_message(m.headers, m.payload) for m in messages)
    cuts = draw.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert decode_whole(stream) == messages
    assert decode_chunks(split_at(stream, cuts)) == messages


@given(messages=st.lists(messages, min_size=1, max_size=4))
def test_botocore_reads_what_the_encoder_writes_as_the_decoder_does(
    messages: list[EventStreamMessage],
) -> None:
    stream = b"".join(encode_event_stream_message(m.headers, m.payload) for m in messages)
    assert decode_with_botocore(stream) == [
        (as_botocore_headers(m.headers), m.payload) for m in decode_whole(stream)
    ]
