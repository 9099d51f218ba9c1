"""Connection slots: a fixed number, taken with a bounded wait, given back on every path."""

from __future__ import annotations

import anyio
import pytest

from delos.resilience import Slots, SlotsExhausted

pytestmark = pytest.mark.anyio


async def test_free_slots_are_taken_without_waiting() -> None:
    slots = Slots(2, clock=anyio.current_time)
    assert await slots.acquire(max_wait=0.0) == 0.0
    assert await slots.acquire(max_wait=0.0) == 0.0
    assert (slots.in_use, slots.waiting) == (2, 0)


async def test_a_caller_past_the_wait_is_refused_and_counted_out_of_the_queue() -> None:
    slots = Slots(1, clock=anyio.current_time)
    await slots.acquire(max_wait=0.0)
    with pytest.raises(SlotsExhausted) as refused:
        await slots.acquire(max_wait=0.0)
    assert refused.value.capacity == 1
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_a_slot_given_back_goes_to_the_waiting_caller() -> None:
    slots = Slots(1, clock=anyio.current_time)
    await slots.acquire(max_wait=0.0)
    taken = anyio.Event()

    async def waiter() -> None:
        await slots.acquire(max_wait=10.0)
        taken.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert slots.waiting == 1
        slots.release()
        await taken.wait()
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    slots = Slots(1, clock=anyio.current_time)
    await slots.acquire(max_wait=0.0)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(slots.acquire, 10.0)
        await anyio.wait_all_tasks_blocked()
        assert slots.waiting == 1
        tasks.cancel_scope.cancel()
    assert (slots.in_use, slots.waiting) == (1, 0)


def test_a_pool_has_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0, clock=lambda: 0.0)
