"""A fixed number of slots (connections to one provider), taken with a bounded wait.

Waiting for a slot is the gateway's own queue, not the provider's slowness: the caller times it
apart from the provider's latency and never counts it against the provider's breaker. A caller
that would wait longer than it may gets :class:`SlotsExhausted` at once, never a silent wait.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

__all__ = ["Slots", "SlotsExhausted"]


class SlotsExhausted(Exception):
    """Every slot stayed taken for the whole allowed wait (seconds)."""

    def __init__(self, capacity: int, waited: float) -> None:
        super().__init__(f"all {capacity} slots busy for {waited:.2f} s")
        self.capacity = capacity
        self.waited = waited


class Slots:
    """``capacity`` slots; :meth:`acquire` takes one, :meth:`release` (synchronous, so it also
    runs while a cancellation unwinds) gives it back."""

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

    async def acquire(self, max_wait: float) -> float:
        """Take a slot within ``max_wait`` seconds; how long that took (seconds). Give it back
        with :meth:`release`. Raises :class:`SlotsExhausted` when none came free in time."""
        if self._free.value > 0:
            # No checkpoint when a slot is free: the caller's upstream call is one, and a
            # scheduling round per request is what a free slot should not cost.
            self._free.acquire_nowait()
            return 0.0
        started = self._clock()
        self.waiting += 1
        acquired = False
        try:
            with anyio.move_on_after(max_wait):
                await self._free.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            raise SlotsExhausted(self.capacity, self._clock() - started)
        return self._clock() - started

    def release(self) -> None:
        self._free.release()
