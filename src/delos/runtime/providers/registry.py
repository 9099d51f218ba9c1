"""Build the providers whose credentials are configured, each with its own pooled client."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import anyio
import httpx

from delos.runtime.catalog import Catalog
from delos.runtime.config import PROVIDER_NAMES, Settings
from delos.runtime.errors import ProviderError
from delos.runtime.providers._client import open_http_client
from delos.runtime.providers.anthropic import build_anthropic
from delos.runtime.providers.base import Provider
from delos.runtime.providers.bedrock import build_bedrock
from delos.runtime.providers.gemini import build_gemini
from delos.runtime.providers.ollama import OllamaProvider, build_ollama
from delos.runtime.providers.openai_compatible import (
    OPENAI,
    OPENROUTER,
    TOGETHER,
    OpenAICompatibleProvider,
)
from delos.runtime.providers.vertex import build_vertex

__all__ = ["BUILDERS", "build_providers", "effective_catalog", "start_providers"]

log = logging.getLogger("delos.runtime.providers")

Builder = Callable[[Settings, Catalog, httpx.AsyncClient], Provider]


def _secret(value: object) -> str:
    return value.get_secret_value() if value is not None else ""  # type: ignore[attr-defined]


def _openai(settings: Settings, catalog: Catalog, client: httpx.AsyncClient) -> Provider:
    return OpenAICompatibleProvider(
        OPENAI,
        api_key=_secret(settings.openai_key),
        client=client,
        catalog=catalog,
        base_url=settings.openai_base_url,
    )


def _together(settings: Settings, catalog: Catalog, client: httpx.AsyncClient) -> Provider:
    return OpenAICompatibleProvider(
        TOGETHER,
        api_key=_secret(settings.together_key),
        client=client,
        catalog=catalog,
        base_url=settings.together_base_url,
    )


def _openrouter(settings: Settings, catalog: Catalog, client: httpx.AsyncClient) -> Provider:
    headers = {}
    if settings.openrouter_site_url:
        headers["HTTP-Referer"] = settings.openrouter_site_url
    if settings.openrouter_site_name:
        headers["X-Title"] = settings.openrouter_site_name
    return OpenAICompatibleProvider(
        OPENROUTER,
        api_key=_secret(settings.openrouter_key),
        client=client,
        catalog=catalog,
        base_url=settings.openrouter_base_url,
        extra_headers=headers,
    )


BUILDERS: Final[dict[str, Builder]] = {
    "openai": _openai,
    "anthropic": build_anthropic,
    "gemini": build_gemini,
    "bedrock": build_bedrock,
    "vertex": build_vertex,
    "together": _together,
    "openrouter": _openrouter,
    "ollama": build_ollama,
}


def build_providers(
    settings: Settings,
    catalog: Catalog,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Provider]:
    """Every configured provider, in the spec's order. Close them with ``aclose()``."""
    providers: dict[str, Provider] = {}
    for name in PROVIDER_NAMES:
        builder = BUILDERS.get(name)
        if builder is None or not settings.is_configured(name):
            continue
        # Bedrock signs the exact request path (SigV4), which aiohttp would re-quote.
        client = open_http_client(settings, transport, exact_paths=name == "bedrock")
        providers[name] = builder(settings, catalog, client)
    return providers


def effective_catalog(base: Catalog, providers: dict[str, Provider]) -> Catalog:
    """``base`` plus the models discovered at run time (Ollama's local models)."""
    ollama = providers.get("ollama")
    if isinstance(ollama, OllamaProvider):
        return ollama.discovered_catalog(base)
    return base


async def start_providers(providers: dict[str, Provider]) -> None:
    """Warm-up that must not block start-up for long: discover Ollama's local models."""
    ollama = providers.get("ollama")
    if isinstance(ollama, OllamaProvider):
        with anyio.move_on_after(2.0):
            try:
                await ollama.refresh_models()
            except ProviderError as error:
                log.warning("ollama model discovery failed: %s", error.message)
