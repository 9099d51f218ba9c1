"""ListProviders and Health: what is configured, what answers, and how fast."""

from __future__ import annotations

import time

from delos.runtime import __version__
from delos.runtime.config import PROVIDER_NAMES, enabling_variables
from delos.runtime.gateway import Gateway
from delos.runtime.providers import HttpProvider
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["health", "list_providers"]


async def list_providers(gateway: Gateway) -> pb.ListProvidersResponse:
    availability = await gateway.provider_availability()
    catalog = gateway.catalog
    infos = []
    for name in PROVIDER_NAMES:
        provider = gateway.providers.get(name)
        configured = provider is not None
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
        available = availability.get(name, False)
        detail = ""
        if not configured:
            detail = f"not configured: set {enabling_variables(name)}"
        elif not available:
            detail = "configured but not answering"
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
                breaker_state="closed",
                detail=detail,
                base_url=provider.base_url if isinstance(provider, HttpProvider) else "",
            )
        )
    return pb.ListProvidersResponse(providers=infos)


async def health(gateway: Gateway) -> pb.HealthResponse:
    availability = await gateway.provider_availability()
    serving = any(availability.values())
    detail = ""
    if not gateway.providers:
        detail = (
            "no providers configured: set a provider key such as DELOS_RUNTIME_OPENAI_KEY, "
            "or start the gateway with --demo"
        )
    elif not serving:
        detail = "no configured provider is available"
    return pb.HealthResponse(
        status=pb.HealthResponse.STATUS_SERVING
        if serving
        else pb.HealthResponse.STATUS_NOT_SERVING,
        providers=[
            pb.ProviderHealth(name=name, available=available, breaker_state="closed")
            for name, available in availability.items()
        ],
        version=__version__,
        uptime_seconds=time.monotonic() - gateway.started_at,
        detail=detail,
    )
