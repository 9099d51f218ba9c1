"""A fixed number of slots (connections to one provider), taken with a bounded wait.

Waiting for a slot is the gateway's own queue, not the provider's slowness: the caller times it
apart from the provider's latency and never counts it against the provider's breaker. A caller
that would wait longer than it may gets :class:`SlotsExhausted` at once, never a silent wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

__all__ = ["Slots", "SlotsExhausted"]


class SlotsExhausted(Exception):
    """Every slot stayed taken for the whole allowed wait (seconds)."""

    def __init__(self, capacity: int, waited: float) -> None:
        super().__init__(f"all {capacity} slots busy for {waited:.2f} s")
        self.capacity = capacity
        self.waited = waited


class Slots:
    """``capacity`` slots; :meth:`hold` takes one for the duration of a block."""

    def __init__(self, capacity: int, *, clock: Callable[[], float]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock
        self._free = anyio.Semaphore(capacity)
        #: Callers waiting for a slot right now.
        self.waiting = 0

    @property
    def in_use(self) -> int:
        return self.capacity - self._free.value

    @asynccontextmanager
    async def hold(self, max_wait: float) -> AsyncIterator[float]:
        """Take a slot within ``max_wait`` seconds and yield how long that took (seconds).

        Raises :class:`SlotsExhausted` when none came free in time.
        """
        started = self._clock()
        if self._free.value == 0:
            self.waiting += 1
            acquired = False
            try:
                with anyio.move_on_after(max_wait):
                    await self._free.acquire()
                    acquired = True
                if not acquired:
                    raise SlotsExhausted(self.capacity, self._clock() - started)
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()
        try:
            yield self._clock() - started
        finally:
            self._free.release()
