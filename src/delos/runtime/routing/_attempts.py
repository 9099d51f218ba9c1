"""One upstream attempt, guarded: breaker admission, limiter reservation, latency timing, billing;
and the retry of transient failures on the same provider.

Completions, streams and embeddings all reach a provider through :func:`guarded_attempt`, and
retry through :func:`with_retries`, so every call passes the same breaker, limiter and latency
table and is billed the same way.

Every way an attempt ends settles each guard exactly once: success, failure (a provider fault),
ignored (a caller error, a 429, a local rejection) or abandoned (cancelled: a race or hedge loser,
a client that went away, a deadline). Settling is synchronous, so it also runs while a
cancellation unwinds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from delos.resilience import retrying
from delos.runtime.errors import (
    DelosError,
    ProviderError,
    UnsupportedByProvider,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.routing._candidates import Candidate
from delos.runtime.routing._guards import Guards, Permit
from delos.runtime.routing._outcome import (
    AttemptKind,
    AttemptOutcome,
    AttemptRecord,
    priced_usage,
)
from delos.runtime.values import ChatMessage, TextDelta, ThinkingDelta, ToolCallDelta, Usage

if TYPE_CHECKING:
    from delos.runtime.shared import RateReservation

__all__ = [
    "CALL_DEADLINE",
    "AttemptScope",
    "AttemptTimeLimit",
    "GuardedAttempt",
    "RequestRun",
    "Sink",
    "StreamPiece",
    "guarded_attempt",
    "with_retries",
]

#: The deadline of the call being served, on anyio's clock, when the edge set one: no enclosing
#: cancel scope ends later, so a limit ending no sooner can never fire first (and is not set).
CALL_DEADLINE: ContextVar[float | None] = ContextVar("delos_call_deadline", default=None)

#: What a stream relays to its client: text, thinking text, or a fragment of one tool call.
StreamPiece = TextDelta | ThinkingDelta | ToolCallDelta
Sink = Callable[[StreamPiece], Awaitable[None]]

RequestT = TypeVar("RequestT")
T = TypeVar("T")


@dataclass
class RequestRun(Generic[RequestT]):
    """The state one request shares across its attempts: a completion or a stream
    (``RequestRun[CompletionInput]``), or an embedding (``RequestRun[EmbedInput]``)."""

    request: RequestT
    #: When the request started, on the guards' clock (seconds).
    started: float
    #: Prompt tokens estimated before any call: the limiter reserves them, and they are billed
    #: when a provider reports no usage.
    prompt_tokens_estimate: int
    #: The request's cap on output tokens; None reserves the model's typical answer (0 tokens
    #: for an embedding model).
    max_output_tokens: int | None = None
    sink: Sink | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    errors: list[DelosError] = field(default_factory=list)
    #: True once output has reached the client: no retry, hedge or fallback after it.
    committed: bool = False
    schema_violations: int = 0
    #: Thinking blocks another endpoint signed, left out of the last attempt's request.
    thinking_dropped: int = 0
    #: The messages with image URLs fetched, for providers that need the bytes.
    fetched_messages: tuple[ChatMessage, ...] | None = None
    #: Candidates not yet tried after the current stage (a silent provider must leave time).
    fallbacks_left: int = 0

    def reservation_tokens(self, candidate: Candidate) -> int:
        completion = self.max_output_tokens or candidate.model.typical_output_tokens
        return self.prompt_tokens_estimate + completion


@dataclass
class AttemptScope:
    """What the attempt's body tells its guard: first token, text so far, usage at the end."""

    candidate: Candidate
    record: AttemptRecord
    started: float
    clock: Callable[[], float]
    first_token_at: float | None = None
    text: list[str] = field(default_factory=list)
    usage: Usage | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    _on_first_token: Callable[[], None] | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = self.clock()
            if self._on_first_token is not None:
                self._on_first_token()

    @property
    def time_to_first_token(self) -> float:
        end = self.first_token_at if self.first_token_at is not None else self.clock()
        return end - self.started


def guarded_attempt(
    guards: Guards,
    run: RequestRun[Any],
    candidate: Candidate,
    kind: AttemptKind,
    *,
    operation: str = "chat",
) -> GuardedAttempt:
    """Admit, reserve and time one attempt on ``candidate``; settle everything when it ends.

    Used as ``async with guarded_attempt(...) as scope``: the body calls the provider and
    reports through the scope (first token, text, usage). A :class:`ProviderError` leaving the
    body, or raised by the breaker (:class:`CircuitOpen`) or the limiter
    (:class:`LocalRateLimited`), is recorded in ``run.errors`` and re-raised. ``operation``
    names the call in traces (``chat``, ``embeddings``).
    """
    return GuardedAttempt(guards, run, candidate, kind, operation)


class GuardedAttempt:
    """The block :func:`guarded_attempt` returns: a class rather than a generator-based
    context manager, because every attempt of every request enters one."""

    __slots__ = (
        "_candidate",
        "_connection",
        "_guards",
        "_kind",
        "_operation",
        "_permit",
        "_record",
        "_reservation",
        "_run",
        "_scope",
        "_span",
        "_span_block",
        "_timer",
    )

    def __init__(
        self,
        guards: Guards,
        run: RequestRun[Any],
        candidate: Candidate,
        kind: AttemptKind,
        operation: str,
    ) -> None:
        self._guards = guards
        self._run = run
        self._candidate = candidate
        self._kind = kind
        self._operation = operation

    async def __aenter__(self) -> AttemptScope:
        guards, run, candidate = self._guards, self._run, self._candidate
        record = self._record = AttemptRecord(
            candidate.provider.name, candidate.model.id, self._kind
        )
        run.attempts.append(record)
        breaker_state = guards.breaker(candidate).state.value
        span_block = self._span_block = guards.tracing.attempt_span(
            *candidate.key, self._kind.value, breaker_state, operation=self._operation
        )
        self._span = span_block.__enter__()
        try:
            return await self._admit(guards, run, candidate, record)
        except BaseException as error:
            span_block.__exit__(type(error), error, error.__traceback__)
            raise

    async def _admit(
        self, guards: Guards, run: RequestRun[Any], candidate: Candidate, record: AttemptRecord
    ) -> AttemptScope:
        """Breaker, limiter, then a connection slot; whatever fails undoes what came before."""
        try:
            permit = self._permit = await guards.acquire_permit(candidate)
        except BaseException as error:
            _refused(run, record, error)
            raise
        try:
            reservation = self._reservation = await guards.reserve(
                candidate, run.reservation_tokens(candidate)
            )
        except BaseException as error:
            permit.record_ignored()
            _refused(run, record, error)
            raise
        try:
            self._connection = await guards.take_connection(candidate)
        except BaseException as error:
            permit.record_ignored()
            _release(reservation, record)
            _refused(run, record, error)
            raise
        clock = guards.clock
        timer = self._timer = guards.latency.start(candidate.key)
        scope = self._scope = AttemptScope(
            candidate, record, clock(), clock, _on_first_token=timer.first_token
        )
        return scope

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span_block = self._span_block
        try:
            try:
                self._settle(error)
            finally:
                self._connection.release()
        except BaseException as raised:
            span_block.__exit__(type(raised), raised, raised.__traceback__)
            raise
        if error is not None:
            span_block.__exit__(kind, error, traceback)
            return
        scope, record = self._scope, self._record
        usage = record.usage
        self._span.set_result(
            response_model=scope.response_model or self._candidate.model.id,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reasons=[scope.finish_reason] if scope.finish_reason else (),
            cost_usd=float(record.cost_usd),
        )
        span_block.__exit__(None, None, None)

    def _settle(self, error: BaseException | None) -> None:
        """Settle the breaker, the latency table, the bill and the reservation for how the
        attempt ended: ``error`` is what left the body (None: it succeeded)."""
        guards, run, scope, record = self._guards, self._run, self._scope, self._record
        permit, timer, reservation = self._permit, self._timer, self._reservation
        clock = guards.clock
        if isinstance(error, ProviderError):
            duration = clock() - scope.started
            _settle_failure(guards, permit, error, scope.time_to_first_token)
            if error.breaker_failure:
                timer.finish_failure()
            else:
                timer.finish_abandoned()
            _bill(run, scope)
            _release(reservation, record)
            record.latency_s = duration
            _fail(run, record, error)
        elif error is not None:
            # Cancelled (race or hedge loser, client gone, deadline) or a bug: never evidence
            # against the provider, but what it already cost is still billed (estimated).
            permit.record_ignored()
            timer.finish_abandoned()
            _bill(run, scope)
            _release(reservation, record)
            record.latency_s = clock() - scope.started
            if record.outcome is AttemptOutcome.PENDING:
                record.outcome = AttemptOutcome.CANCELLED
        else:
            permit.record_success(scope.time_to_first_token)
            record.latency_s = clock() - scope.started
            _bill(run, scope)
            output_tokens = record.usage.completion_tokens if record.usage else 0
            timer.finish_success(output_tokens)
            if reservation is not None:
                reservation.reconcile(record.usage.total_tokens if record.usage else 0)
            if record.outcome is AttemptOutcome.PENDING:
                record.outcome = AttemptOutcome.WON


def _refused(run: RequestRun[Any], record: AttemptRecord, error: BaseException) -> None:
    """Record an attempt that never reached the provider: refused by a guard, or cancelled."""
    if isinstance(error, ProviderError):
        _fail(run, record, error)
    else:
        record.outcome = AttemptOutcome.CANCELLED


def _settle_failure(guards: Guards, permit: Permit, error: ProviderError, duration: float) -> None:
    if error.breaker_failure:
        permit.record_failure(duration)
    else:
        permit.record_ignored()
    if isinstance(error, UpstreamRateLimited) and error.retry_after:
        guards.pause(error.provider, error.retry_after)


def _bill(run: RequestRun[Any], scope: AttemptScope) -> None:
    """Price the attempt: reported usage when the body set it, else an estimate."""
    record = scope.record
    usage, cost = priced_usage(
        scope.candidate.model, scope.usage, run.prompt_tokens_estimate, "".join(scope.text)
    )
    record.usage, record.cost_usd = usage, cost


def _release(reservation: RateReservation | None, record: AttemptRecord) -> None:
    if reservation is None:
        return
    if record.usage is not None and record.usage.total_tokens:
        reservation.reconcile(record.usage.total_tokens)
    else:
        reservation.release_unused()


def _fail(run: RequestRun[Any], record: AttemptRecord, error: ProviderError) -> None:
    # A provider without an exact form for a setting was skipped, not tried.
    skipped = isinstance(error, UnsupportedByProvider)
    record.outcome = AttemptOutcome.SKIPPED if skipped else AttemptOutcome.FAILED
    record.error = error.message
    run.errors.append(error)


class AttemptTimeLimit:
    """Bound the block to ``seconds``; running over is the provider's :class:`UpstreamTimeout`.

    Only this limit becomes an upstream timeout: an enclosing deadline cancels as usual. A limit
    that ends no sooner than the enclosing deadline could never fire first, so it sets no cancel
    scope at all (by default the attempt limit and the RPC deadline are the same 120 s).
    """

    __slots__ = ("_provider", "_scope", "_seconds", "_waiting_for")

    def __init__(
        self, guards: Guards, candidate: Candidate, seconds: float, waiting_for: str
    ) -> None:
        deadline = guards.deadline_clock() + seconds
        enclosing = CALL_DEADLINE.get()
        if enclosing is None:
            enclosing = anyio.current_effective_deadline()
        self._scope = anyio.CancelScope(deadline=deadline) if deadline < enclosing else None
        self._provider = candidate.provider.name
        self._seconds = seconds
        self._waiting_for = waiting_for

    def __enter__(self) -> None:
        if self._scope is not None:
            self._scope.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        scope = self._scope
        if scope is None:
            return False
        swallowed = scope.__exit__(kind, error, traceback)
        if scope.cancelled_caught:
            raise UpstreamTimeout(
                self._provider, f"no {self._waiting_for} within {self._seconds:.1f} s"
            ) from None
        return bool(swallowed)


async def with_retries(
    guards: Guards,
    run: RequestRun[Any],
    attempt: Callable[[AttemptKind], Awaitable[T]],
    kind: AttemptKind,
) -> T | None:
    """``attempt(kind)``, then retries (``attempt(AttemptKind.RETRY)``) of transient failures
    on the same provider, as the policy's attempt count, the retry budget and the deadline allow.

    Returns None when the last attempt failed with a :class:`ProviderError` (each failure is in
    ``run.errors``); anything else propagates. The retry policy (tenacity) is only built once
    the first attempt failed: most requests never need it, and building it costs more than the
    rest of the routing decision.
    """
    try:
        return await attempt(kind)
    except ProviderError as error:
        if not _retry_same_provider(run, error):
            return None
        first_failure: list[ProviderError] = [error]
    policy = guards.policy
    # The policy's deadline check keeps anyio's clock: deadlines are anyio clock times.
    try:
        async for retry_state in retrying(
            max_attempts=policy.attempts_per_provider,
            initial=policy.retry_initial_backoff,
            maximum=policy.retry_max_backoff,
            is_retryable=lambda error: _retry_same_provider(run, error),
            retry_after_of=lambda error: getattr(error, "retry_after", None),
            budget=guards.budget,
            sleep=guards.sleep,
        ):
            with retry_state:
                if first_failure:  # the attempt above: let the policy decide what follows
                    raise first_failure.pop()
                return await attempt(AttemptKind.RETRY)
    except ProviderError:
        return None
    return None


def _retry_same_provider(run: RequestRun[Any], error: BaseException) -> bool:
    """Transient provider faults (a 5xx, a dropped connection, a malformed answer) are worth a
    second try on the same provider, before any output reached the client.

    Not a timeout: a provider that just stayed silent for the whole attempt limit is better
    replaced by the next candidate (or reported) than waited on twice.
    """
    if run.committed or isinstance(error, UpstreamTimeout):
        return False
    return isinstance(error, UpstreamUnavailable | UpstreamProtocolError)
