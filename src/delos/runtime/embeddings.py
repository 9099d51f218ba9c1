"""Embeddings: pick the provider and model, call it, price the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from delos.runtime.catalog import estimate_prompt_tokens
from delos.runtime.config import EMBEDDING_PROVIDERS, NO_PROVIDERS_CONFIGURED, enabling_variables
from delos.runtime.errors import (
    AllCandidatesFailed,
    EmbeddingsNotSupported,
    NoProvidersConfigured,
    ProviderNotConfigured,
    UnknownModel,
)
from delos.runtime.gateway import Gateway
from delos.runtime.inputs import EmbedInput
from delos.runtime.providers import Provider
from delos.runtime.routing import (
    AttemptKind,
    AttemptRecord,
    AttemptTimeLimit,
    Candidate,
    RequestRun,
    guarded_attempt,
    with_retries,
)
from delos.runtime.values import Embeddings, EmbedRequest, Usage

__all__ = ["EmbedAnswer", "embed"]


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
        raise NoProvidersConfigured(NO_PROVIDERS_CONFIGURED)
    for name in EMBEDDING_PROVIDERS:
        if name in gateway.providers:
            return gateway.providers[name]
    raise ProviderNotConfigured(
        "no configured provider has embeddings; providers with embeddings: "
        f"{', '.join(EMBEDDING_PROVIDERS)}"
    )


async def embed(gateway: Gateway, request: EmbedInput) -> EmbedAnswer:
    """Embed ``request.texts`` with one provider. Raises request errors, or
    :class:`AllCandidatesFailed` when the provider failed.

    The call is guarded like a completion's (breaker, limiter, latency table, timeout) and a
    transient failure is retried on the same provider. It never falls back to another
    provider: vectors from another model are not comparable with the ones the client already
    stored.
    """
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
    guards = gateway.guards
    candidate = Candidate(provider, model)
    run = RequestRun(request, guards.clock(), estimate_prompt_tokens(request.texts))
    guards.budget.deposit()

    async def attempt(kind: AttemptKind) -> tuple[Embeddings, AttemptRecord]:
        async with guarded_attempt(guards, run, candidate, kind, operation="embeddings") as scope:
            with AttemptTimeLimit(guards, candidate, guards.policy.unary_timeout, "embeddings"):
                result = await provider.embed(EmbedRequest(model.id, request.texts))
            if result.usage is not None:  # else billed on the estimate
                scope.usage = Usage(result.usage.prompt_tokens, 0, result.usage.estimated)
            scope.response_model = result.model
            return result, scope.record

    # One provider, retried; never a fallback (another model's vectors are not comparable).
    won = await with_retries(guards, run, attempt, AttemptKind.PRIMARY)
    if won is None:
        raise AllCandidatesFailed(run.errors)
    result, record = won
    assert record.usage is not None  # billed when the attempt settled
    return EmbedAnswer(
        vectors=result.vectors,
        provider=provider.name,
        model=result.model,
        usage=record.usage,
        cost_usd=record.cost_usd,
        latency_s=guards.clock() - run.started,
    )
