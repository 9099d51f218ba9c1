"""The router: turns a validated request into upstream attempts and one answer.

Unary requests try candidates in strategy order and fall back to the next candidate on a
retryable failure. Streams do the same until the first token has been handed to the client (the
commit point); after it, a failure ends the stream with an error, never with a silent truncation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from delos.runtime.catalog import Catalog
from delos.runtime.errors import (
    AllCandidatesFailed,
    DelosError,
    ProviderError,
    UpstreamProtocolError,
)
from delos.runtime.providers.base import Provider
from delos.runtime.requests import CompletionInput
from delos.runtime.routing._candidates import Candidate, candidates_for
from delos.runtime.routing._outcome import AttemptRecord, RoutedAnswer, priced_usage
from delos.runtime.types import ChatRequest, StreamEvent, StreamFinished, TextDelta, Usage

__all__ = ["RoutedStream", "Router"]


def chat_request(request: CompletionInput, candidate: Candidate) -> ChatRequest:
    return ChatRequest(
        model=candidate.model.id,
        messages=request.messages,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=request.stop,
        output_schema=request.output_schema,
    )


class Router:
    def __init__(
        self,
        providers: dict[str, Provider],
        catalog: Catalog,
        *,
        quality_order: tuple[str, ...],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.providers = providers
        self.catalog = catalog
        self.quality_order = quality_order
        self._clock = clock

    def candidates(self, request: CompletionInput) -> list[Candidate]:
        return candidates_for(
            request,
            providers=self.providers,
            catalog=self.catalog,
            quality_order=self.quality_order,
        )

    async def complete(self, request: CompletionInput) -> RoutedAnswer:
        """One answer. Raises :class:`AllCandidatesFailed` (or a request error)."""
        candidates = self.candidates(request)
        attempts: list[AttemptRecord] = []
        errors: list[DelosError] = []
        started = self._clock()
        for index, candidate in enumerate(candidates):
            record = AttemptRecord(
                candidate.provider.name, candidate.model.id, "primary" if index == 0 else "fallback"
            )
            attempts.append(record)
            attempt_started = self._clock()
            try:
                completion = await candidate.provider.complete(chat_request(request, candidate))
            except ProviderError as error:
                record.outcome, record.error = "failed", error.message
                record.latency_s = self._clock() - attempt_started
                errors.append(error)
                if not error.retryable:
                    break
                continue
            now = self._clock()
            usage, cost = priced_usage(
                candidate.model, completion.usage, request.messages, completion.content
            )
            record.outcome, record.usage, record.cost_usd = "won", usage, cost
            record.latency_s = now - attempt_started
            return RoutedAnswer(
                content=completion.content,
                finish_reason=completion.finish_reason,
                provider=candidate.provider.name,
                model=completion.model,
                model_info=candidate.model,
                usage=usage,
                cost_usd=cost,
                latency_s=now - started,
                time_to_first_token_s=now - started,
                attempts=attempts,
            )
        raise AllCandidatesFailed(errors)

    @asynccontextmanager
    async def open_stream(self, request: CompletionInput) -> AsyncIterator[RoutedStream]:
        """A stream whose first token has arrived; leaving the block closes the upstream."""
        candidates = self.candidates(request)
        attempts: list[AttemptRecord] = []
        errors: list[DelosError] = []
        started = self._clock()
        for index, candidate in enumerate(candidates):
            record = AttemptRecord(
                candidate.provider.name, candidate.model.id, "primary" if index == 0 else "fallback"
            )
            attempts.append(record)
            async with AsyncExitStack() as stack:
                try:
                    events = await stack.enter_async_context(
                        candidate.provider.open_stream(chat_request(request, candidate))
                    )
                    first = await anext(events)
                except ProviderError as error:
                    record.outcome, record.error = "failed", error.message
                    record.latency_s = self._clock() - started
                    errors.append(error)
                    if not error.retryable:
                        break
                    continue
                except StopAsyncIteration:
                    record.outcome, record.error = "failed", "empty stream"
                    continue
                stream = RoutedStream(
                    request, candidate, first, events, attempts, record, started, self._clock
                )
                yield stream
                return
        raise AllCandidatesFailed(errors)


@dataclass
class _StreamState:
    text_parts: list[str]
    finished: StreamFinished | None = None


class RoutedStream:
    """The committed stream of one candidate. Iterate for text deltas; then read ``answer``."""

    def __init__(
        self,
        request: CompletionInput,
        candidate: Candidate,
        first: StreamEvent,
        events: AsyncIterator[StreamEvent],
        attempts: list[AttemptRecord],
        record: AttemptRecord,
        started: float,
        clock: Callable[[], float],
    ) -> None:
        self.request = request
        self.candidate = candidate
        self._first: StreamEvent | None = first
        self._events = events
        self.attempts = attempts
        self._record = record
        self._started = started
        self._clock = clock
        self.time_to_first_token_s = clock() - started
        self._state = _StreamState([])
        self.answer: RoutedAnswer | None = None

    @property
    def provider(self) -> str:
        return self.candidate.provider.name

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas until the stream ends well; a failure raises (the stream is committed)."""
        try:
            while True:
                if self._first is not None:
                    event, self._first = self._first, None
                else:
                    try:
                        event = await anext(self._events)
                    except StopAsyncIteration:
                        break
                if isinstance(event, TextDelta):
                    self._state.text_parts.append(event.text)
                    yield event.text
                else:
                    self._state.finished = event
                    break
        except ProviderError as error:
            self._record.outcome, self._record.error = "failed", error.message
            self._bill(None)
            raise
        finished = self._state.finished
        if finished is None:
            raise UpstreamProtocolError(self.provider, "stream ended without a finish")
        self._record.outcome = "won"
        usage, cost = self._bill(finished.usage)
        now = self._clock()
        self.answer = RoutedAnswer(
            content="".join(self._state.text_parts),
            finish_reason=finished.finish_reason,
            provider=self.provider,
            model=finished.model,
            model_info=self.candidate.model,
            usage=usage,
            cost_usd=cost,
            latency_s=now - self._started,
            time_to_first_token_s=self.time_to_first_token_s,
            attempts=self.attempts,
        )

    def _bill(self, reported: Usage | None) -> tuple[Usage, Decimal]:
        usage, cost = priced_usage(
            self.candidate.model,
            reported,
            self.request.messages,
            "".join(self._state.text_parts),
        )
        self._record.usage, self._record.cost_usd = usage, cost
        self._record.latency_s = self._clock() - self._started
        return usage, cost
