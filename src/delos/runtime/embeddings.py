"""The Embed RPC: pick the provider and model, call it, price the answer."""

from __future__ import annotations

import time

from delos.runtime.catalog import cost_usd, estimate_prompt_tokens
from delos.runtime.config import enabling_variables
from delos.runtime.errors import (
    AllCandidatesFailed,
    EmbeddingsNotSupported,
    NoProvidersConfigured,
    ProviderError,
    ProviderNotConfigured,
    UnknownModel,
)
from delos.runtime.gateway import Gateway
from delos.runtime.providers import Provider
from delos.runtime.requests import embed_input_from_proto
from delos.runtime.types import EmbedRequest, Usage
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["EMBEDDING_PROVIDERS", "embed"]

#: Providers with an embeddings API, in the order used when the request names none.
EMBEDDING_PROVIDERS = ("openai", "gemini", "bedrock", "vertex", "together", "ollama")


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


async def embed(gateway: Gateway, message: pb.EmbedRequest) -> pb.EmbedResponse:
    request = embed_input_from_proto(message)
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
    try:
        result = await provider.embed(EmbedRequest(model.id, request.texts))
    except ProviderError as error:
        raise AllCandidatesFailed([error]) from None
    usage = result.usage or Usage(estimate_prompt_tokens(request.texts), 0, estimated=True)
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=v, index=i) for i, v in enumerate(result.vectors)],
        provider=provider.name,
        model=result.model,
        usage=pb.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=0,
            total_tokens=usage.prompt_tokens,
            estimated=usage.estimated,
        ),
        cost_usd=float(cost_usd(model, usage.prompt_tokens, 0)),
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
