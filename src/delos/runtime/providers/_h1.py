"""A small pooled HTTP/1.1 client on asyncio: the adapters' default on the server's loop.

An adapter needs one thing from HTTP: send a request, read its answer (status, headers, a body
whole or as it arrives). A general client pays for much more on every call: request and header
models, cookies, redirects, hooks, tracing. This one writes the request in one buffer, parses
the answer with ``httptools`` (llhttp, the parser Node.js uses) straight into a connection's
state, and keeps connections alive per origin. What it leaves out is what the gateway never
uses: proxies, redirects, cookies, compression it did not ask for (gzip and deflate are still
undone if a server sends them), HTTP/2.

Bounds: connecting is bounded here; every other wait is bounded by the caller's cancel scopes
(attempt limits, a stream's silence watch, the RPC deadline). A cancelled or abandoned exchange
closes its connection, so the upstream sees the request end; only an answer read to its end
returns its connection to the pool. Idle connections are dropped after
:data:`IDLE_EXPIRY_SECONDS`, below common servers' keep-alive timeouts.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Final, cast
from urllib.parse import urlsplit

import anyio
import httptools

from delos.runtime.providers._transport import (
    AnswerTooLarge,
    BodyCutShort,
    ConnectFailed,
    ConnectionLost,
    TransportError,
    TransportTimeout,
    UpstreamAnswer,
)

__all__ = ["IDLE_EXPIRY_SECONDS", "PARSE_SLICE_BYTES", "H1Client"]

#: Seconds an idle connection is kept for reuse (servers close theirs after 5 s to minutes).
IDLE_EXPIRY_SECONDS: Final = 15.0
#: Bytes of a read parsed at a time, the rest when the reader wants more: one read can hold
#: hundreds of stream events (a fast model, a buffering proxy), and parsing it whole would hold
#: back the first of them.
PARSE_SLICE_BYTES: Final = 4096
#: Unread body bytes buffered before the connection stops reading (a slow consumer).
_HIGH_WATER: Final = 256 * 1024
#: Distinct URLs whose parsed form is kept.
_MAX_PARSED_URLS: Final = 512


class _Origin:
    """A URL taken apart once: where to connect and the request line's target."""

    __slots__ = ("host", "host_header", "key", "port", "target", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {url[:80]!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = (self.tls, self.host, self.port)
        _refuse_line_breaks(self.target)


def _refuse_line_breaks(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise TransportError("a line break in a request line or header")


class _Connection(asyncio.Protocol):
    """One connection and the answer being read on it (httptools calls the ``on_*`` methods)."""

    def __init__(self, origin_key: tuple[bool, str, int]) -> None:
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: TransportError | None = None
        self._chunks: deque[bytes] = deque()
        #: Received bytes not parsed yet, and whether the connection ended behind them.
        self._unparsed: deque[bytes] = deque()
        self._lost = False
        #: Bytes received and not yet read (parsed or not): past the high water, reading pauses.
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None
        self._paused = False
        self._length_known = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport, but is one).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._unparsed.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._parse_some()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._unparsed and self.error is None:
            self._lost = True  # the end of input comes once what was received is parsed
            self._wake()
            return
        self._end_of_input()

    def _parse_some(self) -> None:
        """Parse received bytes, a slice at a time, until the reader has a piece of body (or
        nothing is left)."""
        unparsed = self._unparsed
        while unparsed and not self._chunks and self.error is None:
            data = unparsed.popleft()
            if len(data) > PARSE_SLICE_BYTES:
                unparsed.appendleft(data[PARSE_SLICE_BYTES:])
                data = data[:PARSE_SLICE_BYTES]
            self._buffered -= len(data)
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as error:
                self._fail(ConnectionLost(f"malformed HTTP answer ({error})"))
        if self._lost and not unparsed:
            self._lost = False
            self._end_of_input()

    def _end_of_input(self) -> None:
        if self.complete or self.error is not None:
            self._wake()
            return
        if self.headers_done and not self._length_known:
            self.complete = True  # a body that ends when the connection does
            self._wake()
        elif self.headers_done:
            self._fail(BodyCutShort("connection closed inside the body"))
        else:
            self._fail(ConnectionLost("connection closed before the answer"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        headers = self.headers
        self._length_known = (
            "content-length" in headers
            or "chunked" in headers.get("transfer-encoding", "").lower()
            or self.status in (204, 304)
        )
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            self._fail(TransportError(f"unsupported content-encoding {encoding[:40]!r}"))
            return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error:
                self._fail(ConnectionLost("answer body is not valid compressed data"))
                return
        if body:
            self._chunks.append(body)
            self._buffered += len(body)
            self._wake()

    def on_message_complete(self) -> None:
        # Asked now: once the message is complete the parser is ready for the next one.
        self.keep_alive = self._parser.should_keep_alive()
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self.complete = True
        self._wake()

    # -- the exchange's side ------------------------------------------------------------------

    def _fail(self, error: TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def send(self, request: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    async def answer_started(self) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            if self._unparsed:
                self._parse_some()
                continue
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self._unparsed or self._lost:
                self._parse_some()
                continue
            if self.complete:
                return None
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.closed
            and not self._unparsed
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Chunks:
    """The body as it arrives (a plain iterator: one left unfinished needs no finalising)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._connection.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        return None  # leaving the exchange closes an unfinished connection


class _Answer:
    __slots__ = ("_connection", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self._connection)

    async def read(self, limit: int) -> bytes:
        connection = self._connection
        body = bytearray()
        while (chunk := await connection.next_chunk()) is not None:
            body += chunk
            if len(body) > limit:
                raise AnswerTooLarge(limit)
        return bytes(body)


class _Exchange:
    """One request on a pooled connection, as an async context manager (a class, not a
    generator: it runs once per upstream call)."""

    __slots__ = ("_client", "_connection", "_origin", "_request")

    def __init__(self, client: H1Client, origin: _Origin, request: bytes) -> None:
        self._client = client
        self._origin = origin
        self._request = request
        self._connection: _Connection | None = None

    async def __aenter__(self) -> UpstreamAnswer:
        connection = self._connection = await self._client._checkout(self._origin)
        try:
            connection.send(self._request)
            await connection.answer_started()
        except BaseException:
            connection.close()
            raise
        return _Answer(connection)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = self._connection
        assert connection is not None
        if kind is None and connection.reusable:
            self._client._checkin(connection)
        else:
            connection.close()


class H1Client:
    """Keep-alive connections per origin, at most ``max_idle`` idle ones kept per origin."""

    def __init__(
        self, *, connect_timeout: float, max_idle: int = 128, user_agent: str = "delos-runtime"
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._user_agent = user_agent
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= _MAX_PARSED_URLS:
                self._origins.clear()
            origin = self._origins[url] = _Origin(url)
        return origin

    def _request_bytes(
        self, method: str, origin: _Origin, headers: Mapping[str, str], content: bytes | None
    ) -> bytes:
        lines = [f"{method} {origin.target} HTTP/1.1\r\nhost: {origin.host_header}\r\n"]
        for name, value in headers.items():
            _refuse_line_breaks(name)
            _refuse_line_breaks(value)
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"user-agent: {self._user_agent}\r\n")
        if content is not None:
            lines.append(f"content-length: {len(content)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + content if content else head

    async def _checkout(self, origin: _Origin) -> _Connection:
        idle = self._idle.get(origin.key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_EXPIRY_SECONDS:
                return connection
            connection.close()
        return await self._connect(origin)

    async def _connect(self, origin: _Origin) -> _Connection:
        if self._closed:
            raise ConnectFailed("the client is closed")
        loop = asyncio.get_running_loop()
        connection = _Connection(origin.key)
        context: ssl.SSLContext | None = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            with anyio.fail_after(self._connect_timeout):
                await loop.create_connection(
                    lambda: connection,
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                )
        except TimeoutError:
            raise TransportTimeout("connect timed out") from None
        except OSError as error:  # refused, unreachable, a TLS failure (ssl.SSLError)
            raise ConnectFailed(type(error).__name__) from error
        return connection

    def _checkin(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin_key, [])
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def exchange(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> AbstractAsyncContextManager[UpstreamAnswer]:
        origin = self._origin(url)
        return _Exchange(self, origin, self._request_bytes(method, origin, headers, content))

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
