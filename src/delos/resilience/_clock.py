"""Injected time: the `Clock` protocol, the `Sleep` that goes with it, and a manually driven
`FakeClock` for tests.

Every time-dependent object in `delos.resilience` takes a clock (a zero-argument callable
returning seconds on a monotonic scale) instead of reading the system time, so state machines
can be tested by moving time by hand. Code that waits takes a sleep too: the pair must agree
(``clock()`` moves on by ``s`` across ``sleep(s)``), as `anyio.current_time` and `anyio.sleep`
do, on a real or on trio's virtual clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel
import sniffio

__all__ = ["BackendClock", "Clock", "FakeClock", "Sleep", "backend_clock", "reads_anyio_time"]


class Clock(Protocol):
    """A monotonic time source in seconds: `time.monotonic`, `anyio.current_time`, a `FakeClock`."""

    def __call__(self) -> float: ...


#: Waits the given number of seconds on the matching clock: `anyio.sleep`, `FakeClock.sleep`.
Sleep = Callable[[float], Awaitable[None]]


class BackendClock:
    """anyio's clock, the one cancel-scope deadlines run on, read without anyio's per-call
    lookup of the running backend (which costs more than reading the time): on asyncio the
    monotonic clock the event loop's ``time`` reads, at full resolution (uvloop's rounds it to
    milliseconds, too coarse for a sub-millisecond latency); ``trio.current_time`` on trio
    (virtual under ``MockClock``).

    Made by :func:`backend_clock` inside the event loop it reads; it reads that loop only.
    """

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read

    def __call__(self) -> float:
        return self._read()


def backend_clock() -> Clock:
    """The running event loop's clock as a :class:`BackendClock`; `anyio.current_time` itself
    when no event loop runs (it then resolves the backend at each call)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return anyio.current_time
    if library == "asyncio":
        loop_time = asyncio.get_running_loop().time
        # asyncio's own loop reads time.monotonic; uvloop reads the same clock (libuv's
        # CLOCK_MONOTONIC) in whole milliseconds. Either way time.monotonic is that clock, exact.
        return BackendClock(time.monotonic if _reads_monotonic(loop_time) else loop_time)
    if library == "trio":
        import trio

        return BackendClock(trio.current_time)
    return anyio.current_time


def _reads_monotonic(loop_time: Callable[[], float]) -> bool:
    """Whether an event loop's ``time`` reads ``time.monotonic``'s clock (to within the
    millisecond a coarser loop rounds it to)."""
    return abs(loop_time() - time.monotonic()) < 0.002


def reads_anyio_time(clock: Clock) -> bool:
    """Whether ``clock`` reads anyio's time, so its readings compare with cancel-scope deadlines."""
    return clock is anyio.current_time or isinstance(clock, BackendClock)


class FakeClock:
    """A clock whose time moves only when the test says so.

    `advance()` moves time forward and wakes every task blocked in `sleep()` whose deadline
    has been reached, so a test drives concurrent waiters step by step::

        clock = FakeClock()
        limiter = GcraLimiter(1, 1.0, clock=clock, sleep=clock.sleep)
        ...
        clock.advance(0.5)
        await anyio.wait_all_tasks_blocked()

    `sleep_advancing()` is the shortcut for code with a single sleeper (a retry loop): it moves
    the clock itself, like trio's `MockClock(autojump_threshold=0)`. With several concurrent
    sleepers each of them would add its own delay, so use `sleep()` there.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        # (deadline, tie-breaker, event): a heap so advance() wakes sleepers in deadline order.
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        """Return the current fake time in seconds."""
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake the sleepers that are due.

        Raises `ValueError` when `seconds` is negative or NaN: time never goes backwards.
        """
        if not seconds >= 0:
            raise ValueError(f"a clock cannot go backwards (seconds={seconds!r})")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()

    async def sleep(self, seconds: float) -> None:
        """Block until `advance()` has moved the clock `seconds` past the current time.

        A non-positive delay is a plain checkpoint. Cancellation works as for any anyio wait.
        """
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), event))
        await event.wait()

    async def sleep_advancing(self, seconds: float) -> None:
        """Advance the clock by `seconds` (negative counts as zero), then checkpoint."""
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()
