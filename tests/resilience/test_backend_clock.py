"""The backend's clock: what cancel-scope deadlines run on, at full resolution."""

from __future__ import annotations

import time

import anyio
import pytest
import trio.testing

from delos.resilience import Clock, backend_clock, reads_anyio_time


def _finest_step(clock: Clock) -> float:
    """The smallest non-zero step seen between two readings of ``clock`` in a busy loop."""
    steps = []
    before = clock()
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline and len(steps) < 50:
        now = clock()
        if now != before:
            steps.append(now - before)
            before = now
    return min(steps)


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_on_asyncio_it_reads_the_loops_clock_finer_than_a_millisecond(use_uvloop: bool) -> None:
    """uvloop's own ``loop.time()`` counts whole milliseconds: a 0.4 ms answer would read as
    0 or 1 ms in latencies, logs and the latency table."""

    async def main() -> tuple[float, float]:
        clock = backend_clock()
        assert reads_anyio_time(clock)
        return _finest_step(clock), abs(clock() - anyio.current_time())

    step, apart = anyio.run(main, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
    assert step < 0.0005
    assert apart < 0.002  # the deadlines' clock, to within the millisecond uvloop rounds to


def test_on_trio_it_reads_trios_clock_virtual_under_a_mock_clock() -> None:
    async def main() -> float:
        clock = backend_clock()
        started = clock()
        await trio.sleep(3600)
        return clock() - started

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 3600
