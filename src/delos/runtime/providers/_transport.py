"""The HTTP exchange the adapters need, and the errors it raises, over two clients.

An adapter sends one request and reads one answer: its status, its headers (looked up by
lower-case name) and its body, whole (bounded) or chunk by chunk. :class:`UpstreamClient` is
exactly that and nothing more, so the hot path pays for no request or header model it does not
use. Two implementations:

- :class:`~delos.runtime.providers._h1.H1Client`: a small HTTP/1.1 client on asyncio, the
  default where the server runs;
- :class:`HttpxClient`: an ``httpx.AsyncClient``, for trio, for tests that give an httpx
  transport, and where a request must go out byte for byte as signed (SigV4).

Both raise only the neutral errors below, which ``_http.upstream_errors`` turns into ours; a
cancelled exchange closes its connection, so the upstream sees the request end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Protocol, cast

import httpx

__all__ = [
    "AnswerTooLarge",
    "BodyCutShort",
    "ConnectFailed",
    "ConnectionLost",
    "HttpxClient",
    "TransportError",
    "TransportTimeout",
    "UpstreamAnswer",
    "UpstreamClient",
    "as_upstream_client",
]


class TransportError(Exception):
    """The exchange failed below HTTP (no answer, or only part of one)."""


class ConnectFailed(TransportError):
    """No connection could be made."""


class TransportTimeout(TransportError):
    """The connect, or a read, took longer than the client's own bound."""


class ConnectionLost(TransportError):
    """The connection broke before the answer was complete."""


class BodyCutShort(ConnectionLost):
    """The connection closed inside the body (a chunk or a declared length left unfinished)."""


class AnswerTooLarge(Exception):
    """The body is larger than the caller's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


class UpstreamAnswer(Protocol):
    """A received answer; its body is read once, whole or chunk by chunk."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up case-insensitively (by lower-case name in our code)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, content-encoding undone."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body; :class:`AnswerTooLarge` past ``limit`` bytes."""
        ...


class UpstreamClient(Protocol):
    def exchange(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> AbstractAsyncContextManager[UpstreamAnswer]:
        """Send the request; the block gets the answer. Leaving it early (an error, a
        cancellation, a consumer that stops) closes the connection instead of reusing it."""
        ...

    async def aclose(self) -> None: ...


# -- httpx --------------------------------------------------------------------------------------


class _HttpxAnswer:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return _HttpxChunks(self._response.aiter_bytes())

    async def read(self, limit: int) -> bytes:
        response = self._response
        if response.is_stream_consumed:
            # A response built from bytes (httpx.MockTransport, respx) was read when it was made.
            if len(response.content) > limit:
                raise AnswerTooLarge(limit)
            return response.content
        body = bytearray()
        with _httpx_errors():
            async for data in response.aiter_bytes():
                body += data
                if len(body) > limit:
                    raise AnswerTooLarge(limit)
        return bytes(body)


class _HttpxChunks:
    """httpx's chunk iterator, raising our errors. A plain iterator, not an async generator: one
    left unfinished needs no finalising."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _HttpxChunks:
        return self

    async def __anext__(self) -> bytes:
        with _httpx_errors():
            return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Finish httpx's own body generators now rather than when collected (trio warns)."""
        await cast("AsyncGenerator[bytes, None]", self._chunks).aclose()


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Convert httpx's transport errors raised in the block into ours."""
    try:
        yield
    except httpx.TransportError as error:
        if isinstance(error, httpx.TimeoutException):
            raise TransportTimeout(type(error).__name__) from error
        if isinstance(error, httpx.ConnectError):
            raise ConnectFailed(type(error).__name__) from error
        if isinstance(error, httpx.RemoteProtocolError):
            raise BodyCutShort(type(error).__name__) from error
        if isinstance(error, httpx.ReadError | httpx.WriteError):
            raise ConnectionLost(type(error).__name__) from error
        raise TransportError(type(error).__name__) from error


class HttpxClient:
    """An ``httpx.AsyncClient`` as an :class:`UpstreamClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @asynccontextmanager
    async def exchange(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> AsyncIterator[UpstreamAnswer]:
        with _httpx_errors():
            request = self.client.stream(method, url, headers=headers, content=content)
            async with request as response:
                yield _HttpxAnswer(response)

    async def aclose(self) -> None:
        await self.client.aclose()


def as_upstream_client(client: UpstreamClient | httpx.AsyncClient) -> UpstreamClient:
    """``client`` itself, or an httpx client wrapped as one."""
    if isinstance(client, httpx.AsyncClient):
        return HttpxClient(client)
    return client
