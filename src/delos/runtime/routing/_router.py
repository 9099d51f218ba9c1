"""The router: a validated request in, upstream attempts out, one answer back.

- Candidates come in strategy order (``_candidates``); those whose breaker is open are skipped.
- Latency routing **races** the best candidates (an explored one and one to explore); hedging
  starts a second attempt when the first has produced no token after the live p95 time to first
  token. Either way the first good answer wins — for streams, the first token — and the others are
  cancelled, their upstream requests closed, their cost still billed.
- A failure before any output reached the client falls back to the next candidate; transient
  failures are retried on the same provider first, within the retry budget and the deadline.
- Once output has reached the client (the commit point) nothing else is tried: a failure ends
  the stream with an error, never a truncation that looks complete.
- With ``output_schema``, answers are validated before anything is committed; a non-conforming
  answer is retried once on the next candidate, then reported with the validation failure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
from cachetools import TTLCache

from delos.resilience import AllAttemptsFailed, BreakerState, RaceTicket, race
from delos.runtime.catalog import Catalog, estimate_prompt_tokens
from delos.runtime.config import PROVIDERS
from delos.runtime.errors import (
    AllCandidatesFailed,
    DelosError,
    OutputSchemaViolation,
    ProviderError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.media import ImageFetcher, resolve_image_urls
from delos.runtime.providers.base import Provider
from delos.runtime.providers.registry import effective_catalog
from delos.runtime.routing._attempts import (
    AttemptScope,
    AttemptTimeLimit,
    RequestRun,
    Sink,
    StreamPiece,
    guarded_attempt,
    with_retries,
)
from delos.runtime.routing._candidates import Candidate, CandidatePlan, candidates_for
from delos.runtime.routing._conversation import endpoint_of, messages_for_endpoint, stamped
from delos.runtime.routing._guards import Guards
from delos.runtime.routing._outcome import AttemptKind, AttemptOutcome, AttemptRecord, RoutedAnswer
from delos.runtime.schema import validation_error
from delos.runtime.values import (
    ChatRequest,
    ImagePart,
    StreamFinished,
    TextDelta,
    Thinking,
    ToolCall,
)

__all__ = ["Router"]

log = logging.getLogger("delos.runtime.routing")

#: A non-conforming structured answer is retried on this many candidates in all.
_SCHEMA_ATTEMPTS = 2
#: Sessions remembered (least recently used first out) and for how long since their last turn
#: (seconds): long enough for an agent's pauses, bounded in memory.
_SESSIONS = 100_000
_SESSION_SECONDS = 3600.0


@dataclass(slots=True)
class _Won:
    scope: AttemptScope
    content: str
    finish_reason: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()


Attempt = Callable[[Candidate, AttemptKind, RaceTicket | None], Awaitable[_Won]]
CompletionRun = RequestRun[CompletionInput]
#: One attempt of a race or hedge: the candidate, its kind, its start delay (seconds).
_Start = tuple[Candidate, AttemptKind, float]


class Router:
    """Routes completions and streams over ``providers``. Time (latencies, hedge delays, retry
    backoffs) is read from the guards' clock and sleep, so one clock drives all of it."""

    def __init__(
        self,
        providers: dict[str, Provider],
        catalog: Catalog,
        guards: Guards,
        *,
        quality_order: tuple[str, ...],
        image_fetcher: ImageFetcher | None = None,
    ) -> None:
        self.providers = providers
        #: Fetches images given by URL for providers that need the bytes; None: not allowed.
        self.image_fetcher = image_fetcher
        self._base_catalog = catalog
        self.guards = guards
        self.quality_order = quality_order
        self._clock = guards.clock
        #: session id → the (provider, model) that served its last turn.
        self.sessions: TTLCache[str, tuple[str, str]] = TTLCache(
            maxsize=_SESSIONS, ttl=_SESSION_SECONDS, timer=guards.clock
        )

    @property
    def catalog(self) -> Catalog:
        """The shipped catalog plus models discovered at run time."""
        return effective_catalog(self._base_catalog, self.providers)

    # -- planning -------------------------------------------------------------------------------

    def candidates(self, request: CompletionInput) -> CandidatePlan:
        plan = candidates_for(
            request,
            providers=self.providers,
            catalog=self.catalog,
            quality_order=self.quality_order,
            latency_of=lambda c: self.guards.latency.load(c.key),
            admitted=self.guards.admitted,
        )
        if request.routing is Routing.LATENCY:
            return CandidatePlan(self._explore_first(plan.candidates), plan.skipped)
        return plan

    def _explore_first(self, found: list[Candidate]) -> list[Candidate]:
        """Latency order that explores: an untried (or stale) candidate is never assumed fast.

        Racing, the best explored candidate races the unexplored ones, so exploring costs the
        client nothing; without a race, an unexplored candidate goes first, once.
        """
        table = self.guards.latency
        explored = [c for c in found if table.load(c.key) is not None]
        unexplored = [c for c in found if table.load(c.key) is None]
        explored.sort(key=lambda c: table.load(c.key) or 0.0)
        if self.guards.policy.race_width > 1:
            return explored[:1] + unexplored + explored[1:]
        return unexplored + explored

    def _hedging(self, request: CompletionInput) -> bool:
        flag = request.metadata.get("delos.hedge")
        if flag is not None:
            return flag.strip().lower() in ("1", "true", "yes", "on")
        return self.guards.policy.hedging

    def _hedge_delay(self, candidate: Candidate) -> float | None:
        p95 = self.guards.latency.ttft_percentile(candidate.key, 0.95)
        if p95 is None:
            return None  # not enough samples: a hedge would be a guess
        return max(self.guards.policy.hedge_min_delay, p95)

    # -- entry points ---------------------------------------------------------------------------

    async def complete(self, request: CompletionInput) -> RoutedAnswer:
        """One answer. Raises :class:`AllCandidatesFailed` (or a request error)."""
        run = self._run(request, None)
        return await self._execute(run, partial(self._unary_attempt, run))

    async def stream(self, request: CompletionInput, sink: Sink) -> RoutedAnswer:
        """Stream deltas to ``sink``; return the finished answer (usage and cost included)."""
        run = self._run(request, sink)
        return await self._execute(run, partial(self._stream_attempt, run))

    def _run(self, request: CompletionInput, sink: Sink | None) -> CompletionRun:
        prompt_tokens = estimate_prompt_tokens(m.content for m in request.messages)
        return RequestRun(request, self._clock(), prompt_tokens, request.max_tokens, sink)

    # -- orchestration --------------------------------------------------------------------------

    async def _execute(self, run: CompletionRun, attempt: Attempt) -> RoutedAnswer:
        plan = self.candidates(run.request)
        candidates = plan.candidates
        for skipped, why in plan.skipped:
            run.attempts.append(
                AttemptRecord(
                    skipped.provider.name,
                    skipped.model.id,
                    AttemptKind.SKIPPED,
                    AttemptOutcome.SKIPPED,
                    error=why.reason,
                )
            )
        self.guards.budget.deposit()
        await self._fetch_images(run, candidates)
        pinned = self._pinned(run.request, candidates)
        if pinned is not None:
            # The session's last provider and model first, alone: its prompt cache is warm.
            first: list[_Start] = [(pinned, AttemptKind.PRIMARY, 0.0)]
            rest = [c for c in candidates if c is not pinned]
        else:
            first, rest = self._first_stage(run.request, candidates)
        won: _Won | None = None
        run.fallbacks_left = len(rest)
        if len(first) > 1:
            won = await self._race(run, attempt, first)
        else:
            won = await self._with_retries(run, attempt, first[0][0], AttemptKind.PRIMARY)
        for index, candidate in enumerate(rest):
            if won is not None or run.committed or not self._may_fall_back(run):
                break
            run.fallbacks_left = len(rest) - index - 1
            won = await self._with_retries(run, attempt, candidate, AttemptKind.FALLBACK)
        if won is None:
            raise AllCandidatesFailed(run.errors or [UpstreamUnavailable("gateway", "no attempt")])
        if run.request.session_id is not None:
            self.sessions[run.request.session_id] = won.scope.candidate.key
        return self._answer(run, won)

    async def _fetch_images(self, run: CompletionRun, candidates: list[Candidate]) -> None:
        """Fetch the request's image URLs once, when allowed and a candidate needs the bytes.

        A URL the client should not have sent (private address, wrong type, too big) is its
        error; a network failure leaves the candidates that need bytes to skip themselves."""
        fetcher = self.image_fetcher
        if fetcher is None or not _has_image_urls(run.request):
            return
        if all(_takes_image_urls(c) for c in candidates):
            return
        try:
            run.fetched_messages = await resolve_image_urls(run.request.messages, fetcher)
        except ProviderError as error:
            log.warning("image fetch failed: %s", error.message)

    def _pinned(self, request: CompletionInput, candidates: list[Candidate]) -> Candidate | None:
        """The candidate that served the session's last turn, while it is healthy: breaker
        closed and not paused by a rate limit. None without a session or once it is not."""
        if request.session_id is None:
            return None
        key = self.sessions.get(request.session_id)
        if key is None:
            return None
        for candidate in candidates:
            if candidate.key == key:
                breaker = self.guards.breaker_state(*key)
                limiter = self.guards.limiters.get(key[0])
                paused = limiter is not None and limiter.paused_until is not None
                return candidate if breaker is BreakerState.CLOSED and not paused else None
        return None

    def _first_stage(
        self, request: CompletionInput, candidates: list[Candidate]
    ) -> tuple[list[_Start], list[Candidate]]:
        """The attempts that start together (race) or staggered (hedge), and the fallbacks."""
        policy = self.guards.policy
        if request.routing is Routing.LATENCY and policy.race_width > 1 and len(candidates) > 1:
            width = min(policy.race_width, len(candidates))
            group = [(c, AttemptKind.RACE, 0.0) for c in candidates[:width]]
            return group, candidates[width:]
        if self._hedging(request) and len(candidates) > 1:
            delay = self._hedge_delay(candidates[0])
            if delay is not None:
                return (
                    [
                        (candidates[0], AttemptKind.PRIMARY, 0.0),
                        (candidates[1], AttemptKind.HEDGE, delay),
                    ],
                    candidates[2:],
                )
        return [(candidates[0], AttemptKind.PRIMARY, 0.0)], candidates[1:]

    async def _race(self, run: CompletionRun, attempt: Attempt, group: list[_Start]) -> _Won | None:
        hedged = any(kind is AttemptKind.HEDGE for _, kind, _ in group)

        def may_start(index: int) -> bool:
            # Races are what the client asked for; hedges are extra load and draw on the budget.
            return not hedged or self.guards.budget.try_withdraw()

        try:
            result = await race(
                [
                    partial(_as_race_attempt, attempt, candidate, kind)
                    for candidate, kind, _ in group
                ],
                start_delays=[delay for _, _, delay in group],
                may_start=may_start,
                sleep=self.guards.sleep,
            )
        except AllAttemptsFailed as failed:
            for error in failed.errors:
                if not isinstance(error, DelosError):
                    raise error from None  # a bug, not a provider failure
            return None
        return result.value

    async def _with_retries(
        self, run: CompletionRun, attempt: Attempt, candidate: Candidate, kind: AttemptKind
    ) -> _Won | None:
        """One attempt, then retries of transient failures on the same provider."""
        return await with_retries(
            self.guards, run, lambda kind: attempt(candidate, kind, None), kind
        )

    def _may_fall_back(self, run: CompletionRun) -> bool:
        last = run.errors[-1] if run.errors else None
        if isinstance(last, OutputSchemaViolation):
            return run.schema_violations < _SCHEMA_ATTEMPTS
        return not isinstance(last, ProviderError) or last.retryable

    def _answer(self, run: CompletionRun, won: _Won) -> RoutedAnswer:
        record = won.scope.record
        assert record.usage is not None
        first_token_at = won.scope.first_token_at
        if first_token_at is None:  # an empty answer: its first token is its end
            first_token_at = self._clock()
        return RoutedAnswer(
            content=won.content,
            finish_reason=won.finish_reason,
            provider=won.scope.candidate.provider.name,
            model=won.model,
            model_info=won.scope.candidate.model,
            usage=record.usage,
            cost_usd=record.cost_usd,
            latency_s=self._clock() - run.started,
            time_to_first_token_s=first_token_at - run.started,
            attempts=run.attempts,
            tool_calls=won.tool_calls,
            thinking=stamped(won.thinking, endpoint_of(*won.scope.candidate.key)),
            thinking_dropped=run.thinking_dropped,
        )

    # -- attempts -------------------------------------------------------------------------------

    async def _unary_attempt(
        self, run: CompletionRun, candidate: Candidate, kind: AttemptKind, ticket: RaceTicket | None
    ) -> _Won:
        async with guarded_attempt(self.guards, run, candidate, kind) as scope:
            limit = self._time_limit(run, self.guards.policy.unary_timeout)
            with AttemptTimeLimit(self.guards, candidate, limit, "answer"):
                completion = await candidate.provider.complete(_chat_request(run, candidate))
            scope.first_token()
            scope.text.append(completion.content)
            scope.usage = completion.usage
            scope.response_model, scope.finish_reason = completion.model, completion.finish_reason
            self._check_schema(run, candidate, completion.content)
            if ticket is not None and not ticket.claim():
                # Finished, but another attempt won first.
                scope.record.outcome = AttemptOutcome.CANCELLED
                await anyio.sleep_forever()  # the race is cancelling this attempt
            return _Won(
                scope,
                completion.content,
                completion.finish_reason,
                completion.model,
                completion.tool_calls,
                completion.thinking,
            )

    async def _stream_attempt(
        self, run: CompletionRun, candidate: Candidate, kind: AttemptKind, ticket: RaceTicket | None
    ) -> _Won:
        sink = run.sink
        assert sink is not None
        # Structured answers are validated before anything reaches the client.
        buffering = run.request.output_schema is not None
        held: list[StreamPiece] = []  # what a buffered stream relays once validated
        async with guarded_attempt(self.guards, run, candidate, kind) as scope:
            finished: StreamFinished | None = None
            policy = self.guards.policy
            first_limit = self._time_limit(run, policy.first_token_timeout)
            async with self.guards.silence.watch(policy.idle_timeout) as silence:
                silence.waiting(first_limit)
                async with candidate.provider.open_stream(_chat_request(run, candidate)) as events:
                    async for event in events:
                        silence.done_waiting()
                        if isinstance(event, StreamFinished):
                            finished = event
                            break
                        if scope.first_token_at is None:
                            scope.first_token()
                            if not buffering:
                                await self._commit(run, scope, ticket)
                        if isinstance(event, TextDelta):
                            scope.text.append(event.text)
                        if buffering:
                            held.append(event)
                        else:
                            await sink(event)
                        silence.waiting(policy.idle_timeout)
            if silence.fired:
                name = candidate.provider.name
                if scope.first_token_at is None:
                    raise UpstreamTimeout(name, f"no first token within {silence.limit_hit:.1f} s")
                raise UpstreamTimeout(name, f"stream silent for {silence.limit_hit:.1f} s")
            if finished is None:
                raise UpstreamProtocolError(
                    candidate.provider.name, "stream ended without a finish"
                )
            scope.usage = finished.usage
            scope.response_model, scope.finish_reason = finished.model, finished.finish_reason
            content = "".join(scope.text)
            if buffering:
                self._check_schema(run, candidate, content)
                await self._commit(run, scope, ticket)
                for piece in held:
                    await sink(piece)
            elif scope.first_token_at is None:  # an empty answer: commit at its end
                await self._commit(run, scope, ticket)
            return _Won(
                scope,
                content,
                finished.finish_reason,
                finished.model,
                finished.tool_calls,
                finished.thinking,
            )

    async def _commit(
        self, run: CompletionRun, scope: AttemptScope, ticket: RaceTicket | None
    ) -> None:
        if ticket is not None and not ticket.claim():
            scope.record.outcome = AttemptOutcome.CANCELLED
            await anyio.sleep_forever()  # another attempt won: the race is cancelling this one
        run.committed = True

    def _time_limit(self, run: CompletionRun, limit: float) -> float:
        """``limit`` seconds, or half the remaining deadline when fallbacks are left."""
        if run.fallbacks_left:
            remaining = anyio.current_effective_deadline() - anyio.current_time()
            if math.isfinite(remaining):
                return max(0.0, min(limit, remaining / 2))
        return limit

    def _check_schema(self, run: CompletionRun, candidate: Candidate, content: str) -> None:
        schema = run.request.output_schema
        if schema is None:
            return
        problem = validation_error(schema, content)
        if problem is not None:
            run.schema_violations += 1
            raise OutputSchemaViolation(
                candidate.provider.name, f"answer does not conform to output_schema: {problem}"
            )


async def _as_race_attempt(
    attempt: Attempt, candidate: Candidate, kind: AttemptKind, ticket: RaceTicket
) -> _Won:
    return await attempt(candidate, kind, ticket)


def _has_image_urls(request: CompletionInput) -> bool:
    return any(
        isinstance(part, ImagePart) and part.url.startswith("https://")
        for message in request.messages
        for part in message.parts
    )


def _takes_image_urls(candidate: Candidate) -> bool:
    facts = PROVIDERS.get(candidate.provider.name)
    return facts is None or facts.image_urls


def _chat_request(run: CompletionRun, candidate: Candidate) -> ChatRequest:
    request = run.request
    source = request.messages
    if run.fetched_messages is not None and not _takes_image_urls(candidate):
        source = run.fetched_messages
    name = candidate.provider.name
    endpoint = endpoint_of(name, candidate.model.id)
    messages, dropped = messages_for_endpoint(source, endpoint, name)
    run.thinking_dropped = dropped
    return ChatRequest(
        model=candidate.model.id,
        messages=messages,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=request.stop,
        output_schema=request.output_schema,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        reasoning=request.reasoning,
    )
