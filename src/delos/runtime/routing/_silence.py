"""A stream's silence limits, watched by one task instead of a cancel scope per event.

A relayed stream waits for its first token (up to one limit), then for each next event (up to
another). Entering a cancel scope around every wait costs more than relaying a small event; here
each wait costs two attribute writes and a clock read, and one watcher task, asleep until the
earliest moment the current wait could run over, cancels the stream's scope when one does.
Time spent handing an event to the client is not silence: the wait is marked over meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from delos.resilience import Clock, Sleep

__all__ = ["SilenceWatch", "watch_silence"]


class SilenceWatch:
    """Marks the waits of one stream; ``fired`` once one ran over its limit."""

    __slots__ = ("_clock", "_limit", "_nap", "_scope", "_since", "_wake_at", "fired", "limit_hit")

    def __init__(self, clock: Clock, scope: anyio.CancelScope) -> None:
        self._clock = clock
        self._scope = scope
        self._since: float | None = None
        self._limit = 0.0
        #: The watcher's current sleep, and when it ends (on ``clock``).
        self._nap: anyio.CancelScope | None = None
        self._wake_at = math.inf
        self.fired = False
        #: The limit that ran over (seconds), once fired.
        self.limit_hit = 0.0

    def waiting(self, limit: float) -> None:
        """A wait for the upstream starts now; it may last ``limit`` seconds."""
        now = self._since = self._clock()
        self._limit = limit
        if now + limit < self._wake_at and self._nap is not None:
            self._nap.cancel()  # the watcher sleeps past this wait's end: wake it to re-arm

    def done_waiting(self) -> None:
        """The wait is over (an event arrived; relaying it is not silence)."""
        self._since = None

    async def _watch(self, sleep: Sleep) -> None:
        while True:
            now = self._clock()
            since = self._since
            if since is None:
                left = self._limit or 1.0
            else:
                left = since + self._limit - now
                if left <= 0:
                    self.fired = True
                    self.limit_hit = self._limit
                    self._scope.cancel()
                    return
            self._wake_at = now + left
            with anyio.CancelScope() as self._nap:
                await sleep(left)
            self._nap = None


@asynccontextmanager
async def watch_silence(clock: Clock, sleep: Sleep) -> AsyncIterator[SilenceWatch]:
    """A :class:`SilenceWatch` over the block: a wait that runs over cancels the block (which
    then ends normally, with ``fired`` set). The watcher task ends with the block."""
    try:
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                watch = SilenceWatch(clock, scope)
                group.start_soon(watch._watch, sleep)
                try:
                    yield watch
                finally:
                    group.cancel_scope.cancel()
    except BaseExceptionGroup as raised:
        # The watcher raises nothing: what the group carries is the block's own error, which
        # the caller must see as it is (a ProviderError decides retries and fallbacks).
        if len(raised.exceptions) == 1:
            error = raised.exceptions[0]
            raise error from error.__cause__
        raise
