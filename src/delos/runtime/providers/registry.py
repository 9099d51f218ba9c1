"""Build the providers whose credentials are configured, each with its own pooled client.

Which providers exist, what enables them and which function builds each is the provider table
(:data:`delos.runtime.config.PROVIDERS`); this module only follows it. Run-time capabilities go
through the :class:`~delos.runtime.providers.base.Provider` protocol, whatever the provider.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Final, cast

import anyio
import httpx

from delos.runtime.catalog import Catalog
from delos.runtime.config import PROVIDERS, ProviderFacts, Settings
from delos.runtime.errors import ProviderError
from delos.runtime.providers._client import open_http_client
from delos.runtime.providers.base import HttpClient, Provider

__all__ = ["Builder", "build_providers", "builder_of", "effective_catalog", "start_providers"]

log = logging.getLogger("delos.runtime.providers")

#: Builds one adapter from the settings, the catalog and its own pooled HTTP client.
Builder = Callable[[Settings, Catalog, HttpClient], Provider]

#: Seconds one provider's warm-up may hold up start-up.
_START_BOUND_SECONDS: Final = 2.0


def builder_of(facts: ProviderFacts) -> Builder:
    """The function the row's ``builder`` names (``"module:function"``), imported now.

    Raises ImportError or AttributeError when the row names nothing that exists (a test builds
    every row, so that cannot ship).
    """
    module, _, function = facts.builder.partition(":")
    return cast(Builder, getattr(importlib.import_module(module), function))


def build_providers(
    settings: Settings,
    catalog: Catalog,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Provider]:
    """Every configured provider, in the spec's order. Close them with ``aclose()``."""
    providers: dict[str, Provider] = {}
    for name, facts in PROVIDERS.items():
        if not settings.is_configured(name):
            continue
        client = open_http_client(
            settings,
            transport,
            max_connections=settings.connections_for(name),
        )
        providers[name] = builder_of(facts)(settings, catalog, client)
    return providers


def effective_catalog(base: Catalog, providers: dict[str, Provider]) -> Catalog:
    """``base`` plus the models every provider discovered at run time. Cheap: providers cache
    their view, so this is called per request."""
    catalog = base
    for provider in providers.values():
        catalog = provider.discovered_catalog(catalog)
    return catalog


async def start_providers(providers: dict[str, Provider]) -> None:
    """Warm every provider up at once, none for more than two seconds: a provider that fails or
    takes longer is logged and serves anyway (it is asked again when requests come)."""
    async with anyio.create_task_group() as group:
        for provider in providers.values():
            group.start_soon(_start, provider)


async def _start(provider: Provider) -> None:
    with anyio.move_on_after(_START_BOUND_SECONDS):
        try:
            await provider.start()
        except ProviderError as error:
            log.warning("%s warm-up failed: %s", provider.name, error.message)
