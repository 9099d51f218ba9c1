"""Candidate rules and strategy order, table-driven, with providers that never go on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.errors import NoProvidersConfigured, ProviderNotConfigured, UnknownModel
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.routing import Candidate, candidates_for
from delos.runtime.values import ChatMessage

CATALOG = Catalog.load()
QUALITY = ("anthropic", "openai", "vertex", "bedrock", "gemini", "openrouter", "together", "ollama")


@dataclass
class Named:
    """Just enough of a provider for routing decisions."""

    name: str
    supports_embeddings: bool = False
    calls: list[str] = field(default_factory=list)


def providers(*names: str) -> dict[str, object]:
    return {name: Named(name) for name in names}


def request(
    routing: Routing,
    *,
    model: str | None = None,
    provider: str | None = None,
    max_tokens: int | None = 100,
) -> CompletionInput:
    return CompletionInput(
        messages=(ChatMessage("user", "hello " * 50),),
        routing=routing,
        model=model,
        provider=provider,
        max_tokens=max_tokens,
    )


def order(found: Sequence[Candidate]) -> list[tuple[str, str]]:
    return [c.key for c in found]


TABLE = [
    # (configured providers, request, expected (provider, model) order)
    (
        ("openai", "anthropic", "together"),
        request(Routing.COST),
        [
            ("openai", "gpt-4o-mini"),
            ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            ("anthropic", "claude-3-5-sonnet-20241022"),
        ],
    ),
    (
        ("openai", "anthropic", "together"),
        request(Routing.QUALITY),
        [
            ("anthropic", "claude-3-5-sonnet-20241022"),
            ("openai", "gpt-4o-mini"),
            ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ],
    ),
    (
        ("openai", "anthropic"),
        request(Routing.SPECIFIC, provider="anthropic"),
        [("anthropic", "claude-3-5-sonnet-20241022")],
    ),
    (
        ("anthropic", "bedrock", "vertex", "openrouter"),
        request(Routing.COST, model="claude-3-5-sonnet-20241022"),
        # The exact model first, then the same family elsewhere, cheapest first at equal price.
        [
            ("anthropic", "claude-3-5-sonnet-20241022"),
            ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
            ("vertex", "claude-3-5-sonnet-v2@20241022"),
            ("openrouter", "anthropic/claude-3.5-sonnet"),
        ],
    ),
    (
        ("together", "openrouter", "bedrock"),
        request(Routing.COST, model="llama-3.1-405b"),
        [
            ("openrouter", "meta-llama/llama-3.1-405b-instruct"),
            ("bedrock", "meta.llama3-1-405b-instruct-v1:0"),
            ("together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"),
        ],
    ),
    (
        ("openai", "openrouter"),
        request(Routing.COST, model="gpt-4o", provider="openrouter"),
        [("openrouter", "openai/gpt-4o")],
    ),
]


@pytest.mark.parametrize(("configured", "incoming", "expected"), TABLE)
def test_candidates_in_strategy_order(
    configured: tuple[str, ...], incoming: CompletionInput, expected: list[tuple[str, str]]
) -> None:
    found = candidates_for(
        incoming,
        providers=providers(*configured),  # type: ignore[arg-type]
        catalog=CATALOG,
        quality_order=QUALITY,
    ).candidates
    assert order(found) == expected


def test_cost_ties_are_broken_by_measured_latency() -> None:
    latency = {"openai": 0.9, "openrouter": 0.2}
    found = candidates_for(
        request(Routing.COST, model="gpt-4o"),
        providers=providers("openai", "openrouter"),  # type: ignore[arg-type]
        catalog=CATALOG,
        quality_order=QUALITY,
        latency_of=lambda c: latency[c.provider.name],
    ).candidates
    assert [c.provider.name for c in found] == ["openrouter", "openai"]


def test_a_candidate_cut_off_by_its_breaker_is_skipped_unless_all_are() -> None:
    configured = providers("openai", "openrouter")
    some = candidates_for(
        request(Routing.COST, model="gpt-4o"),
        providers=configured,  # type: ignore[arg-type]
        catalog=CATALOG,
        quality_order=QUALITY,
        admitted=lambda c: c.provider.name != "openai",
    ).candidates
    none = candidates_for(
        request(Routing.COST, model="gpt-4o"),
        providers=configured,  # type: ignore[arg-type]
        catalog=CATALOG,
        quality_order=QUALITY,
        admitted=lambda c: False,
    ).candidates
    assert [c.provider.name for c in some] == ["openrouter"]
    assert len(none) == 2  # reported through the breakers' own errors, not "no candidate"


@pytest.mark.parametrize(
    ("configured", "incoming", "error", "fragment"),
    [
        ((), request(Routing.COST), NoProvidersConfigured, "no providers configured"),
        (
            ("openai",),
            request(Routing.SPECIFIC, provider="anthropic"),
            ProviderNotConfigured,
            "DELOS_RUNTIME_ANTHROPIC_KEY",
        ),
        (
            ("openai",),
            request(Routing.SPECIFIC, provider="bedrock"),
            ProviderNotConfigured,
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        (
            ("openai",),
            request(Routing.COST, model="gpt-5-turbo-ultra"),
            UnknownModel,
            "unknown model",
        ),
        (
            ("openai",),
            request(Routing.COST, model="claude-3-5-sonnet"),
            UnknownModel,
            "served by anthropic, bedrock, openrouter, vertex",
        ),
        (("openai",), request(Routing.COST, model="gpt4o"), UnknownModel, "did you mean gpt-4o"),
    ],
)
def test_rejections_say_what_is_wrong(
    configured: tuple[str, ...], incoming: CompletionInput, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        candidates_for(
            incoming,
            providers=providers(*configured),  # type: ignore[arg-type]
            catalog=CATALOG,
            quality_order=QUALITY,
        )
