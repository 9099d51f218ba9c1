"""Lua scripts called by SHA straight on a pooled connection: every shared-state call is one.

coredis's `Script` sends each call down its generic command path: a command object, a retry
policy, a telemetry span, a pool lease (shielded here, see `_ShieldedPool`) and a typed
transform. Profiled on a gateway at 50 requests/s, that path cost more gateway CPU than the
round trip itself. A script call needs none of it: `ScriptCaller` keeps one connection of the
pool and queues ``EVALSHA`` on it. coredis multiplexes requests on a connection (the replies
come back in order), as its own client does once it has released a connection to the pool and
waits for the reply, so the connection stays in the pool for every other use. A broken
connection is replaced from the pool, under the pool's set-up bounds. A Redis that lost its
scripts (restarted) answers NOSCRIPT: the script is loaded and called again, once.

Replies come back as RESP3 values with bytes undecoded (integers, bytes, lists of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coredis.connection import BaseConnection
from coredis.exceptions import NoScriptError
from coredis.pool import ConnectionPool

__all__ = ["LuaScript", "ScriptArgument", "ScriptCall", "ScriptCaller"]

ScriptArgument = str | bytes | int
ScriptCall = tuple["LuaScript", Sequence[str], Sequence[ScriptArgument]]


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script and its SHA1. `readonly` scripts run with ``EVALSHA_RO`` (a replica may
    serve them)."""

    source: str
    readonly: bool = False
    sha: bytes = field(init=False, repr=False)
    command: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest().encode())
        object.__setattr__(self, "command", b"EVALSHA_RO" if self.readonly else b"EVALSHA")


class ScriptCaller:
    """Calls scripts on one connection of `pool`, taking another when it breaks.

    Raises what coredis raises for the connection or the reply (`ConnectionError`,
    `TimeoutError` past the pool's ``stream_timeout``, a `ResponseError` from the script).
    """

    __slots__ = ("_connection", "_pool")

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self._pool = pool
        self._connection: BaseConnection | None = None

    async def call(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArgument]
    ) -> Any:
        """One script call: one request on the connection."""
        connection = await self._usable_connection()
        try:
            return await _request(connection, script, keys, args)
        except NoScriptError:
            await connection.create_request(b"SCRIPT LOAD", script.source, decode=False)
            return await _request(connection, script, keys, args)

    async def call_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Several script calls in one write (a pipeline without coredis's pipeline object);
        the replies, in order."""
        connection = await self._usable_connection()
        requests = [_request(connection, *call) for call in calls]
        replies: list[Any] = []
        for request, (script, keys, args) in zip(requests, calls, strict=True):
            try:
                replies.append(await request)
            except NoScriptError:
                await connection.create_request(b"SCRIPT LOAD", script.source, decode=False)
                replies.append(await _request(connection, script, keys, args))
        return replies

    async def _usable_connection(self) -> BaseConnection:
        connection = self._connection
        if connection is None or not connection.usable:
            # Leased and given back at once: the pool keeps it for its other users, and
            # coredis queues every request on it in order.
            connection = await self._pool.get_connection()
            self._pool.release(connection)
            self._connection = connection
        return connection


def _request(
    connection: BaseConnection,
    script: LuaScript,
    keys: Sequence[str],
    args: Sequence[ScriptArgument],
) -> Any:
    return connection.create_request(
        script.command, script.sha, len(keys), *keys, *args, decode=False
    )
