"""The coredis connection pool behind the shared store, with two of coredis 6.9's leaks closed.

A connection's set-up runs shielded from the caller's deadline (a cancelled set-up otherwise
loses its pool slot), and a connection that could not be opened closes the memory streams
coredis made for it (otherwise left to the garbage collector, which warns about each).
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskStatus
from coredis.connection import BaseConnection, TCPConnection, UnixDomainSocketConnection
from coredis.pool import ConnectionPool

__all__ = ["connection_pool"]


def connection_pool(
    url: str, *, connect_timeout: float, stream_timeout: float, max_connections: int
) -> ConnectionPool[Any]:
    """A pool of connections to the Redis at `url`, answers as bytes."""
    pool = _ShieldedPool.from_url(
        url,
        connect_timeout=connect_timeout,
        stream_timeout=stream_timeout,
        max_connections=max_connections,
        decode_responses=False,
    )
    tcp = pool.connection_class is TCPConnection
    pool.connection_class = _ClosingTCPConnection if tcp else _ClosingUnixConnection
    return pool


class _ShieldedPool(ConnectionPool[Any]):
    """coredis's pool, with connection set-up shielded from the caller's cancellation.

    coredis 6.9 takes a pool slot before opening a connection and returns it only if opening
    fails by itself: a caller cancelled meanwhile (our deadline, on asyncio) loses the slot, and
    after `max_connections` such losses every call waits forever. Shielded, set-up instead runs
    to its own end, bounded by `connect_timeout` and the handshake's `stream_timeout`.
    """

    async def get_connection(self, **kwargs: Any) -> Any:
        with anyio.CancelScope(shield=True):
            return await super().get_connection(**kwargs)


class _ClosingConnection(BaseConnection):
    """A coredis connection that closes its buffers when it cannot be opened.

    coredis 6.9 creates a connection's memory streams in ``__init__`` and closes them only once
    the socket is open; a refused or timed-out connection leaves them to the garbage collector,
    which warns about each (and warnings are errors here). Closing twice is harmless.
    """

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            for stream in (
                self._write_buffer_in,
                self._write_buffer_out,
                self._push_message_buffer_in,
                self._push_message_buffer_out,
                self._streamed_message_buffer_in,
                self._streamed_message_buffer_out,
            ):
                stream.close()


class _ClosingTCPConnection(_ClosingConnection, TCPConnection):
    pass


class _ClosingUnixConnection(_ClosingConnection, UnixDomainSocketConnection):
    pass
