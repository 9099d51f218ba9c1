from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from delos.resilience._clock import FakeClock
from delos.resilience._race import (
    AllAttemptsFailed,
    AttemptOutcome,
    AttemptStatus,
    RaceResult,
    RaceTicket,
    race,
)

pytestmark = pytest.mark.anyio

Attempt = Callable[[RaceTicket], Awaitable[str]]


class UpstreamDown(Exception):
    pass


class Journal:
    """Records what each attempt did, to check cleanups and start times afterwards."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.started: dict[int, float] = {}
        self.closed: list[int] = []

    def answers_after(self, seconds: float, value: str) -> Attempt:
        """An attempt that answers ``value`` after ``seconds`` of fake time, closing its
        (pretend) upstream stream however it ends."""
        assert self.clock is not None
        clock = self.clock

        async def attempt(ticket: RaceTicket) -> str:
            self.started[ticket.index] = clock()
            try:
                await clock.sleep(seconds)
                return value
            finally:
                self.closed.append(ticket.index)

        return attempt

    def hangs(self) -> Attempt:
        async def attempt(ticket: RaceTicket) -> str:
            self.started[ticket.index] = self.clock() if self.clock else 0.0
            try:
                await anyio.sleep_forever()
            finally:
                self.closed.append(ticket.index)
            raise AssertionError("unreachable")

        return attempt

    def fails(self, error: Exception) -> Attempt:
        async def attempt(ticket: RaceTicket) -> str:
            self.started[ticket.index] = self.clock() if self.clock else 0.0
            await anyio.lowlevel.checkpoint()
            raise error

        return attempt


async def run_while_advancing(
    clock: FakeClock, steps: list[float], coro: Callable[[], Awaitable[RaceResult[str]]]
) -> RaceResult[str]:
    """Run ``coro`` in a task while moving the fake clock by each step once all tasks block."""
    results: list[RaceResult[str]] = []

    async def runner() -> None:
        results.append(await coro())

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(runner)
        for step in steps:
            await anyio.wait_all_tasks_blocked()
            clock.advance(step)
    return results[0]


def statuses(outcomes: tuple[AttemptOutcome, ...]) -> list[AttemptStatus]:
    return [outcome.status for outcome in outcomes]


async def test_a_race_starts_everything_at_once_and_the_fastest_wins(clock: FakeClock) -> None:
    journal = Journal(clock)
    attempts = [
        journal.answers_after(3.0, "slow"),
        journal.answers_after(1.0, "fast"),
        journal.answers_after(2.0, "medium"),
    ]
    result = await run_while_advancing(clock, [1.0], lambda: race(attempts))
    assert (result.value, result.winner_index, result.started) == ("fast", 1, 3)
    assert statuses(result.outcomes) == [
        AttemptStatus.CANCELLED,
        AttemptStatus.WON,
        AttemptStatus.CANCELLED,
    ]
    assert set(journal.started.values()) == {1000.0}


async def test_losers_are_cancelled_and_their_cleanup_runs_before_race_returns(
    clock: FakeClock,
) -> None:
    journal = Journal(clock)
    attempts = [journal.hangs(), journal.answers_after(0.0, "answer"), journal.hangs()]
    result = await race(attempts)
    assert result.value == "answer"
    assert sorted(journal.closed) == [0, 1, 2]


async def test_the_winner_keeps_running_after_it_claims() -> None:
    journal = Journal()
    loser_cancelled = anyio.Event()

    async def streaming(ticket: RaceTicket) -> str:
        chunks = ["first"]
        assert ticket.claim()
        await loser_cancelled.wait()
        chunks.append("second")
        return " ".join(chunks)

    async def loser(ticket: RaceTicket) -> str:
        try:
            return await journal.hangs()(ticket)
        finally:
            loser_cancelled.set()

    result = await race([loser, streaming])
    assert (result.value, result.winner_index) == ("first second", 1)
    assert journal.closed == [0]


async def test_claim_is_true_for_the_first_caller_only() -> None:
    claims: list[tuple[int, bool]] = []

    async def winner(ticket: RaceTicket) -> str:
        await anyio.wait_all_tasks_blocked()
        claims.append((ticket.index, ticket.claim()))
        claims.append((ticket.index, ticket.claim()))
        return "won"

    async def loser(ticket: RaceTicket) -> str:
        try:
            await anyio.sleep_forever()
        finally:
            claims.append((ticket.index, ticket.claim()))
        raise AssertionError("unreachable")

    await race([loser, winner])
    assert claims == [(1, True), (1, False), (0, False)]


async def test_a_failed_hedge_starts_the_next_attempt_immediately(clock: FakeClock) -> None:
    journal = Journal(clock)
    error = UpstreamDown("503")
    attempts = [journal.fails(error), journal.answers_after(0.0, "backup")]
    result = await race(attempts, start_delays=[0.0, 30.0], sleep=clock.sleep)
    assert result.value == "backup"
    assert journal.started == {0: 1000.0, 1: 1000.0}
    assert result.outcomes[0] == AttemptOutcome(AttemptStatus.FAILED, error)


async def test_a_hedge_starts_after_its_delay_from_the_previous_start(clock: FakeClock) -> None:
    journal = Journal(clock)
    attempts = [journal.hangs(), journal.hangs(), journal.answers_after(0.0, "third")]
    result = await run_while_advancing(
        clock,
        [0.5, 0.5, 0.5],
        lambda: race(attempts, start_delays=[0.0, 0.5, 1.0], sleep=clock.sleep),
    )
    assert result.winner_index == 2
    assert journal.started == {0: 1000.0, 1: 1000.5, 2: 1001.5}
    assert sorted(journal.closed) == [0, 1, 2]


async def test_a_hedge_is_not_started_when_the_primary_wins_before_the_delay(
    clock: FakeClock,
) -> None:
    journal = Journal(clock)
    attempts = [journal.answers_after(1.0, "primary"), journal.answers_after(0.0, "hedge")]
    result = await run_while_advancing(
        clock, [1.0], lambda: race(attempts, start_delays=[0.0, 2.0], sleep=clock.sleep)
    )
    assert (result.value, result.started) == ("primary", 1)
    assert statuses(result.outcomes) == [AttemptStatus.WON, AttemptStatus.NOT_STARTED]
    assert list(journal.started) == [0]


async def test_an_attempt_refused_by_may_start_is_skipped(clock: FakeClock) -> None:
    journal = Journal(clock)
    asked: list[int] = []

    def may_start(index: int) -> bool:
        asked.append(index)
        return index != 1

    attempts = [
        journal.fails(UpstreamDown("a")),
        journal.answers_after(0.0, "b"),
        journal.answers_after(0.0, "c"),
    ]
    result = await race(attempts, start_delays=[0, 5, 5], may_start=may_start, sleep=clock.sleep)
    assert (result.value, result.started) == ("c", 2)
    assert asked == [1, 2]
    assert statuses(result.outcomes) == [
        AttemptStatus.FAILED,
        AttemptStatus.SKIPPED,
        AttemptStatus.WON,
    ]
    assert 1 not in journal.started


async def test_when_every_remaining_attempt_is_refused_the_race_fails(clock: FakeClock) -> None:
    journal = Journal(clock)
    error = UpstreamDown("a")
    attempts = [journal.fails(error), journal.answers_after(0.0, "b")]
    with pytest.raises(AllAttemptsFailed) as caught:
        await race(attempts, may_start=lambda index: False)
    assert caught.value.errors == [error]
    assert statuses(caught.value.outcomes) == [AttemptStatus.FAILED, AttemptStatus.SKIPPED]


async def test_an_error_after_claiming_propagates_unchanged_and_losers_are_cancelled() -> None:
    journal = Journal()
    error = UpstreamDown("stream broke after the first chunk")
    loser_running = anyio.Event()

    async def committed(ticket: RaceTicket) -> str:
        await loser_running.wait()
        ticket.claim()
        raise error

    async def loser(ticket: RaceTicket) -> str:
        loser_running.set()
        return await journal.hangs()(ticket)

    async def third(ticket: RaceTicket) -> str:
        raise AssertionError("must not start after the race is committed")

    with pytest.raises(UpstreamDown) as caught:
        await race([committed, loser, third], start_delays=[0.0, 0.0, 5.0], sleep=FakeClock().sleep)
    assert caught.value is error
    assert journal.closed == [1]


async def test_when_all_attempts_fail_every_error_is_reported_in_order() -> None:
    journal = Journal()
    errors = [UpstreamDown("first"), TimeoutError("second"), UpstreamDown("third")]
    with pytest.raises(AllAttemptsFailed) as caught:
        await race([journal.fails(error) for error in errors])
    assert caught.value.errors == errors
    assert "all 3 started attempts failed" in str(caught.value)
    assert "TimeoutError: second" in str(caught.value)


async def test_a_failure_is_not_the_end_of_the_race() -> None:
    journal = Journal()

    async def answers_once_the_others_settled(ticket: RaceTicket) -> str:
        await anyio.wait_all_tasks_blocked()
        return "late"

    result = await race(
        [journal.fails(UpstreamDown("x")), journal.hangs(), answers_once_the_others_settled]
    )
    assert result.value == "late"
    assert statuses(result.outcomes) == [
        AttemptStatus.FAILED,
        AttemptStatus.CANCELLED,
        AttemptStatus.WON,
    ]


async def test_an_outer_deadline_cancels_every_attempt_and_propagates(clock: FakeClock) -> None:
    journal = Journal(clock)
    finished_race: list[bool] = []
    scope = anyio.CancelScope()

    async def racer() -> None:
        with scope:
            await race([journal.hangs(), journal.hangs(), journal.hangs()], sleep=clock.sleep)
            finished_race.append(True)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(racer)
        await anyio.wait_all_tasks_blocked()
        scope.deadline = anyio.current_time()

    assert scope.cancelled_caught
    assert not finished_race
    assert sorted(journal.closed) == [0, 1, 2]


async def test_outer_cancellation_while_waiting_to_hedge_starts_nothing_more(
    clock: FakeClock,
) -> None:
    journal = Journal(clock)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(
                lambda: race(
                    [journal.hangs(), journal.answers_after(0.0, "hedge")],
                    start_delays=[0.0, 1.0],
                    sleep=clock.sleep,
                )
            )
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert list(journal.started) == [0]
    assert journal.closed == [0]


class Fatal(BaseException):
    pass


async def test_a_base_exception_from_an_attempt_propagates_alone_not_in_a_group() -> None:
    journal = Journal()

    async def fatal(ticket: RaceTicket) -> str:
        await anyio.wait_all_tasks_blocked()
        raise Fatal

    with pytest.raises(Fatal):
        await race([journal.hangs(), fatal])
    assert journal.closed == [0]


async def test_an_error_in_may_start_propagates_alone_and_cancels_the_attempts() -> None:
    journal = Journal()

    def broken_budget(index: int) -> bool:
        raise RuntimeError("budget store unavailable")

    with pytest.raises(RuntimeError, match="budget store unavailable"):
        await race([journal.hangs(), journal.hangs()], may_start=broken_budget)
    assert journal.closed == [0]


async def test_no_exception_group_escapes_when_several_attempts_fail_together() -> None:
    async def fail_after_all_started(ticket: RaceTicket) -> str:
        await anyio.wait_all_tasks_blocked()
        raise UpstreamDown(str(ticket.index))

    # An ExceptionGroup would not match AllAttemptsFailed and would fail the test.
    with pytest.raises(AllAttemptsFailed) as caught:
        await race([fail_after_all_started] * 4)
    assert [str(error) for error in caught.value.errors] == ["0", "1", "2", "3"]


async def test_race_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        await race([])
    with pytest.raises(ValueError):
        await race([_answer("a"), _answer("b")], start_delays=[0.0])
    with pytest.raises(ValueError):
        await race([_answer("a")], start_delays=[-1.0])


def _answer(value: str) -> Attempt:
    async def attempt(ticket: RaceTicket) -> str:
        await anyio.lowlevel.checkpoint()
        return value

    return attempt
