"""Retry budget: retries and hedges as a bounded fraction of primary traffic.

Finagle's design (finagle.github.io/blog/2016/02/08/retry-budgets). A per-attempt retry limit
multiplies load during an outage, exactly when the upstream can least afford it; a budget that
is a ratio of primary requests shrinks retries as failures grow and cannot amplify load by more
than ``1 + ratio`` plus a small floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# Balances are float sums: a reserve of 0.09 × 10 plus one deposit of 0.1 comes to
# 0.9999999999999999, a hair short of the single token a retry costs.
_ROUNDING_TOLERANCE = 1e-9


class _Bucket:
    """Counts for one whole second of the clock."""

    __slots__ = ("requests", "retries", "second")

    def __init__(self) -> None:
        self.second: int | None = None
        self.requests = 0
        self.retries = 0


class RetryBudget:
    """Allows retries (and hedges) in proportion to recent primary requests.

    The math: every primary request deposits ``ratio`` tokens (`deposit`), every retry
    withdraws one (`try_withdraw`), and both expire ``ttl`` seconds later. On top of that sits a
    floor of ``min_per_second`` retries per second that works with no traffic at all; it is a
    standing reserve of ``min_per_second × ttl`` tokens, and since each withdrawal stays counted
    for ``ttl`` seconds, the floor also "expires": unused floor never piles up, it allows a
    burst of ``min_per_second × ttl`` retries, then ``min_per_second`` per second. So
    ``balance = min_per_second × ttl + ratio × requests − retries``, counting the requests and
    retries of the last ``ttl`` seconds, and over any such window::

        retries <= ratio × primary_requests + min_per_second × ttl

    The balance can dip below zero when deposits expire before the retries they paid for; no
    retry is allowed until it climbs back above one token.

    Memory is bounded: counts are kept in ``ceil(ttl)`` one-second buckets, so a deposit lives
    between ``ceil(ttl) − 1`` and ``ceil(ttl)`` seconds. ``clock`` returns monotonic seconds.

    Raises `ValueError` if ``ratio`` or ``min_per_second`` is negative or ``ttl`` is below
    one second (the bucket width).
    """

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        min_per_second: float = 1.0,
        ttl: float = 10.0,
        clock: Callable[[], float],
    ) -> None:
        if ratio < 0:
            raise ValueError(f"ratio must not be negative, got {ratio!r}")
        if min_per_second < 0:
            raise ValueError(f"min_per_second must not be negative, got {min_per_second!r}")
        if ttl < 1:
            raise ValueError(f"ttl must be at least 1 second, got {ttl!r}")
        self._ratio = ratio
        self._reserve = min_per_second * ttl
        self._clock = clock
        self._buckets = [_Bucket() for _ in range(math.ceil(ttl))]
        self.deposits = 0
        """Primary requests recorded since creation."""
        self.withdrawals = 0
        """Retries allowed since creation."""
        self.rejections = 0
        """Retries refused since creation."""

    @property
    def balance(self) -> float:
        """Retries allowed right now, in tokens (one per retry); may be fractional or negative."""
        now = self._now()
        requests = retries = 0
        for bucket in self._buckets:
            if bucket.second is not None and now - bucket.second < len(self._buckets):
                requests += bucket.requests
                retries += bucket.retries
        return self._reserve + self._ratio * requests - retries

    def deposit(self) -> None:
        """Record one primary request (not a retry nor a hedge): earns ``ratio`` tokens."""
        self._current_bucket().requests += 1
        self.deposits += 1

    def try_withdraw(self) -> bool:
        """Spend one token for a retry or hedge; False, spending nothing, if the budget is short."""
        if self.balance < 1.0 - _ROUNDING_TOLERANCE:
            self.rejections += 1
            return False
        self._current_bucket().retries += 1
        self.withdrawals += 1
        return True

    def _now(self) -> int:
        return math.floor(self._clock())

    def _current_bucket(self) -> _Bucket:
        now = self._now()
        bucket = self._buckets[now % len(self._buckets)]
        if bucket.second != now:
            # The slot last held a second that has now expired: reuse it.
            bucket.second = now
            bucket.requests = bucket.retries = 0
        return bucket
