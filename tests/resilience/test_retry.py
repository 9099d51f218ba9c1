from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from delos.resilience._budget import RetryBudget
from delos.resilience._clock import FakeClock
from delos.resilience._retry import retrying

pytestmark = pytest.mark.anyio


class Transient(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("upstream overloaded")
        self.retry_after = retry_after


class Permanent(Exception):
    pass


def is_transient(error: BaseException) -> bool:
    return isinstance(error, Transient)


def retry_after_of(error: BaseException) -> float | None:
    return error.retry_after if isinstance(error, Transient) else None


class RecordingSleep:
    """Stands in for anyio.sleep: records each wait, in seconds, and advances a virtual
    elapsed time instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await anyio.lowlevel.checkpoint()

    def clock(self) -> float:
        """`anyio.current_time` plus the waits so far, as if they had been slept."""
        return anyio.current_time() + sum(self.waits)


class Upstream:
    """Raises the queued errors in turn, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class AlwaysFailing(Upstream):
    def __init__(self, make_error: Callable[[], Exception]) -> None:
        super().__init__()
        self.make_error = make_error

    async def call(self) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        raise self.make_error()


async def run(upstream: Upstream, **kwargs: object) -> str:
    result = "no attempt made"
    async for attempt in retrying(is_retryable=is_transient, **kwargs):  # type: ignore[arg-type]
        with attempt:
            result = await upstream.call()
    return result


async def test_a_retryable_error_is_retried_until_success() -> None:
    sleep = RecordingSleep()
    upstream = Upstream(Transient(), Transient())
    assert await run(upstream, max_attempts=3, sleep=sleep) == "ok"
    assert upstream.calls == 3
    assert len(sleep.waits) == 2


async def test_a_non_retryable_error_is_raised_at_once_unchanged() -> None:
    sleep = RecordingSleep()
    error = Permanent("bad request")
    upstream = Upstream(error)
    with pytest.raises(Permanent) as caught:
        await run(upstream, sleep=sleep)
    assert caught.value is error
    assert upstream.calls == 1
    assert sleep.waits == []


async def test_attempts_are_bounded_and_the_last_error_surfaces() -> None:
    sleep = RecordingSleep()
    upstream = AlwaysFailing(Transient)
    with pytest.raises(Transient):
        await run(upstream, max_attempts=4, sleep=sleep)
    assert upstream.calls == 4
    assert len(sleep.waits) == 3


async def test_waits_are_full_jitter_within_the_exponential_window() -> None:
    sleep = RecordingSleep()
    upstream = AlwaysFailing(Transient)
    with pytest.raises(Transient):
        await run(upstream, max_attempts=8, initial=0.2, maximum=1.0, sleep=sleep)
    windows = [min(1.0, 0.2 * 2**n) for n in range(7)]
    assert all(0 <= wait <= window for wait, window in zip(sleep.waits, windows, strict=True))


async def test_retry_after_is_a_floor_for_the_wait() -> None:
    sleep = RecordingSleep()
    upstream = Upstream(Transient(retry_after=3.0), Transient(retry_after=2.5))
    result = await run(
        upstream, initial=0.1, maximum=1.0, retry_after_of=retry_after_of, sleep=sleep
    )
    assert result == "ok"
    assert sleep.waits == [3.0, 2.5]


async def test_a_wait_that_would_not_end_before_the_deadline_stops_retrying() -> None:
    sleep = RecordingSleep()
    upstream = Upstream(Transient(retry_after=5.0))
    with anyio.CancelScope(deadline=anyio.current_time() + 1.0):
        with pytest.raises(Transient):
            await run(upstream, retry_after_of=retry_after_of, sleep=sleep)
    assert upstream.calls == 1
    assert sleep.waits == []


async def test_retries_continue_while_waits_fit_before_the_deadline() -> None:
    sleep = RecordingSleep()
    upstream = AlwaysFailing(lambda: Transient(retry_after=4.0))
    with anyio.CancelScope(deadline=anyio.current_time() + 10.0):
        with pytest.raises(Transient):
            await run(
                upstream,
                max_attempts=10,
                maximum=0.1,
                initial=0.1,
                retry_after_of=retry_after_of,
                sleep=sleep,
                clock=sleep.clock,
            )
    # Waits of 4 s at elapsed 0 and 4 fit in 10 s; at 8 the next one would not.
    assert upstream.calls == 3
    assert sleep.waits == [4.0, 4.0]


async def test_an_empty_budget_stops_retrying(clock: FakeClock) -> None:
    sleep = RecordingSleep()
    budget = RetryBudget(0.0, min_per_second=0.2, ttl=10.0, clock=clock)  # two tokens
    upstream = AlwaysFailing(Transient)
    with pytest.raises(Transient):
        await run(upstream, max_attempts=10, budget=budget, sleep=sleep)
    assert upstream.calls == 3
    assert (budget.withdrawals, budget.rejections) == (2, 1)


async def test_no_budget_token_is_spent_on_a_retry_that_will_not_happen(clock: FakeClock) -> None:
    budget = RetryBudget(0.0, min_per_second=1.0, ttl=10.0, clock=clock)
    upstream = AlwaysFailing(Transient)
    with pytest.raises(Transient):
        await run(upstream, max_attempts=2, budget=budget, sleep=RecordingSleep())
    assert budget.withdrawals == 1
    assert budget.rejections == 0


async def test_cancellation_is_never_retried_even_if_the_predicate_says_yes() -> None:
    sleep = RecordingSleep()
    calls = 0
    with anyio.CancelScope() as scope:
        async for attempt in retrying(is_retryable=lambda error: True, sleep=sleep):
            with attempt:
                calls += 1
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert calls == 1
    assert sleep.waits == []


class Fatal(BaseException):
    pass


async def test_a_base_exception_is_never_retried_even_if_the_predicate_says_yes() -> None:
    sleep = RecordingSleep()
    calls = 0
    with pytest.raises(Fatal):
        async for attempt in retrying(is_retryable=lambda error: True, sleep=sleep):
            with attempt:
                calls += 1
                raise Fatal
    assert calls == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial": 0.0}, {"initial": 2.0, "maximum": 1.0}],
)
async def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        retrying(is_retryable=is_transient, **kwargs)  # type: ignore[arg-type]
