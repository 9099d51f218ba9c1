"""An instant OpenAI-compatible upstream for throughput benchmarks.

The fakes in :mod:`delos.testing` favour fidelity and fault injection over speed; at thousands of
requests per second they would measure themselves. This one answers ``POST …/chat/completions``
from pre-encoded bytes on an :class:`asyncio.Protocol`, so the gateway in front of it is what
limits throughput.

Streams are shaped by the last message of the request, which the gateway forwards untouched:
``tokens=500 interval_us=1000`` asks for 500 content chunks, one every millisecond (0: as fast as
the socket takes them). Each chunk's content is the upstream's ``time.monotonic_ns() // 1000`` at
the moment it was written: CLOCK_MONOTONIC is shared by every process on the machine, so a client
subtracts it from its own clock to get the chunk's delivery latency.

``GET /__bench/stats`` answers ``{"requests": n, "streams": n, "chunks": n}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, cast

__all__ = ["UpstreamCounters", "serve_upstream"]

_TOKENS = re.compile(rb"tokens=(\d+)")
_INTERVAL = re.compile(rb"interval_us=(\d+)")
_MODEL = re.compile(rb'"model"\s*:\s*"([^"]+)"')
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_MAX_TOKENS = 100_000


class UpstreamCounters:
    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.chunks = 0


def _completion_body(model: str) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "the quick brown fox jumps"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
        % (status, reason, content_type, len(body))
        + body
    )


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)


class _StreamShape:
    def __init__(self, model: str) -> None:
        prefix = (
            '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
            f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
        )
        self.role = _chunked(
            b"data: "
            + (prefix + '{"role":"assistant","content":""},"finish_reason":null}]}').encode()
            + b"\n\n"
        )
        self.token_head = b"data: " + (prefix + '{"content":" ').encode()
        self.token_tail = b'"},"finish_reason":null}]}\n\n'
        finish = prefix + '{},"finish_reason":"stop"}]}'
        self.finish = _chunked(b"data: " + finish.encode() + b"\n\n")

    def token(self) -> bytes:
        stamp = b"%d" % (time.monotonic_ns() // 1000)
        return _chunked(self.token_head + stamp + self.token_tail)

    def tail(self, tokens: int) -> bytes:
        usage = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": tokens + 8}
        last: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "choices": [],
        }
        last["usage"] = usage
        encoded = json.dumps(last, separators=(",", ":")).encode()
        return (
            self.finish
            + _chunked(b"data: " + encoded + b"\n\n")
            + _chunked(b"data: [DONE]\n\n")
            + b"0\r\n\r\n"
        )


class _Connection(asyncio.Protocol):
    def __init__(self, counters: UpstreamCounters, cache: dict[Any, Any]) -> None:
        self.counters = counters
        self.cache = cache
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        # Requests on one connection are answered in order; a stream holds the line until it ends.
        while not self.streaming and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            request_line = head.split(b"\r\n", 1)[0]
            self._answer(request_line, body)

    def _answer(self, request_line: bytes, body: bytes) -> None:
        assert self.transport is not None
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0]
        if method == b"get" and path == b"/__bench/stats":
            counters = self.counters
            stats = {
                "requests": counters.requests,
                "streams": counters.streams,
                "chunks": counters.chunks,
            }
            self.transport.write(_response(200, json.dumps(stats).encode()))
            return
        if method != b"post" or not path.endswith(b"/chat/completions"):
            self.transport.write(_response(404, b'{"error":{"message":"not found"}}'))
            return
        self.counters.requests += 1
        found = _MODEL.search(body)
        model = found.group(1).decode() if found else "gpt-4o"
        if not _STREAM.search(body):
            answer = self.cache.get(model)
            if answer is None:
                answer = self.cache[model] = _response(200, _completion_body(model))
            self.transport.write(answer)
            return
        tokens_found = _TOKENS.search(body)
        interval_found = _INTERVAL.search(body)
        tokens = min(int(tokens_found.group(1)), _MAX_TOKENS) if tokens_found else 12
        interval = int(interval_found.group(1)) / 1e6 if interval_found else 0.0
        self.counters.streams += 1
        self.streaming = True
        asyncio.get_running_loop().create_task(self._stream(model, tokens, interval))

    async def _stream(self, model: str, tokens: int, interval: float) -> None:
        shape = self.cache.get(("stream", model))
        if shape is None:
            shape = self.cache[("stream", model)] = _StreamShape(model)
        transport = self.transport
        try:
            if transport is None:
                return
            transport.write(_STREAM_HEAD + shape.role)
            for index in range(tokens):
                if interval and index:
                    await asyncio.sleep(interval)
                if transport.is_closing():
                    return
                # One write per chunk, as a provider flushing each token.
                transport.write(shape.token())
                self.counters.chunks += 1
            transport.write(shape.tail(tokens))
        finally:
            self.streaming = False
        self._process()


async def serve_upstream(port: int, ready: asyncio.Future[int] | None = None) -> None:
    """Serve on 127.0.0.1:``port`` (0: ephemeral) until cancelled; ``ready`` gets the port."""
    counters = UpstreamCounters()
    cache: dict[Any, Any] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(counters, cache), "127.0.0.1", port, backlog=1024
    )
    bound = int(server.sockets[0].getsockname()[1])
    if ready is not None:
        ready.set_result(bound)
    async with server:
        await server.serve_forever()
