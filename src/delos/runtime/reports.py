"""What the gateway says about its providers: configured, answering, how fast, what is cut off.

The gRPC edge turns these reports into ListProviders and Health answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from delos.resilience import BreakerState, LatencySnapshot
from delos.runtime import __version__
from delos.runtime.catalog import ModelInfo
from delos.runtime.config import (
    NO_PROVIDERS_CONFIGURED,
    PROVIDER_NAMES,
    PROVIDERS,
    enabling_variables,
)
from delos.runtime.gateway import Gateway

__all__ = [
    "HealthReport",
    "ProviderHealth",
    "ProviderReport",
    "health",
    "list_providers",
    "provider_breaker_state",
    "serving",
]

_SEVERITY = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """One provider for ListProviders; ``latency`` maps model id → its live latency figures."""

    name: str
    available: bool
    models: tuple[str, ...]
    default_model: str
    supports_embeddings: bool
    embedding_models: tuple[str, ...]
    prices: tuple[ModelInfo, ...]
    breaker_state: BreakerState
    latency: Mapping[str, LatencySnapshot]
    detail: str
    base_url: str


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    name: str
    available: bool
    breaker_state: BreakerState
    #: The fastest measured model's time-to-first-token EWMA, milliseconds; None before samples.
    ttft_ewma_ms: float | None
    error_rate: float
    detail: str


@dataclass(frozen=True, slots=True)
class HealthReport:
    serving: bool
    providers: tuple[ProviderHealth, ...]
    version: str
    uptime_seconds: float
    detail: str


def provider_breaker_state(gateway: Gateway, provider: str) -> BreakerState:
    """The worst state among the provider's breakers (one per model): a model that is cut off
    is worth showing even while the others are closed."""
    states = [
        breaker.state
        for breaker in gateway.guards.breakers.breakers()
        if breaker.name.split("/", 1)[0] == provider
    ]
    return max(states, key=_SEVERITY.__getitem__, default=BreakerState.CLOSED)


def _latency(gateway: Gateway, provider: str) -> dict[str, LatencySnapshot]:
    return {
        model: snapshot
        for (name, model), snapshot in gateway.guards.latency.snapshots().items()
        if name == provider
    }


def _usable(gateway: Gateway, provider: str, available: bool) -> bool:
    default = gateway.catalog.default_model(provider)
    return available and gateway.guards.breaker_state(provider, default) is not BreakerState.OPEN


async def list_providers(gateway: Gateway) -> list[ProviderReport]:
    """Every known provider, configured or not, in the spec's order."""
    availability = await gateway.provider_availability()
    catalog = gateway.catalog
    reports = []
    for name in PROVIDER_NAMES:
        provider = gateway.providers.get(name)
        models = (
            tuple(provider.models())
            if provider is not None
            else tuple(m.id for m in catalog.chat_models(name))
        )
        embedding_models = tuple(m.id for m in catalog.embedding_models(name))
        breaker = provider_breaker_state(gateway, name)
        detail = ""
        if provider is None:
            detail = f"not configured: set {enabling_variables(name)}"
        elif not availability.get(name, False):
            detail = "configured but not answering"
        elif breaker is BreakerState.OPEN:
            detail = "circuit open after repeated failures"
        reports.append(
            ProviderReport(
                name=name,
                available=_usable(gateway, name, availability.get(name, False)),
                models=models,
                default_model=catalog.default_model(name),
                supports_embeddings=bool(embedding_models)
                and (
                    provider.supports_embeddings
                    if provider is not None
                    else PROVIDERS[name].embeddings
                ),
                embedding_models=embedding_models,
                prices=(*catalog.chat_models(name), *catalog.embedding_models(name)),
                breaker_state=breaker,
                latency=_latency(gateway, name),
                detail=detail,
                base_url=provider.base_url if provider is not None else "",
            )
        )
    return reports


async def health(gateway: Gateway) -> HealthReport:
    availability = await gateway.provider_availability()
    providers = []
    for name, available in availability.items():
        latency = _latency(gateway, name).values()
        measured = [s.ttft_ewma_ms for s in latency if s.samples and s.ttft_ewma_ms is not None]
        providers.append(
            ProviderHealth(
                name=name,
                available=_usable(gateway, name, available),
                breaker_state=provider_breaker_state(gateway, name),
                ttft_ewma_ms=min(measured, default=None),
                error_rate=max((s.error_rate for s in latency), default=0.0),
                detail="" if available else "not answering",
            )
        )
    serving = any(p.available for p in providers)
    detail = ""
    if not gateway.providers:
        detail = NO_PROVIDERS_CONFIGURED
    elif not serving:
        detail = "no configured provider can answer"
    return HealthReport(
        serving=serving,
        providers=tuple(providers),
        version=__version__,
        uptime_seconds=time.monotonic() - gateway.started_at,
        detail=detail,
    )


async def serving(gateway: Gateway) -> bool:
    """For grpc.health.v1: SERVING while at least one provider can answer."""
    availability = await gateway.provider_availability()
    return any(_usable(gateway, name, up) for name, up in availability.items())
