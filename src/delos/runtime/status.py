"""ListProviders and Health: what is configured, what answers, how fast, and what is cut off."""

from __future__ import annotations

import time

from delos.resilience import BreakerState
from delos.runtime import __version__
from delos.runtime.config import PROVIDER_NAMES, enabling_variables
from delos.runtime.gateway import Gateway
from delos.runtime.providers import HttpProvider
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["health", "list_providers", "provider_breaker_state", "serving"]

_SEVERITY = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def provider_breaker_state(gateway: Gateway, provider: str) -> BreakerState:
    """The state of the provider's default model breaker, or the worst of its breakers' states
    when the default model's is closed (a cut-off model is worth showing)."""
    states = [
        breaker.state
        for breaker in gateway.guards.breakers.breakers()
        if breaker.name.split("/", 1)[0] == provider
    ]
    return max(states, key=_SEVERITY.__getitem__, default=BreakerState.CLOSED)


def _latency(gateway: Gateway, provider: str) -> list[pb.LatencyStats]:
    stats = []
    for (name, model), snapshot in gateway.guards.latency.snapshots().items():
        if name != provider:
            continue
        stats.append(
            pb.LatencyStats(
                model=model,
                ttft_ewma_ms=snapshot.ttft_ewma_ms or 0.0,
                tokens_per_second=snapshot.tokens_per_second or 0.0,
                in_flight=snapshot.in_flight,
                error_rate=snapshot.error_rate,
                samples=snapshot.samples,
                p95_ttft_ms=snapshot.p95_ttft_ms or 0.0,
            )
        )
    return stats


def _usable(gateway: Gateway, provider: str, available: bool) -> bool:
    default = gateway.catalog.default_model(provider)
    return available and gateway.guards.breaker_state(provider, default) is not BreakerState.OPEN


async def list_providers(gateway: Gateway) -> pb.ListProvidersResponse:
    availability = await gateway.provider_availability()
    catalog = gateway.catalog
    infos = []
    for name in PROVIDER_NAMES:
        provider = gateway.providers.get(name)
        models = (
            list(provider.models())
            if provider is not None
            else [m.id for m in catalog.chat_models(name)]
        )
        embedding_models = [m.id for m in catalog.embedding_models(name)]
        prices = [
            pb.ModelPrice(
                model=m.id,
                family=m.family,
                input_per_1k_usd=float(m.input_per_1k),
                output_per_1k_usd=float(m.output_per_1k),
                context_window=m.context_window,
                kind=m.kind,
            )
            for m in (*catalog.chat_models(name), *catalog.embedding_models(name))
        ]
        available = _usable(gateway, name, availability.get(name, False))
        breaker = provider_breaker_state(gateway, name)
        detail = ""
        if provider is None:
            detail = f"not configured: set {enabling_variables(name)}"
        elif not availability.get(name, False):
            detail = "configured but not answering"
        elif breaker is BreakerState.OPEN:
            detail = "circuit open after repeated failures"
        infos.append(
            pb.ProviderInfo(
                name=name,
                available=available,
                models=models,
                default_model=catalog.default_model(name),
                supports_embeddings=bool(embedding_models)
                and (provider.supports_embeddings if provider is not None else True),
                embedding_models=embedding_models,
                prices=prices,
                breaker_state=breaker.value,
                latency=_latency(gateway, name),
                detail=detail,
                base_url=provider.base_url if isinstance(provider, HttpProvider) else "",
            )
        )
    return pb.ListProvidersResponse(providers=infos)


async def health(gateway: Gateway) -> pb.HealthResponse:
    availability = await gateway.provider_availability()
    providers = []
    for name, available in availability.items():
        latency = _latency(gateway, name)
        measured = [s for s in latency if s.samples]
        providers.append(
            pb.ProviderHealth(
                name=name,
                available=_usable(gateway, name, available),
                breaker_state=provider_breaker_state(gateway, name).value,
                ttft_ewma_ms=min((s.ttft_ewma_ms for s in measured), default=0.0),
                error_rate=max((s.error_rate for s in latency), default=0.0),
                detail="" if available else "not answering",
            )
        )
    serving = any(p.available for p in providers)
    detail = ""
    if not gateway.providers:
        detail = (
            "no providers configured: set a provider key such as DELOS_RUNTIME_OPENAI_KEY, "
            "or start the gateway with --demo"
        )
    elif not serving:
        detail = "no configured provider can answer"
    return pb.HealthResponse(
        status=(
            pb.HealthResponse.STATUS_SERVING if serving else pb.HealthResponse.STATUS_NOT_SERVING
        ),
        providers=providers,
        version=__version__,
        uptime_seconds=time.monotonic() - gateway.started_at,
        detail=detail,
    )


async def serving(gateway: Gateway) -> bool:
    """For grpc.health.v1: SERVING while at least one provider can answer."""
    availability = await gateway.provider_availability()
    return any(_usable(gateway, name, up) for name, up in availability.items())
