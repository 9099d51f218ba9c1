"""Streams' silence limits: a watcher cancels a stream when one of its waits runs over.

Every behaviour holds both for the gateway's one watcher task serving every stream (which may
end a stream up to its ``lateness`` after the limit) and for a watcher not running, where each
stream watches itself with a task of its own (on time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import trio.testing

from delos.runtime.routing._silence import SilenceWatcher

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
    ),
]


LATENESS = 0.05


def ended_at(elapsed: float, limit: float) -> bool:
    """Whether a stream ended by its watcher after ``elapsed`` seconds ended in time."""
    return limit - 1e-9 <= elapsed <= limit + LATENESS + 1e-9


@asynccontextmanager
async def running(watcher: SilenceWatcher) -> AsyncIterator[SilenceWatcher]:
    """``watcher`` serving every stream from its own task for the block."""
    async with anyio.create_task_group() as group:
        await group.start(watcher.run)
        assert watcher.running
        yield watcher
        group.cancel_scope.cancel()
    assert not watcher.running


@pytest.fixture(params=["one watcher for all streams", "each stream its own"])
async def watcher(request: pytest.FixtureRequest) -> AsyncIterator[SilenceWatcher]:
    watcher = SilenceWatcher(anyio.current_time, anyio.sleep, lateness=LATENESS)
    if request.param == "each stream its own":
        yield watcher
        return
    async with running(watcher):
        yield watcher


async def test_a_wait_longer_than_its_limit_ends_the_block_and_says_which_limit(
    watcher: SilenceWatcher,
) -> None:
    started = anyio.current_time()
    async with watcher.watch(shortest=5.0) as silence:
        silence.waiting(30.0)
        await anyio.sleep(1000)
    assert silence.fired
    assert silence.limit_hit == 30.0
    assert ended_at(anyio.current_time() - started, 30.0)


async def test_waits_within_their_limit_never_fire(watcher: SilenceWatcher) -> None:
    async with watcher.watch(shortest=5.0) as silence:
        for _ in range(10):
            silence.waiting(5.0)
            await anyio.sleep(4.0)
            silence.done_waiting()
    assert not silence.fired


async def test_time_spent_relaying_an_event_is_not_silence(watcher: SilenceWatcher) -> None:
    async with watcher.watch(shortest=5.0) as silence:
        silence.waiting(5.0)
        await anyio.sleep(1.0)
        silence.done_waiting()
        await anyio.sleep(60.0)  # a slow client takes the event
        silence.waiting(5.0)
        await anyio.sleep(1.0)
        silence.done_waiting()
    assert not silence.fired


async def test_a_shorter_limit_after_a_longer_one_fires_at_its_own_end(
    watcher: SilenceWatcher,
) -> None:
    started = anyio.current_time()
    async with watcher.watch(shortest=5.0) as silence:
        silence.waiting(30.0)  # the first token
        await anyio.sleep(1.0)
        silence.done_waiting()
        silence.waiting(5.0)  # then each next event
        await anyio.sleep(1000)
    assert silence.fired
    assert silence.limit_hit == 5.0
    assert ended_at(anyio.current_time() - started, 6.0)


async def test_an_error_in_the_block_leaves_it_as_it_is(watcher: SilenceWatcher) -> None:
    with pytest.raises(LookupError, match="upstream"):
        async with watcher.watch(shortest=5.0) as silence:
            silence.waiting(5.0)
            raise LookupError("upstream")


async def test_an_outer_cancellation_goes_through(watcher: SilenceWatcher) -> None:
    with anyio.move_on_after(2.0) as outer:
        async with watcher.watch(shortest=5.0) as silence:
            silence.waiting(5.0)
            await anyio.sleep(1000)
    assert outer.cancelled_caught
    assert not silence.fired


async def test_each_stream_fires_on_its_own_limit_and_only_it(watcher: SilenceWatcher) -> None:
    """Many streams at once: the silent ones end at their own limits, the lively one not."""
    ended: dict[str, float] = {}
    fired: dict[str, bool] = {}
    started = anyio.current_time()

    async def silent(name: str, limit: float) -> None:
        async with watcher.watch(shortest=5.0) as silence:
            silence.waiting(limit)
            await anyio.sleep(1000)
        ended[name], fired[name] = anyio.current_time() - started, silence.fired

    async def lively() -> None:
        async with watcher.watch(shortest=5.0) as silence:
            for _ in range(40):
                silence.waiting(5.0)
                await anyio.sleep(1.0)
                silence.done_waiting()
        ended["lively"], fired["lively"] = anyio.current_time() - started, silence.fired

    async with anyio.create_task_group() as group:
        group.start_soon(silent, "30 s", 30.0)
        group.start_soon(silent, "10 s", 10.0)
        group.start_soon(lively)
        await anyio.sleep(2.0)
        group.start_soon(silent, "5 s, from 2 s", 5.0)  # sooner than every look queued
    assert fired == {"30 s": True, "10 s": True, "5 s, from 2 s": True, "lively": False}
    assert ended["lively"] == pytest.approx(40.0)
    for name, expected in (("30 s", 30.0), ("10 s", 10.0), ("5 s, from 2 s", 7.0)):
        assert ended_at(ended[name], expected), (name, ended[name])


async def test_the_one_watcher_keeps_no_look_for_a_stream_that_ended() -> None:
    async with running(SilenceWatcher(anyio.current_time, anyio.sleep)) as watcher:
        for _ in range(100):
            async with watcher.watch(shortest=5.0) as silence:
                silence.waiting(30.0)
                await anyio.sleep(0.1)
        await anyio.sleep(60.0)  # past every look those streams had queued
        assert watcher._looks == []


async def test_the_one_watcher_wakes_a_bounded_number_of_times_however_many_streams_end() -> None:
    """1,000 short streams over 10 s: the watcher's wake-ups are bounded by its lateness (one
    per 50 ms at most), not by the number of streams."""
    naps: list[float] = []

    async def counted_sleep(seconds: float) -> None:
        naps.append(seconds)
        await anyio.sleep(seconds)

    watcher = SilenceWatcher(anyio.current_time, counted_sleep, lateness=LATENESS)
    async with running(watcher):
        for _ in range(1000):
            async with watcher.watch(shortest=1.0) as silence:
                silence.waiting(1.0)
                await anyio.sleep(0.005)
                silence.done_waiting()
            await anyio.sleep(0.005)
        await anyio.sleep(2.0)
    assert not silence.fired
    assert len(naps) <= 12.0 / LATENESS
    assert watcher._looks == []
