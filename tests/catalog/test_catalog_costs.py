"""Cost arithmetic with cache reads and writes and long-context tiers, and unknown prices."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from delos.runtime.catalog import (
    Catalog,
    LongContextPrice,
    ModelInfo,
    ParameterRules,
    cost_usd,
    estimate_cost_usd,
    price_known,
    usage_cost_usd,
)
from delos.runtime.values import Usage

SONNET_LIKE = ModelInfo(
    provider="p",
    id="sonnet-like",
    family="sonnet-like",
    kind="chat",
    context_window=200_000,
    input_per_1k=Decimal("0.003"),
    output_per_1k=Decimal("0.015"),
    typical_output_tokens=300,
    cached_input_per_1k=Decimal("0.0003"),
    cache_write_per_1k=Decimal("0.00375"),
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _model(catalog: Catalog, provider: str, model_id: str) -> ModelInfo:
    model = catalog.model(provider, model_id)
    assert model is not None, f"{provider}/{model_id} missing"
    return model


# --- cache reads and writes ---------------------------------------------------------------------


def test_cache_reads_and_writes_cost_their_own_prices() -> None:
    usage = Usage(10_000, 2_000, cache_read_tokens=6_000, cache_write_tokens=1_000)
    # 3,000 uncached × 0.003 + 6,000 read × 0.0003 + 1,000 written × 0.00375 + 2,000 × 0.015
    # = 9 + 1.8 + 3.75 + 30 = 44.55 per thousand
    assert usage_cost_usd(SONNET_LIKE, usage) == Decimal("0.04455")


def test_a_missing_cache_price_is_the_input_price() -> None:
    plain = replace(SONNET_LIKE, cached_input_per_1k=None, cache_write_per_1k=None)
    usage = Usage(10_000, 2_000, cache_read_tokens=6_000, cache_write_tokens=1_000)
    # 10,000 × 0.003 + 2,000 × 0.015 = 30 + 30
    assert usage_cost_usd(plain, usage) == Decimal("0.06")
    assert usage_cost_usd(plain, usage) == cost_usd(plain, 10_000, 2_000)


def test_a_zero_cache_price_is_kept_not_replaced_by_the_input_price() -> None:
    free_reads = replace(SONNET_LIKE, cached_input_per_1k=Decimal(0))
    # 1,000 uncached × 0.003, 9,000 read for nothing
    assert usage_cost_usd(free_reads, Usage(10_000, 0, cache_read_tokens=9_000)) == Decimal("0.003")


def test_reasoning_tokens_are_billed_inside_the_completion() -> None:
    with_reasoning = Usage(1_000, 500, reasoning_tokens=400)
    assert usage_cost_usd(SONNET_LIKE, with_reasoning) == usage_cost_usd(
        SONNET_LIKE, Usage(1_000, 500)
    )


def test_cost_usd_is_usage_cost_without_cache_fields() -> None:
    assert cost_usd(SONNET_LIKE, 1_234, 567) == usage_cost_usd(SONNET_LIKE, Usage(1_234, 567))
    # 1.234 × 0.003 + 0.567 × 0.015 = 0.003702 + 0.008505
    assert cost_usd(SONNET_LIKE, 1_234, 567) == Decimal("0.012207")


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        (Usage(-1, 0), "negative"),
        (Usage(0, -1), "negative"),
        (Usage(10, 0, cache_read_tokens=-1), "negative"),
        (Usage(10, 0, cache_write_tokens=-1), "negative"),
        (Usage(10, 0, cache_read_tokens=6, cache_write_tokens=5), "exceed the prompt tokens"),
    ],
)
def test_impossible_usage_is_refused(usage: Usage, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        usage_cost_usd(SONNET_LIKE, usage)


# --- long context -------------------------------------------------------------------------------


def test_gemini_2_5_pro_bills_the_whole_request_at_the_long_rate_above_200k(
    catalog: Catalog,
) -> None:
    pro = _model(catalog, "gemini", "gemini-2.5-pro")
    # At the threshold: 200,000 × 0.00125 + 1,000 × 0.01 = 250 + 10
    assert usage_cost_usd(pro, Usage(200_000, 1_000)) == Decimal("0.26")
    # One token above: 200,001 × 0.0025 + 1,000 × 0.015 = 500.0025 + 15
    assert usage_cost_usd(pro, Usage(200_001, 1_000)) == Decimal("0.5150025")
    # Cache reads at the long tier's cached price: 100,001 × 0.0025 + 100,000 × 0.00025 + 15
    cached = Usage(200_001, 1_000, cache_read_tokens=100_000)
    assert usage_cost_usd(pro, cached) == Decimal("0.2900025")
    # The plain cost applies the tier too.
    assert cost_usd(pro, 200_001, 1_000) == Decimal("0.5150025")


def test_long_context_cache_writes_on_openrouter_sonnet_4_5(catalog: Catalog) -> None:
    sonnet = _model(catalog, "openrouter", "anthropic/claude-sonnet-4.5")
    usage = Usage(300_000, 2_000, cache_read_tokens=100_000, cache_write_tokens=50_000)
    # 150,000 × 0.006 + 100,000 × 0.0006 + 50,000 × 0.0075 + 2,000 × 0.0225
    # = 900 + 60 + 375 + 45 = 1,380 per thousand
    assert usage_cost_usd(sonnet, usage) == Decimal("1.38")


def test_a_tier_without_cache_prices_bills_cache_tokens_at_its_input_price() -> None:
    tiered = replace(
        SONNET_LIKE,
        long_context=LongContextPrice(
            prompt_tokens_above=100_000,
            input_per_1k=Decimal("0.006"),
            output_per_1k=Decimal("0.0225"),
        ),
    )
    usage = Usage(150_000, 0, cache_read_tokens=50_000, cache_write_tokens=50_000)
    # All 150,000 prompt tokens at 0.006: the base tier's cache prices do not apply.
    assert usage_cost_usd(tiered, usage) == Decimal("0.9")


# --- packaged figures ---------------------------------------------------------------------------


def test_anthropic_sonnet_4_5_with_prompt_caching(catalog: Catalog) -> None:
    sonnet = _model(catalog, "anthropic", "claude-sonnet-4-5-20250929")
    usage = Usage(12_000, 800, cache_read_tokens=8_000, cache_write_tokens=3_000)
    # 1,000 × 0.003 + 8,000 × 0.0003 + 3,000 × 0.00375 + 800 × 0.015
    # = 3 + 2.4 + 11.25 + 12 = 28.65 per thousand
    assert usage_cost_usd(sonnet, usage) == Decimal("0.02865")


def test_openai_cache_reads_cost_the_cached_input_price(catalog: Catalog) -> None:
    gpt_5 = _model(catalog, "openai", "gpt-5")
    usage = Usage(10_000, 1_000, cache_read_tokens=4_000)
    # 6,000 × 0.00125 + 4,000 × 0.000125 + 1,000 × 0.01 = 7.5 + 0.5 + 10
    assert usage_cost_usd(gpt_5, usage) == Decimal("0.018")


def test_bedrock_geographic_profiles_cost_ten_percent_more_than_global(catalog: Catalog) -> None:
    usage = Usage(20_000, 1_000, cache_read_tokens=5_000, cache_write_tokens=5_000)
    for name in (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-opus-4-5-20251101-v1:0",
    ):
        global_cost = usage_cost_usd(_model(catalog, "bedrock", f"global.{name}"), usage)
        for geography in ("us", "eu"):
            regional = _model(catalog, "bedrock", f"{geography}.{name}")
            assert usage_cost_usd(regional, usage) == global_cost * Decimal("1.1")


def test_a_reasoning_model_is_estimated_with_a_longer_completion(catalog: Catalog) -> None:
    o3 = _model(catalog, "openai", "o3")
    # 1,000 × 0.002 + 1,500 × 0.008 = 2 + 12
    assert estimate_cost_usd(o3, 1_000) == Decimal("0.014")


# --- unknown prices -----------------------------------------------------------------------------


def test_every_packaged_price_is_known(catalog: Catalog) -> None:
    assert all(price_known(model) for model in catalog)


def test_models_discovered_on_a_free_provider_cost_nothing_knowingly(catalog: Catalog) -> None:
    discovered = catalog.with_discovered_models("ollama", ["qwen2.5:7b", "llama3.2:1b"])
    for model_id in ("qwen2.5:7b", "llama3.2:1b"):
        model = _model(discovered, "ollama", model_id)
        assert model.price_known
        assert usage_cost_usd(model, Usage(1_000, 1_000)) == 0
    # A tag of a listed family keeps that model's capabilities.
    assert _model(discovered, "ollama", "llama3.2:1b").capabilities == {"tools"}


def test_models_discovered_on_a_priced_provider_have_no_known_price() -> None:
    priced = Catalog(
        [
            replace(
                SONNET_LIKE,
                capabilities=frozenset({"tools"}),
                rules=ParameterRules(temperature_max=1.0),
            )
        ],
        default_models={"p": "sonnet-like"},
    )
    discovered = priced.with_discovered_models("p", ["sonnet-like:beta", "other"])
    tagged = _model(discovered, "p", "sonnet-like:beta")
    assert not price_known(tagged)
    assert (tagged.input_per_1k, tagged.output_per_1k) == (Decimal(0), Decimal(0))
    assert tagged.cached_input_per_1k is None and tagged.cache_write_per_1k is None
    assert tagged.capabilities == {"tools"}
    assert tagged.rules == ParameterRules(temperature_max=1.0)
    other = _model(discovered, "p", "other")
    assert not other.price_known
    assert other.capabilities == frozenset() and other.rules == ParameterRules()
