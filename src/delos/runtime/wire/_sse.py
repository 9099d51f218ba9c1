"""Server-sent events: a sans-IO decoder following the WHATWG parsing rules, and an encoder.

Lines end at CR, LF or CRLF and nowhere else. Splitting happens on bytes, before UTF-8 decoding,
so U+2028, U+2029 and U+0085 in model output stay inside their line, and a multi-byte character
split across two reads is decoded whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from delos.runtime.wire._errors import WireProtocolError

__all__ = ["SseComment", "SseDecoder", "SseEvent", "encode_sse", "encode_sse_comment"]

_BOM = b"\xef\xbb\xbf"
_DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024
_LINE_ENDINGS = ("\n", "\r\n", "\r")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event.

    `event` is None when the stream gave no (or an empty) `event:` field, which WHATWG treats as
    "message". `data` joins the event's `data:` lines with "\\n". As in WHATWG, `id` and `retry`
    are stream state rather than event fields: `id` is the last event ID set so far on the stream
    and `retry` the last reconnection delay (milliseconds) it announced, or None if never set.
    """

    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class SseComment:
    """A `:` line, with the colon and one following space removed (keep-alives, for example)."""

    text: str


def _after_colon(text: str, start: int) -> str:
    # WHATWG strips exactly one space after the colon, not all whitespace.
    if text.startswith(" ", start):
        return text[start + 1 :]
    return text[start:]


class SseDecoder:
    """Turns `text/event-stream` bytes into `SseEvent` and `SseComment` values.

    Feed bytes as they arrive with `feed()`, then call `close()` once at end of input. The decoder
    does no I/O and keeps at most one event's worth of bytes.
    A `WireProtocolError` is final: the stream is broken and the decoder must be discarded.
    """

    def __init__(self, *, max_event_size: int = _DEFAULT_MAX_EVENT_SIZE) -> None:
        """`max_event_size` bounds, in bytes, the field lines of one event plus any partial line."""
        self._max_event_size = max_event_size
        # Bytes of an unterminated line, kept as chunks so that a long line arriving in many small
        # reads is joined once rather than re-copied on every read.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._at_start = True  # the BOM may only appear at the very start of the stream
        self._skip_lf = False  # the last line ended with CR; an LF that follows belongs to it
        self._closed = False
        # The event being assembled since the last blank line.
        self._in_event = False
        self._event_size = 0
        self._event_type: str | None = None
        self._data: list[str] = []
        # Stream state that, per WHATWG, outlives each event.
        self._last_event_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[SseEvent | SseComment]:
        """Consume the next bytes of the stream; return the events and comments they complete.

        Raises:
            WireProtocolError: an event grows beyond `max_event_size` bytes.
            RuntimeError: called after `close()`.
        """
        if self._closed:
            raise RuntimeError("SseDecoder.feed() called after close()")
        if self._skip_lf and data:
            self._skip_lf = False
            if data.startswith(b"\n"):
                data = data[1:]
        if self._at_start:
            data = self._strip_bom(data)
            if self._at_start:
                return []
        if b"\n" not in data and b"\r" not in data:
            # Fast path for the middle of a long line: no line ends, nothing to decode.
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
                self._check_size()
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
        # Normalise every line ending to LF. The held-back partial line holds no CR or LF, so a
        # CRLF can only straddle two reads at the very end, which `_skip_lf` handles.
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._skip_lf = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if rest:
            self._pending.append(rest)
            self._pending_size = len(rest)
        # Decoding complete lines in one call is safe: a UTF-8 sequence never contains 0x0A, so
        # no character straddles a line end, and str.split("\n") splits on LF alone.
        lines = data[:cut].decode("utf-8", "replace").split("\n")
        lines.pop()  # the empty string after the final LF
        out: list[SseEvent | SseComment] = []
        for line in lines:
            self._process_line(line, out)
        self._check_size()
        return out

    def close(self) -> list[SseEvent | SseComment]:
        """Signal end of input. Returns [] (WHATWG drops an event with no closing blank line).

        Raises:
            WireProtocolError: the stream ended in the middle of an event or of a line, which
                means the upstream response was cut short.
        """
        if self._closed:
            return []
        self._closed = True
        if self._pending or self._in_event:
            raise WireProtocolError("stream ended in the middle of an event")
        return []

    def _strip_bom(self, data: bytes) -> bytes:
        # The first bytes may be a BOM split across reads: hold them until they can be told apart.
        head = b"".join(self._pending) + data if self._pending else data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
            return b""
        self._pending.clear()
        self._pending_size = 0
        self._at_start = False
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _process_line(self, line: str, out: list[SseEvent | SseComment]) -> None:
        if not line:
            self._dispatch(out)
            return
        colon = line.find(":")
        if colon == 0:
            out.append(SseComment(_after_colon(line, 1)))
            return
        self._in_event = True
        self._event_size += len(line) + 1
        if colon < 0:
            name, value = line, ""
        else:
            name, value = line[:colon], _after_colon(line, colon + 1)
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value or None
        elif name == "id":
            if "\x00" not in value:
                self._last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        # Any other field name is ignored, as WHATWG requires.

    def _dispatch(self, out: list[SseEvent | SseComment]) -> None:
        if self._data:
            data = "\n".join(self._data)
            out.append(SseEvent(self._event_type, data, self._last_event_id, self._retry))
        # An event without data lines is dropped, but its id and retry still took effect.
        self._in_event = False
        self._event_size = 0
        self._event_type = None
        self._data = []

    def _check_size(self) -> None:
        # Character counts stand in for byte counts on decoded lines: never larger, and a bound
        # within a factor of four is all the memory guard needs.
        if self._event_size + self._pending_size > self._max_event_size:
            raise WireProtocolError(f"SSE event exceeds {self._max_event_size} bytes")


def _check_single_line(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain CR or LF: {value!r}")


def encode_sse(data: str, event: str | None = None, *, line_ending: str = "\n") -> bytes:
    """Encode one event as `event: <event>\\ndata: <line>\\n...\\n\\n` (UTF-8).

    Each CR, LF or CRLF in `data` starts a new `data:` line, so a decoder returns the data with
    every line ending turned into LF. Other characters, U+2028 included, pass through unchanged.
    `line_ending` ends every line, the blank one included: LF by default, CRLF (as Google's
    servers write) or CR, the three endings the format allows.

    Raises:
        ValueError: `event` contains CR or LF, or `line_ending` is not LF, CRLF or CR.
    """
    if line_ending not in _LINE_ENDINGS:
        raise ValueError(f"SSE lines end with LF, CRLF or CR, not {line_ending!r}")
    parts: list[str] = []
    if event is not None:
        _check_single_line("event", event)
        parts.append(f"event: {event}{line_ending}")
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    parts.extend(f"data: {line}{line_ending}" for line in normalised.split("\n"))
    parts.append(line_ending)
    return "".join(parts).encode()


def encode_sse_comment(text: str) -> bytes:
    """Encode a comment line (`: <text>\\n\\n`), as servers send for keep-alives.

    Raises:
        ValueError: `text` contains CR or LF.
    """
    _check_single_line("comment", text)
    return f": {text}\n\n".encode()
