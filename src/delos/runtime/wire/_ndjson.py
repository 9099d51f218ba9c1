"""Newline-delimited JSON (`application/x-ndjson`, as Ollama streams): a sans-IO decoder.

Lines end at LF only; CRLF works as well, since JSON takes the CR for whitespace. JSON strings
cannot hold a raw LF, so an LF byte always ends a line, while U+2028 and U+0085 inside strings
are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from delos.runtime.wire._errors import WireProtocolError

__all__ = ["JsonLine", "NdjsonDecoder"]

_DEFAULT_MAX_LINE_LENGTH = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JsonLine:
    """One line of the stream, parsed with `json.loads`."""

    value: Any


class NdjsonDecoder:
    """Turns NDJSON bytes into `JsonLine` values, one per non-blank line.

    Feed bytes as they arrive with `feed()`, then call `close()` once at end of input.
    A `WireProtocolError` is final: the stream is broken and the decoder must be discarded.
    """

    def __init__(self, *, max_line_length: int = _DEFAULT_MAX_LINE_LENGTH) -> None:
        """`max_line_length` bounds one line, in bytes, so a missing LF cannot exhaust memory."""
        self._max_line_length = max_line_length
        # The unterminated tail, kept as chunks so a long line arriving in many small reads is
        # joined once rather than re-copied on every read.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._line_number = 0  # of the last complete line, counting blank lines, from 1
        self._closed = False

    def feed(self, data: bytes) -> list[JsonLine]:
        """Consume the next bytes of the stream; return the lines they complete.

        Raises:
            WireProtocolError: a line is not valid UTF-8 JSON (the message gives its number) or
                is longer than `max_line_length` bytes.
            RuntimeError: called after `close()`.
        """
        if self._closed:
            raise RuntimeError("NdjsonDecoder.feed() called after close()")
        if b"\n" not in data:
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
                if self._pending_size > self._max_line_length:
                    self._raise_too_long(self._line_number + 1)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
        lines = data.split(b"\n")
        rest = lines.pop()
        self._pending_size = len(rest)
        if rest:
            self._pending.append(rest)
        out: list[JsonLine] = []
        for line in lines:
            self._line_number += 1
            parsed = self._parse(line)
            if parsed is not None:
                out.append(parsed)
        if self._pending_size > self._max_line_length:
            self._raise_too_long(self._line_number + 1)
        return out

    def close(self) -> list[JsonLine]:
        """Signal end of input. Returns [].

        Raises:
            WireProtocolError: the stream ended inside a line (no closing LF), which means the
                response was cut short: Ollama ends every line, the last one included.
        """
        if self._closed:
            return []
        self._closed = True
        if self._pending and b"".join(self._pending).strip():
            raise WireProtocolError(
                f"NDJSON line {self._line_number + 1}: stream ended in the middle of a line"
            )
        return []

    def _parse(self, line: bytes) -> JsonLine | None:
        if len(line) > self._max_line_length:
            self._raise_too_long(self._line_number)
        # A CR before the LF needs no stripping: JSON counts CR as whitespace, as does strip().
        if not line.strip():
            return None
        try:
            return JsonLine(json.loads(line.decode("utf-8")))
        # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit;
        # RecursionError covers absurdly deep nesting.
        except (ValueError, RecursionError) as exc:
            raise WireProtocolError(
                f"NDJSON line {self._line_number}: invalid JSON: {exc}"
            ) from exc

    def _raise_too_long(self, line_number: int) -> NoReturn:
        raise WireProtocolError(f"NDJSON line {line_number} exceeds {self._max_line_length} bytes")
