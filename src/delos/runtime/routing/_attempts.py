"""One upstream attempt, guarded: breaker admission, limiter reservation, latency timing, billing.

Every way an attempt ends settles each guard exactly once: success, failure (a provider fault),
ignored (a caller error, a 429, a local rejection) or abandoned (cancelled: a race or hedge loser,
a client that went away, a deadline). Settling is synchronous, so it also runs while a
cancellation unwinds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from delos.resilience import CallPermit, Reservation
from delos.runtime.catalog import estimate_prompt_tokens
from delos.runtime.errors import DelosError, ProviderError, UpstreamRateLimited
from delos.runtime.inputs import CompletionInput
from delos.runtime.routing._candidates import Candidate
from delos.runtime.routing._guards import Guards
from delos.runtime.routing._outcome import AttemptRecord, priced_usage
from delos.runtime.values import ChatRequest, Usage

__all__ = ["AttemptScope", "RequestRun", "Sink", "guarded_attempt"]

Sink = Callable[[str], Awaitable[None]]


@dataclass
class RequestRun:
    """The state one request shares across its attempts."""

    request: CompletionInput
    started: float
    sink: Sink | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    errors: list[DelosError] = field(default_factory=list)
    #: True once output has reached the client: no retry, hedge or fallback after it.
    committed: bool = False
    prompt_tokens_estimate: int = 0
    schema_violations: int = 0
    #: Candidates not yet tried after the current stage (a silent provider must leave time).
    fallbacks_left: int = 0

    def __post_init__(self) -> None:
        self.prompt_tokens_estimate = estimate_prompt_tokens(
            m.content for m in self.request.messages
        )

    @property
    def output_schema(self) -> Mapping[str, Any] | None:
        return self.request.output_schema

    def chat_for(self, candidate: Candidate) -> ChatRequest:
        request = self.request
        return ChatRequest(
            model=candidate.model.id,
            messages=request.messages,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            stop=request.stop,
            output_schema=request.output_schema,
        )

    def reservation_tokens(self, candidate: Candidate) -> int:
        completion = self.request.max_tokens or candidate.model.typical_output_tokens
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


@asynccontextmanager
async def guarded_attempt(
    guards: Guards,
    run: RequestRun,
    candidate: Candidate,
    kind: str,
    clock: Callable[[], float],
) -> AsyncIterator[AttemptScope]:
    """Admit, reserve and time one attempt on ``candidate``; settle everything when it ends."""
    record = AttemptRecord(candidate.provider.name, candidate.model.id, kind)
    run.attempts.append(record)
    breaker_state = guards.breaker(candidate).state.value
    with guards.tracing.attempt_span(*candidate.key, kind, breaker_state) as span:
        async with _guarded(guards, run, candidate, record, clock) as scope:
            yield scope
        usage = record.usage
        span.set_result(
            response_model=scope.response_model or candidate.model.id,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reasons=[scope.finish_reason] if scope.finish_reason else (),
            cost_usd=float(record.cost_usd),
        )


@asynccontextmanager
async def _guarded(
    guards: Guards,
    run: RequestRun,
    candidate: Candidate,
    record: AttemptRecord,
    clock: Callable[[], float],
) -> AsyncIterator[AttemptScope]:
    try:
        permit = guards.acquire_permit(candidate)
    except ProviderError as error:
        _fail(run, record, error)
        raise
    reservation: Reservation | None = None
    try:
        reservation = await guards.reserve(candidate, run.reservation_tokens(candidate))
    except BaseException as error:
        permit.record_ignored()
        if isinstance(error, ProviderError):
            _fail(run, record, error)
        else:
            record.outcome = "cancelled"
        raise
    timer = guards.latency.start(candidate.key)
    scope = AttemptScope(candidate, record, clock(), clock, _on_first_token=timer.first_token)
    try:
        yield scope
    except ProviderError as error:
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
        raise
    except BaseException:
        # Cancelled (race or hedge loser, client gone, deadline) or a bug: never evidence
        # against the provider, but what it already cost is still billed (estimated).
        permit.record_ignored()
        timer.finish_abandoned()
        _bill(run, scope)
        _release(reservation, record)
        record.latency_s = clock() - scope.started
        if record.outcome == "pending":
            record.outcome = "cancelled"
        raise
    else:
        permit.record_success(scope.time_to_first_token)
        record.latency_s = clock() - scope.started
        _bill(run, scope)
        output_tokens = record.usage.completion_tokens if record.usage else 0
        timer.finish_success(output_tokens)
        if reservation is not None:
            reservation.reconcile(record.usage.total_tokens if record.usage else 0)
        if record.outcome == "pending":
            record.outcome = "won"


def _settle_failure(
    guards: Guards, permit: CallPermit, error: ProviderError, duration: float
) -> None:
    if error.breaker_failure:
        permit.record_failure(duration)
    else:
        permit.record_ignored()
    if isinstance(error, UpstreamRateLimited) and error.retry_after:
        guards.pause(error.provider, error.retry_after)


def _bill(run: RequestRun, scope: AttemptScope) -> None:
    """Price the attempt: reported usage when the body set it, else an estimate."""
    record = scope.record
    usage, cost = priced_usage(
        scope.candidate.model, scope.usage, run.request.messages, "".join(scope.text)
    )
    record.usage, record.cost_usd = usage, cost


def _release(reservation: Reservation | None, record: AttemptRecord) -> None:
    if reservation is None:
        return
    if record.usage is not None and record.usage.total_tokens:
        reservation.reconcile(record.usage.total_tokens)
    else:
        reservation.release_unused()


def _fail(run: RequestRun, record: AttemptRecord, error: ProviderError) -> None:
    record.outcome, record.error = "failed", error.message
    run.errors.append(error)
