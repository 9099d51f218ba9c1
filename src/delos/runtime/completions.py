"""Complete and CompleteStream, above the router: prompt references, then the response cache.

Order: validate → resolve ``prompt_ref`` → cache lookup (single flight for unary requests) →
router. A cache hit costs nothing and reports what it saved; a stream hit is replayed as chunks.
A streamed miss fills the cache only once the stream completed well. Concurrent identical
*streams* are not coalesced: each streams its own answer, since a follower would otherwise
wait for a whole answer before its first token.

With a shared store the in-process cache is level 1 over Redis's level 2: a level-1 miss asks
Redis before the router, and identical requests on different replicas reach the provider once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import anyio

from delos.resilience import Clock
from delos.runtime.cache import CachedAnswer, ResponseCache, replay_chunks, request_cache_key
from delos.runtime.errors import ProviderNotConfigured
from delos.runtime.inputs import CompletionInput
from delos.runtime.observability import Metrics
from delos.runtime.prompts import Prompt, PromptStore, resolve_prompt
from delos.runtime.routing import RoutedAnswer, Router, Sink
from delos.runtime.values import TextDelta, Usage

if TYPE_CHECKING:
    from delos.runtime.shared import SharedCache

__all__ = ["Completions", "NoPromptStore"]


class NoPromptStore:
    """The store used when no prompt directory is configured."""

    _HOW: Final = "prompt_ref needs a prompt store: set DELOS_RUNTIME_PROMPTS_DIR"

    async def get(self, name: str, version: str | None) -> Prompt:
        raise ProviderNotConfigured(self._HOW)

    async def versions(self, name: str) -> list[str]:
        raise ProviderNotConfigured(self._HOW)


class Completions:
    """``clock`` (seconds) times answers served from the cache; the router times the others.

    ``shared_cache``, when given, is the cache's level 2 (on Redis) under ``cache``.
    """

    def __init__(
        self,
        router: Router,
        cache: ResponseCache,
        prompts: PromptStore,
        metrics: Metrics | None = None,
        *,
        clock: Clock = anyio.current_time,
        shared_cache: SharedCache | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.router = router
        self.cache = cache
        self.shared_cache = shared_cache
        self.prompts = prompts
        self._clock = clock

    async def prepare(self, request: CompletionInput) -> CompletionInput:
        """Apply the request's prompt reference, when it has one."""
        return await resolve_prompt(self.prompts, request)

    def _key(self, request: CompletionInput) -> str:
        if request.model is not None:
            matches = self.router.catalog.resolve(request.model, kind="chat")
            family = matches[0].family if matches else request.model
        else:  # each provider's default model: scope by what picks it
            family = f"default:{request.provider or '*'}:{request.routing.value}"
        return request_cache_key(request, family=family)

    async def complete(self, request: CompletionInput) -> RoutedAnswer:
        if not request.use_cache:
            return await self.router.complete(request)
        started = self._clock()
        produced: list[RoutedAnswer] = []

        async def compute() -> tuple[CachedAnswer, bool]:
            answer = await self.router.complete(request)
            produced.append(answer)
            return CachedAnswer.from_routed(answer), answer.finish_reason in _CACHEABLE

        key, ttl = self._key(request), request.cache_ttl_seconds
        miss: Callable[[], Awaitable[tuple[CachedAnswer, bool]]] = compute
        if self.shared_cache is not None:  # level 2 under level 1: Redis before the router
            miss = self.shared_cache.for_level_one(key, compute, ttl_seconds=ttl)
        cached, outcome = await self.cache.get_or_compute(key, miss, ttl_seconds=ttl)
        if outcome == "miss" and not produced:
            outcome = "hit"  # a miss here, answered by level 2: another replica's answer
        self._count(outcome)
        if outcome == "miss":
            return produced[0]
        return _from_cache(cached, self._clock() - started)

    def _count(self, outcome: str) -> None:
        if outcome == "hit":
            self.metrics.record_cache_hit()
        elif outcome == "miss":
            self.metrics.record_cache_miss()
        else:
            self.metrics.record_cache_coalesced()

    async def stream(self, request: CompletionInput, sink: Sink) -> RoutedAnswer:
        if not request.use_cache:
            return await self.router.stream(request, sink)
        started = self._clock()
        key, ttl = self._key(request), request.cache_ttl_seconds
        cached = self.cache.get(key)
        level_two = self.shared_cache
        if cached is None and level_two is not None:
            cached = await level_two.get(key)
            if cached is not None:
                self.cache.put(key, cached, ttl)
        self._count("hit" if cached is not None else "miss")
        if cached is not None:
            first_token: float | None = None
            for piece in replay_chunks(cached):
                await sink(TextDelta(piece))
                if first_token is None:
                    first_token = self._clock() - started
            return _from_cache(cached, self._clock() - started, first_token)
        answer = await self.router.stream(request, sink)
        if answer.finish_reason in _CACHEABLE:
            stored = CachedAnswer.from_routed(answer)
            self.cache.put(key, stored, ttl)
            if level_two is not None:
                await level_two.put(key, stored, ttl)
        return answer


#: Answers worth serving again: complete ones (a filtered or tool-call answer is not).
_CACHEABLE: Final = frozenset({"stop", "length"})


def _from_cache(
    cached: CachedAnswer, elapsed: float, first_token: float | None = None
) -> RoutedAnswer:
    return RoutedAnswer(
        content=cached.content,
        finish_reason=cached.finish_reason,
        provider=cached.provider,
        model=cached.model,
        model_info=None,
        usage=Usage(cached.prompt_tokens, cached.completion_tokens, cached.usage_estimated),
        cost_usd=Decimal(0),
        latency_s=elapsed,
        time_to_first_token_s=first_token if first_token is not None else elapsed,
        attempts=[],
        cached=True,
        cost_saved_usd=cached.cost_usd,
    )
