"""Replicas announce themselves with heartbeats and count each other.

One sorted set holds every replica, scored by the server time (milliseconds) its heartbeat
expires: a heartbeat adds or refreshes this replica, drops the expired ones and counts the rest,
all in one Lua script on Redis's clock. That is a heartbeat key with a time to live per replica,
written so that counting needs no ``SCAN`` (slow on a big keyspace, and per node on a cluster).
The set itself expires when every replica has stopped beating.

The count is what the fail-static limiters divide the configured limits by. It is the last one
known: while Redis is away nobody can beat, so the count stays as it was when Redis left.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Final

import anyio
from anyio.abc import TaskStatus

from delos.resilience import Sleep

from ._scripts import LuaScript
from ._store import Client, SharedStateUnavailable, SharedStore

__all__ = ["ReplicaRegistry"]

logger = logging.getLogger("delos.runtime.shared")

# KEYS: the replica set. ARGV: replica id, heartbeat time to live (ms). Returns the live count.
_HEARTBEAT: Final = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS: the replica set. Returns the count of unexpired heartbeats, writing nothing.
_COUNT: Final = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)


class ReplicaRegistry:
    """This replica's heartbeat, and the number of live replicas (always at least 1: this one).

    `interval` and `ttl` are seconds: a replica that misses beats for `ttl` no longer counts.
    Start `run` in the gateway's task group; it withdraws the replica when cancelled.
    """

    def __init__(
        self,
        store: SharedStore,
        *,
        replica_id: str | None = None,
        interval: float = 1.0,
        ttl: float = 5.0,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError(f"need 0 < interval < ttl, got interval={interval!r}, ttl={ttl!r}")
        self.replica_id = (
            replica_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._store = store
        self._key = store.keys.replicas
        self._interval = interval
        self._ttl_ms = str(round(ttl * 1000))
        self._sleep = sleep
        self._live = 1

    @property
    def live_replicas(self) -> int:
        """The last known number of live replicas, this one included."""
        return self._live

    async def heartbeat(self) -> int:
        """Announce this replica once and return the live count (the last known one when Redis
        is unavailable)."""
        args = [self.replica_id, self._ttl_ms]
        try:
            live = int(await self._store.run_script("replicas", _HEARTBEAT, [self._key], args))
        except SharedStateUnavailable:
            return self._live
        if live != self._live:
            logger.info("live replicas: %d (was %d)", live, self._live)
        self._live = max(live, 1)
        return self._live

    async def count(self) -> int:
        """The live count without announcing this replica (last known when unavailable)."""
        try:
            return max(int(await self._store.run_script("replicas", _COUNT, [self._key], [])), 1)
        except SharedStateUnavailable:
            return self._live

    async def withdraw(self) -> None:
        """Stop counting this replica now rather than when its heartbeat expires."""
        member = self.replica_id

        async def command(client: Client) -> int:
            return await client.zrem(self._key, [member])

        try:
            await self._store.run("replicas", command)
        except SharedStateUnavailable:
            pass  # the heartbeat expires by itself

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat every `interval` seconds until cancelled, then withdraw (shielded, bounded by
        the store's deadline)."""
        await self.heartbeat()
        task_status.started()
        try:
            while True:
                await self._sleep(self._interval)
                await self.heartbeat()
        finally:
            with anyio.CancelScope(shield=True):
                await self.withdraw()
