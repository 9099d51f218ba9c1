"""The Redis client behind all shared state: short deadlines, a breaker around Redis, fail-static.

Every call goes through :meth:`SharedStore.run`: it is refused at once while the breaker around
Redis is open, bounded by ``deadline`` seconds otherwise, and its outcome feeds the breaker. A
refused, late or failed call raises :class:`SharedStateUnavailable`; callers catch it and fall
back to local state (fail-static). Each such decision is counted by (purpose, reason); the switch
between shared and local state is logged once each way, never per request. The breaker lets one
trial call through after its wait, so the store recovers by itself once Redis answers again.

Shared state is read and written by Lua scripts (`LuaScript`), each one round trip, called
with :meth:`SharedStore.run_script`: ``EVALSHA`` straight on a pooled connection, without
coredis's per-command layers (see `_scripts`). Work that must not wait on Redis (publishing a
pause or a breaker opening) is handed over synchronously with
:meth:`SharedStore.submit_script_nowait`, safe in a ``finally`` block or a cancelled scope, and
sent by a background task. Work that may wait a little (settling a reservation) is *held*
(:meth:`SharedStore.hold`): its owner sends it with its next script, or the store has it sent
once it has been held `SharedStoreConfig.settle_hold` seconds, whichever comes first, so a
steady stream of requests costs one round trip each rather than two.

Keys are laid out by :class:`KeySpace` (`_keys`); the coredis pool and its workarounds are in
`_connections`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio
import coredis
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.retry import NoRetryPolicy

from delos.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    Clock,
    Sleep,
)

from ._connections import connection_pool
from ._keys import KEY_VERSION, KeySpace
from ._scripts import LuaScript, ScriptArgument, ScriptCall, ScriptCaller

__all__ = [
    "KEY_VERSION",
    "REDIS_BREAKER",
    "KeySpace",
    "SharedStateUnavailable",
    "SharedStore",
    "SharedStoreConfig",
    "SharedStoreStats",
    "open_shared_store",
]

logger = logging.getLogger("delos.runtime.shared")

T = TypeVar("T")

#: The breaker around Redis: three failures among the last six calls open it; it retries after
#: half a second, backing off to two; one trial call decides. A short longest wait keeps the
#: replicas' returns close together (see `SharedStore.return_lag`); a trial costs one call at
#: most one deadline, every two seconds.
REDIS_BREAKER: Final = BreakerConfig(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=1.0,
    slow_call_duration=math.inf,  # a late call is cut at the deadline and counts as a failure
    window_size=6,
    minimum_calls=3,
    wait_in_open=0.5,
    open_backoff_multiplier=2.0,
    max_wait_in_open=2.0,
    half_open_trial_calls=1,
)

Client = coredis.Redis[bytes]
Command = Callable[[Client], Awaitable[T]]
#: What the background task sends: a purpose (for the counters) and the call to make.
_Submitted = tuple[str, Callable[[], Awaitable[object]]]


class SharedStateUnavailable(Exception):
    """Shared state could not be used for `purpose`; the caller falls back to local state.

    `reason` is ``"degraded"`` (the breaker around Redis is open), ``"timeout"`` (no answer
    within the deadline), ``"error"`` (connection or Redis error) or ``"queue_full"``.
    """

    def __init__(self, purpose: str, reason: str) -> None:
        super().__init__(purpose, reason)
        self.purpose = purpose
        self.reason = reason

    def __str__(self) -> str:
        return f"shared state unavailable for {self.purpose} ({self.reason})"


@dataclass(frozen=True, slots=True)
class SharedStoreConfig:
    """How the store talks to Redis. Durations are seconds.

    `deadline` bounds every call; opening a new connection is bounded by `connect_timeout` for
    TCP plus `deadline` for the handshake (both small: see `_ShieldedPool`). `pending_limit` is
    how many background commands may wait to be sent before new ones are dropped and counted.
    `settle_hold` is the longest held work waits for a script to ride along with (see
    `SharedStore.hold`). Raises `ValueError` naming the field when a value is out of range.
    """

    deadline: float = 0.05
    connect_timeout: float = 0.05
    settle_hold: float = 0.25
    namespace: str = "delos"
    breaker: BreakerConfig = field(default=REDIS_BREAKER)
    pending_limit: int = 10_000
    max_connections: int = 16

    def __post_init__(self) -> None:
        for name in ("deadline", "connect_timeout", "settle_hold"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"SharedStoreConfig.{name} must be finite and > 0, got {value!r}")
        if not self.namespace or any(c in self.namespace for c in "{}: "):
            raise ValueError(
                f"SharedStoreConfig.namespace must be a plain word: {self.namespace!r}"
            )
        for name in ("pending_limit", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"SharedStoreConfig.{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class SharedStoreStats:
    """Counters since the store was opened, for metrics.

    `fallbacks` counts decisions to use local state, by (purpose, reason); `degraded_episodes`
    counts switches from shared to local state; `pending` is the background commands waiting;
    `held` the owners holding work back (see `SharedStore.hold`).
    """

    degraded: bool
    calls: int
    failures: int
    fallbacks: Mapping[tuple[str, str], int]
    degraded_episodes: int
    pending: int
    held: int


class SharedStore:
    """A coredis client used under a deadline and a breaker. Open it with `open_shared_store`.

    `clock` (seconds) times the breaker's waits and `sleep` the hold on held work; the deadline
    is a cancel scope on anyio's clock. `scripts` calls scripts on the client's pool.
    """

    def __init__(
        self,
        client: Client,
        config: SharedStoreConfig,
        *,
        clock: Clock,
        where: str,
        send: MemoryObjectSendStream[_Submitted],
        scripts: ScriptCaller,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.client = client
        self.config = config
        self.keys = KeySpace(config.namespace)
        self.where = where
        self._clock = clock
        self._sleep = sleep
        self._send = send
        self._scripts = scripts
        self._breaker = CircuitBreaker(
            f"redis {where}", config.breaker, clock=clock, listeners=[self._on_transition]
        )
        self._fallbacks: Counter[tuple[str, str]] = Counter()
        self._calls = 0
        self._failures = 0
        self._episodes = 0
        self._degraded_at: float | None = None
        self._recovered_at: float | None = None
        self._last_error = ""
        self._pending = 0
        self._idle = anyio.Event()
        self._idle.set()
        #: Each held flush, and when (clock time) it was first held.
        self._held: dict[Callable[[], None], float] = {}
        self._something_held = anyio.Event()
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def degraded(self) -> bool:
        """True while shared state is not in use (the breaker around Redis is not closed)."""
        return self._breaker.state is not BreakerState.CLOSED

    @property
    def recovered_at(self) -> float | None:
        """The clock time shared state was last restored after being degraded (None: never)."""
        return self._recovered_at

    @property
    def return_lag(self) -> float:
        """The longest another replica may go on using local state after this one found Redis
        back: its breaker's longest wait in open, plus a second for a call (its heartbeat, at
        least) to try Redis again."""
        return self.config.breaker.max_wait_in_open + 1.0

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(degraded)` on every switch between shared and local state."""
        self._listeners.append(listener)

    def stats(self) -> SharedStoreStats:
        return SharedStoreStats(
            degraded=self.degraded,
            calls=self._calls,
            failures=self._failures,
            fallbacks=dict(self._fallbacks),
            degraded_episodes=self._episodes,
            pending=self._pending,
            held=len(self._held),
        )

    def fall_back(self, purpose: str, reason: str) -> SharedStateUnavailable:
        """Count one decision to use local state, and return the error that says so."""
        self._fallbacks[purpose, reason] += 1
        return SharedStateUnavailable(purpose, reason)

    async def run(self, purpose: str, command: Command[T]) -> T:
        """Run `command(client)` within the deadline, through the breaker around Redis.

        Raises `SharedStateUnavailable` (counted under `purpose`) when the breaker refuses, the
        deadline passes or the command fails. A call cancelled from outside counts for nothing.
        """
        client = self.client
        return await self._run(purpose, lambda: command(client))

    async def run_script(
        self, purpose: str, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArgument]
    ) -> Any:
        """Call `script` (one round trip), as `run` runs a command: same deadline, breaker,
        counting and `SharedStateUnavailable`."""
        scripts = self._scripts
        return await self._run(purpose, lambda: scripts.call(script, keys, args))

    async def run_scripts(self, purpose: str, calls: Sequence[ScriptCall]) -> list[Any]:
        """Several script calls in one round trip, as `run_script`; their replies, in order."""
        scripts = self._scripts
        return await self._run(purpose, lambda: scripts.call_many(calls))

    async def _run(self, purpose: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            permit = self._breaker.try_acquire()
        except CircuitOpenError:
            raise self.fall_back(purpose, "degraded") from None
        self._calls += 1
        started = self._clock()
        try:
            with anyio.move_on_after(self.config.deadline):
                result = await call()
                permit.record_success(self._clock() - started)
                return result
        except Exception as error:
            # The one place lower-layer errors become ours: connection refused or reset, a
            # Redis error reply (OOM under noeviction, a script error), a coredis timeout.
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
            permit.record_failure(self._clock() - started)
            raise self.fall_back(purpose, "error") from None
        except BaseException:
            permit.record_ignored()  # cancelled by the caller: says nothing about Redis
            raise
        self._failures += 1
        self._last_error = f"no answer within {self.config.deadline * 1000:.0f} ms"
        permit.record_failure(self._clock() - started)
        raise self.fall_back(purpose, "timeout")

    def submit_nowait(self, purpose: str, command: Command[object]) -> None:
        """Have `command` run in the background (as by `run`). Never blocks, never raises.

        While degraded, or with `pending_limit` commands already waiting, it is dropped and
        counted: what it would have written is local state's business until Redis is back.
        """
        client = self.client
        self._submit(purpose, lambda: command(client))

    def submit_script_nowait(
        self, purpose: str, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArgument]
    ) -> None:
        """Have `script` called in the background (as by `run_script`), as `submit_nowait`."""
        scripts = self._scripts
        self._submit(purpose, lambda: scripts.call(script, keys, args))

    def _submit(self, purpose: str, call: Callable[[], Awaitable[object]]) -> None:
        if self.degraded:
            self.fall_back(purpose, "degraded")
            return
        try:
            self._send.send_nowait((purpose, call))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.fall_back(purpose, "queue_full")
            return
        self._pending += 1
        if self._idle.is_set():
            self._idle = anyio.Event()

    def hold(self, flush: Callable[[], None]) -> None:
        """Have `flush()` called once `settle_hold` seconds after it was first held, from
        `wait_idle`, or when the store closes, whichever comes first; holding it again before
        then changes nothing. `flush` sends what its owner held back (typically with
        `submit_script_nowait`). An owner that sends it with a script of its own first (a
        settlement riding along with the next reservation) calls `release_hold`, so steady
        traffic never waits out a hold.
        """
        if flush not in self._held:
            self._held[flush] = self._clock()
            self._something_held.set()

    def release_hold(self, flush: Callable[[], None]) -> None:
        """Forget `flush`: its owner has sent what it held."""
        self._held.pop(flush, None)

    def flush_held(self) -> None:
        """Call every flush held now, however recently it was held."""
        self._flush(list(self._held))

    def _flush(self, due: list[Callable[[], None]]) -> None:
        for flush in due:
            del self._held[flush]
            try:
                flush()
            except Exception:
                logger.exception("shared store flush %r failed", flush)

    async def wait_idle(self) -> None:
        """Flush what is held, then wait until every command handed to `submit_nowait` (or
        `submit_script_nowait`) so far has been run or dropped."""
        self.flush_held()
        while self._pending:
            await self._idle.wait()

    async def _flush_held_when_due(self) -> None:
        hold = self.config.settle_hold
        while True:
            await self._something_held.wait()
            if not self._held:
                self._something_held = anyio.Event()
                continue
            # Zero when the oldest is overdue already (this task ran late, or the clock jumped).
            await self._sleep(max(min(self._held.values()) + hold - self._clock(), 0.0))
            now = self._clock()
            self._flush([flush for flush, since in self._held.items() if now - since >= hold])

    async def _run_submitted(self, receive: MemoryObjectReceiveStream[_Submitted]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < 64:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # coredis multiplexes concurrent commands on one connection: the batch goes out
                # as one pipelined write.
                async with anyio.create_task_group() as group:
                    for purpose, call in batch:
                        group.start_soon(self._run_quietly, purpose, call)
                self._pending -= len(batch)
                if not self._pending:
                    self._idle.set()

    async def _run_quietly(self, purpose: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await self._run(purpose, call)
        except SharedStateUnavailable:
            pass  # counted by _run()

    def _on_transition(self, _name: str, old: BreakerState, new: BreakerState) -> None:
        if old is BreakerState.CLOSED:
            self._episodes += 1
            self._degraded_at = self._clock()
            logger.warning(
                "shared state on Redis %s unavailable (%s): using local limits, breakers and "
                "cache until it answers again",
                self.where,
                self._last_error,
            )
        elif new is BreakerState.CLOSED:
            self._recovered_at = self._clock()
            down = self._recovered_at - (self._degraded_at or self._recovered_at)
            logger.warning(
                "shared state on Redis %s restored after %.1f s; %d fallback decisions so far",
                self.where,
                down,
                sum(self._fallbacks.values()),
            )
        else:
            return  # OPEN <-> HALF_OPEN: still degraded, nothing new to say
        for listener in list(self._listeners):
            try:
                listener(new is not BreakerState.CLOSED)
            except Exception:
                logger.exception("shared store listener %r failed", listener)


def _where(url: str) -> str:
    """host:port/db of a Redis URL, never its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


@asynccontextmanager
async def open_shared_store(
    url: str,
    config: SharedStoreConfig | None = None,
    *,
    clock: Clock = anyio.current_time,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[SharedStore]:
    """A `SharedStore` on the Redis at `url` (``redis://``, ``rediss://`` or ``unix://``).

    On entry it connects, waiting at most `connect_timeout` plus ten deadlines; an unreachable
    Redis only makes the first calls fall back, so the gateway starts whether or not Redis is
    up. On exit, held work is flushed and background commands get up to ten deadlines to go
    out before being abandoned.
    """
    config = config or SharedStoreConfig()
    pool = connection_pool(
        url,
        connect_timeout=config.connect_timeout,
        stream_timeout=config.deadline,
        max_connections=config.max_connections,
    )
    client: Client = coredis.Redis(connection_pool=pool, retry_policy=NoRetryPolicy())
    send, receive = anyio.create_memory_object_stream[_Submitted](config.pending_limit)
    store = SharedStore(
        client,
        config,
        clock=clock,
        sleep=sleep,
        where=_where(url),
        send=send,
        scripts=ScriptCaller(pool),
    )
    async with client, anyio.create_task_group() as group:
        group.start_soon(store._run_submitted, receive)
        group.start_soon(store._flush_held_when_due)
        # Connect now, with room for a cold start, so the first request's call is not also
        # the connection's set-up; a Redis that is away costs nothing more than this bound.
        with anyio.move_on_after(config.connect_timeout + 10 * config.deadline):
            try:
                await client.ping()
            except Exception:
                pass  # the first calls will fall back, and say why
        try:
            yield store
        finally:
            store.flush_held()
            send.close()
            with anyio.move_on_after(config.deadline * 10, shield=True):
                await store.wait_idle()
            group.cancel_scope.cancel()
