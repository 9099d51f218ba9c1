"""Latency table: peak-sensitive EWMA of time to first token, per routing key.

`PeakEwma` is the estimator of Finagle's and tower's PeakEWMA balancers. `LatencyTable` keeps one
`LatencyStats` per key (the gateway uses ``(provider, model)`` tuples), fed by `AttemptTimer`s,
and answers the two questions a router asks: how loaded is this key (`load`), and has it been
measured recently enough to trust that answer (`is_explored`). All times are in seconds of the
injected clock, which must be monotonic.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PeakEwma:
    """Time-decayed moving average that jumps up instantly to a larger sample.

    A sample larger than the estimate replaces it (a provider getting slower is believed at
    once); a smaller one pulls the estimate down with weight ``exp(-Δt / tau)``, Δt being the
    seconds since the previous update, so recovery has a half-life of ``tau · ln 2`` seconds
    whatever the sampling rate. Unlike tower, the estimate does not decay toward zero while
    idle: an idle key is re-measured instead (see `LatencyTable.is_explored`).

    Raises `ValueError` if ``tau`` is not positive.
    """

    def __init__(self, tau: float = 15.0, *, clock: Callable[[], float]) -> None:
        if tau <= 0:
            raise ValueError(f"tau must be positive seconds, got {tau!r}")
        self._tau = tau
        self._clock = clock
        self._value: float | None = None
        self._updated_at: float | None = None

    @property
    def value(self) -> float | None:
        """The estimate, or None before the first sample."""
        return self._value

    @property
    def updated_at(self) -> float | None:
        """Clock time of the last change to the estimate, or None before the first sample."""
        return self._updated_at

    def observe(self, value: float) -> None:
        """Fold in one sample. Raises `ValueError` for a negative sample."""
        if value < 0:
            raise ValueError(f"samples must not be negative, got {value!r}")
        now = self._clock()
        if self._value is None or self._updated_at is None or value > self._value:
            self._value = value
        else:
            weight = math.exp(-max(now - self._updated_at, 0.0) / self._tau)
            self._value = self._value * weight + value * (1.0 - weight)
        self._updated_at = now

    def observe_lower_bound(self, value: float) -> None:
        """Raise the estimate to ``value`` if it is larger; never lower it.

        For attempts cancelled before they answered: their elapsed time only says the true
        value is at least that much. Without an estimate this does nothing, because a lower
        bound alone (often a few milliseconds of a cancelled loser) would pass for a fast key.
        """
        if self._value is not None and value > self._value:
            self._value = value
            self._updated_at = self._clock()


class _DecayedMean:
    """Mean where a sample taken Δt seconds ago weighs ``exp(-Δt / tau)``.

    Numerator and denominator decay together, so samples arriving at the same instant all
    count (the ``cost·w + x·(1-w)`` form would ignore all but the first), and the mean does
    not drift while no samples arrive.
    """

    def __init__(self, tau: float, clock: Callable[[], float]) -> None:
        self._tau = tau
        self._clock = clock
        self._weighted_sum = 0.0
        self._weight = 0.0
        self._updated_at = 0.0

    def add(self, value: float) -> None:
        now = self._clock()
        decay = math.exp(-max(now - self._updated_at, 0.0) / self._tau)
        self._weighted_sum = self._weighted_sum * decay + value
        self._weight = self._weight * decay + 1.0
        self._updated_at = now

    @property
    def mean(self) -> float | None:
        return self._weighted_sum / self._weight if self._weight > 0 else None


@dataclass(frozen=True)
class LatencySnapshot:
    """Point-in-time view of one key, for metrics and debugging.

    ``error_rate`` is the decayed share of failed attempts (0.0 before any outcome);
    ``samples`` counts TTFT measurements since the key was first seen.
    """

    ttft_ewma_ms: float | None
    tokens_per_second: float | None
    in_flight: int
    error_rate: float
    samples: int
    p95_ttft_ms: float | None


class LatencyStats:
    """Everything measured about one key; fed by `AttemptTimer`.

    - ``ttft``: `PeakEwma` of time to first token, seconds.
    - ``tokens_per_second``: decode rate after the first token. A plain decayed mean, not a
      peak EWMA: throughput varies with output length and is not used to avoid a slow key.
    - ``error_rate``: decayed share of attempts that failed (abandoned ones excluded).
    - the last ``window`` TTFT samples, for percentiles (the hedge delay).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        tau: float = 15.0,
        window: int = 200,
        min_samples: int = 20,
    ) -> None:
        if not 1 <= min_samples <= window:
            raise ValueError(f"need 1 <= min_samples <= window, got {min_samples!r}, {window!r}")
        self.ttft = PeakEwma(tau, clock=clock)
        self.in_flight = 0
        self.samples = 0
        self._min_samples = min_samples
        self._recent_ttft: deque[float] = deque(maxlen=window)
        self._throughput = _DecayedMean(tau, clock)
        self._errors = _DecayedMean(tau, clock)

    @property
    def tokens_per_second(self) -> float | None:
        return self._throughput.mean

    @property
    def error_rate(self) -> float:
        return self._errors.mean or 0.0

    def ttft_percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q <= 1) of recent TTFT samples, in seconds.

        Nearest-rank over the rolling window; None until ``min_samples`` samples exist, because a
        hedge delay taken from a handful of samples would fire hedges at random.
        Raises `ValueError` if ``q`` is outside (0, 1].
        """
        if not 0 < q <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {q!r}")
        if len(self._recent_ttft) < self._min_samples:
            return None
        ordered = sorted(self._recent_ttft)
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    def snapshot(self) -> LatencySnapshot:
        ttft = self.ttft.value
        p95 = self.ttft_percentile(0.95)
        return LatencySnapshot(
            ttft_ewma_ms=None if ttft is None else ttft * 1000.0,
            tokens_per_second=self.tokens_per_second,
            in_flight=self.in_flight,
            error_rate=self.error_rate,
            samples=self.samples,
            p95_ttft_ms=None if p95 is None else p95 * 1000.0,
        )

    def record_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self._recent_ttft.append(seconds)
        self.samples += 1

    def record_throughput(self, tokens_per_second: float) -> None:
        self._throughput.add(tokens_per_second)

    def record_outcome(self, *, failed: bool) -> None:
        self._errors.add(1.0 if failed else 0.0)


class AttemptTimer:
    """Measures one attempt against one key; made by `LatencyTable.start`.

    Every method is synchronous and cheap, so it can run in a ``finally`` block or a shielded
    cancel scope. The first ``finish_*`` call records the outcome and releases the in-flight
    slot; later calls do nothing and return False, so ``finally: timer.finish_abandoned()`` is a
    safe catch-all after the specific outcome has been recorded.
    """

    def __init__(self, stats: LatencyStats, clock: Callable[[], float]) -> None:
        self._stats = stats
        self._clock = clock
        self._started_at = clock()
        self._first_token_at: float | None = None
        self._finished = False
        stats.in_flight += 1

    def first_token(self) -> None:
        """Record time to first token. Only the first call counts."""
        if self._finished or self._first_token_at is not None:
            return
        self._first_token_at = self._clock()
        self._stats.record_ttft(self._first_token_at - self._started_at)

    def finish_success(self, output_tokens: int) -> bool:
        """The attempt completed. Without a prior `first_token` (a unary response), the time
        to the whole response is the time to first token. The decode rate is recorded when the
        attempt produced tokens over a measurable time after its first token."""
        if not self._begin_finish():
            return False
        now = self._clock()
        if self._first_token_at is None:
            self._first_token_at = now
            self._stats.record_ttft(now - self._started_at)
        decode_seconds = now - self._first_token_at
        if output_tokens > 0 and decode_seconds > 0:
            self._stats.record_throughput(output_tokens / decode_seconds)
        self._stats.record_outcome(failed=False)
        return True

    def finish_failure(self) -> bool:
        """The attempt failed. Its elapsed time, if no token came, is a lower bound on TTFT:
        a TTFT timeout makes the key look at least that slow."""
        if not self._begin_finish():
            return False
        self._record_lower_bound()
        self._stats.record_outcome(failed=True)
        return True

    def finish_abandoned(self) -> bool:
        """The attempt was cancelled (race loser, hedge, client gone): not an error, and its
        elapsed time, if no token came, is only a lower bound on TTFT."""
        if not self._begin_finish():
            return False
        self._record_lower_bound()
        return True

    def _begin_finish(self) -> bool:
        if self._finished:
            return False
        self._finished = True
        self._stats.in_flight -= 1
        return True

    def _record_lower_bound(self) -> None:
        if self._first_token_at is None:
            self._stats.ttft.observe_lower_bound(self._clock() - self._started_at)


class LatencyTable(Generic[K]):
    """Per-key latency statistics for routing, bounded to ``max_keys`` keys (least recently
    started evicted first).

    A key is *explored* when it has a TTFT estimate updated less than ``stale_after`` seconds
    ago. An unexplored key is neither assumed fast nor infinitely slow: `load` returns None
    for it so the router sends it one request to measure it, and a provider that recovered
    after being avoided gets re-measured once its estimate goes stale.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        tau: float = 15.0,
        max_keys: int = 10_000,
        stale_after: float = 60.0,
        window: int = 200,
        min_samples: int = 20,
    ) -> None:
        if max_keys < 1 or stale_after <= 0:
            raise ValueError("need max_keys >= 1 and stale_after > 0 seconds")
        self._clock = clock
        self._tau = tau
        self._max_keys = max_keys
        self._stale_after = stale_after
        self._window = window
        self._min_samples = min_samples
        self._stats: OrderedDict[K, LatencyStats] = OrderedDict()
        # Validate tau, window and min_samples now rather than on the first start().
        self._new_stats()

    def start(self, key: K) -> AttemptTimer:
        """Begin timing an attempt on ``key``; it counts as in flight until finished."""
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = self._new_stats()
            if len(self._stats) > self._max_keys:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(key)
        return AttemptTimer(stats, self._clock)

    def is_explored(self, key: K) -> bool:
        """True when ``key`` has a TTFT estimate updated within the last ``stale_after`` s."""
        stats = self._stats.get(key)
        return stats is not None and self._fresh_estimate(stats) is not None

    def load(self, key: K) -> float | None:
        """Routing cost of ``key``: ``ttft_ewma × (in_flight + 1)``, in seconds; lower is better.

        None means "explore me": the key is unexplored and nothing is in flight on it. While one
        exploring attempt is in flight the load is ``math.inf``, so concurrent requests wait for
        its measurement instead of all piling onto an unknown key.
        """
        stats = self._stats.get(key)
        if stats is None:
            return None
        estimate = self._fresh_estimate(stats)
        if estimate is None:
            return None if stats.in_flight == 0 else math.inf
        return estimate * (stats.in_flight + 1)

    def ttft_percentile(self, key: K, q: float = 0.95) -> float | None:
        """See `LatencyStats.ttft_percentile`; None for an unknown key."""
        stats = self._stats.get(key)
        return None if stats is None else stats.ttft_percentile(q)

    def snapshot(self, key: K) -> LatencySnapshot:
        """Current view of ``key``; an unknown key reads as empty."""
        stats = self._stats.get(key)
        return (stats or self._new_stats()).snapshot()

    def snapshots(self) -> dict[K, LatencySnapshot]:
        return {key: stats.snapshot() for key, stats in self._stats.items()}

    def _fresh_estimate(self, stats: LatencyStats) -> float | None:
        updated_at = stats.ttft.updated_at
        if updated_at is None or self._clock() - updated_at >= self._stale_after:
            return None
        return stats.ttft.value

    def _new_stats(self) -> LatencyStats:
        return LatencyStats(
            clock=self._clock, tau=self._tau, window=self._window, min_samples=self._min_samples
        )
