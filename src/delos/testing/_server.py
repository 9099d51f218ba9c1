"""A small HTTP/1.1 server on loopback for fake providers, with byte-level control over faults.

Built on anyio and h11 so the same fake runs inside an asyncio or trio test, inside the demo
gateway's event loop, or in a thread of its own for synchronous SDK tests (:func:`serve_in_thread`).

A handler receives a :class:`FakeRequest` and returns a :class:`FakeResponse`. A body given as
bytes is sent with Content-Length; a body given as an async iterable is sent chunked, each item
flushed as its own write. Faults are part of the body or the response:

- ``FakeResponse.reset()``: the connection is reset (TCP RST) before any header is sent;
- a :data:`RESET` item in the body: reset mid-body;
- a :data:`HANG_UP` item: the connection is closed cleanly with the body unfinished;
- a handler that sleeps forever: silence, until the client goes away.

The server notices a client that disconnects while it is still answering, counts it in
:class:`ServerStats` and cancels the handler: this is how tests prove that cancelling a gateway
request closes the upstream request.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import h11

__all__ = [
    "HANG_UP",
    "RESET",
    "FakeRequest",
    "FakeResponse",
    "FakeServer",
    "Handler",
    "Pause",
    "ScriptedBody",
    "ServerStats",
    "open_fake_server",
    "serve_in_thread",
]


class _Fault:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Body item: reset the connection (TCP RST) at this point of the body.
RESET: Final = _Fault("RESET")
#: Body item: close the connection cleanly at this point, leaving the body unfinished.
HANG_UP: Final = _Fault("HANG_UP")

BodyItem = bytes | _Fault


@dataclass(frozen=True, slots=True)
class Pause:
    """A step of a :class:`ScriptedBody`: wait this many seconds (``math.inf``: until the
    client goes away)."""

    seconds: float


class ScriptedBody:
    """A response body as a sequence of writes and pauses, fed by a synchronous iterable.

    A plain async iterator rather than an async generator, so a body abandoned half-way leaves
    nothing to finalise.
    """

    def __init__(self, steps: Iterable[BodyItem | Pause]) -> None:
        self._steps = iter(steps)

    def __aiter__(self) -> ScriptedBody:
        return self

    async def __anext__(self) -> BodyItem:
        for step in self._steps:
            if not isinstance(step, Pause):
                return step
            if step.seconds == math.inf:
                await anyio.sleep_forever()
            elif step.seconds > 0:
                await anyio.sleep(step.seconds)
        raise StopAsyncIteration


@dataclass(frozen=True, slots=True)
class FakeRequest:
    method: str
    #: Path without the query string, percent-encoding kept as sent.
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class FakeResponse:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterable[BodyItem] = b""
    reset_before_headers: bool = False

    @classmethod
    def json(
        cls, payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> FakeResponse:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, [("content-type", "application/json"), *(headers or [])], body)

    @classmethod
    def reset(cls) -> FakeResponse:
        return cls(reset_before_headers=True)


Handler = Callable[[FakeRequest], Awaitable[FakeResponse]]


@dataclass
class ServerStats:
    """What the server saw. Read it from the test; it is updated by the server's tasks."""

    #: The most recent requests (bounded: fakes also serve long soaks and benchmarks).
    requests: deque[FakeRequest] = field(default_factory=lambda: deque(maxlen=100))
    request_count: int = 0
    connections_opened: int = 0
    open_connections: int = 0
    #: Responses abandoned because the client went away before they were complete.
    client_disconnects: int = 0
    completed_responses: int = 0
    #: Requests being answered right now (0 once every request ended, however it ended).
    active_responses: int = 0


class FakeServer:
    """A running fake; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(
        self, handler: Handler, listener: anyio.abc.Listener[anyio.abc.SocketStream]
    ) -> None:
        self._handler = handler
        self._listener = listener
        self.stats = ServerStats()
        self._changed = anyio.Event()
        self.port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_until(self, predicate: Callable[[ServerStats], bool]) -> None:
        """Wait until ``predicate(stats)`` holds. Bound it with a cancel scope in tests."""
        while not predicate(self.stats):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        self.stats.connections_opened += 1
        self.stats.open_connections += 1
        self._notify()
        try:
            await _Connection(self, stream).run()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            self.stats.open_connections -= 1
            self._notify()


class _Disconnected(Exception):
    pass


class _Connection:
    def __init__(self, server: FakeServer, stream: anyio.abc.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def run(self) -> None:
        while True:
            request = await self._read_request()
            if request is None:
                return
            stats = self.server.stats
            stats.requests.append(request)
            stats.request_count += 1
            self.server._notify()
            stats.active_responses += 1
            try:
                finished = await self._answer(request)
            finally:
                stats.active_responses -= 1
                self.server._notify()
            if not finished or self.h11.our_state is not h11.DONE:
                return
            if self.h11.their_state is not h11.DONE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""

    async def _read_request(self) -> FakeRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                data = await self._receive()
                self.h11.receive_data(data)
                if not data and self.h11.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = tuple(
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in head.headers
                )
                return FakeRequest(head.method.decode(), path, query, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, request: FakeRequest) -> bool:
        """Run the handler and send its response; False when the connection must end."""
        outcome: list[bool] = []
        async with anyio.create_task_group() as tg:

            async def watch_for_disconnect() -> None:
                # Anything but more bytes means the client went away mid-response.
                while True:
                    data = await self._receive()
                    if not data:
                        self.server.stats.client_disconnects += 1
                        self.server._notify()
                        tg.cancel_scope.cancel()
                        return
                    self.h11.receive_data(data)

            async def respond() -> None:
                try:
                    response = await self.server._handler(request)
                    outcome.append(await self._send(response))
                except _Disconnected:
                    self.server.stats.client_disconnects += 1
                    self.server._notify()
                    outcome.append(False)
                tg.cancel_scope.cancel()

            tg.start_soon(watch_for_disconnect)
            tg.start_soon(respond)
        return bool(outcome and outcome[0])

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _Disconnected from exc

    async def _send(self, response: FakeResponse) -> bool:
        if response.reset_before_headers:
            self._reset()
            return False
        headers = [(k.encode(), v.encode()) for k, v in response.headers]
        names = {k.lower() for k, _ in response.headers}
        if isinstance(response.body, bytes):
            if "content-length" not in names:
                headers.append((b"content-length", str(len(response.body)).encode()))
        elif "transfer-encoding" not in names:
            headers.append((b"transfer-encoding", b"chunked"))
        if "date" not in names:
            headers.append((b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"))
        await self._write(self.h11.send(h11.Response(status_code=response.status, headers=headers)))
        if isinstance(response.body, bytes):
            await self._write(self.h11.send(h11.Data(data=response.body)))
        else:
            body = response.body
            try:
                async for item in body:
                    if item is RESET:
                        self._reset()
                        return False
                    if item is HANG_UP:
                        return False
                    assert isinstance(item, bytes)
                    if item:
                        await self._write(self.h11.send(h11.Data(data=item)))
            finally:
                # A body abandoned half-way (client gone, fault) is finalised here, not by the GC.
                close = getattr(body, "aclose", None)
                if close is not None:
                    with anyio.CancelScope(shield=True):
                        await close()
        await self._write(self.h11.send(h11.EndOfMessage()))
        self.server.stats.completed_responses += 1
        self.server._notify()
        return True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        raw = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.asynccontextmanager
async def open_fake_server(handler: Handler, *, port: int = 0) -> AsyncIterator[FakeServer]:
    """Serve ``handler`` on 127.0.0.1 (an ephemeral port by default) for the block's duration."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    server = FakeServer(handler, listener)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve_connection)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


@contextlib.contextmanager
def serve_in_thread(handler: Handler) -> Iterator[FakeServer]:
    """Serve ``handler`` from a thread with its own event loop, for synchronous clients."""
    ready = threading.Event()
    holder: list[FakeServer] = []
    errors: list[BaseException] = []
    stop: list[Callable[[], None]] = []

    async def main() -> None:
        async with open_fake_server(handler) as server:
            stopped = anyio.Event()
            token = anyio.lowlevel.current_token()
            holder.append(server)
            stop.append(lambda: anyio.from_thread.run_sync(stopped.set, token=token))
            ready.set()
            await stopped.wait()

    def run() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="fake-provider", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if errors or not holder:
        raise RuntimeError(f"the fake server did not start: {errors!r}")
    try:
        yield holder[0]
    finally:
        stop[0]()
        thread.join(timeout=30)
