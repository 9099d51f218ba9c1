from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delos.runtime.wire import JsonLine, NdjsonDecoder, WireProtocolError

Decode = Callable[[bytes], list[JsonLine]]

# The start of a line cut short, complete JSON or not: Ollama ends every line, so a missing LF
# means the response was cut.
TRAILING_PARTIAL_LINE = b'{"done":true}'


def decode_chunks(chunks: list[bytes], **options: int) -> list[JsonLine]:
    decoder = NdjsonDecoder(**options)
    out: list[JsonLine] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.close()
    return out


def decode_whole(data: bytes) -> list[JsonLine]:
    return decode_chunks([data])


def decode_byte_by_byte(data: bytes) -> list[JsonLine]:
    return decode_chunks([data[i : i + 1] for i in range(len(data))])


def decode_with_trailing_partial_line(data: bytes) -> list[JsonLine]:
    decoder = NdjsonDecoder()
    out = decoder.feed(data + TRAILING_PARTIAL_LINE)
    with pytest.raises(WireProtocolError, match="middle of a line"):
        decoder.close()
    return out


@pytest.fixture(
    params=[decode_whole, decode_byte_by_byte, decode_with_trailing_partial_line],
    ids=["whole", "byte_by_byte", "with_trailing_partial_line"],
)
def decode(request: pytest.FixtureRequest) -> Decode:
    function: Decode = request.param
    return function


def values(lines: list[JsonLine]) -> list[Any]:
    return [line.value for line in lines]


# --- lines -----------------------------------------------------------------------------------


def test_each_lf_terminated_line_is_one_json_value(decode: Decode) -> None:
    assert values(decode(b'{"a":1}\n[1,2]\n"s"\n3.5\nnull\n')) == [{"a": 1}, [1, 2], "s", 3.5, None]


def test_a_cr_before_the_lf_is_dropped(decode: Decode) -> None:
    assert values(decode(b'{"a":1}\r\n{"b":2}\r\n')) == [{"a": 1}, {"b": 2}]


def test_a_lone_cr_does_not_end_a_line(decode: Decode) -> None:
    # Inside JSON a raw CR is whitespace between tokens, so the two halves form one value.
    assert values(decode(b'{"a":\r1}\n')) == [{"a": 1}]


def test_blank_lines_are_skipped(decode: Decode) -> None:
    assert values(decode(b'\n{"a":1}\n\n\r\n  \t\n{"b":2}\n\n')) == [{"a": 1}, {"b": 2}]


def test_unicode_line_separators_stay_inside_one_line(decode: Decode) -> None:
    text = "left\u2028mid\u2029dle\x85right"
    stream = json.dumps({"content": text}, ensure_ascii=False).encode() + b"\n"
    assert values(decode(stream)) == [{"content": text}]


def test_crlf_split_across_chunks_ends_one_line() -> None:
    assert values(decode_chunks([b'{"a":1}\r', b'\n{"b":2}\r', b"\n"])) == [{"a": 1}, {"b": 2}]


def test_multi_byte_characters_split_across_chunks_decode_whole() -> None:
    stream = '{"t":"é€😀"}\n'.encode()
    for cut in range(len(stream) + 1):
        assert values(decode_chunks([stream[:cut], stream[cut:]])) == [{"t": "é€😀"}], cut


def test_an_ollama_chat_stream(decode: Decode) -> None:
    stream = (
        b'{"model":"llama3.2","created_at":"2024-07-01T00:00:00.000000001Z",'
        b'"message":{"role":"assistant","content":"The"},"done":false}\n'
        b'{"model":"llama3.2","created_at":"2024-07-01T00:00:00.1Z",'
        b'"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
        b'"prompt_eval_count":26,"eval_count":1}\n'
    )
    first, last = values(decode(stream))
    assert first["message"]["content"] == "The"
    assert last["done"] is True
    assert last["eval_count"] == 1


# --- errors ----------------------------------------------------------------------------------


def test_invalid_json_raises_naming_the_line_counting_blank_lines() -> None:
    decoder = NdjsonDecoder()
    assert values(decoder.feed(b'{"a":1}\n\n')) == [{"a": 1}]
    with pytest.raises(WireProtocolError, match="NDJSON line 3: invalid JSON"):
        decoder.feed(b'{"a":\n')


def test_the_line_number_counts_across_chunks() -> None:
    decoder = NdjsonDecoder()
    for chunk in [b"1\n2", b"\n", b"3\n4\n", b"{"]:
        decoder.feed(chunk)
    with pytest.raises(WireProtocolError, match="NDJSON line 5: invalid JSON"):
        decoder.feed(b"\n")


@pytest.mark.parametrize(
    "line",
    [b"{'single': 1}", b"\xff\xfe", b"[" * 100_000, b"1" * 5_000, b"1 2"],
    ids=["not_json", "not_utf8", "nested_too_deep", "too_many_digits", "two_values"],
)
def test_a_line_that_is_not_one_utf8_json_value_raises_a_protocol_error(line: bytes) -> None:
    with pytest.raises(WireProtocolError, match="NDJSON line 1: invalid JSON"):
        NdjsonDecoder().feed(line + b"\n")


@pytest.mark.parametrize("tail", [b"{", b'{"done":true}', b"1"], ids=["cut", "json", "number"])
def test_close_inside_a_line_raises_even_if_it_parses(tail: bytes) -> None:
    decoder = NdjsonDecoder()
    assert values(decoder.feed(b"1\n" + tail)) == [1]
    with pytest.raises(WireProtocolError, match="NDJSON line 2: stream ended in the middle"):
        decoder.close()


def test_close_after_complete_lines_or_trailing_whitespace_is_clean() -> None:
    decoder = NdjsonDecoder()
    assert values(decoder.feed(b"1\n  ")) == [1]
    assert decoder.close() == []
    assert decoder.close() == []


def test_feed_after_close_is_a_programming_error() -> None:
    decoder = NdjsonDecoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"1\n")


def test_an_unterminated_line_beyond_the_limit_raises_before_its_lf_arrives() -> None:
    decoder = NdjsonDecoder(max_line_length=10)
    decoder.feed(b"1\n[1,2,3,")
    with pytest.raises(WireProtocolError, match="NDJSON line 2 exceeds 10 bytes"):
        decoder.feed(b"4,5]")


def test_a_complete_line_beyond_the_limit_raises() -> None:
    with pytest.raises(WireProtocolError, match="NDJSON line 1 exceeds 10 bytes"):
        NdjsonDecoder(max_line_length=10).feed(b"[1,2,3,4,5]\n")


def test_lines_up_to_the_limit_pass() -> None:
    assert values(decode_chunks([b"[1,2,3,45]\n" * 3], max_line_length=10)) == [[1, 2, 3, 45]] * 3


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(
    items=st.lists(json_values, max_size=8),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    draw=st.data(),
)
def test_any_split_of_encoded_lines_decodes_to_the_same_values(
    items: list[Any], ending: bytes, draw: st.DataObject
) -> None:
    stream = b"".join(json.dumps(item, ensure_ascii=False).encode() + ending for item in items)
    cuts = draw.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert values(decode_whole(stream)) == items
    assert values(decode_chunks(split_at(stream, cuts))) == items
