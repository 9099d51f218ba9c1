"""Retry policy: tenacity's `AsyncRetrying`, configured for calls to an upstream under a deadline.

`retrying` composes the pieces below with tenacity's own: full-jitter exponential backoff
floored by the error's Retry-After, and three stop conditions (attempt count, the enclosing
deadline, the retry budget).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import tenacity
from tenacity import RetryCallState
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._budget import RetryBudget


class WaitAtLeastRetryAfter(wait_base):
    """Wait as ``base`` says, but never less than the Retry-After of the last error.

    ``retry_after_of`` extracts it, in seconds, or returns None when the error carries none.
    """

    def __init__(
        self, base: wait_base, retry_after_of: Callable[[BaseException], float | None]
    ) -> None:
        self._base = base
        self._retry_after_of = retry_after_of

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self._base(retry_state)
        outcome = retry_state.outcome
        error = None if outcome is None else outcome.exception()
        retry_after = None if error is None else self._retry_after_of(error)
        return wait if retry_after is None else max(wait, retry_after)


class StopBeforeDeadline(stop_base):
    """Stop when the coming wait would not end before the enclosing cancel scope's deadline.

    Sleeping into the deadline only to be cancelled wastes the time a caller could use to fail
    over elsewhere. ``clock`` must share the time base of `anyio.current_effective_deadline`,
    which is `anyio.current_time`. Must be evaluated inside the task that runs the retries.
    """

    def __init__(self, clock: Callable[[], float] = anyio.current_time) -> None:
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        remaining = anyio.current_effective_deadline() - self._clock()
        return retry_state.upcoming_sleep >= remaining


class StopWhenBudgetRefuses(stop_base):
    """Stop unless ``budget`` grants a token for this retry.

    Put it last in a ``|`` chain: tenacity evaluates stop conditions left to right and stops at
    the first true one, so a token is only spent on a retry that will really happen.
    """

    def __init__(self, budget: RetryBudget) -> None:
        self._budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self._budget.try_withdraw()


def retrying(
    *,
    max_attempts: int = 3,
    initial: float = 0.2,
    maximum: float = 5.0,
    is_retryable: Callable[[BaseException], bool],
    retry_after_of: Callable[[BaseException], float | None] = lambda error: None,
    budget: RetryBudget | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = anyio.current_time,
) -> tenacity.AsyncRetrying:
    """Build the retry loop for one upstream call::

        async for attempt in retrying(is_retryable=is_transient):
            with attempt:
                await call()

    - Retries only `Exception`s for which ``is_retryable`` is true; cancellation and other
      `BaseException`s never are.
    - Waits are full-jitter exponential: uniform in ``[0, min(maximum, initial × 2^(n−1))]``
      seconds before retry ``n``, raised to the error's Retry-After when ``retry_after_of``
      finds one.
    - Stops after ``max_attempts`` attempts, when the wait would not end before the enclosing
      deadline, or when ``budget`` has no token left. The caller deposits into ``budget`` once
      per primary request; this policy only withdraws, one token per retry.
    - The last error is re-raised unchanged (``reraise=True``), never a `tenacity.RetryError`.

    ``sleep`` and ``clock`` are injectable for tests; ``clock`` must share the time base of
    the deadline (see `StopBeforeDeadline`). Raises `ValueError` for bad arguments.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
    if not 0 < initial <= maximum:
        raise ValueError(f"need 0 < initial <= maximum seconds, got {initial!r}, {maximum!r}")

    stop: stop_base = tenacity.stop_after_attempt(max_attempts) | StopBeforeDeadline(clock)
    if budget is not None:
        stop = stop | StopWhenBudgetRefuses(budget)
    return tenacity.AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=WaitAtLeastRetryAfter(
            tenacity.wait_random_exponential(multiplier=initial, max=maximum), retry_after_of
        ),
        retry=tenacity.retry_if_exception(
            lambda error: isinstance(error, Exception) and is_retryable(error)
        ),
        reraise=True,
    )
