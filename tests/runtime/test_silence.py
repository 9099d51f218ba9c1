"""A stream's silence limits: one watcher task cancels the stream when a wait runs over."""

from __future__ import annotations

import anyio
import pytest
import trio.testing

from delos.runtime.routing._silence import watch_silence

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
    ),
]


async def test_a_wait_longer_than_its_limit_ends_the_block_and_says_which_limit() -> None:
    started = anyio.current_time()
    async with watch_silence(anyio.current_time, anyio.sleep) as silence:
        silence.waiting(30.0)
        await anyio.sleep(1000)
    assert silence.fired
    assert silence.limit_hit == 30.0
    assert anyio.current_time() - started == pytest.approx(30.0)


async def test_waits_within_their_limit_never_fire() -> None:
    async with watch_silence(anyio.current_time, anyio.sleep) as silence:
        for _ in range(10):
            silence.waiting(5.0)
            await anyio.sleep(4.0)
            silence.done_waiting()
    assert not silence.fired


async def test_time_spent_relaying_an_event_is_not_silence() -> None:
    async with watch_silence(anyio.current_time, anyio.sleep) as silence:
        silence.waiting(5.0)
        await anyio.sleep(1.0)
        silence.done_waiting()
        await anyio.sleep(60.0)  # a slow client takes the event
        silence.waiting(5.0)
        await anyio.sleep(1.0)
        silence.done_waiting()
    assert not silence.fired


async def test_a_shorter_limit_after_a_longer_one_fires_at_its_own_end() -> None:
    started = anyio.current_time()
    async with watch_silence(anyio.current_time, anyio.sleep) as silence:
        silence.waiting(30.0)  # the first token
        await anyio.sleep(1.0)
        silence.done_waiting()
        silence.waiting(5.0)  # then each next event
        await anyio.sleep(1000)
    assert silence.fired
    assert silence.limit_hit == 5.0
    assert anyio.current_time() - started == pytest.approx(6.0)


async def test_an_error_in_the_block_leaves_it_as_it_is() -> None:
    with pytest.raises(LookupError, match="upstream"):
        async with watch_silence(anyio.current_time, anyio.sleep) as silence:
            silence.waiting(5.0)
            raise LookupError("upstream")
