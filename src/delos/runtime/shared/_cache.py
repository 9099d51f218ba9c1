"""The response cache's level 2 on Redis, with single flight across replicas.

Level 1 stays the in-process `delos.runtime.cache.ResponseCache`; this level sits under it:
`SharedCache.for_level_one(key, compute)` is the ``compute`` to hand to level 1's
``get_or_compute``, so a level-1 miss asks Redis before the provider, and level 1 keeps what
either returns. Entries live under ``delos:v<KEY_VERSION>:cache:`` with a time to live, and
values above `max_value_bytes` are never stored.

Single flight, per cache key: one Lua script returns the value, or takes the lock
(``SET NX PX`` with a random token) for the caller, who then computes; callers that find the
lock taken poll (backing off from `first_poll` to `max_poll` seconds) for at most `max_wait`
seconds, then compute themselves. The leader publishes the answer and releases the lock in one
script that deletes the lock only if it still holds the leader's token, so a leader whose lock
expired never releases its successor's. An answer that may not be cached (or is too large) is
handed to the waiting callers under a short-lived ``flight`` key instead, as level 1 hands an
uncacheable answer to its followers. A leader that fails releases the lock at once, and the next
caller to poll leads. While the store is degraded every call computes at once: level 1 alone
still coalesces within the process.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import anyio

from delos.resilience import Clock, Sleep
from delos.runtime.cache import CachedAnswer, CacheOutcome

from ._scripts import LuaScript, ScriptArgument
from ._store import Client, SharedStateUnavailable, SharedStore

__all__ = ["SharedCache", "SharedCacheStats"]

Compute = Callable[[], Awaitable[tuple[CachedAnswer, bool]]]

# KEYS: value, lock, flight. ARGV: token, lock ms, read the hand-off (0/1).
# Returns {1, value} | {3, hand-off} | {2} the lock is the caller's | {0} someone else's.
_LOOKUP: Final = LuaScript(
    """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if ARGV[3] == '1' then
  local handed = redis.call('GET', KEYS[3])
  if handed then return {3, handed} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return {2} end
return {0}
"""
)

# KEYS: value, lock, flight. ARGV: token, payload, value ms (0: hand-off only), hand-off ms.
# Returns 1 when the lock was still the caller's and is now released, else 0.
_PUBLISH: Final = LuaScript(
    """
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
else
  redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[4]))
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""
)

# KEYS: lock. ARGV: token. Deletes the lock only while it holds the token.
_RELEASE: Final = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

# Handed to waiting callers when the leader's answer cannot be shared: compute yourselves.
_GO_AHEAD: Final = b"[]"


@dataclass(frozen=True, slots=True)
class SharedCacheStats:
    """Counters since the cache was built. A `get_or_compute` call counts as one of `hits`,
    `misses` (it computed) or `coalesced` (another replica's computation answered it);
    `waited_out` are misses that gave up waiting for a leader; `too_large` answers were not
    stored; `waiting` callers are polling for a leader now."""

    hits: int
    misses: int
    coalesced: int
    waited_out: int
    too_large: int
    waiting: int


class SharedCache:
    """Answers by cache key on Redis. Durations are seconds; sizes bytes.

    Raises `ValueError` on a non-positive bound.
    """

    def __init__(
        self,
        store: SharedStore,
        *,
        default_ttl_seconds: float,
        max_value_bytes: int = 1 << 20,
        lock_ttl_seconds: float = 60.0,
        max_wait: float = 10.0,
        first_poll: float = 0.01,
        max_poll: float = 0.25,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        bounds = (default_ttl_seconds, max_value_bytes, lock_ttl_seconds, first_poll, max_poll)
        if not all(bound > 0 for bound in bounds) or max_wait < 0:
            raise ValueError("SharedCache bounds must be > 0 (max_wait >= 0)")
        self._store = store
        self._default_ttl_ms = _millis(default_ttl_seconds)
        self._max_value_bytes = max_value_bytes
        self._lock_ms = str(_millis(lock_ttl_seconds))
        # Waiting callers poll at most every max_poll: a hand-off outlives a few polls.
        self._handoff_ms = str(_millis(max_poll * 4))
        self._max_wait = max_wait
        self._first_poll = first_poll
        self._max_poll = max_poll
        self._clock = clock
        self._sleep = sleep
        self._hits = self._misses = self._coalesced = 0
        self._waited_out = self._too_large = self._waiting = 0

    @property
    def stats(self) -> SharedCacheStats:
        return SharedCacheStats(
            hits=self._hits,
            misses=self._misses,
            coalesced=self._coalesced,
            waited_out=self._waited_out,
            too_large=self._too_large,
            waiting=self._waiting,
        )

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer stored under `key`, or None (also when unreadable or Redis is away)."""
        value_key = self._store.keys.cache(key)[0]

        async def command(client: Client) -> bytes | None:
            return await client.get(value_key)

        try:
            payload = await self._store.run("cache_get", command)
        except SharedStateUnavailable:
            return None
        decoded = _decode(payload) if payload is not None else None
        return decoded[0] if decoded else None

    async def put(self, key: str, answer: CachedAnswer, ttl_seconds: float | None = None) -> bool:
        """Store `answer` under `key` for `ttl_seconds` (default: the cache's). Returns False,
        storing nothing, when it is larger than `max_value_bytes` or Redis is away."""
        payload = _encode(answer, cacheable=True)
        if len(payload) > self._max_value_bytes:
            self._too_large += 1
            return False
        value_key = self._store.keys.cache(key)[0]
        ttl_ms = self._ttl_ms(ttl_seconds)

        async def command(client: Client) -> bool:
            return await client.set(value_key, payload, px=ttl_ms)

        try:
            return await self._store.run("cache_put", command)
        except SharedStateUnavailable:
            return False

    async def get_or_compute(
        self, key: str, compute: Compute, *, ttl_seconds: float | None = None
    ) -> tuple[CachedAnswer, CacheOutcome]:
        """The answer under `key`, computed by at most one replica at a time (see the module
        docstring). `compute` returns ``(answer, cacheable)``; errors from it propagate to the
        caller that ran it."""
        answer, outcome, _ = await self._resolve(key, compute, self._ttl_ms(ttl_seconds))
        return answer, outcome

    def for_level_one(
        self, key: str, compute: Compute, *, ttl_seconds: float | None = None
    ) -> Compute:
        """`compute` behind this level, in the shape level 1's ``get_or_compute`` takes: what it
        returns is cacheable exactly when level 1 may keep it too."""
        ttl_ms = self._ttl_ms(ttl_seconds)

        async def through() -> tuple[CachedAnswer, bool]:
            answer, _, cacheable = await self._resolve(key, compute, ttl_ms)
            return answer, cacheable

        return through

    async def _resolve(
        self, key: str, compute: Compute, ttl_ms: int
    ) -> tuple[CachedAnswer, CacheOutcome, bool]:
        keys = list(self._store.keys.cache(key))
        token = secrets.token_hex(16)
        give_up_at = self._clock() + self._max_wait
        delay = self._first_poll
        waited = False
        while True:
            args = [token, self._lock_ms, "1" if waited else "0"]
            try:
                reply = await self._store.run_script("cache_lookup", _LOOKUP, keys, args)
            except SharedStateUnavailable:
                return await self._compute_alone(keys, compute, ttl_ms, share=False)
            kind = reply[0]
            if kind == 2:
                return await self._lead(keys, token, compute, ttl_ms)
            if kind in (1, 3):
                decoded = _decode(reply[1]) if isinstance(reply[1], bytes) else None
                if decoded is None:  # a go-ahead, or a value this version cannot read
                    return await self._compute_alone(keys, compute, ttl_ms, share=True)
                if waited:
                    self._coalesced += 1
                    return decoded[0], "coalesced", decoded[1]
                self._hits += 1
                return decoded[0], "hit", True
            if self._clock() + delay > give_up_at:
                self._waited_out += 1
                return await self._compute_alone(keys, compute, ttl_ms, share=True)
            self._waiting += 1
            try:
                await self._sleep(delay)
            finally:
                self._waiting -= 1
            waited = True
            delay = min(delay * 2, self._max_poll)

    async def _lead(
        self, keys: list[str], token: str, compute: Compute, ttl_ms: int
    ) -> tuple[CachedAnswer, CacheOutcome, bool]:
        self._misses += 1
        try:
            answer, cacheable = await compute()
        except BaseException:
            # Synchronous hand-over: safe while being cancelled. The next poller leads.
            self._submit(_RELEASE, keys[1:2], [token])
            raise
        payload = _encode(answer, cacheable)
        if len(payload) > self._max_value_bytes:
            self._too_large += 1
            payload, value_ms = _GO_AHEAD, 0
        else:
            value_ms = ttl_ms if cacheable else 0
        self._submit(_PUBLISH, keys, [token, payload, str(value_ms), self._handoff_ms])
        return answer, "miss", cacheable

    async def _compute_alone(
        self, keys: list[str], compute: Compute, ttl_ms: int, *, share: bool
    ) -> tuple[CachedAnswer, CacheOutcome, bool]:
        self._misses += 1
        answer, cacheable = await compute()
        payload = _encode(answer, cacheable)
        if share and cacheable and len(payload) <= self._max_value_bytes:
            value_key = keys[0]

            async def command(client: Client) -> object:
                return await client.set(value_key, payload, px=ttl_ms)

            self._store.submit_nowait("cache_put", command)
        return answer, "miss", cacheable

    def _submit(self, script: LuaScript, keys: list[str], args: list[ScriptArgument]) -> None:
        self._store.submit_script_nowait("cache_put", script, keys, args)

    def _ttl_ms(self, ttl_seconds: float | None) -> int:
        if ttl_seconds is None:
            return self._default_ttl_ms
        if not ttl_seconds > 0:
            raise ValueError(f"a time to live must be positive, got {ttl_seconds!r} seconds")
        return _millis(ttl_seconds)


def _millis(seconds: float) -> int:
    return max(round(seconds * 1000), 1)


def _encode(answer: CachedAnswer, cacheable: bool) -> bytes:
    document = [
        answer.content,
        answer.finish_reason,
        answer.provider,
        answer.model,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.usage_estimated,
        str(answer.cost_usd),
        cacheable,
    ]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def _decode(payload: bytes) -> tuple[CachedAnswer, bool] | None:
    """The answer and its cacheable flag, or None for a go-ahead or an unreadable value."""
    try:
        document = json.loads(payload.decode("utf-8", "surrogatepass"))
        (content, finish, provider, model, prompt, completion, estimated, cost, cacheable) = (
            document
        )
        answer = CachedAnswer(
            content=content,
            finish_reason=finish,
            provider=provider,
            model=model,
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            usage_estimated=bool(estimated),
            cost_usd=Decimal(cost),
        )
    except (ValueError, TypeError, ArithmeticError):
        return None
    return answer, bool(cacheable)
