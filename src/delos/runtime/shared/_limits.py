"""A provider's RPM and TPM limits shared by every replica: GCRA in one Lua script on Redis.

`SharedProviderLimiter` has the shape of `delos.resilience.ProviderLimiter` (both satisfy
`ProviderRateLimiter`), so Guards can hold either. One script per request checks and reserves
one request and its estimated tokens together, all or nothing, on the server's clock (``TIME``):
replicas' clocks never meet. A reservation that would wait is taken for a future slot when the
wait fits the caller's bound; the caller then sleeps it off locally, so waiting costs no further
round trip. Settling (`reconcile`, `release_unused`) is synchronous for the caller and costs no
round trip of its own: what this replica owes rides along with its next reservation, or is sent
after the store's `settle_hold` when no reservation comes first; a settlement that matches the
estimate owes nothing. Pauses are sent in the background.

GCRA state is a theoretical arrival time (TAT) per dimension, in server microseconds, stored with
a time to live that ends when the TAT passes: an absent TAT is a full burst. The burst is a
minute's worth, as locally, less `arrival_spread` (see below).

Lost state. Beside the TATs each provider has an *epoch* key that never expires: while it
stands, an absent TAT expired (a full bucket). Every replica remembers the epoch it last saw. A
replica that finds no epoch although it saw one — Redis restarted without persistence, was
flushed, or evicted the key — knows the state was lost, not new: the script then starts the
bucket *empty* (TAT = now + tolerance), as if the lost minute had been spent, and the bucket
refills at the configured rate. What the provider's own bucket holds is unknown then; empty is
the one guess that cannot overshoot it, and it costs at most one burst, never the rate. State
that no replica has seen (a first deployment, a new key version) starts full, as a fresh process
does locally. A replica that saw nothing and re-created lost state a moment before the others
returned cannot tell; the first replica that remembers the old epoch and finds such a *new*
epoch less than one window old empties the bucket then. Settlements owed to the lost state are
dropped with it.

Arrival spread. Admission runs on Redis's clock at reservation time; the provider's bucket runs
on its clock at arrival. The two stay in step only if every request takes the same time from
its reservation to the provider: one that takes less than an earlier one arrives early by the
difference, and at a limit configured exactly at the provider's (no slack) that is a 429. The
widest such difference is typically the first request of a burst, which opens the connection
to the provider, against a warm one later. GCRA admits nothing early once its tolerance is
shortened by the spread, so the shared tolerance is `arrival_spread` shorter (0.1 s by default:
the burst shrinks by 0.1 s worth, 0.17 % of a minute; the sustained rate is unchanged).

Fail-static. While the store is degraded, a local `ProviderLimiter` (this replica's *share*)
takes over at the configured limits divided by the last known number of live replicas. It starts
empty, so the minute in which Redis went away cannot be admitted twice, and empty as of the end
of the queue last seen on Redis: the slots Redis had already promised (requests sleeping until
them, on every replica) reach the provider after Redis is gone, so the share refills only after
them. The queue is assumed as deep as this replica last saw it, at most the longest wait a
reservation was allowed.

Return. Replicas do not find Redis back at the same moment (each waits for its own breaker
around Redis, at most `SharedStore.return_lag`), and until the last one has, the others still
admit their shares unseen by Redis. So for that long after the store is restored, a replica
that used its share admits a request only when both its share and the shared bucket do: the
replicas together stay within the sum of the shares. Its first reservation also charges what
its share admitted in the last window to the state it last saw, so a bucket that refilled on
Redis while the shares spent that refill is not spent twice (state lost meanwhile starts empty
anyway, and the charge is dropped with it).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import anyio

from delos.resilience import (
    Clock,
    ProviderLimiter,
    RateLimitHints,
    RateLimitWouldWait,
    Sleep,
    reads_anyio_time,
)

from ._limit_scripts import PAUSE, RESERVE, SETTLE
from ._scripts import ScriptArgument
from ._store import SharedStateUnavailable, SharedStore

__all__ = [
    "ARRIVAL_SPREAD",
    "ProviderRateLimiter",
    "RateReservation",
    "SharedProviderLimiter",
    "SharedReservation",
]

logger = logging.getLogger("delos.runtime.shared")

#: Seconds by which the shared tolerance is shortened: the spread of the time requests take from
#: their reservation to the provider (see the module docstring).
ARRIVAL_SPREAD: Final = 0.1

_MICROS: Final = 1_000_000


class RateReservation(Protocol):
    """What `reserve()` hands back: settle it once, synchronously, with the real usage."""

    estimated_tokens: int

    @property
    def settled(self) -> bool: ...

    def reconcile(self, actual_tokens: int) -> None: ...

    def release_unused(self) -> None: ...


class ProviderRateLimiter(Protocol):
    """A provider's RPM/TPM limits as Guards uses them: local or shared, the same calls."""

    @property
    def paused_until(self) -> float | None: ...

    async def reserve(
        self, estimated_tokens: int, *, max_wait: float = math.inf
    ) -> RateReservation: ...

    def pause_until(self, until: float) -> None: ...

    def apply_hints(self, hints: RateLimitHints) -> None: ...


class SharedReservation:
    """One request and `estimated_tokens` tokens reserved on Redis. Settle it exactly once;
    settling is synchronous (safe in a ``finally`` block or a cancelled scope) and costs no
    round trip of its own (see `SharedProviderLimiter`): nothing at all when the estimate was
    exact."""

    __slots__ = ("_limiter", "_settled", "estimated_tokens")

    def __init__(self, limiter: SharedProviderLimiter, estimated_tokens: int) -> None:
        self._limiter = limiter
        self._settled = False
        self.estimated_tokens = estimated_tokens

    @property
    def settled(self) -> bool:
        return self._settled

    def reconcile(self, actual_tokens: int) -> None:
        """The call used `actual_tokens`: refund an over-estimate, charge an under-estimate.

        Raises `ValueError` for a negative count.
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens!r}")
        if self._settled:
            return
        self._settled = True
        if actual_tokens != self.estimated_tokens:
            self._limiter._owe(0, actual_tokens - self.estimated_tokens)

    def release_unused(self) -> None:
        """The call never reached the provider: give back the request and all its tokens."""
        if self._settled:
            return
        self._settled = True
        self._limiter._owe(-1, -self.estimated_tokens)


class SharedProviderLimiter:
    """`requests_per_minute` and `tokens_per_minute` (None = unlimited) of `provider`, global.

    `live_replicas` returns the last known number of live replicas (see `ReplicaRegistry`); it
    sets the local fallback's share. `clock` and `sleep` time waits and pauses on this replica
    only; admission itself runs on Redis's clock. `arrival_spread` (seconds) shortens the shared
    tolerance; for `return_hold` seconds (default: the store's `return_lag`) after the store is
    restored, a replica that used its share keeps within it too (see the module docstring).
    """

    def __init__(
        self,
        provider: str,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        store: SharedStore,
        *,
        live_replicas: Callable[[], int] = lambda: 1,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
        arrival_spread: float = ARRIVAL_SPREAD,
        return_hold: float | None = None,
    ) -> None:
        for name, rate in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
            if rate is not None and not 0 < rate < math.inf:
                raise ValueError(f"{name}_per_minute must be finite and > 0, got {rate!r}")
        if not 0 <= arrival_spread < 60:
            raise ValueError(f"arrival_spread must be in [0, 60) seconds, got {arrival_spread!r}")
        self.provider = provider
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._store = store
        self._keys = list(store.keys.limiter(provider))
        self._settle_keys = [*self._keys[:2], self._keys[3]]
        self._live_replicas = live_replicas
        self._clock = clock
        self._sleep = sleep
        # The same bursts as the local limiter (a minute's worth, at least one whole request),
        # less the arrival spread.
        spread = arrival_spread * _MICROS
        rpm_interval = 60 * _MICROS / requests_per_minute if requests_per_minute else 0.0
        tpm_interval = 60 * _MICROS / tokens_per_minute if tokens_per_minute else 0.0
        rpm_tolerance = rpm_interval * max(requests_per_minute or 0.0, 1.0)
        rpm_tolerance = max(rpm_tolerance - spread, rpm_interval)
        tpm_tolerance = max(tpm_interval * (tokens_per_minute or 0.0) - spread, 0.0)
        self.token_burst = tokens_per_minute if tokens_per_minute else math.inf
        self._static_args = (
            repr(rpm_interval),
            repr(rpm_tolerance),
            repr(tpm_interval),
            repr(tpm_tolerance),
        )
        self._window = repr(max(rpm_tolerance, tpm_tolerance))
        self._intervals = (repr(rpm_interval), repr(tpm_interval))
        self._limited = (bool(requests_per_minute), bool(tokens_per_minute))
        #: The state epoch this replica last saw on Redis (empty: none yet).
        self._epoch = b""
        self._owed_requests = 0
        self._owed_tokens = 0
        self._paused_until = -math.inf
        self._last_reserved_tokens = 0
        self._fallback: ProviderLimiter | None = None
        self._fallback_replicas = 0
        self._return_hold = store.return_lag if return_hold is None else return_hold
        self._window_seconds = max(rpm_tolerance, tpm_tolerance) / _MICROS
        #: Seconds of slots Redis had promised ahead of its answer, at the last answer.
        self._queue_ahead = 0.0
        #: What the share admitted while the store was degraded: (clock time, tokens).
        self._admitted_locally: deque[tuple[float, int]] = deque()

    @property
    def paused_until(self) -> float | None:
        """The local clock time admission is paused until, as far as this replica knows."""
        return self._paused_until if self._paused_until > self._clock() else None

    async def reserve(
        self, estimated_tokens: int, *, max_wait: float = math.inf
    ) -> RateReservation:
        """Reserve one request and `estimated_tokens` tokens, waiting at most `max_wait` seconds.

        All or nothing: raises `RateLimitWouldWait` (reserving nothing) when the wait would be
        longer than `max_wait` or than the time left before the cancel-scope deadline. Raises
        `ValueError` when `estimated_tokens` is negative or above the token burst. One round trip
        to Redis, which also carries what this replica owes; when the store is degraded, the
        local fallback decides.
        """
        if not 0 <= estimated_tokens <= self.token_burst:
            raise ValueError(
                f"estimated_tokens must be in [0, {self.token_burst}], got {estimated_tokens!r}"
            )
        self._last_reserved_tokens = estimated_tokens
        start = self._clock()
        share = self._returning_share(start)
        if share is not None:
            return await self._reserve_within_share(share, estimated_tokens, max_wait, start)
        try:
            shared = await self._reserve_shared(estimated_tokens, max_wait, start)
        except SharedStateUnavailable:
            return await self._reserve_locally(estimated_tokens, max_wait, start)
        share = self._returning_share(self._clock())
        if share is None:
            self._fallback = None  # the next degraded episode starts a fresh, empty share
            return shared
        # This call found Redis back: the share has its say too.
        try:
            local = await share.reserve(
                _within(share, estimated_tokens), max_wait=max_wait - (self._clock() - start)
            )
        except BaseException:
            shared.release_unused()
            raise
        return _WithinShare(local, shared)

    async def _reserve_within_share(
        self, share: ProviderLimiter, estimated_tokens: int, max_wait: float, start: float
    ) -> RateReservation:
        # Redis is back, but other replicas may still admit their shares unseen by it.
        local = await share.reserve(_within(share, estimated_tokens), max_wait=max_wait)
        now = self._clock()
        try:
            shared = await self._reserve_shared(estimated_tokens, max_wait - (now - start), now)
        except SharedStateUnavailable:
            self._admitted_while_away(local)
            return local  # Redis left again: the share alone decides, as while degraded
        except BaseException:
            local.release_unused()
            raise
        return _WithinShare(local, shared)

    async def _reserve_shared(
        self, estimated_tokens: int, max_wait: float, now: float
    ) -> RateReservation:
        # One round trip that also carries what this replica owes. Raises SharedStateUnavailable
        # (having counted the owed settlement as dropped) when Redis cannot decide. `now` is
        # the clock's reading on entry, `max_wait` what is left of the caller's bound.
        bound = max_wait
        if reads_anyio_time(self._clock):
            bound = min(bound, anyio.current_effective_deadline() - now)
        bound_micros = -1 if bound == math.inf else max(math.floor(bound * _MICROS), 0)
        if self._admitted_locally and not self._store.degraded:
            self._charge_admitted_locally(now)
        owed_requests, owed_tokens = self._owed_requests, self._owed_tokens
        if owed_requests or owed_tokens:
            self._owed_requests = self._owed_tokens = 0
            self._store.release_hold(self._send_owed)
        args: list[ScriptArgument] = [
            *self._static_args,
            estimated_tokens,
            bound_micros,
            owed_requests,
            owed_tokens,
            self._epoch,
            self._window,
        ]
        try:
            admitted, wait_micros, pause_micros, epoch = await self._store.run_script(
                "limiter", RESERVE, self._keys, args
            )
        except SharedStateUnavailable as unavailable:
            if owed_requests or owed_tokens:
                # Maybe applied, maybe not: sending it again could count it twice.
                self._store.fall_back("limiter_settle", unavailable.reason)
            raise
        if epoch != self._epoch:
            self._note_epoch(epoch)
        if pause_micros:
            self._paused_until = max(self._paused_until, self._clock() + pause_micros / _MICROS)
        wait = wait_micros / _MICROS
        self._queue_ahead = min(wait, max(bound, 0.0))
        if not admitted:
            raise RateLimitWouldWait(wait)
        reservation = SharedReservation(self, estimated_tokens)
        if wait > 0:
            try:
                # Redis read its clock between the send and the answer: counted from the
                # answer, the wait ends at the reserved slot or just after it, never before.
                await self._sleep(wait)
            except BaseException:
                reservation.release_unused()
                raise
        return reservation

    def pause_until(self, until: float) -> None:
        """Admit nothing, on any replica, before local clock time `until` (seconds)."""
        seconds = until - self._clock()
        if seconds <= 0:
            return
        self._paused_until = max(self._paused_until, until)
        if self._fallback is not None:
            self._fallback.pause_until(until)
        self._publish_pause(seconds)

    def _publish_pause(self, seconds: float) -> None:
        args = [math.ceil(seconds * _MICROS)]
        self._store.submit_script_nowait("limiter_pause", PAUSE, self._keys[2:3], args)

    def apply_hints(self, hints: RateLimitHints) -> None:
        """Pause every replica as the provider's headers ask: the rules of
        `ProviderLimiter.apply_hints` (remaining tokens are compared with this replica's last
        reservation), with one pause for both dimensions, since a reservation needs both."""
        pauses = []
        if hints.retry_after is not None and hints.retry_after > 0:
            pauses.append(hints.retry_after)
        if (
            hints.remaining_requests is not None
            and hints.remaining_requests <= 0
            and hints.requests_reset_after is not None
        ):
            pauses.append(hints.requests_reset_after)
        if (
            hints.remaining_tokens is not None
            and hints.remaining_tokens < max(self._last_reserved_tokens, 1)
            and hints.tokens_reset_after is not None
        ):
            pauses.append(hints.tokens_reset_after)
        if pauses:
            self.pause_until(self._clock() + max(pauses))

    def _owe(self, requests: int, tokens: int) -> None:
        # Held for the next reservation to carry; the store has it sent after its settle_hold
        # otherwise. An unlimited dimension has nothing to settle.
        limit_requests, limit_tokens = self._limited
        if not ((requests and limit_requests) or (tokens and limit_tokens)):
            return
        if limit_requests:
            self._owed_requests += requests
        if limit_tokens:
            self._owed_tokens += tokens
        self._store.hold(self._send_owed)

    def _send_owed(self) -> None:
        # While the store is degraded this is dropped (and counted): the local share rules.
        owed_requests, owed_tokens = self._owed_requests, self._owed_tokens
        if not (owed_requests or owed_tokens):
            return
        self._owed_requests = self._owed_tokens = 0
        args: list[ScriptArgument] = [*self._intervals, owed_requests, owed_tokens, self._epoch]
        self._store.submit_script_nowait("limiter_settle", SETTLE, self._settle_keys, args)

    def _note_epoch(self, epoch: bytes) -> None:
        if self._epoch and epoch.startswith(b"lost:"):
            logger.warning(
                "shared rate-limit state of %s was lost (Redis restarted, flushed or evicted "
                "it): its bucket started empty and refills at the configured rate",
                self.provider,
            )
            # A pause the provider asked for went with the state: every replica that knows of
            # it publishes it again.
            left = self._paused_until - self._clock()
            if left > 0:
                self._publish_pause(left)
        self._epoch = epoch

    def _returning_share(self, now: float) -> ProviderLimiter | None:
        """This replica's share while other replicas may still be using theirs, else None."""
        share = self._fallback
        if share is None or self._store.degraded:
            return None
        recovered = self._store.recovered_at
        if recovered is not None and now < recovered + self._return_hold:
            return share
        return None

    def _admitted_while_away(self, reservation: RateReservation) -> None:
        """Remember what the share admitted alone, for the last window only."""
        now = self._clock()
        self._forget_before(now)
        self._admitted_locally.append((now, reservation.estimated_tokens))

    def _forget_before(self, now: float) -> None:
        admitted = self._admitted_locally
        while admitted and admitted[0][0] <= now - self._window_seconds:
            admitted.popleft()

    def _charge_admitted_locally(self, now: float) -> None:
        # What the share admitted within the last window still weighs on the provider's bucket;
        # charged to the epoch last seen, it is dropped by Redis if that state was lost.
        self._forget_before(now)
        admitted = self._admitted_locally
        if admitted:
            self._owe(len(admitted), sum(tokens for _, tokens in admitted))
            admitted.clear()

    async def _reserve_locally(
        self, estimated_tokens: int, max_wait: float, start: float
    ) -> RateReservation:
        replicas = max(self._live_replicas(), 1)
        share = self._fallback
        if share is None or self._fallback_replicas != replicas:
            share = self._fallback = _empty_share(self, replicas, self._queue_ahead)
            self._fallback_replicas = replicas
            if self._paused_until > self._clock():
                share.pause_until(self._paused_until)
        reservation = await share.reserve(
            _within(share, estimated_tokens), max_wait=max_wait - (self._clock() - start)
        )
        self._admitted_while_away(reservation)
        return reservation


class _WithinShare:
    """A reservation on Redis and in this replica's share at once, settled together."""

    __slots__ = ("_local", "_shared", "estimated_tokens")

    def __init__(self, local: RateReservation, shared: RateReservation) -> None:
        self._local = local
        self._shared = shared
        self.estimated_tokens = shared.estimated_tokens

    @property
    def settled(self) -> bool:
        return self._shared.settled

    def reconcile(self, actual_tokens: int) -> None:
        self._shared.reconcile(actual_tokens)  # validates the count first
        self._local.reconcile(actual_tokens)

    def release_unused(self) -> None:
        self._shared.release_unused()
        self._local.release_unused()


def _within(share: ProviderLimiter, estimated_tokens: int) -> int:
    # A request larger than the share's whole burst is admitted once the share is full, then
    # charged the rest: Redis being away must not make requests impossible.
    burst = share.tokens.burst
    return estimated_tokens if burst == math.inf else min(estimated_tokens, int(burst))


def _empty_share(limiter: SharedProviderLimiter, replicas: int, ahead: float) -> ProviderLimiter:
    """The share of one of `replicas`, empty `ahead` seconds from now."""
    share = ProviderLimiter.for_worker_share(
        limiter.requests_per_minute,
        limiter.tokens_per_minute,
        replicas,
        clock=limiter._clock,
        sleep=limiter._sleep,
    )
    for dimension in (share.requests, share.tokens):
        if dimension.burst < math.inf:
            dimension.charge(dimension.burst + ahead * dimension.rate / dimension.period)
    return share


if TYPE_CHECKING:

    def _both_fit(
        local: ProviderLimiter, shared: SharedProviderLimiter
    ) -> list[ProviderRateLimiter]:
        return [local, shared]
