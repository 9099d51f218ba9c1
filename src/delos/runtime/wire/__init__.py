"""Sans-IO parsers for the streaming wire formats the providers speak.

Layout:
    _errors.py       WireProtocolError, the one error every decoder raises
    _sse.py          server-sent events (OpenAI, Anthropic, Gemini, the OpenAI-compatible ones)
    _ndjson.py       newline-delimited JSON (Ollama's native API)
    _eventstream.py  AWS binary event-stream (Bedrock)

Each decoder has `feed(data: bytes) -> list[Event]` and `close() -> list[Event]`; it never
awaits and never does I/O. Encoders beside them produce the same formats for fake servers.
"""

from delos.runtime.wire._errors import WireProtocolError
from delos.runtime.wire._eventstream import (
    EventStreamDecoder,
    EventStreamMessage,
    HeaderValue,
    encode_event,
    encode_event_stream_message,
    encode_exception,
)
from delos.runtime.wire._ndjson import JsonLine, NdjsonDecoder
from delos.runtime.wire._sse import (
    SseComment,
    SseDecoder,
    SseEvent,
    encode_sse,
    encode_sse_comment,
)

__all__ = [
    "EventStreamDecoder",
    "EventStreamMessage",
    "HeaderValue",
    "JsonLine",
    "NdjsonDecoder",
    "SseComment",
    "SseDecoder",
    "SseEvent",
    "WireProtocolError",
    "encode_event",
    "encode_event_stream_message",
    "encode_exception",
    "encode_sse",
    "encode_sse_comment",
]
