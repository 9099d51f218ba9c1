"""Race and hedge: run attempts concurrently, keep the first to claim, cancel the rest.

One primitive covers both shapes. A latency race starts every attempt at once; a hedge starts
attempt ``i`` after a delay, or at once when every attempt started so far has failed (as in
gRPC's hedging policy, gRFC A6). An attempt *claims* the win with its `RaceTicket` when it has
something worth committing to (a streaming attempt claims at its first chunk); losers are
cancelled at that instant, so their ``async with`` blocks close their upstream requests.

Exceptions never escape as an `ExceptionGroup`: each attempt's errors are caught inside its own
task and reported through `RaceResult.outcomes` or `AllAttemptsFailed`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


class AttemptStatus(enum.Enum):
    WON = "won"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Started, then lost the race (or the whole race was cancelled)."""
    SKIPPED = "skipped"
    """Its turn came but ``may_start`` refused it (budget empty)."""
    NOT_STARTED = "not_started"
    """The race was decided before its turn."""


@dataclass(frozen=True)
class AttemptOutcome:
    status: AttemptStatus
    error: BaseException | None = None
    """The exception of a FAILED attempt."""


@dataclass(frozen=True)
class RaceResult(Generic[T]):
    value: T
    winner_index: int
    started: int
    """How many attempts were started, the winner included."""
    outcomes: tuple[AttemptOutcome, ...]
    """One per attempt, in attempt order."""


class AllAttemptsFailed(Exception):
    """Every attempt that was started failed (the rest were skipped).

    ``errors`` holds the exceptions in attempt order; ``outcomes`` is the full per-attempt report.
    A plain exception, not an `ExceptionGroup`, so ``except Exception`` handlers see it.
    """

    def __init__(
        self, errors: list[BaseException], outcomes: tuple[AttemptOutcome, ...] = ()
    ) -> None:
        self.errors = errors
        self.outcomes = outcomes
        details = "; ".join(f"{type(error).__name__}: {error}" for error in errors)
        super().__init__(f"all {len(errors)} started attempts failed: {details}")


class RaceTicket:
    """Handed to each attempt: its ``index`` in the race, and `claim` to become the winner."""

    def __init__(self, index: int, race: _Race[Any]) -> None:
        self.index = index
        self._race = race

    def claim(self) -> bool:
        """Become the winner. True for the first caller only; every other attempt is cancelled
        before this returns, and no further attempt will start. False means this attempt lost
        and is being cancelled: it should stop at its next checkpoint."""
        return self._race.claim(self.index)


class _Race(Generic[T]):
    """Shared state of one `race` call. Mutated only between checkpoints, so no locks."""

    def __init__(self, count: int) -> None:
        # None until the attempt ends (or is skipped); still None at the end: never started.
        self.outcomes: list[AttemptOutcome | None] = [None] * count
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.winner: int | None = None
        # Holds the winner's return value once it has one (a list: T may include None).
        self.won_value: list[T] = []
        self.committed_error: Exception | None = None
        self.started = 0
        self.running = 0
        # Cancelled to end the scheduler's wait for the next hedge early.
        self.wake: anyio.CancelScope | None = None

    def claim(self, index: int) -> bool:
        if self.winner is not None:
            return False
        self.winner = index
        self.outcomes[index] = AttemptOutcome(AttemptStatus.WON)
        for other, scope in self.scopes.items():
            if other != index:
                scope.cancel()
        self.wake_scheduler()
        return True

    def all_failed(self) -> bool:
        return self.started > 0 and self.running == 0

    def wake_scheduler(self) -> None:
        if self.wake is not None:
            self.wake.cancel()

    def final_outcomes(self) -> tuple[AttemptOutcome, ...]:
        not_started = AttemptOutcome(AttemptStatus.NOT_STARTED)
        return tuple(not_started if o is None else o for o in self.outcomes)


def _always(index: int) -> bool:
    return True


async def race(
    attempts: Sequence[Callable[[RaceTicket], Awaitable[T]]],
    *,
    start_delays: Sequence[float] | None = None,
    may_start: Callable[[int], bool] = _always,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> RaceResult[T]:
    """Run ``attempts`` as a race or hedge and return the winner's value.

    ``start_delays[i]`` is how long, in seconds, attempt ``i`` waits after attempt ``i − 1``
    started (or was skipped) before it starts; None means 0 for all (a pure race). Attempt
    ``i`` also starts as soon as every started attempt has failed. Before starting attempt
    ``i > 0``, ``may_start(i)`` is asked (a retry budget); False skips that attempt.

    The winner is the first attempt to call ``ticket.claim()``; an attempt that returns without
    claiming claims at its return (for unary calls: first good answer wins). The winner runs
    to completion and its return value is the result. An exception raised by the winner after
    it claimed propagates unchanged: the race is committed, nothing else is tried. Exceptions
    raised by an attempt before claiming are recorded and do not stop the race.

    Raises `AllAttemptsFailed` when no attempt won, `ValueError` for bad arguments. Outside
    cancellation (a deadline) cancels every attempt and propagates; so does, alone and never
    in an `ExceptionGroup`, an exception from ``may_start`` or ``sleep`` or a `BaseException`
    that is not an `Exception` raised by an attempt. Every task has ended when this returns or
    raises.
    """
    count = len(attempts)
    delays = [0.0] * count if start_delays is None else list(start_delays)
    if count == 0:
        raise ValueError("race needs at least one attempt")
    if len(delays) != count or any(delay < 0 for delay in delays):
        raise ValueError("start_delays needs one non-negative delay, in seconds, per attempt")

    state: _Race[T] = _Race(count)
    fatal: list[BaseException] = []

    def abort(error: BaseException) -> None:
        # KeyboardInterrupt, or a bug in may_start or sleep: end the race and re-raise the error
        # alone, not inside the task group's ExceptionGroup.
        fatal.append(error)
        task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:

        async def run(index: int, scope: anyio.CancelScope) -> None:
            try:
                with scope:
                    await _run_attempt(attempts[index], index, state)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as error:
                abort(error)
            finally:
                state.running -= 1
                if state.outcomes[index] is None:
                    state.outcomes[index] = AttemptOutcome(AttemptStatus.CANCELLED)
                if state.all_failed() and state.winner is None:
                    # Nothing left running: start the next attempt now, not after its delay.
                    state.wake_scheduler()

        try:
            for index in range(count):
                if index == 0:
                    if delays[0] > 0:
                        await sleep(delays[0])
                elif state.winner is None and not state.all_failed():
                    await _wait_for_turn(state, delays[index], sleep)
                if state.winner is not None:
                    break
                if index > 0 and not may_start(index):
                    state.outcomes[index] = AttemptOutcome(AttemptStatus.SKIPPED)
                    continue
                scope = state.scopes[index] = anyio.CancelScope()
                state.started += 1
                state.running += 1
                task_group.start_soon(run, index, scope)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as error:
            abort(error)

    if fatal:
        raise fatal[0]
    if state.committed_error is not None:
        raise state.committed_error
    outcomes = state.final_outcomes()
    if state.winner is None:
        raise AllAttemptsFailed([o.error for o in outcomes if o.error is not None], outcomes)
    return RaceResult(
        value=state.won_value[0],
        winner_index=state.winner,
        started=state.started,
        outcomes=outcomes,
    )


async def _run_attempt(
    attempt: Callable[[RaceTicket], Awaitable[T]], index: int, state: _Race[T]
) -> None:
    """Run one attempt inside its cancel scope and record how it ended."""
    try:
        value = await attempt(RaceTicket(index, state))
    except Exception as error:
        if state.winner == index:
            state.committed_error = error
        elif state.winner is None:
            state.outcomes[index] = AttemptOutcome(AttemptStatus.FAILED, error)
        # Otherwise a loser failed while being cancelled: it stays CANCELLED.
        return
    # Returning without claiming claims at return; a loser that returned anyway stays CANCELLED.
    state.claim(index)
    if state.winner == index:
        state.won_value.append(value)


async def _wait_for_turn(
    state: _Race[Any], delay: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Sleep ``delay`` seconds, cut short when an attempt claims or all started ones failed."""
    if delay <= 0:
        return
    with anyio.CancelScope() as wake:
        state.wake = wake
        try:
            await sleep(delay)
        finally:
            state.wake = None
