"""Streams' silence limits, watched without a cancel scope per event.

A relayed stream waits for its first token (up to one limit), then for each next event (up to
another). Entering a cancel scope around every wait costs more than relaying a small event; here
each wait costs two attribute writes and a clock read, and a watcher, asleep until the earliest
moment some wait could run over, cancels the stream's scope when one does. Time spent handing
an event to the client is not silence: the wait is marked over meanwhile.

:class:`SilenceWatcher` watches every stream of a gateway with one task, which the gateway's
task group runs (:meth:`SilenceWatcher.run`). A watcher whose task is not running (a router
used on its own) watches each stream with a task of its own instead, in a task group around
the stream: the same limits, at about ten times the cost per stream.
"""

from __future__ import annotations

import heapq
import itertools
import math
from types import TracebackType

import anyio
from anyio.abc import TaskGroup, TaskStatus

from delos.resilience import Clock, Sleep

__all__ = ["SilenceWatch", "SilenceWatcher"]


class SilenceWatch:
    """Marks the waits of one stream; ``fired`` once one ran over its limit."""

    __slots__ = (
        "_clock",
        "_due",
        "_limit",
        "_scope",
        "_shortest",
        "_since",
        "_watcher",
        "fired",
        "limit_hit",
    )

    def __init__(self, watcher: SilenceWatcher, scope: anyio.CancelScope, shortest: float) -> None:
        self._watcher = watcher
        self._clock = watcher.clock
        self._scope = scope
        #: The shortest limit any wait of this stream has: no wait can end sooner.
        self._shortest = shortest
        self._since: float | None = None
        self._limit = 0.0
        #: When the watcher looks at this stream next (inf: not queued, or the stream ended).
        self._due = math.inf
        self.fired = False
        #: The limit that ran over (seconds), once fired.
        self.limit_hit = 0.0

    def waiting(self, limit: float) -> None:
        """A wait for the upstream starts now; it may last ``limit`` seconds."""
        now = self._since = self._clock()
        self._limit = limit
        # Looking after the shortest limit, not this one, spares re-queueing when the next
        # wait is shorter (a first token may be given longer than each next event).
        look = now + (limit if limit < self._shortest else self._shortest)
        if look < self._due:  # the look queued would come too late
            self._watcher._queue(self, look)

    def done_waiting(self) -> None:
        """The wait is over (an event arrived; relaying it is not silence)."""
        self._since = None

    def _ended(self) -> None:
        """The stream ended: every look queued for it is skipped when its time comes."""
        self._due = -math.inf  # matches no entry

    def _look(self, now: float) -> float | None:
        """Fire if the current wait ran over; else when to look again (None: never)."""
        since, soonest = self._since, now + self._shortest
        if since is None:  # relaying: no wait runs; look again once one could have ended
            return soonest
        due = since + self._limit
        if due > now:
            return due if due < soonest else soonest
        self.fired = True
        self.limit_hit = self._limit
        self._scope.cancel()
        return None


class SilenceWatcher:
    """Watches the silence of streams: :meth:`watch` one, within ``async with``.

    ``clock`` and ``sleep`` are the guards' (a replacement moves ``clock()`` on across
    ``sleep``). The queue holds at most one live entry per stream: a stream's next look is
    only queued anew when it must come sooner than the one queued. Looks due within
    ``lateness`` seconds of each other are taken in one wake-up, so a wait that runs over ends
    its stream up to that late: the watcher then wakes a bounded number of times a second,
    however many streams come and go.
    """

    def __init__(self, clock: Clock, sleep: Sleep, *, lateness: float = 0.05) -> None:
        self.clock = clock
        self.sleep = sleep
        self._lateness = lateness
        #: (when to look, tie-breaker, stream); an entry whose time is no longer its stream's
        #: ``_due`` is stale and skipped.
        self._looks: list[tuple[float, int, SilenceWatch]] = []
        self._order = itertools.count()
        self._running = False
        self._nap: anyio.CancelScope | None = None
        self._wake_at = math.inf

    @property
    def running(self) -> bool:
        """Whether :meth:`run` watches the streams (else each stream runs a task of its own)."""
        return self._running

    def watch(self, shortest: float) -> WatchedStream:
        """The block a stream's waits happen in: a wait that runs over cancels the block (which
        then ends normally, with ``fired`` set on the :class:`SilenceWatch` it gives).
        ``shortest``: the shortest limit a wait of this stream will have (seconds)."""
        return WatchedStream(self, shortest)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch every stream until cancelled (in the gateway's task group)."""
        self._running = True
        task_status.started()
        try:
            while True:
                now = self.clock()
                self._look_at_due(now)
                queue = self._looks
                while queue and queue[0][0] != queue[0][2]._due:
                    heapq.heappop(queue)  # stale: not worth waking for
                self._wake_at = queue[0][0] + self._lateness if queue else math.inf
                with anyio.CancelScope() as self._nap:
                    if queue:
                        await self.sleep(max(self._wake_at - now, 0.0))
                    else:
                        await anyio.sleep_forever()
                self._nap = None
        finally:
            self._running = False
            self._nap = None

    def _queue(self, watch: SilenceWatch, due: float) -> None:
        watch._due = due
        heapq.heappush(self._looks, (due, next(self._order), watch))
        if due + self._lateness < self._wake_at and self._nap is not None:
            self._wake_at = due + self._lateness
            self._nap.cancel()  # asleep past this look: wake to sleep shorter

    def _look_at_due(self, now: float) -> None:
        queue = self._looks
        while queue and queue[0][0] <= now:
            due, _, watch = heapq.heappop(queue)
            if due != watch._due:
                continue  # stale: a sooner look was queued since, or the stream ended
            watch._due = math.inf
            again = watch._look(now)
            if again is not None:
                self._queue(watch, again)


class WatchedStream:
    """``async with watcher.watch(shortest) as silence``: see :meth:`SilenceWatcher.watch`."""

    __slots__ = ("_group", "_scope", "_shortest", "_watch", "_watcher")

    def __init__(self, watcher: SilenceWatcher, shortest: float) -> None:
        self._watcher = watcher
        self._shortest = shortest
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> SilenceWatch:
        watcher = self._watcher
        if not watcher.running:
            # A watcher of this stream's own, in a task group around it: on time, as it
            # wakes for this stream alone.
            watcher = SilenceWatcher(watcher.clock, watcher.sleep, lateness=0.0)
            group = self._group = anyio.create_task_group()
            await group.__aenter__()
            group.start_soon(watcher.run)
        scope = self._scope = anyio.CancelScope()
        watch = self._watch = SilenceWatch(watcher, scope, self._shortest)
        scope.__enter__()
        return watch

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._watch._ended()
        swallowed = bool(self._scope.__exit__(kind, error, traceback))
        group = self._group
        if group is None:
            return swallowed
        group.cancel_scope.cancel()
        if swallowed:
            kind = error = traceback = None
        try:
            await group.__aexit__(kind, error, traceback)
        except BaseExceptionGroup as raised:
            # The watcher raises nothing: what the group carries is the block's own error,
            # which the caller must see as it is (a ProviderError decides retries and
            # fallbacks).
            if len(raised.exceptions) == 1:
                inner = raised.exceptions[0]
                raise inner from inner.__cause__
            raise
        return swallowed
