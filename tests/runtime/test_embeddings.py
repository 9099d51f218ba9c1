"""Embeddings through the guarded attempt, on scripted providers and trio's virtual clock.

An embeddings call passes the same breaker, limiter, latency table and retry policy as a
completion, and never falls back to another provider.
"""

from __future__ import annotations

import anyio
import pytest

from delos.resilience import BreakerConfig, BreakerState
from delos.runtime.catalog import cost_usd, estimate_prompt_tokens
from delos.runtime.embeddings import embed
from delos.runtime.errors import (
    AllCandidatesFailed,
    CircuitOpen,
    LocalRateLimited,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.inputs import embed_input
from delos.runtime.routing import ResiliencePolicy
from delos.runtime.values import Usage
from tests.runtime.scripted import Reply, ScriptedProvider, gateway_on, mock_clock_backend

pytestmark = pytest.mark.anyio

TEXTS = ["hello world", "goodbye"]
MODEL = ("openai", "text-embedding-3-small")


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return mock_clock_backend()


def unavailable() -> UpstreamUnavailable:
    return UpstreamUnavailable("openai", "502 Bad Gateway", http_status=502)


async def test_an_answer_is_priced_timed_and_recorded_in_the_latency_table() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=0.75, usage=Usage(7, 0)))
    gateway = gateway_on(openai)

    answer = await embed(gateway, embed_input(texts=TEXTS))

    model = gateway.catalog.model(*MODEL)
    assert model is not None
    assert answer.vectors == [[0.0, 1.0], [1.0, 1.0]]
    assert (answer.provider, answer.model, answer.latency_s) == (*MODEL, 0.75)
    assert answer.usage == Usage(7, 0)
    assert answer.cost_usd == cost_usd(model, 7, 0)
    latency = gateway.guards.latency.snapshot(MODEL)
    assert (latency.samples, latency.ttft_ewma_ms, latency.in_flight) == (1, 750.0, 0)


async def test_without_reported_usage_the_prompt_is_estimated() -> None:
    gateway = gateway_on(ScriptedProvider("openai", then=Reply(usage=None)))

    answer = await embed(gateway, embed_input(texts=TEXTS))

    assert answer.usage == Usage(estimate_prompt_tokens(TEXTS), 0, estimated=True)


async def test_a_transient_failure_is_retried_on_the_same_provider_and_never_elsewhere() -> None:
    openai = ScriptedProvider(
        "openai", Reply(delay=1.0, error=unavailable()), then=Reply(delay=1.0)
    )
    gemini = ScriptedProvider("gemini")
    gateway = gateway_on(openai, gemini)
    policy = gateway.guards.policy

    answer = await embed(gateway, embed_input(texts=TEXTS))

    assert (answer.provider, openai.calls, gemini.calls) == ("openai", 2, 0)
    assert gateway.guards.budget.withdrawals == 1
    assert 2.0 <= anyio.current_time() <= 2.0 + policy.retry_initial_backoff


async def test_a_provider_that_keeps_failing_is_reported_not_replaced() -> None:
    openai = ScriptedProvider("openai", then=Reply(error=unavailable()))
    gemini = ScriptedProvider("gemini")
    gateway = gateway_on(openai, gemini)

    with pytest.raises(AllCandidatesFailed) as failed:
        await embed(gateway, embed_input(texts=TEXTS))

    attempts = gateway.guards.policy.attempts_per_provider
    assert [type(e) for e in failed.value.errors] == [UpstreamUnavailable] * attempts
    assert (openai.calls, gemini.calls) == (attempts, 0)
    breaker = gateway.guards.breakers.get_breaker("openai/text-embedding-3-small").snapshot()
    assert (breaker.calls_in_window, breaker.failure_rate) == (attempts, 1.0)


async def test_a_silent_provider_times_out_once_without_a_retry() -> None:
    openai = ScriptedProvider("openai", then=Reply(delay=500.0))
    gateway = gateway_on(openai)

    with pytest.raises(AllCandidatesFailed) as failed:
        await embed(gateway, embed_input(texts=TEXTS))

    [error] = failed.value.errors
    assert isinstance(error, UpstreamTimeout)
    assert anyio.current_time() == gateway.guards.policy.unary_timeout
    assert (openai.calls, openai.cancelled) == (1, 1)


async def test_an_open_breaker_refuses_without_calling_the_provider() -> None:
    breaker = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=30.0)
    openai = ScriptedProvider("openai", then=Reply(error=unavailable()))
    gateway = gateway_on(openai, policy=ResiliencePolicy(breaker=breaker))
    with pytest.raises(AllCandidatesFailed):
        await embed(gateway, embed_input(texts=TEXTS))  # two failed calls open the breaker
    assert gateway.guards.breaker_state(*MODEL) is BreakerState.OPEN

    with pytest.raises(AllCandidatesFailed) as refused:
        await embed(gateway, embed_input(texts=TEXTS))

    assert [type(e) for e in refused.value.errors] == [CircuitOpen]
    assert openai.calls == 2


async def test_embeddings_wait_in_the_providers_rate_limiter_like_completions() -> None:
    openai = ScriptedProvider("openai")
    limits = {"limits": {"openai": {"requests_per_minute": 1}}}
    gateway = gateway_on(openai, settings=limits)
    await embed(gateway, embed_input(texts=TEXTS))

    with pytest.raises(AllCandidatesFailed) as refused:
        await embed(gateway, embed_input(texts=TEXTS))

    [error] = refused.value.errors
    assert isinstance(error, LocalRateLimited)
    assert (openai.calls, anyio.current_time()) == (1, 0.0)


async def test_a_429_pauses_the_provider_for_its_retry_after() -> None:
    limited = UpstreamRateLimited("openai", "429 Too Many Requests", retry_after=5.0)
    openai = ScriptedProvider("openai", Reply(error=limited))
    gateway = gateway_on(openai)

    with pytest.raises(AllCandidatesFailed) as failed:
        await embed(gateway, embed_input(texts=TEXTS))

    assert failed.value.errors == (limited,)
    assert gateway.guards.limiters["openai"].paused_until == 5.0
    # Within the pause the provider is not asked again; after it, it is.
    with pytest.raises(AllCandidatesFailed):
        await embed(gateway, embed_input(texts=TEXTS))
    assert openai.calls == 1
    await anyio.sleep(5.0)
    answer = await embed(gateway, embed_input(texts=TEXTS))
    assert (answer.provider, openai.calls) == ("openai", 2)
