"""The packaged catalog's current models: present, linked by family across providers, with
capabilities, parameter rules and cache prices that follow the providers' rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from delos.runtime.catalog import CAPABILITIES, Catalog, ModelInfo, ParameterRules


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _model(catalog: Catalog, provider: str, model_id: str) -> ModelInfo:
    model = catalog.model(provider, model_id)
    assert model is not None, f"{provider}/{model_id} missing"
    return model


CURRENT_CHAT_MODELS = {
    "openai": [
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o4-mini",
    ],
    "anthropic": [
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-1-20250805",
        "claude-opus-4-5-20251101",
    ],
    "gemini": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"],
    "bedrock": [
        f"{geography}.anthropic.{model}"
        for model in (
            "claude-sonnet-4-5-20250929-v1:0",
            "claude-haiku-4-5-20251001-v1:0",
            "claude-opus-4-5-20251101-v1:0",
        )
        for geography in ("global", "us", "eu")
    ]
    + ["us.anthropic.claude-opus-4-1-20250805-v1:0"],
    "vertex": [
        "claude-sonnet-4-5@20250929",
        "claude-haiku-4-5@20251001",
        "claude-opus-4-1@20250805",
        "claude-opus-4-5@20251101",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    ],
    "together": ["openai/gpt-oss-120b"],
    "openrouter": [
        "anthropic/claude-sonnet-4.5",
        "anthropic/claude-haiku-4.5",
        "openai/gpt-5",
        "google/gemini-2.5-pro",
    ],
}

CURRENT_FAMILIES = {
    "claude-sonnet-4-5": {
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("vertex", "claude-sonnet-4-5@20250929"),
        ("openrouter", "anthropic/claude-sonnet-4.5"),
    },
    "claude-opus-4-1": {
        ("anthropic", "claude-opus-4-1-20250805"),
        ("bedrock", "us.anthropic.claude-opus-4-1-20250805-v1:0"),
        ("vertex", "claude-opus-4-1@20250805"),
    },
    "gemini-2.5-pro": {
        ("gemini", "gemini-2.5-pro"),
        ("vertex", "gemini-2.5-pro"),
        ("openrouter", "google/gemini-2.5-pro"),
    },
    "gemini-2.5-flash": {("gemini", "gemini-2.5-flash"), ("vertex", "gemini-2.5-flash")},
    "gpt-5": {("openai", "gpt-5"), ("openrouter", "openai/gpt-5")},
    "gemini-embedding-001": {
        ("gemini", "gemini-embedding-001"),
        ("vertex", "gemini-embedding-001"),
    },
    "cohere-embed-v4": {("bedrock", "cohere.embed-v4:0")},
}

#: Chat families that take nothing beyond text, on every provider that serves them.
TEXT_ONLY = {"deepseek-r1", "mixtral-8x22b", "titan-text-premier"}

OPENAI_REASONING = ("o3", "o4-mini", "gpt-5")


@pytest.mark.parametrize(
    ("provider", "model_id"),
    [(p, m) for p, models in CURRENT_CHAT_MODELS.items() for m in models],
)
def test_current_models_are_chat_models_of_their_provider(
    catalog: Catalog, provider: str, model_id: str
) -> None:
    model = _model(catalog, provider, model_id)
    assert model.kind == "chat"
    assert model.price_known and model.input_per_1k > 0 and model.output_per_1k > 0


@pytest.mark.parametrize("family", sorted(CURRENT_FAMILIES))
def test_current_families_link_the_same_model_across_providers(
    catalog: Catalog, family: str
) -> None:
    assert {(m.provider, m.id) for m in catalog.family_members(family)} == CURRENT_FAMILIES[family]


def test_a_family_name_resolves_to_every_provider_in_order(catalog: Catalog) -> None:
    resolved = catalog.resolve("claude-sonnet-4-5")
    assert [m.provider for m in resolved] == [
        "anthropic",
        "bedrock",
        "bedrock",
        "bedrock",
        "vertex",
        "openrouter",
    ]


def test_every_chat_model_lists_its_capabilities(catalog: Catalog) -> None:
    for model in catalog:
        assert model.capabilities <= set(CAPABILITIES), model.id
        if model.kind == "embedding":
            assert model.capabilities == frozenset(), model.id
        elif model.family not in TEXT_ONLY:
            assert model.capabilities, f"{model.provider}/{model.id} lists no capabilities"


@pytest.mark.parametrize(
    ("provider", "model_id", "expected"),
    [
        ("openai", "gpt-4o", {"tools", "vision", "documents", "json_schema"}),
        ("anthropic", "claude-3-5-sonnet-20241022", {"tools", "vision", "documents"}),
        ("anthropic", "claude-sonnet-4-20250514", {"tools", "vision", "documents", "reasoning"}),
        ("gemini", "gemini-1.5-pro", {"tools", "vision", "documents", "json_schema"}),
        (
            "vertex",
            "gemini-2.5-flash",
            {"tools", "vision", "documents", "json_schema", "reasoning"},
        ),
        ("bedrock", "meta.llama3-1-70b-instruct-v1:0", {"tools"}),
        ("ollama", "llama3.2", {"tools"}),
    ],
)
def test_capabilities_of_known_models(
    catalog: Catalog, provider: str, model_id: str, expected: set[str]
) -> None:
    assert _model(catalog, provider, model_id).capabilities == expected


def test_reasoning_models_say_so(catalog: Catalog) -> None:
    for model in catalog:
        newer_claude = model.family.startswith(("claude-sonnet-4", "claude-opus-4", "claude-haiku"))
        if newer_claude or model.family.startswith((*OPENAI_REASONING, "gemini-2.5")):
            assert "reasoning" in model.capabilities, f"{model.provider}/{model.id}"
        if model.family.startswith(("claude-3", "gpt-4", "gemini-1")):
            assert "reasoning" not in model.capabilities, f"{model.provider}/{model.id}"


def test_every_claude_model_accepts_temperature_up_to_1(catalog: Catalog) -> None:
    claude = [m for m in catalog if m.family.startswith("claude-")]
    assert len(claude) > 20
    for model in claude:
        assert model.rules.temperature_max == 1.0, f"{model.provider}/{model.id}"
        assert model.rules.sampling


def test_claude_from_opus_4_1_and_the_4_5_models_on_take_temperature_or_top_p(
    catalog: Catalog,
) -> None:
    newer = ("claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5")
    for model in catalog:
        if model.family.startswith("claude-"):
            expected = model.family in newer
            assert model.rules.temperature_or_top_p is expected, f"{model.provider}/{model.id}"


def test_openai_reasoning_models_refuse_sampling_on_every_provider(catalog: Catalog) -> None:
    reasoning = [m for m in catalog if m.family.startswith(OPENAI_REASONING)]
    assert {m.provider for m in reasoning} == {"openai", "openrouter"}
    for model in reasoning:
        assert model.rules == ParameterRules(sampling=False), f"{model.provider}/{model.id}"
        assert model.typical_output_tokens > 300
    assert _model(catalog, "openai", "gpt-4o").rules == ParameterRules()


def test_bedrock_caps_temperature_at_1_for_its_non_claude_chat_models(catalog: Catalog) -> None:
    for model in catalog.chat_models("bedrock"):
        assert model.rules.temperature_max == 1.0, model.id
    # The same family elsewhere accepts the full range.
    assert _model(catalog, "together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo").rules == (
        ParameterRules()
    )


def test_anthropic_cache_prices_are_a_tenth_and_five_quarters_of_input(catalog: Catalog) -> None:
    cached_claude = [
        m for m in catalog if m.family.startswith("claude-") and m.cached_input_per_1k is not None
    ]
    assert len(cached_claude) > 20
    for model in cached_claude:
        assert model.cached_input_per_1k == model.input_per_1k / 10, model.id
        assert model.cache_write_per_1k == model.input_per_1k * Decimal("1.25"), model.id


def test_cache_and_tier_prices_are_consistent(catalog: Catalog) -> None:
    for model in catalog:
        if model.cached_input_per_1k is not None:
            assert model.cached_input_per_1k < model.input_per_1k, model.id
        if model.cache_write_per_1k is not None:
            assert model.cache_write_per_1k > model.input_per_1k, model.id
        tier = model.long_context
        if tier is not None:
            assert tier.prompt_tokens_above < model.context_window, model.id
            assert tier.input_per_1k > model.input_per_1k, model.id
            assert tier.output_per_1k > model.output_per_1k, model.id


def test_gemini_2_5_pro_has_its_long_context_tier_everywhere(catalog: Catalog) -> None:
    for model in catalog.family_members("gemini-2.5-pro"):
        assert model.long_context is not None
        assert model.long_context.prompt_tokens_above == 200_000


def test_new_embedding_models(catalog: Catalog) -> None:
    cohere = _model(catalog, "bedrock", "cohere.embed-v4:0")
    assert (cohere.kind, cohere.dimensions, cohere.input_per_1k) == (
        "embedding",
        1536,
        Decimal("0.00012"),
    )
    for provider in ("gemini", "vertex"):
        gemini = _model(catalog, provider, "gemini-embedding-001")
        assert (gemini.kind, gemini.dimensions) == ("embedding", 3072)
