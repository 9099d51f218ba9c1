"""Breaker openings shared by every replica, and one replica at a time for the trial call.

Failures are still counted by each replica's own breakers (fast, no round trip per call). When
one opens, `SharedBreakers` publishes it: an ``open`` key living as long as the opening, and a
``half`` key living `probation` seconds longer. Every replica reads the keys of the breakers it
knows in one pipelined round trip every `poll_interval` seconds (a background task), so the
request path reads a local dict and never waits on Redis; a replica learns of an opening within
`poll_interval` plus one round trip. Polling rather than pub/sub: one connection, nothing to
resubscribe or replay after a disconnect, and a bounded, measured delay.

Shared states, as `BreakerState`:

    OPEN        the ``open`` key exists: skip the provider
    HALF_OPEN   ``open`` expired, ``half`` remains: exactly one replica may make a trial call,
                the one whose ``SET trial NX PX`` succeeds (`try_claim_trial`); the claim expires
                after `trial_ttl` seconds if its holder dies
    CLOSED      neither key: the local breakers alone decide

A successful trial deletes ``half`` (closed everywhere); a failed one publishes a new opening.
A trial that ends without a verdict (cancelled, a race loser, a 429) hands its claim back
(`release_trial`: deleted only while it still holds the claimant's token), so the next request
on any replica makes the trial at once instead of after the claim's expiry. While the store is
degraded every shared view reads CLOSED and every claim succeeds: local breakers only.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import anyio
from anyio.abc import TaskStatus

from delos.resilience import BreakerState, CircuitBreakerFactory, Clock, Sleep

from ._scripts import LuaScript, ScriptCall
from ._store import SharedStateUnavailable, SharedStore

__all__ = ["SharedBreakers"]

logger = logging.getLogger("delos.runtime.shared")

# KEYS: open, half, trial. ARGV: open ms, half ms. Never shortens an opening in force.
_PUBLISH_OPEN: Final = LuaScript(
    """
local open_ms, half_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < open_ms then redis.call('SET', KEYS[1], '1', 'PX', open_ms) end
if redis.call('PTTL', KEYS[2]) < half_ms then redis.call('SET', KEYS[2], '1', 'PX', half_ms) end
redis.call('DEL', KEYS[3])
return 1
"""
)

# KEYS: open, half, trial. Returns {ms left open, ms left half-open, trial claimed (0/1)}.
_VIEW: Final = LuaScript(
    """
return {redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[2]), redis.call('EXISTS', KEYS[3])}
""",
    readonly=True,
)

# KEYS: open, half, trial. ARGV: token, claim ms. Returns 1 claimed, 0 refused, 2 closed.
_CLAIM: Final = LuaScript(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return 1 end
return 0
"""
)

# KEYS: open, half, trial. ARGV: token. The trial succeeded: closed for every replica.
_CLOSE: Final = LuaScript(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# KEYS: trial. ARGV: token. A trial without a verdict: the claim is free again, unless it has
# expired and another replica holds it now.
_RELEASE: Final = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


@dataclass(slots=True)
class _View:
    state: BreakerState = BreakerState.CLOSED
    open_until: float = 0.0


class SharedBreakers:
    """The shared view of every breaker this replica knows, by breaker name.

    Durations are seconds. Start `run` in the gateway's task group; `attach` a local
    `CircuitBreakerFactory` so its openings are published.
    """

    def __init__(
        self,
        store: SharedStore,
        *,
        poll_interval: float = 0.25,
        probation: float = 60.0,
        trial_ttl: float = 60.0,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if not (poll_interval > 0 and probation > 0 and trial_ttl > 0):
            raise ValueError("poll_interval, probation and trial_ttl must be > 0 seconds")
        self._store = store
        self._poll_interval = poll_interval
        self._probation_ms = round(probation * 1000)
        self._trial_ms = str(round(trial_ttl * 1000))
        self._clock = clock
        self._sleep = sleep
        self._views: dict[str, _View] = {}
        self._tokens: dict[str, str] = {}
        self._listeners: list[Callable[[str, BreakerState], None]] = []

    def add_listener(self, listener: Callable[[str, BreakerState], None]) -> None:
        """Call `listener(name, state)` whenever a poll changes a breaker's shared state."""
        self._listeners.append(listener)

    def attach(self, factory: CircuitBreakerFactory) -> None:
        """Publish every opening of `factory`'s breakers, for as long as each one lasts, and
        close the shared state when a local breaker closes after its trial calls."""

        def on_transition(name: str, old: BreakerState, new: BreakerState) -> None:
            if new is BreakerState.OPEN:
                wait = factory.get_breaker(name).snapshot().seconds_until_half_open
                if wait:
                    self.publish_open(name, wait)
            elif new is BreakerState.CLOSED and old is BreakerState.HALF_OPEN:
                self.settle_trial(name, success=True)

        factory.add_listener(on_transition)

    def watch(self, name: str) -> None:
        """Include breaker `name` in the polls from now on."""
        self._views.setdefault(name, _View())

    def state(self, name: str) -> BreakerState:
        """Breaker `name`'s shared state as of the last poll (CLOSED while degraded)."""
        view = self._views.get(name)
        if view is None:
            self.watch(name)
            return BreakerState.CLOSED
        if view.state is BreakerState.OPEN and self._clock() >= view.open_until:
            view.state = BreakerState.HALF_OPEN  # the poll will confirm
        return view.state

    def seconds_until_half_open(self, name: str) -> float | None:
        """Seconds until the shared opening of `name` ends, or None when it is not open."""
        if self.state(name) is not BreakerState.OPEN:
            return None
        return max(self._views[name].open_until - self._clock(), 0.0)

    def publish_open(self, name: str, seconds: float) -> None:
        """Open `name` for every replica for `seconds` (never shortening an opening in force).

        Synchronous: this replica sees it at once, the others at their next poll.
        """
        if seconds <= 0:
            return
        view = self._views.setdefault(name, _View())
        view.state = BreakerState.OPEN
        view.open_until = max(view.open_until, self._clock() + seconds)
        open_ms = max(round(seconds * 1000), 1)
        keys, args = self._store.keys.breaker(name), [open_ms, open_ms + self._probation_ms]
        self._store.submit_script_nowait("breaker_publish", _PUBLISH_OPEN, keys, args)

    async def try_claim_trial(self, name: str) -> bool:
        """Whether this replica may call `name` now: True when it won the half-open trial
        claim, when the shared state is closed, or when the store is degraded (local breakers
        decide). False while open or while another replica holds the trial."""
        token = secrets.token_hex(8)
        keys = self._store.keys.breaker(name)
        try:
            outcome = await self._store.run_script(
                "breaker_trial", _CLAIM, keys, [token, self._trial_ms]
            )
        except SharedStateUnavailable:
            return True
        except BaseException:
            # Cancelled with the claim maybe taken: hand it back rather than let it expire.
            self._release(keys[2], token)
            raise
        if outcome == 1:
            self._tokens[name] = token
        return bool(outcome != 0)

    def release_trial(self, name: str) -> None:
        """End this replica's trial of `name` without a verdict (cancelled, a 429): hand the
        claim back so that any replica may make the trial at once. Synchronous, safe in a
        cancelled scope; nothing to do when this replica holds no claim."""
        token = self._tokens.pop(name, None)
        if token is not None:
            self._release(self._store.keys.breaker(name)[2], token)

    def _release(self, trial_key: str, token: str) -> None:
        self._store.submit_script_nowait("breaker_trial", _RELEASE, [trial_key], [token])

    def settle_trial(self, name: str, *, success: bool, reopen_seconds: float = 0.0) -> None:
        """End this replica's trial of `name`: a success closes it for every replica; a failure
        opens it again for `reopen_seconds` (the local breaker's back-off)."""
        token = self._tokens.pop(name, "")
        if not success:
            self.publish_open(name, reopen_seconds)
            return
        self._views[name] = _View()
        keys = self._store.keys.breaker(name)
        self._store.submit_script_nowait("breaker_publish", _CLOSE, keys, [token])

    async def refresh(self) -> None:
        """Read the shared state of every watched breaker: one pipelined round trip."""
        names = list(self._views)
        if not names:
            return
        calls: list[ScriptCall] = [(_VIEW, self._store.keys.breaker(name), ()) for name in names]
        try:
            replies = await self._store.run_scripts("breaker_poll", calls)
        except SharedStateUnavailable:
            replies = [[-2, -2, 0]] * len(names)  # local breakers only
        now = self._clock()
        for name, (open_ms, half_ms, _claimed) in zip(names, replies, strict=True):
            old = self._views.get(name)
            if open_ms > 0:
                view = _View(BreakerState.OPEN, now + open_ms / 1000)
            elif old is not None and old.state is BreakerState.OPEN and old.open_until > now:
                # Nothing shortens an opening, so one this replica published and the poll does
                # not show yet (still in flight, or Redis is away) stands until it ends.
                view = old
            elif half_ms > 0:
                view = _View(BreakerState.HALF_OPEN)
            else:
                view = _View()
            self._views[name] = view
            if old is None or old.state is not view.state:
                for listener in list(self._listeners):
                    try:
                        listener(name, view.state)
                    except Exception:
                        logger.exception("shared breaker listener %r failed", listener)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll every `poll_interval` seconds until cancelled."""
        await self.refresh()
        task_status.started()
        while True:
            await self._sleep(self._poll_interval)
            await self.refresh()
