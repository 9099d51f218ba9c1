"""Reading the newer model fields: cache prices, long-context tiers, capabilities and parameter
rules (by longest family prefix), their validation and their merge rule in override files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from delos.runtime.catalog import (
    CAPABILITIES,
    Catalog,
    CatalogError,
    LongContextPrice,
    ModelInfo,
    ParameterRules,
)


@pytest.fixture(scope="module")
def packaged() -> Catalog:
    return Catalog.load()


def _load(tmp_path: Path, text: str, name: str = "override.yaml") -> Catalog:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Catalog.load(path)


def _model(catalog: Catalog, provider: str, model_id: str) -> ModelInfo:
    model = catalog.model(provider, model_id)
    assert model is not None, f"{provider}/{model_id} missing"
    return model


ACME = """\
parameter_rules:
  acme-: {temperature_max: 1.5}
  acme-x: {sampling: false}
  acme-x-1: {temperature_max: 0.5, temperature_or_top_p: true}
capabilities:
  acme-: [tools]
  acme-x: [tools, vision, reasoning]
providers:
  acme:
    default_model: acme-x-1
    default_embedding_model: acme-embed
    models:
      - {id: acme-x-1, family: acme-x-1, kind: chat, context_window: 1000,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 10}
      - {id: acme-x-2, family: acme-x-2, kind: chat, context_window: 1000,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 10}
      - {id: acme-y, family: acme-y, kind: chat, context_window: 1000,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 10}
      - {id: other, family: other, kind: chat, context_window: 1000,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 10}
      - {id: acme-z, family: acme-z, kind: chat, context_window: 1000,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 10,
         capabilities: [], parameter_rules: {temperature_max: 1.0}}
      - {id: acme-embed, family: acme-embed, kind: embedding, context_window: 512,
         input_per_1k: "0.0001", dimensions: 8}
"""


# --- rules and capabilities by family prefix ----------------------------------------------------


def test_a_model_takes_the_rules_of_the_longest_prefix_of_its_family_whole(
    tmp_path: Path,
) -> None:
    loaded = _load(tmp_path, ACME)
    assert _model(loaded, "acme", "acme-x-1").rules == ParameterRules(
        temperature_max=0.5, temperature_or_top_p=True
    )
    # "acme-x" is longer than "acme-": its entry applies whole, the 1.5 of "acme-" does not.
    assert _model(loaded, "acme", "acme-x-2").rules == ParameterRules(sampling=False)
    assert _model(loaded, "acme", "acme-y").rules == ParameterRules(temperature_max=1.5)
    assert _model(loaded, "acme", "other").rules == ParameterRules()


def test_a_model_takes_the_capabilities_of_the_longest_prefix_of_its_family(
    tmp_path: Path,
) -> None:
    loaded = _load(tmp_path, ACME)
    assert _model(loaded, "acme", "acme-x-1").capabilities == {"tools", "vision", "reasoning"}
    assert _model(loaded, "acme", "acme-y").capabilities == {"tools"}
    assert _model(loaded, "acme", "other").capabilities == frozenset()


def test_a_model_s_own_entries_replace_its_family_s(tmp_path: Path) -> None:
    acme_z = _model(_load(tmp_path, ACME), "acme", "acme-z")
    assert acme_z.capabilities == frozenset()
    assert acme_z.rules == ParameterRules(temperature_max=1.0)


def test_embedding_models_take_no_family_capabilities_or_rules(tmp_path: Path) -> None:
    embed = _model(_load(tmp_path, ACME), "acme", "acme-embed")
    assert embed.capabilities == frozenset()
    assert embed.rules == ParameterRules()


def test_unquoted_temperatures_are_read_as_numbers(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "parameter_rules:\n  gpt-4o: {temperature_max: 1}\n")
    assert _model(loaded, "openai", "gpt-4o").rules.temperature_max == 1.0
    assert _model(loaded, "openai", "gpt-4o-mini").rules.temperature_max == 1.0


# --- the newer price fields ---------------------------------------------------------------------


def test_cache_prices_and_the_long_context_tier_are_read_exactly(packaged: Catalog) -> None:
    pro = _model(packaged, "gemini", "gemini-2.5-pro")
    assert pro.cached_input_per_1k == Decimal("0.000125")
    assert pro.cache_write_per_1k is None
    assert pro.long_context == LongContextPrice(
        prompt_tokens_above=200_000,
        input_per_1k=Decimal("0.0025"),
        output_per_1k=Decimal("0.015"),
        cached_input_per_1k=Decimal("0.00025"),
    )
    sonnet = _model(packaged, "anthropic", "claude-sonnet-4-5-20250929")
    assert (sonnet.cached_input_per_1k, sonnet.cache_write_per_1k) == (
        Decimal("0.0003"),
        Decimal("0.00375"),
    )
    assert sonnet.long_context is None


def test_a_model_without_a_known_price_may_leave_its_prices_out(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        """\
providers:
  openai:
    models:
      - {id: gpt-preview, family: gpt-preview, kind: chat, context_window: 4096,
         typical_output_tokens: 100, price_known: false}
      - {id: gpt-guess, family: gpt-guess, kind: chat, context_window: 4096,
         input_per_1k: "0.001", output_per_1k: "0.002", typical_output_tokens: 100,
         price_known: false}
""",
    )
    preview = _model(loaded, "openai", "gpt-preview")
    assert not preview.price_known
    assert (preview.input_per_1k, preview.output_per_1k) == (Decimal(0), Decimal(0))
    guess = _model(loaded, "openai", "gpt-guess")
    assert not guess.price_known and guess.output_per_1k == Decimal("0.002")


# --- override merge -----------------------------------------------------------------------------


def test_an_override_changes_one_cache_price_and_keeps_the_others(
    tmp_path: Path, packaged: Catalog
) -> None:
    loaded = _load(
        tmp_path,
        "providers:\n  anthropic:\n    models:\n"
        '      - {id: claude-sonnet-4-5-20250929, cached_input_per_1k: "0.00025"}\n',
    )
    sonnet = _model(loaded, "anthropic", "claude-sonnet-4-5-20250929")
    before = _model(packaged, "anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet.cached_input_per_1k == Decimal("0.00025")
    assert sonnet.cache_write_per_1k == before.cache_write_per_1k
    assert (sonnet.capabilities, sonnet.rules) == (before.capabilities, before.rules)


def test_an_override_replaces_a_long_context_tier_whole(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        """\
providers:
  gemini:
    models:
      - id: gemini-2.5-pro
        long_context: {prompt_tokens_above: 100000, input_per_1k: "0.003",
                       output_per_1k: "0.02"}
  openai:
    models:
      - id: gpt-4.1
        long_context: {prompt_tokens_above: 500000, input_per_1k: "0.004",
                       output_per_1k: "0.016", cache_write_per_1k: "0.005"}
""",
    )
    # The packaged tier's cached price is not merged into the new tier.
    assert _model(loaded, "gemini", "gemini-2.5-pro").long_context == LongContextPrice(
        100_000, Decimal("0.003"), Decimal("0.02")
    )
    assert _model(loaded, "openai", "gpt-4.1").long_context == LongContextPrice(
        500_000, Decimal("0.004"), Decimal("0.016"), cache_write_per_1k=Decimal("0.005")
    )


def test_an_override_replaces_a_model_s_capabilities_whole(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        "providers:\n  openai:\n    models:\n      - {id: gpt-4o, capabilities: [tools]}\n",
    )
    assert _model(loaded, "openai", "gpt-4o").capabilities == {"tools"}
    # The family entry still applies to the other members.
    assert "vision" in _model(loaded, "openrouter", "openai/gpt-4o").capabilities


def test_an_override_replaces_or_adds_prefix_entries(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        """\
capabilities:
  gpt-4o: [tools]
  mixtral-8x22b: [tools]
parameter_rules:
  claude-: {temperature_max: 0.5}
  gpt-4.1: {temperature_or_top_p: true}
""",
    )
    for provider, model_id in (("openai", "gpt-4o-mini"), ("openrouter", "openai/gpt-4o")):
        assert _model(loaded, provider, model_id).capabilities == {"tools"}
    mixtral = _model(loaded, "together", "mistralai/Mixtral-8x22B-Instruct-v0.1")
    assert mixtral.capabilities == {"tools"}
    assert _model(loaded, "anthropic", "claude-3-5-sonnet-20241022").rules == ParameterRules(
        temperature_max=0.5
    )
    # A longer packaged prefix still wins over the replaced shorter one.
    assert _model(loaded, "anthropic", "claude-sonnet-4-5-20250929").rules == ParameterRules(
        temperature_max=1.0, temperature_or_top_p=True
    )
    assert _model(loaded, "openai", "gpt-4.1").rules == ParameterRules(temperature_or_top_p=True)


def test_a_json_override_gives_the_new_fields_exactly(tmp_path: Path) -> None:
    text = (
        '{"parameter_rules": {"gpt-4o": {"temperature_max": 1.2}},'
        ' "providers": {"openai": {"models": [{"id": "gpt-4o", "cached_input_per_1k": 0.0011,'
        ' "capabilities": ["tools", "json_schema"], "price_known": true}]}}}'
    )
    gpt_4o = _model(_load(tmp_path, text, "override.json"), "openai", "gpt-4o")
    assert gpt_4o.cached_input_per_1k == Decimal("0.0011")
    assert gpt_4o.capabilities == {"tools", "json_schema"}
    assert gpt_4o.rules == ParameterRules(temperature_max=1.2)


# --- malformed fields ---------------------------------------------------------------------------


def _models(entry: str, provider: str = "openai") -> str:
    return f"providers:\n  {provider}:\n    models:\n      - {entry}\n"


KNOWN = ", ".join(CAPABILITIES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _models("{id: gpt-4o, capabilities: [tools, telepathy]}"),
            [
                "providers.openai.models[0].capabilities[1]: 'telepathy' is not a capability "
                f"(one of {KNOWN})"
            ],
            id="unknown-capability",
        ),
        pytest.param(
            _models("{id: gpt-4o, capabilities: tools}"),
            ["providers.openai.models[0].capabilities: expected a list"],
            id="capabilities-not-a-list",
        ),
        pytest.param(
            "capabilities:\n  gpt-4o: [vision, 3]\n",
            ["capabilities.gpt-4o[1]: 3 is not a capability"],
            id="unknown-family-capability",
        ),
        pytest.param(
            _models("{id: text-embedding-3-small, capabilities: [tools]}"),
            ["providers.openai.models[0].capabilities: only chat models have capabilities"],
            id="embedding-with-capabilities",
        ),
        pytest.param(
            _models("{id: text-embedding-3-small, parameter_rules: {sampling: false}}"),
            ["providers.openai.models[0].parameter_rules: only chat models have parameter_rules"],
            id="embedding-with-rules",
        ),
        pytest.param(
            "parameter_rules:\n  claude-: {temperature_max: 0}\n",
            ["parameter_rules.claude-.temperature_max: must be above 0"],
            id="zero-temperature",
        ),
        pytest.param(
            'parameter_rules:\n  claude-: {temperature_max: "hot"}\n',
            ["parameter_rules.claude-.temperature_max: not a decimal number"],
            id="temperature-not-a-number",
        ),
        pytest.param(
            'parameter_rules:\n  o3: {sampling: "no"}\n',
            ["parameter_rules.o3.sampling"],
            id="rule-not-a-boolean",
        ),
        pytest.param(
            "parameter_rules:\n  o3: {top_k: 1}\n",
            ["parameter_rules.o3.top_k: unknown field"],
            id="unknown-rule",
        ),
        pytest.param(
            _models("{id: gpt-4o, parameter_rules: {temperature_max: -1}}"),
            ["providers.openai.models[0].parameter_rules.temperature_max: must not be negative"],
            id="negative-model-temperature",
        ),
        pytest.param(
            _models('{id: gpt-4o, cached_input_per_1k: "-0.1"}'),
            ["providers.openai.models[0].cached_input_per_1k: must not be negative"],
            id="negative-cache-price",
        ),
        pytest.param(
            _models('{id: gpt-4o, cache_write_per_1k: "lots"}'),
            ["providers.openai.models[0].cache_write_per_1k: not a decimal number"],
            id="cache-write-not-a-number",
        ),
        pytest.param(
            _models('{id: gpt-4o, price_known: "maybe"}'),
            ["providers.openai.models[0].price_known"],
            id="price-known-not-a-boolean",
        ),
        pytest.param(
            _models(
                '{id: gemini-2.5-pro, long_context: {prompt_tokens_above: 1, input_per_1k: "1"}}',
                provider="gemini",
            ),
            ["providers.gemini.models[0].long_context.output_per_1k: missing field"],
            id="long-context-incomplete",
        ),
        pytest.param(
            _models(
                "{id: gpt-4o, long_context: {prompt_tokens_above: 0, input_per_1k: x,"
                ' output_per_1k: "1", colour: red}}'
            ),
            [
                "providers.openai.models[0].long_context.prompt_tokens_above",
                "providers.openai.models[0].long_context.input_per_1k: not a decimal number",
                "providers.openai.models[0].long_context.colour: unknown field",
            ],
            id="long-context-malformed",
        ),
        pytest.param(
            _models(
                '{id: gpt-4o, long_context: {prompt_tokens_above: 128000, input_per_1k: "1",'
                ' output_per_1k: "1"}}'
            ),
            [
                "providers.openai.models[0].long_context.prompt_tokens_above: must be below "
                "the context window (128000 tokens)"
            ],
            id="long-context-beyond-the-window",
        ),
        pytest.param(
            _models(
                "{id: gpt-guess, family: gpt-guess, kind: chat, context_window: 10,"
                " price_known: false}"
            ),
            ["providers.openai.models[0]: model 'gpt-guess' lacks typical_output_tokens"],
            id="unknown-price-still-needs-the-rest",
        ),
    ],
)
def test_a_malformed_new_field_names_the_file_and_the_place(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as raised:
        Catalog.load(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message
