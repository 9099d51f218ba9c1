"""The gateway's HTTP/1.1 client, against raw servers on loopback that answer byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from delos.runtime.providers._h1 import H1Client
from delos.runtime.providers._transport import (
    AnswerTooLarge,
    BodyCutShort,
    ConnectFailed,
    ConnectionLost,
    TransportError,
)
from tests.observability.servers import write_self_signed

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the client runs on asyncio only; trio gets httpx


class RawServer:
    """Accepts connections; ``handle`` speaks HTTP by hand. Counts connections and keeps what
    each request carried."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self.connections = 0
        self.requests: list[bytes] = []
        self.ended = asyncio.Event()  # set when a connection's reader sees EOF
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader, server: RawServer) -> bool:
    """One request (head and a content-length body); False at the connection's end."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    server.requests.append(head + await reader.readexactly(length))
    return True


@asynccontextmanager
async def raw_server(
    answer: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[RawServer]:
    holder: list[RawServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(holder[0], reader, writer)

    server = RawServer(handle)
    holder.append(server)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1/chat"
    try:
        yield server
    finally:
        listening.close()


def answer_bytes(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def keep_answering(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while await read_request(reader, server):
        writer.write(answer_bytes(b'{"ok":true}', extra="X-RateLimit-Remaining-Requests: 9\r\n"))
        await writer.drain()
    server.ended.set()


async def test_an_answer_is_read_whole_and_its_connection_serves_the_next_request() -> None:
    client = H1Client(connect_timeout=5)
    async with raw_server(keep_answering) as server:
        for _ in range(3):
            async with client.exchange("POST", server.url, JSON, b'{"a":1}') as answer:
                assert answer.status == 200
                assert answer.headers["x-ratelimit-remaining-requests"] == "9"
                assert await answer.read(1024) == b'{"ok":true}'
        await client.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a":1}')


async def test_a_chunked_body_arrives_piece_by_piece() -> None:
    release = asyncio.Event()

    async def chunked(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = H1Client(connect_timeout=5)
    async with (
        raw_server(chunked) as server,
        client.exchange("POST", server.url, JSON, b"{}") as answer,
    ):
        chunks = answer.chunks()
        assert await anext(chunks) == b"hello"
        release.set()
        assert [c async for c in chunks] == [b" world"]
    await client.aclose()


async def test_a_body_past_the_limit_is_refused() -> None:
    async def large(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(answer_bytes(b"x" * 5000))
        await writer.drain()

    client = H1Client(connect_timeout=5)
    async with raw_server(large) as server:
        with pytest.raises(AnswerTooLarge):
            async with client.exchange("POST", server.url, JSON, b"{}") as answer:
                await answer.read(1000)
    await client.aclose()


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
    ],
    ids=["declared length", "chunked"],
)
async def test_a_connection_closed_inside_the_body_cuts_it_short(cut: bytes) -> None:
    async def cutting(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(cut)
        await writer.drain()

    client = H1Client(connect_timeout=5)
    async with raw_server(cutting) as server:
        with pytest.raises(BodyCutShort):
            async with client.exchange("POST", server.url, JSON, b"{}") as answer:
                await answer.read(1024)
    await client.aclose()


async def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async def until_close(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    client = H1Client(connect_timeout=5)
    async with (
        raw_server(until_close) as server,
        client.exchange("GET", server.url, {}, None) as answer,
    ):
        assert await answer.read(1024) == b"all of it"
    await client.aclose()


async def test_a_server_that_hangs_up_before_answering_loses_the_connection() -> None:
    async def hang_up(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)

    client = H1Client(connect_timeout=5)
    async with raw_server(hang_up) as server:
        with pytest.raises(ConnectionLost):
            async with client.exchange("POST", server.url, JSON, b"{}"):
                pass
    await client.aclose()


async def test_a_malformed_answer_loses_the_connection() -> None:
    async def garbage(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = H1Client(connect_timeout=5)
    async with raw_server(garbage) as server:
        with pytest.raises(ConnectionLost, match="malformed"):
            async with client.exchange("POST", server.url, JSON, b"{}"):
                pass
    await client.aclose()


async def test_a_refused_connection_fails_to_connect() -> None:
    async with raw_server(keep_answering) as server:
        url = server.url
    client = H1Client(connect_timeout=5)
    with pytest.raises(ConnectFailed):
        async with client.exchange("POST", url, JSON, b"{}"):
            pass
    await client.aclose()


async def test_a_gzip_body_is_decoded() -> None:
    async def gzipped(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(
            answer_bytes(gzip.compress(b'{"zipped":true}'), extra="content-encoding: gzip\r\n")
        )
        await writer.drain()
        await reader.read()

    client = H1Client(connect_timeout=5)
    async with (
        raw_server(gzipped) as server,
        client.exchange("POST", server.url, JSON, b"{}") as answer,
    ):
        assert await answer.read(1024) == b'{"zipped":true}'
    await client.aclose()


async def test_a_cancelled_exchange_closes_its_connection_so_the_upstream_sees_it_end() -> None:
    async def slow(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed the connection
        server.ended.set()

    client = H1Client(connect_timeout=5)
    async with raw_server(slow) as server:
        with anyio.CancelScope() as scope:
            async with client.exchange("POST", server.url, JSON, b"{}") as answer:
                async for _ in answer.chunks():
                    scope.cancel()  # the caller gives up in the middle of the body
        with anyio.fail_after(5):
            await server.ended.wait()
    await client.aclose()


async def test_an_answer_left_before_its_end_does_not_go_back_to_the_pool() -> None:
    async def unfinished_first(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        if server.connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await reader.read()
            return
        writer.write(answer_bytes(b"{}"))
        await writer.drain()

    client = H1Client(connect_timeout=5)
    async with raw_server(unfinished_first) as server:
        async with client.exchange("POST", server.url, JSON, b"{}"):
            pass  # left with the body still coming
        async with client.exchange("POST", server.url, JSON, b"{}") as answer:
            assert await answer.read(1024) == b"{}"
        await client.aclose()
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def one_each(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        writer.write(answer_bytes(b"{}"))
        await writer.drain()  # then close: the server's keep-alive is over

    client = H1Client(connect_timeout=5)
    async with raw_server(one_each) as server:
        for _ in range(2):
            async with client.exchange("POST", server.url, JSON, b"{}") as answer:
                assert await answer.read(1024) == b"{}"
            # The server's close reaches the pooled connection (a loopback event, not a timer).
            with anyio.fail_after(5):
                while not all(c.closed for idle in client._idle.values() for c in idle):
                    await anyio.lowlevel.checkpoint()
        await client.aclose()
    assert server.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    client = H1Client(connect_timeout=5)
    async with raw_server(keep_answering) as server:
        with pytest.raises(TransportError):
            async with client.exchange("POST", server.url, {"x-evil": "a\r\nhost: b"}, b"{}"):
                pass
        await client.aclose()
    assert server.connections == 0


async def test_a_percent_encoded_path_goes_out_byte_for_byte_as_signed() -> None:
    client = H1Client(connect_timeout=5)
    async with raw_server(keep_answering) as server:
        base = server.url.removesuffix("/v1/chat")
        url = f"{base}/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse?x=%2F"
        async with client.exchange("POST", url, JSON, b"{}") as answer:
            await answer.read(1024)
        await client.aclose()
    assert server.requests[0].startswith(
        b"POST /model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse?x=%2F HTTP/1.1\r\n"
    )


async def test_a_read_of_many_events_is_parsed_as_the_reader_asks_and_arrives_whole() -> None:
    pieces = [f"data: event {i}\n\n".encode() for i in range(3000)]

    async def one_write(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader, server)
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body)
        await writer.drain()
        await reader.read()

    client = H1Client(connect_timeout=5)
    async with raw_server(one_write) as server:
        async with client.exchange("POST", server.url, JSON, b"{}") as answer:
            first = await anext(answer.chunks())
            rest = [chunk async for chunk in answer.chunks()]
        await client.aclose()
    assert first == pieces[0]
    assert b"".join([first, *rest]) == b"".join(pieces)


async def test_an_https_upstream_is_verified_against_the_trusted_authorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = write_self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    listening = await asyncio.start_server(
        lambda reader, writer: keep_answering(RawServer(keep_answering), reader, writer),
        "127.0.0.1",
        0,
        ssl=context,
    )
    port = listening.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1/chat"
    try:
        untrusting = H1Client(connect_timeout=5)
        with pytest.raises(ConnectFailed):
            async with untrusting.exchange("POST", url, JSON, b"{}"):
                pass
        await untrusting.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(pair.cert))
        trusting = H1Client(connect_timeout=5)
        async with trusting.exchange("POST", url, JSON, b"{}") as answer:
            assert await answer.read(1024) == b'{"ok":true}'
        await trusting.aclose()
    finally:
        listening.close()
