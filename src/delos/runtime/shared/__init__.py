"""Shared state for N replicas on Redis: limits, breakers, live replicas, response cache.

Layout:
    _store.py     SharedStore: the coredis client, per-call deadline, breaker around Redis,
                  fail-static accounting, background and held sends, key layout (KeySpace)
    _scripts.py   LuaScript and ScriptCaller: EVALSHA straight on a pooled connection
    _limits.py    SharedProviderLimiter: GCRA for RPM+TPM in one Lua script on the server's
                  clock, lost state started empty; the ProviderRateLimiter protocol it shares
                  with the local limiter
    _replicas.py  ReplicaRegistry: heartbeats and the live-replica count
    _breakers.py  SharedBreakers: published openings and a single half-open trial claimant
    _cache.py     SharedCache: the response cache's level 2 with cross-replica single flight

Nothing here is required: without ``DELOS_RUNTIME_REDIS_URL`` the gateway keeps its in-process
state. With it, every piece falls back to local state while Redis is slow or down.
"""

from delos.runtime.shared._breakers import SharedBreakers
from delos.runtime.shared._cache import SharedCache, SharedCacheStats
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
    KEY_VERSION,
    REDIS_BREAKER,
    KeySpace,
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
