"""The provider table and the registry that follows it: every row builds, nothing else lists
providers, and run-time capabilities go through the protocol."""

from __future__ import annotations

import logging
from typing import Any, cast

import anyio
import pytest
import trio.testing

from delos.runtime.catalog import Catalog
from delos.runtime.config import (
    EMBEDDING_PROVIDERS,
    ENVIRONMENT,
    NO_PROVIDERS_CONFIGURED,
    PROVIDER_NAMES,
    PROVIDERS,
    Settings,
    enabling_variables,
)
from delos.runtime.errors import UpstreamUnavailable
from delos.runtime.providers import Provider, build_providers
from delos.runtime.providers.registry import builder_of, effective_catalog, start_providers
from delos.testing.fakes import FAKE_PROVIDERS

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
#: Settings that enable every provider, as demo mode does (building one contacts nothing).
EVERYTHING = Settings.model_validate(
    {
        field: value
        for fake in FAKE_PROVIDERS.values()
        for field, value in fake.settings_for("http://127.0.0.1:9").items()
    }
)


def test_every_row_names_settings_fields_and_variables_that_exist() -> None:
    for facts in PROVIDERS.values():
        assert set(facts.enabled_by) <= set(facts.variables.values())
        for variable, field in facts.variables.items():
            assert field in Settings.model_fields, f"{facts.name}: no settings field {field}"
            assert ENVIRONMENT[variable] == field


def test_the_derived_names_follow_the_table() -> None:
    assert PROVIDER_NAMES == (
        "openai",
        "anthropic",
        "gemini",
        "bedrock",
        "vertex",
        "together",
        "openrouter",
        "ollama",
    )
    assert EMBEDDING_PROVIDERS == ("openai", "gemini", "bedrock", "vertex", "together", "ollama")
    assert Settings().quality_order[:2] == ("anthropic", "openai")
    assert sorted(Settings().quality_order) == sorted(PROVIDER_NAMES)
    assert enabling_variables("bedrock") == "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    assert enabling_variables("ollama") == "DELOS_RUNTIME_OLLAMA_ENABLED=true"
    assert NO_PROVIDERS_CONFIGURED == (
        "no providers configured: set a provider key such as DELOS_RUNTIME_OPENAI_KEY, "
        "or start the gateway with --demo"
    )


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_each_provider_is_enabled_by_its_row_alone(name: str) -> None:
    fields: dict[str, Any] = {field: "x" for field in PROVIDERS[name].enabled_by}
    if name == "ollama":
        fields = {"ollama_enabled": True}
    settings = Settings.model_validate(fields)
    assert [n for n in PROVIDER_NAMES if settings.is_configured(n)] == [name]


async def test_every_row_builds_a_provider_that_keeps_the_protocol() -> None:
    providers = build_providers(EVERYTHING, CATALOG)
    try:
        assert tuple(providers) == PROVIDER_NAMES
        for name, provider in providers.items():
            assert isinstance(provider, Provider)
            assert provider.name == name
            assert provider.supports_embeddings == PROVIDERS[name].embeddings
            assert provider.base_url.startswith("http")
            assert builder_of(PROVIDERS[name]).__name__.startswith("build_")
    finally:
        for provider in providers.values():
            await provider.aclose()


def test_every_provider_has_a_fake_that_agrees_with_the_table() -> None:
    assert tuple(FAKE_PROVIDERS) == PROVIDER_NAMES
    for name, fake in FAKE_PROVIDERS.items():
        assert fake.supports_embeddings == PROVIDERS[name].embeddings


# -- run-time capabilities through the protocol ----------------------------------------------------


class _Stub:
    """Just the members start_providers and effective_catalog use."""

    def __init__(self, name: str, *, fails: bool = False, hangs: bool = False) -> None:
        self.name = name
        self.fails, self.hangs = fails, hangs
        self.started = False

    async def start(self) -> None:
        if self.hangs:
            await anyio.sleep_forever()
        if self.fails:
            raise UpstreamUnavailable(self.name, "connection failed")
        self.started = True

    def discovered_catalog(self, base: Catalog) -> Catalog:
        return base.with_discovered_models("ollama", [f"{self.name}-model"])


def stubs(*items: _Stub) -> dict[str, Provider]:
    return {item.name: cast(Provider, item) for item in items}


async def test_a_failed_warm_up_is_logged_and_the_others_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok, broken = _Stub("ok"), _Stub("broken", fails=True)
    with caplog.at_level(logging.WARNING, "delos.runtime.providers"):
        await start_providers(stubs(ok, broken))
    assert ok.started
    assert "broken warm-up failed: broken: connection failed" in caplog.text


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_a_hanging_warm_up_holds_start_up_two_seconds_at_most() -> None:
    ok, slow = _Stub("ok"), _Stub("slow", hangs=True)
    started = anyio.current_time()
    await start_providers(stubs(slow, ok))
    assert ok.started and anyio.current_time() - started == pytest.approx(2.0)


def test_the_effective_catalog_merges_what_every_provider_discovered() -> None:
    merged = effective_catalog(CATALOG, stubs(_Stub("a"), _Stub("b")))
    assert merged.model("ollama", "a-model") is not None
    assert merged.model("ollama", "b-model") is not None
    assert effective_catalog(CATALOG, {}) is CATALOG


async def test_the_gateway_wires_listeners_without_knowing_the_adapter_class() -> None:
    """``set_rate_limit_listener`` reaches both adapters behind Vertex AI."""
    providers = build_providers(EVERYTHING, CATALOG)
    seen: list[object] = []
    try:
        for provider in providers.values():
            provider.set_rate_limit_listener(seen.append)
        vertex: Any = providers["vertex"]
        assert vertex.gemini.on_rate_limits == seen.append
        assert vertex.claude.on_rate_limits == seen.append
    finally:
        for provider in providers.values():
            await provider.aclose()


def test_an_unknown_provider_is_never_configured() -> None:
    assert not EVERYTHING.is_configured("acme")
    with pytest.raises(KeyError):
        enabling_variables("acme")
