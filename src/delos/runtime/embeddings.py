"""Embeddings: pick the provider and model, call it, price the answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

import anyio

from delos.resilience import retrying
from delos.runtime.catalog import cost_usd, estimate_prompt_tokens
from delos.runtime.config import enabling_variables
from delos.runtime.errors import (
    AllCandidatesFailed,
    DelosError,
    EmbeddingsNotSupported,
    NoProvidersConfigured,
    ProviderError,
    ProviderNotConfigured,
    UnknownModel,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.gateway import Gateway
from delos.runtime.inputs import EmbedInput
from delos.runtime.providers import Provider
from delos.runtime.routing import Candidate
from delos.runtime.values import Embeddings, EmbedRequest, Usage

__all__ = ["EMBEDDING_PROVIDERS", "EmbedAnswer", "embed"]

#: Providers with an embeddings API, in the order used when the request names none.
EMBEDDING_PROVIDERS = ("openai", "gemini", "bedrock", "vertex", "together", "ollama")


@dataclass(frozen=True, slots=True)
class EmbedAnswer:
    """Vectors in the order of the texts, priced from the provider's (or estimated) usage."""

    vectors: list[list[float]] = field(repr=False)
    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal
    latency_s: float


def _choose_provider(gateway: Gateway, wanted: str | None) -> Provider:
    if wanted is not None:
        if wanted not in EMBEDDING_PROVIDERS:
            raise EmbeddingsNotSupported(
                f"provider: {wanted} has no embeddings API; providers with embeddings: "
                f"{', '.join(EMBEDDING_PROVIDERS)}"
            )
        provider = gateway.providers.get(wanted)
        if provider is None:
            raise ProviderNotConfigured(
                f"provider {wanted!r} is not configured: set {enabling_variables(wanted)}"
            )
        return provider
    if not gateway.providers:
        raise NoProvidersConfigured(
            "no providers configured: set a provider key such as DELOS_RUNTIME_OPENAI_KEY, "
            "or start the gateway with --demo"
        )
    for name in EMBEDDING_PROVIDERS:
        if name in gateway.providers:
            return gateway.providers[name]
    raise ProviderNotConfigured(
        "no configured provider has embeddings; providers with embeddings: "
        f"{', '.join(EMBEDDING_PROVIDERS)}"
    )


async def embed(gateway: Gateway, request: EmbedInput) -> EmbedAnswer:
    """Embed ``request.texts`` with one provider. Raises request errors, or
    :class:`AllCandidatesFailed` when the provider failed."""
    provider = _choose_provider(gateway, request.provider)
    catalog = gateway.catalog
    model_id = request.model or catalog.default_embedding_model(provider.name)
    if model_id is None:
        raise EmbeddingsNotSupported(f"provider: {provider.name} has no embedding model")
    model = catalog.model(provider.name, model_id)
    if model is None or model.kind != "embedding":
        known = [m.id for m in catalog.embedding_models(provider.name)]
        raise UnknownModel(
            f"model: {model_id!r} is not an embedding model of {provider.name}; "
            f"known: {', '.join(known)}"
        )
    started = time.perf_counter()
    errors: list[DelosError] = []
    try:
        result = await _guarded_embed(gateway, Candidate(provider, model), request.texts, errors)
    except ProviderError:
        raise AllCandidatesFailed(errors) from None
    usage = result.usage or Usage(estimate_prompt_tokens(request.texts), 0, estimated=True)
    return EmbedAnswer(
        vectors=result.vectors,
        provider=provider.name,
        model=result.model,
        usage=Usage(usage.prompt_tokens, 0, usage.estimated),
        cost_usd=cost_usd(model, usage.prompt_tokens, 0),
        latency_s=time.perf_counter() - started,
    )


async def _guarded_embed(
    gateway: Gateway, candidate: Candidate, texts: tuple[str, ...], errors: list[DelosError]
) -> Embeddings:
    """One provider, with its breaker, a time limit and a retry of transient failures.

    Embeddings never fall back to another provider: vectors from another model are not
    comparable with the ones the client already stored.
    """
    guards = gateway.guards
    policy = guards.policy
    provider, model = candidate.provider, candidate.model
    async for attempt in retrying(
        max_attempts=policy.attempts_per_provider,
        initial=policy.retry_initial_backoff,
        maximum=policy.retry_max_backoff,
        is_retryable=_transient,
        retry_after_of=lambda error: getattr(error, "retry_after", None),
        budget=guards.budget,
    ):
        with attempt:
            permit = guards.acquire_permit(candidate)
            began = time.perf_counter()
            try:
                with anyio.fail_after(policy.unary_timeout):
                    return await provider.embed(EmbedRequest(model.id, texts))
            except TimeoutError:
                permit.record_failure(time.perf_counter() - began)
                error: ProviderError = UpstreamTimeout(
                    provider.name, f"no embeddings within {policy.unary_timeout:.1f} s"
                )
                errors.append(error)
                raise error from None
            except ProviderError as failure:
                if failure.breaker_failure:
                    permit.record_failure(time.perf_counter() - began)
                else:
                    permit.record_ignored()
                if isinstance(failure, UpstreamRateLimited) and failure.retry_after:
                    guards.pause(provider.name, failure.retry_after)
                errors.append(failure)
                raise
            except BaseException:
                permit.record_ignored()
                raise
            finally:
                if not permit.settled:
                    permit.record_success(time.perf_counter() - began)
    raise AssertionError("unreachable: tenacity re-raises the last error")


def _transient(error: BaseException) -> bool:
    return isinstance(error, UpstreamUnavailable | UpstreamProtocolError) and not isinstance(
        error, UpstreamTimeout
    )
