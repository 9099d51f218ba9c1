"""Shared state for N replicas on Redis: limits, breakers, live replicas, response cache.

Layout:
    _store.py          SharedStore: the coredis client, per-call deadline, breaker around Redis,
                       fail-static accounting, background and held sends
    _connections.py    the coredis connection pool, with two of its leaks closed
    _keys.py           KeySpace: every key, under one version prefix and per-script hash tags
    _scripts.py        LuaScript and ScriptCaller: EVALSHA straight on a pooled connection
    _limit_scripts.py  the limiter's Lua: GCRA for RPM+TPM on the server's clock, settlements,
                       pauses, lost state started empty
    _limits.py         SharedProviderLimiter: one reservation per request, settlements riding
                       along, the fail-static share and the return from it; the
                       ProviderRateLimiter protocol it shares with the local limiter
    _replicas.py       ReplicaRegistry: heartbeats and the live-replica count
    _breakers.py       SharedBreakers: published openings and a single half-open trial claimant
    _cache.py          SharedCache: the response cache's level 2 with cross-replica single flight

Nothing here is required: without ``DELOS_RUNTIME_REDIS_URL`` the gateway keeps its in-process
state. With it, every piece falls back to local state while Redis is slow or down.
"""

from delos.runtime.shared._breakers import SharedBreakers
from delos.runtime.shared._cache import SharedCache, SharedCacheStats
from delos.runtime.shared._keys import KEY_VERSION, KeySpace
from delos.runtime.shared._limits import (
    ARRIVAL_SPREAD,
    ProviderRateLimiter,
    RateReservation,
    SharedProviderLimiter,
    SharedReservation,
)
from delos.runtime.shared._replicas import ReplicaRegistry
from delos.runtime.shared._scripts import LuaScript
from delos.runtime.shared._store import (
    REDIS_BREAKER,
    SharedStateUnavailable,
    SharedStore,
    SharedStoreConfig,
    SharedStoreStats,
    open_shared_store,
)

__all__ = [
    "ARRIVAL_SPREAD",
    "KEY_VERSION",
    "REDIS_BREAKER",
    "KeySpace",
    "LuaScript",
    "ProviderRateLimiter",
    "RateReservation",
    "ReplicaRegistry",
    "SharedBreakers",
    "SharedCache",
    "SharedCacheStats",
    "SharedProviderLimiter",
    "SharedReservation",
    "SharedStateUnavailable",
    "SharedStore",
    "SharedStoreConfig",
    "SharedStoreStats",
    "open_shared_store",
]
