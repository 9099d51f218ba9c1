from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

import delos.runtime.wire as wire
from delos.runtime.wire import (
    SseComment,
    SseDecoder,
    SseEvent,
    WireProtocolError,
    encode_sse,
    encode_sse_comment,
)

Item = SseEvent | SseComment
Decode = Callable[[bytes], list[Item]]

# The start of an event cut short: whatever precedes it must decode the same, and close() must
# report the cut.
TRAILING_PARTIAL_EVENT = b"event: next\ndata: cut sho"


def decode_chunks(chunks: list[bytes]) -> list[Item]:
    decoder = SseDecoder()
    out: list[Item] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.close()
    return out


def decode_whole(data: bytes) -> list[Item]:
    return decode_chunks([data])


def decode_byte_by_byte(data: bytes) -> list[Item]:
    return decode_chunks([data[i : i + 1] for i in range(len(data))])


def decode_with_trailing_partial_event(data: bytes) -> list[Item]:
    decoder = SseDecoder()
    out = decoder.feed(data + TRAILING_PARTIAL_EVENT)
    with pytest.raises(WireProtocolError, match="middle of an event"):
        decoder.close()
    return out


@pytest.fixture(
    params=[decode_whole, decode_byte_by_byte, decode_with_trailing_partial_event],
    ids=["whole", "byte_by_byte", "with_trailing_partial_event"],
)
def decode(request: pytest.FixtureRequest) -> Decode:
    function: Decode = request.param
    return function


# --- fields and dispatch -------------------------------------------------------------------


def test_a_data_line_and_a_blank_line_make_one_event(decode: Decode) -> None:
    assert decode(b"data: hello\n\n") == [SseEvent(None, "hello")]


def test_the_event_field_names_the_event_and_resets_after_dispatch(decode: Decode) -> None:
    stream = b"event: message_start\ndata: {}\n\ndata: plain\n\n"
    assert decode(stream) == [SseEvent("message_start", "{}"), SseEvent(None, "plain")]


def test_several_data_lines_join_with_lf(decode: Decode) -> None:
    assert decode(b"data: one\ndata: two\ndata:\ndata: four\n\n") == [
        SseEvent(None, "one\ntwo\n\nfour")
    ]


def test_exactly_one_space_after_the_colon_is_stripped(decode: Decode) -> None:
    stream = "data:tight\n\ndata:  two spaces\n\ndata:\tтаб\n\n".encode()
    assert decode(stream) == [
        SseEvent(None, "tight"),
        SseEvent(None, " two spaces"),
        SseEvent(None, "\tтаб"),
    ]


def test_a_field_without_colon_has_an_empty_value(decode: Decode) -> None:
    assert decode(b"data\n\n") == [SseEvent(None, "")]


def test_an_event_without_data_lines_is_not_dispatched(decode: Decode) -> None:
    assert decode(b"event: ping\n\nevent: \n\ndata: after\n\n") == [SseEvent(None, "after")]


def test_an_empty_event_field_means_the_default_type(decode: Decode) -> None:
    assert decode(b"event:\ndata: x\n\n") == [SseEvent(None, "x")]


def test_unknown_fields_are_ignored(decode: Decode) -> None:
    stream = b"foo: bar\nData: wrong case\ndata: kept\nevent_type: no\n\n"
    assert decode(stream) == [SseEvent(None, "kept")]


def test_blank_lines_between_events_dispatch_nothing(decode: Decode) -> None:
    assert decode(b"\n\n\ndata: a\n\n\n\n") == [SseEvent(None, "a")]


def test_id_and_retry_are_stream_state_that_outlives_each_event(decode: Decode) -> None:
    stream = b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nid: 8\nevent: ping\n\ndata: c\n\n"
    assert decode(stream) == [
        SseEvent(None, "a", id="7", retry=1500),
        SseEvent(None, "b", id="7", retry=1500),
        SseEvent(None, "c", id="8", retry=1500),
    ]


def test_an_id_containing_nul_and_a_non_numeric_retry_are_ignored(decode: Decode) -> None:
    stream = b"id: 1\nretry: 10\ndata: a\n\nid: 2\x003\nretry: 1s\nretry: \xd9\xa3\ndata: b\n\n"
    assert decode(stream) == [
        SseEvent(None, "a", id="1", retry=10),
        SseEvent(None, "b", id="1", retry=10),
    ]


def test_comment_lines_become_comments_and_do_not_disturb_the_event(decode: Decode) -> None:
    stream = b": OPENROUTER PROCESSING\n\ndata: a\n:inside\ndata: b\n\n"
    assert decode(stream) == [
        SseComment("OPENROUTER PROCESSING"),
        SseComment("inside"),
        SseEvent(None, "a\nb"),
    ]


# --- line endings and text -------------------------------------------------------------------


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"], ids=["lf", "cr", "crlf"])
def test_cr_lf_and_crlf_each_end_a_line(decode: Decode, ending: bytes) -> None:
    stream = b"event: e" + ending + b"data: a" + ending + b"data: b" + ending + ending
    assert decode(stream) == [SseEvent("e", "a\nb")]


def test_mixed_line_endings_in_one_stream(decode: Decode) -> None:
    assert decode(b"data: a\rdata: b\r\ndata: c\n\r\n\rdata: d\r\r") == [
        SseEvent(None, "a\nb\nc"),
        SseEvent(None, "d"),
    ]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    # Were the CR and the LF counted as two endings, "a" and "b" would be two events.
    assert decode_chunks([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SseEvent(None, "a\nb")]


def test_cr_at_the_end_of_a_chunk_then_another_line_is_one_line_ending() -> None:
    assert decode_chunks([b"data: a\r", b"data: b\r", b"\r"]) == [SseEvent(None, "a\nb")]


def test_an_empty_chunk_between_cr_and_lf_does_not_separate_them() -> None:
    assert decode_chunks([b"data: a\r", b"", b"\n", b"data: b\n\n"]) == [SseEvent(None, "a\nb")]


def test_unicode_line_separators_stay_inside_the_data(decode: Decode) -> None:
    text = "left\u2028mid\u2029dle\x85right\x0b\x0c\x1c\x1d\x1eend"
    assert decode(f"data: {text}\n\n".encode()) == [SseEvent(None, text)]


def test_multi_byte_characters_split_across_chunks_decode_whole() -> None:
    stream = "data: é€😀\n\n".encode()
    for cut in range(len(stream) + 1):
        assert decode_chunks([stream[:cut], stream[cut:]]) == [SseEvent(None, "é€😀")], cut


def test_invalid_utf8_becomes_replacement_characters(decode: Decode) -> None:
    assert decode(b"data: a\xffb\n\n") == [SseEvent(None, "a\ufffdb")]


def test_a_leading_byte_order_mark_is_ignored(decode: Decode) -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [SseEvent(None, "x")]


def test_a_byte_order_mark_later_in_the_stream_is_part_of_the_field_name() -> None:
    # "\ufeffdata" is an unknown field, so the second event has no data.
    assert decode_whole(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [SseEvent(None, "a")]


def test_a_byte_order_mark_split_across_chunks_is_ignored() -> None:
    assert decode_chunks([b"", b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == [SseEvent(None, "x")]


def test_bytes_that_only_begin_like_a_byte_order_mark_are_kept() -> None:
    # Kept, the stray bytes turn "data" into an unknown field name, so nothing is dispatched;
    # dropped, they would let the event through.
    assert decode_chunks([b"\xef", b"data: x\n\n"]) == []
    assert decode_chunks([b"\xef\xbb", b"data: x\n\n"]) == []
    assert decode_chunks([b"\xef\xbbdata: x\n\n"]) == []


# --- realistic streams -----------------------------------------------------------------------


def test_an_openai_chat_stream_with_done(decode: Decode) -> None:
    chunk = '{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi\u2028"}}]}'
    stream = f"data: {chunk}\n\n: OPENROUTER PROCESSING\n\ndata: [DONE]\n\n".encode()
    assert decode(stream) == [
        SseEvent(None, chunk),
        SseComment("OPENROUTER PROCESSING"),
        SseEvent(None, "[DONE]"),
    ]


def test_an_anthropic_stream_over_crlf(decode: Decode) -> None:
    stream = (
        b'event: message_start\r\ndata: {"type":"message_start"}\r\n\r\n'
        b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
        b'event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r\n'
    )
    assert decode(stream) == [
        SseEvent("message_start", '{"type":"message_start"}'),
        SseEvent("ping", '{"type": "ping"}'),
        SseEvent("message_stop", '{"type":"message_stop"}'),
    ]


# --- end of input ----------------------------------------------------------------------------


def test_close_after_complete_events_returns_nothing() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\n\n: keep-alive\n\n") == [
        SseEvent(None, "a"),
        SseComment("keep-alive"),
    ]
    assert decoder.close() == []
    assert decoder.close() == []


@pytest.mark.parametrize(
    "stream",
    [b"data: a", b"data: a\n", b"data: a\n\ndata: b\ndata: c", b"event: x\n", b"\xef\xbb", b"x"],
    ids=["partial_line", "no_blank_line", "second_event_cut", "dataless", "partial_bom", "byte"],
)
def test_close_in_the_middle_of_an_event_or_line_raises(stream: bytes) -> None:
    decoder = SseDecoder()
    decoder.feed(stream)
    with pytest.raises(WireProtocolError, match="stream ended in the middle of an event"):
        decoder.close()


def test_close_after_a_lone_comment_line_is_clean() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b": hi\n") == [SseComment("hi")]
    assert decoder.close() == []


def test_feed_after_close_is_a_programming_error() -> None:
    decoder = SseDecoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: a\n\n")


def test_an_unterminated_line_beyond_the_size_limit_raises_before_it_ends() -> None:
    decoder = SseDecoder(max_event_size=100)
    decoder.feed(b"data: " + b"x" * 90)
    with pytest.raises(WireProtocolError, match="exceeds 100 bytes"):
        decoder.feed(b"x" * 20)


def test_an_event_of_many_lines_beyond_the_size_limit_raises() -> None:
    decoder = SseDecoder(max_event_size=100)
    with pytest.raises(WireProtocolError, match="exceeds 100 bytes"):
        for _ in range(20):
            decoder.feed(b"data: 0123456789\n")


def test_the_size_limit_applies_per_event() -> None:
    decoder = SseDecoder(max_event_size=100)
    for _ in range(20):
        assert decoder.feed(b"data: 0123456789\n\n") == [SseEvent(None, "0123456789")]


# --- encoder ---------------------------------------------------------------------------------


def test_encode_sse_writes_event_then_data_then_a_blank_line() -> None:
    assert encode_sse('{"a":1}', event="delta") == b'event: delta\ndata: {"a":1}\n\n'
    assert encode_sse("[DONE]") == b"data: [DONE]\n\n"


def test_encode_sse_splits_multi_line_data_into_data_lines() -> None:
    assert encode_sse("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_sse("") == b"data: \n\n"


def test_encode_sse_ends_every_line_with_the_line_ending_asked_for() -> None:
    encoded = encode_sse("a\nb", event="e", line_ending="\r\n")
    assert encoded == b"event: e\r\ndata: a\r\ndata: b\r\n\r\n"
    assert SseDecoder().feed(encoded) == [SseEvent("e", "a\nb")]
    assert encode_sse("x", line_ending="\r") == b"data: x\r\r"
    with pytest.raises(ValueError):
        encode_sse("x", line_ending="\n\n")


def test_encode_sse_keeps_unicode_line_separators_in_one_line() -> None:
    assert encode_sse("a\u2028b\x85c") == "data: a\u2028b\x85c\n\n".encode()


def test_encode_sse_rejects_an_event_name_with_a_line_break() -> None:
    with pytest.raises(ValueError):
        encode_sse("x", event="a\nb")
    with pytest.raises(ValueError):
        encode_sse_comment("a\rb")


def test_encode_sse_comment_writes_a_keep_alive() -> None:
    assert encode_sse_comment("OPENROUTER PROCESSING") == b": OPENROUTER PROCESSING\n\n"


# --- properties ------------------------------------------------------------------------------

single_line = st.text().filter(lambda s: "\r" not in s and "\n" not in s)
events = st.lists(st.tuples(st.none() | single_line, st.text()), max_size=8)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(events=events, draw=st.data())
def test_any_split_of_encoded_events_decodes_to_the_same_events(
    events: list[tuple[str | None, str]], draw: st.DataObject
) -> None:
    stream = b"".join(encode_sse(data, event=event) for event, data in events)
    cuts = draw.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    expected = [
        SseEvent(event or None, data.replace("\r\n", "\n").replace("\r", "\n"))
        for event, data in events
    ]
    assert decode_whole(stream) == expected
    assert decode_chunks(split_at(stream, cuts)) == expected


def outcome(chunks: list[bytes]) -> tuple[list[Item], str | None]:
    decoder = SseDecoder()
    out: list[Item] = []
    try:
        for chunk in chunks:
            out += decoder.feed(chunk)
        out += decoder.close()
    except WireProtocolError as exc:
        return out, str(exc)
    return out, None


SSE_PIECES = [b"\r", b"\n", b"\r\n", b":", b" ", b"data", b"event", b"id", b"retry", b"7", b"x"]
SSE_PIECES += [b"\xef\xbb\xbf", "é€😀\u2028".encode(), b"\xff", b"\x00"]
sse_like_bytes = st.lists(st.sampled_from(SSE_PIECES), max_size=40).map(b"".join)


@given(stream=sse_like_bytes, draw=st.data())
def test_any_split_of_any_bytes_decodes_like_the_whole(stream: bytes, draw: st.DataObject) -> None:
    cuts = draw.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert outcome(split_at(stream, cuts)) == outcome([stream])


# --- package ---------------------------------------------------------------------------------


def test_the_wire_package_exports_a_sorted_list_of_exactly_its_public_names() -> None:
    from delos.runtime.wire import _errors, _eventstream, _ndjson, _sse

    submodule_names = sorted(
        name for module in (_errors, _eventstream, _ndjson, _sse) for name in module.__all__
    )
    assert wire.__all__ == sorted(wire.__all__)
    assert wire.__all__ == submodule_names
    for name in wire.__all__:
        assert getattr(wire, name) is not None
