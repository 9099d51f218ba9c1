"""Every Redis key the shared state uses: one version prefix, one hash tag per script's keys.

Key layout (:class:`KeySpace`), one version prefix for everything so a layout change never reads
old keys::

    delos:v1:limit:{openai}:rpm|tpm|pause|epoch    GCRA state, pause and state epoch of one provider
    delos:v1:breaker:{openai/gpt-4o}:open|half|trial   shared breaker state
    delos:v1:replicas                              live replicas (sorted set, expiry as score)
    delos:v1:cache:{<request key>}:value|lock|flight   the response cache's level 2

The ``{...}`` hash tags put the keys one Lua script touches in one Redis Cluster slot. Eviction
is instance-wide: ``maxmemory-policy`` samples keys from every logical database, so a separate
DB does not protect limiter keys from ``allkeys-lru``. Give the cache its own instance
(``maxmemory`` + ``allkeys-lru``) and keep limits and breakers on one with ``noeviction``, where
memory pressure makes writes fail, which degrades the store instead of silently resetting limits.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KEY_VERSION", "KeySpace"]

#: Bumped whenever a key's layout or a stored value's format changes.
KEY_VERSION: Final = 1


class KeySpace:
    """Every Redis key the gateway uses, under ``<namespace>:v<KEY_VERSION>:``."""

    __slots__ = ("prefix",)

    def __init__(self, namespace: str = "delos") -> None:
        self.prefix = f"{namespace}:v{KEY_VERSION}:"

    def limiter(self, provider: str) -> tuple[str, str, str, str]:
        """The requests TAT, tokens TAT, pause and epoch keys of `provider`, in one cluster slot.

        The epoch marks the state as present: it outlives the TATs, so a TAT that is absent
        while the epoch stands expired (a full bucket), and an absent epoch means the state is
        new or was lost (see `SharedProviderLimiter`).
        """
        base = f"{self.prefix}limit:{_tag(provider)}:"
        return base + "rpm", base + "tpm", base + "pause", base + "epoch"

    def breaker(self, name: str) -> tuple[str, str, str]:
        """The open, half-open and trial keys of breaker `name`, in one cluster slot."""
        base = f"{self.prefix}breaker:{_tag(name)}:"
        return base + "open", base + "half", base + "trial"

    @property
    def replicas(self) -> str:
        """The sorted set of live replicas."""
        return f"{self.prefix}replicas"

    def cache(self, key: str) -> tuple[str, str, str]:
        """The value, lock and hand-off keys of response-cache entry `key`, in one slot."""
        base = f"{self.prefix}cache:{_tag(key)}:"
        return base + "value", base + "lock", base + "flight"


def _tag(name: str) -> str:
    if "{" in name or "}" in name:
        raise ValueError(f"a shared-state name cannot contain braces: {name!r}")
    return "{" + name + "}"
