"""The model catalog: packaged data, lookups, cost arithmetic and override files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import delos.runtime.catalog as catalog_package
from delos.runtime.catalog import (
    DISCOVERED_CONTEXT_WINDOW,
    PROMPT_TOKENS_PER_MESSAGE,
    UNRANKED_QUALITY,
    Catalog,
    CatalogError,
    ModelInfo,
    cost_usd,
    estimate_cost_usd,
    estimate_prompt_tokens,
)

PROVIDERS = (
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "vertex",
    "together",
    "openrouter",
    "ollama",
)

SPEC_CHAT_MODELS = {
    "openai": ["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo"],
    "anthropic": [
        "claude-sonnet-4-20250514",
        "claude-opus-4-20250514",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-20241022",
        "claude-3-opus-20240229",
    ],
    "gemini": ["gemini-1.5-pro", "gemini-1.5-flash", "gemini-1.5-flash-8b", "gemini-pro"],
    "bedrock": [
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-opus-20240229-v1:0",
        "meta.llama3-1-405b-instruct-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
        "meta.llama3-1-8b-instruct-v1:0",
        "amazon.titan-text-premier-v1:0",
        "mistral.mistral-large-2407-v1:0",
        "cohere.command-r-plus-v1:0",
    ],
    "vertex": [
        "gemini-1.5-pro-002",
        "gemini-1.5-flash-002",
        "claude-3-5-sonnet-v2@20241022",
        "claude-3-5-haiku@20241022",
        "claude-3-opus@20240229",
    ],
    "together": [
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
        "deepseek-ai/DeepSeek-V3",
        "deepseek-ai/DeepSeek-R1",
        "mistralai/Mixtral-8x22B-Instruct-v0.1",
    ],
    "openrouter": [
        "anthropic/claude-3.5-sonnet",
        "openai/gpt-4o",
        "google/gemini-pro-1.5",
        "meta-llama/llama-3.1-405b-instruct",
        "mistralai/mistral-large",
        "deepseek/deepseek-chat",
    ],
    "ollama": ["llama3.2"],
}

EMBEDDING_MODELS = {
    "openai": ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"],
    "anthropic": [],
    "gemini": ["text-embedding-004", "gemini-embedding-001"],
    "bedrock": [
        "amazon.titan-embed-text-v2:0",
        "cohere.embed-english-v3",
        "cohere.embed-multilingual-v3",
        "cohere.embed-v4:0",
    ],
    "vertex": ["text-embedding-005", "text-embedding-004", "gemini-embedding-001"],
    "together": ["togethercomputer/m2-bert-80M-8k-retrieval", "BAAI/bge-large-en-v1.5"],
    "openrouter": [],
    "ollama": ["nomic-embed-text"],
}

DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-sonnet-20241022",
    "gemini": "gemini-1.5-flash",
    "bedrock": "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "vertex": "gemini-1.5-flash-002",
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "openrouter": "openai/gpt-4o",
    "ollama": "llama3.2",
}

DEFAULT_EMBEDDING_MODELS = {
    "openai": "text-embedding-3-small",
    "anthropic": None,
    "gemini": "text-embedding-004",
    "bedrock": "amazon.titan-embed-text-v2:0",
    "vertex": "text-embedding-005",
    "together": "togethercomputer/m2-bert-80M-8k-retrieval",
    "openrouter": None,
    "ollama": "nomic-embed-text",
}

FAMILIES = {
    "claude-3-5-sonnet": {
        ("anthropic", "claude-3-5-sonnet-20241022"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
        ("vertex", "claude-3-5-sonnet-v2@20241022"),
        ("openrouter", "anthropic/claude-3.5-sonnet"),
    },
    "llama-3.1-405b": {
        ("bedrock", "meta.llama3-1-405b-instruct-v1:0"),
        ("together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"),
        ("openrouter", "meta-llama/llama-3.1-405b-instruct"),
    },
    "gpt-4o": {("openai", "gpt-4o"), ("openrouter", "openai/gpt-4o")},
    "gemini-1.5-pro": {
        ("gemini", "gemini-1.5-pro"),
        ("vertex", "gemini-1.5-pro-002"),
        ("openrouter", "google/gemini-pro-1.5"),
    },
    "gemini-1.5-flash": {("gemini", "gemini-1.5-flash"), ("vertex", "gemini-1.5-flash-002")},
    "mistral-large": {
        ("bedrock", "mistral.mistral-large-2407-v1:0"),
        ("openrouter", "mistralai/mistral-large"),
    },
    "deepseek-v3": {
        ("together", "deepseek-ai/DeepSeek-V3"),
        ("openrouter", "deepseek/deepseek-chat"),
    },
    "claude-3-5-haiku": {
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("vertex", "claude-3-5-haiku@20241022"),
    },
    "claude-3-opus": {
        ("anthropic", "claude-3-opus-20240229"),
        ("bedrock", "anthropic.claude-3-opus-20240229-v1:0"),
        ("vertex", "claude-3-opus@20240229"),
    },
    "text-embedding-004": {("gemini", "text-embedding-004"), ("vertex", "text-embedding-004")},
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _model(catalog: Catalog, provider: str, model_id: str) -> ModelInfo:
    model = catalog.model(provider, model_id)
    assert model is not None, f"{provider}/{model_id} missing"
    return model


# --- the package --------------------------------------------------------------------------------


def test_package_exports_exactly_its_public_names() -> None:
    assert set(catalog_package.__all__) == {
        "CAPABILITIES",
        "DISCOVERED_CONTEXT_WINDOW",
        "PROMPT_TOKENS_PER_MESSAGE",
        "UNRANKED_QUALITY",
        "Catalog",
        "CatalogError",
        "LongContextPrice",
        "ModelInfo",
        "ModelKind",
        "ParameterRules",
        "cost_usd",
        "estimate_cost_usd",
        "estimate_prompt_tokens",
        "price_known",
        "usage_cost_usd",
    }


# --- the packaged data --------------------------------------------------------------------------


def test_packaged_catalog_lists_the_eight_providers_in_order(catalog: Catalog) -> None:
    assert catalog.providers() == PROVIDERS


@pytest.mark.parametrize(
    ("provider", "model_id"),
    [(p, m) for p, models in SPEC_CHAT_MODELS.items() for m in models],
)
def test_every_model_of_the_specification_is_a_chat_model_of_its_provider(
    catalog: Catalog, provider: str, model_id: str
) -> None:
    model = _model(catalog, provider, model_id)
    assert model.kind == "chat"
    assert model in catalog.chat_models(provider)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_embedding_models_are_listed_per_provider_with_dimensions(
    catalog: Catalog, provider: str
) -> None:
    listed = [m.id for m in catalog.embedding_models(provider)]
    assert listed == EMBEDDING_MODELS[provider]
    for model in catalog.embedding_models(provider):
        assert model.dimensions is not None and model.dimensions > 0
        assert model.output_per_1k == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_defaults_are_models_of_the_right_kind_of_that_provider(
    catalog: Catalog, provider: str
) -> None:
    default = catalog.default_model(provider)
    assert default == DEFAULT_MODELS[provider]
    assert _model(catalog, provider, default).kind == "chat"
    embedding = catalog.default_embedding_model(provider)
    assert embedding == DEFAULT_EMBEDDING_MODELS[provider]
    if embedding is not None:
        assert _model(catalog, provider, embedding).kind == "embedding"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_link_the_same_model_across_providers(catalog: Catalog, family: str) -> None:
    members = {(m.provider, m.id) for m in catalog.family_members(family)}
    assert members == FAMILIES[family]


def test_every_model_has_sane_values(catalog: Catalog) -> None:
    assert len(catalog) == len(list(catalog))
    for model in catalog:
        assert isinstance(model.input_per_1k, Decimal)
        assert isinstance(model.output_per_1k, Decimal)
        assert model.input_per_1k >= 0 and model.output_per_1k >= 0
        assert model.context_window > 0
        if model.kind == "chat":
            assert model.dimensions is None
            assert model.typical_output_tokens > 0


def test_prices_are_read_exactly_from_their_decimal_text(catalog: Catalog) -> None:
    gpt_4o = _model(catalog, "openai", "gpt-4o")
    assert gpt_4o.input_per_1k == Decimal("0.0025")
    assert gpt_4o.output_per_1k == Decimal("0.01")
    flash_8b = _model(catalog, "gemini", "gemini-1.5-flash-8b")
    assert flash_8b.input_per_1k == Decimal("0.0000375")


def test_local_models_cost_nothing(catalog: Catalog) -> None:
    for model in catalog.chat_models("ollama") + catalog.embedding_models("ollama"):
        assert model.input_per_1k == 0 and model.output_per_1k == 0


def test_every_packaged_chat_family_has_a_quality_rank(catalog: Catalog) -> None:
    unranked = {
        m.family for m in catalog if m.kind == "chat" and m.quality_rank == UNRANKED_QUALITY
    }
    assert unranked == set()


def test_quality_ranks_put_claude_4_first_then_gpt_4o_then_claude_3_5_sonnet(
    catalog: Catalog,
) -> None:
    def rank(provider: str, model_id: str) -> int:
        return _model(catalog, provider, model_id).quality_rank

    opus_4 = rank("anthropic", "claude-opus-4-20250514")
    sonnet_4 = rank("anthropic", "claude-sonnet-4-20250514")
    gpt_4o = rank("openai", "gpt-4o")
    sonnet_3_5 = rank("anthropic", "claude-3-5-sonnet-20241022")
    assert max(opus_4, sonnet_4) < gpt_4o < sonnet_3_5
    assert sonnet_3_5 < rank("openai", "gpt-4o-mini") < rank("openai", "gpt-3.5-turbo")
    assert catalog.quality_rank("no-such-family") == UNRANKED_QUALITY


# --- lookups ------------------------------------------------------------------------------------


def test_lookups_of_unknown_names_are_empty(catalog: Catalog) -> None:
    assert catalog.model("openai", "gpt-9") is None
    assert catalog.model("nobody", "gpt-4o") is None
    assert catalog.chat_models("nobody") == ()
    assert catalog.embedding_models("anthropic") == ()
    assert catalog.family_members("no-such-family") == ()
    assert catalog.resolve("no-such-model") == ()


def test_defaults_of_an_unknown_provider_raise_key_error(catalog: Catalog) -> None:
    with pytest.raises(KeyError):
        catalog.default_model("nobody")
    with pytest.raises(KeyError):
        catalog.default_embedding_model("nobody")


def test_resolve_by_exact_id_puts_that_model_first_then_its_family(catalog: Catalog) -> None:
    resolved = catalog.resolve("anthropic.claude-3-5-sonnet-20241022-v2:0")
    assert (resolved[0].provider, resolved[0].id) == (
        "bedrock",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
    )
    assert {(m.provider, m.id) for m in resolved} == FAMILIES["claude-3-5-sonnet"]
    assert len(resolved) == len(FAMILIES["claude-3-5-sonnet"])


def test_resolve_by_an_openrouter_id_reaches_the_other_providers(catalog: Catalog) -> None:
    resolved = catalog.resolve("deepseek/deepseek-chat")
    assert [(m.provider, m.id) for m in resolved] == [
        ("openrouter", "deepseek/deepseek-chat"),
        ("together", "deepseek-ai/DeepSeek-V3"),
    ]


def test_resolve_by_family_returns_every_member_in_provider_order(catalog: Catalog) -> None:
    resolved = catalog.resolve("claude-3-5-sonnet")
    assert [m.provider for m in resolved] == ["anthropic", "bedrock", "vertex", "openrouter"]


def test_resolve_an_id_that_is_also_its_family_lists_each_model_once(catalog: Catalog) -> None:
    resolved = catalog.resolve("gpt-4o")
    assert [(m.provider, m.id) for m in resolved] == [
        ("openai", "gpt-4o"),
        ("openrouter", "openai/gpt-4o"),
    ]


def test_resolve_an_id_served_by_two_providers_puts_both_first(catalog: Catalog) -> None:
    resolved = catalog.resolve("text-embedding-004", kind="embedding")
    assert [(m.provider, m.id) for m in resolved] == [
        ("gemini", "text-embedding-004"),
        ("vertex", "text-embedding-004"),
    ]


def test_resolve_filters_by_kind(catalog: Catalog) -> None:
    assert catalog.resolve("text-embedding-3-small", kind="chat") == ()
    assert catalog.resolve("gpt-4o", kind="embedding") == ()


def test_resolve_is_case_sensitive(catalog: Catalog) -> None:
    assert catalog.resolve("GPT-4O") == ()


def test_close_matches_suggest_the_intended_model(catalog: Catalog) -> None:
    assert "gpt-4o" in catalog.close_matches("gpt4o")
    assert catalog.close_matches("gpt4o")[0] == "gpt-4o"
    assert "claude-3-5-sonnet" in catalog.close_matches("claude-3.5-sonnet")
    assert catalog.close_matches("GPT-4O")[0] == "gpt-4o"


def test_close_matches_are_bounded_and_empty_for_nonsense(catalog: Catalog) -> None:
    assert len(catalog.close_matches("gpt", n=2)) <= 2
    assert catalog.close_matches("zzzzzzzzzz") == []


def test_catalog_and_model_info_are_immutable(catalog: Catalog) -> None:
    with pytest.raises(AttributeError):
        setattr(catalog, "_models", ())  # noqa: B010 - assignment would not type-check
    with pytest.raises(AttributeError):
        delattr(catalog, "_models")
    assert len(catalog) > 0
    model = _model(catalog, "openai", "gpt-4o")
    with pytest.raises(AttributeError):
        model.input_per_1k = Decimal(0)  # type: ignore[misc]


# --- discovered models --------------------------------------------------------------------------


def test_discovered_models_are_added_as_free_chat_models_without_changing_the_original(
    catalog: Catalog,
) -> None:
    discovered = catalog.with_discovered_models("ollama", ["mistral:7b", "qwen2.5"])
    mistral = _model(discovered, "ollama", "mistral:7b")
    assert (mistral.family, mistral.kind) == ("mistral", "chat")
    assert mistral.input_per_1k == 0 and mistral.output_per_1k == 0
    assert mistral.context_window == DISCOVERED_CONTEXT_WINDOW
    assert mistral.quality_rank == UNRANKED_QUALITY
    assert _model(discovered, "ollama", "qwen2.5").family == "qwen2.5"
    assert catalog.model("ollama", "mistral:7b") is None
    assert discovered.default_model("ollama") == "llama3.2"
    assert discovered.resolve("mistral")[0].id == "mistral:7b"


def test_a_discovered_tag_of_a_known_family_inherits_that_model(catalog: Catalog) -> None:
    discovered = catalog.with_discovered_models(
        "ollama", ["llama3.2:latest", "nomic-embed-text:latest"]
    )
    llama = _model(discovered, "ollama", "llama3.2:latest")
    listed = _model(catalog, "ollama", "llama3.2")
    assert (llama.family, llama.context_window) == ("llama3.2", listed.context_window)
    assert llama.quality_rank == listed.quality_rank
    embed = _model(discovered, "ollama", "nomic-embed-text:latest")
    assert (embed.kind, embed.dimensions) == ("embedding", 768)
    assert [m.id for m in discovered.resolve("llama3.2")] == ["llama3.2", "llama3.2:latest"]


def test_discovered_models_use_the_given_context_window(catalog: Catalog) -> None:
    discovered = catalog.with_discovered_models("ollama", ["phi3:mini"], context_window=16384)
    assert _model(discovered, "ollama", "phi3:mini").context_window == 16384


def test_discovering_known_ids_changes_nothing(catalog: Catalog) -> None:
    assert catalog.with_discovered_models("ollama", ["llama3.2", "llama3.2"]) is catalog
    discovered = catalog.with_discovered_models("ollama", ["gemma2:2b", "gemma2:2b"])
    assert len(discovered) == len(catalog) + 1


def test_a_registry_port_is_not_taken_for_a_tag(catalog: Catalog) -> None:
    discovered = catalog.with_discovered_models("ollama", ["registry:5000/team/model"])
    assert _model(discovered, "ollama", "registry:5000/team/model").family == (
        "registry:5000/team/model"
    )


def test_discovering_for_an_unknown_provider_raises_key_error(catalog: Catalog) -> None:
    with pytest.raises(KeyError):
        catalog.with_discovered_models("nobody", ["x"])


# --- building a catalog by hand -----------------------------------------------------------------


def _chat(provider: str, model_id: str) -> ModelInfo:
    return ModelInfo(
        provider=provider,
        id=model_id,
        family=model_id,
        kind="chat",
        context_window=1000,
        input_per_1k=Decimal("0.001"),
        output_per_1k=Decimal("0.002"),
        typical_output_tokens=100,
    )


def test_a_hand_built_catalog_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="twice"):
        Catalog([_chat("p", "a"), _chat("p", "a")], default_models={"p": "a"})
    with pytest.raises(ValueError, match="no default"):
        Catalog([_chat("q", "a")], default_models={"p": "a"})
    with pytest.raises(ValueError, match="not a chat model"):
        Catalog([_chat("p", "a")], default_models={"p": "b"})
    with pytest.raises(ValueError, match="not an embedding model"):
        Catalog([_chat("p", "a")], default_models={"p": "a"}, default_embedding_models={"p": "a"})


# --- cost ---------------------------------------------------------------------------------------


def test_cost_is_exact_decimal_arithmetic(catalog: Catalog) -> None:
    gpt_4o = _model(catalog, "openai", "gpt-4o")
    # 1000 × 0.0025 / 1000 + 500 × 0.01 / 1000
    assert cost_usd(gpt_4o, 1000, 500) == Decimal("0.0075")
    haiku = _model(catalog, "anthropic", "claude-3-5-haiku-20241022")
    # 1.234 × 0.0008 + 0.567 × 0.004 = 0.0009872 + 0.002268
    assert cost_usd(haiku, 1234, 567) == Decimal("0.0032552")
    opus = _model(catalog, "anthropic", "claude-opus-4-20250514")
    # 3 × 0.015 / 1000 + 7 × 0.075 / 1000 = 0.000045 + 0.000525
    assert cost_usd(opus, 3, 7) == Decimal("0.00057")
    small = _model(catalog, "openai", "text-embedding-3-small")
    assert cost_usd(small, 10_000, 0) == Decimal("0.0002")
    assert cost_usd(_model(catalog, "ollama", "llama3.2"), 10**6, 10**6) == 0


def test_cost_of_nothing_is_zero_and_negative_counts_are_refused(catalog: Catalog) -> None:
    gpt_4o = _model(catalog, "openai", "gpt-4o")
    assert cost_usd(gpt_4o, 0, 0) == 0
    with pytest.raises(ValueError):
        cost_usd(gpt_4o, -1, 0)
    with pytest.raises(ValueError):
        cost_usd(gpt_4o, 0, -1)


def test_estimated_cost_assumes_max_tokens_or_else_the_typical_output(catalog: Catalog) -> None:
    gpt_4o = _model(catalog, "openai", "gpt-4o")
    assert estimate_cost_usd(gpt_4o, 1000) == cost_usd(gpt_4o, 1000, 300)
    assert estimate_cost_usd(gpt_4o, 1000, max_tokens=50) == Decimal("0.003")
    r1 = _model(catalog, "together", "deepseek-ai/DeepSeek-R1")
    assert r1.typical_output_tokens > gpt_4o.typical_output_tokens


def test_prompt_token_estimate_is_a_quarter_of_the_bytes_plus_overhead() -> None:
    assert estimate_prompt_tokens([]) == 0
    assert estimate_prompt_tokens([""]) == PROMPT_TOKENS_PER_MESSAGE
    assert estimate_prompt_tokens(["abcd" * 10]) == 10 + PROMPT_TOKENS_PER_MESSAGE
    assert estimate_prompt_tokens(["abcde"]) == 2 + PROMPT_TOKENS_PER_MESSAGE
    assert estimate_prompt_tokens(["ab", "cd"]) == 2 * (1 + PROMPT_TOKENS_PER_MESSAGE)
    # Four CJK characters are twelve UTF-8 bytes: three tokens, not one.
    assert estimate_prompt_tokens(["漢字漢字"]) == 3 + PROMPT_TOKENS_PER_MESSAGE
    assert estimate_prompt_tokens(text for text in ["abcd"]) == 1 + PROMPT_TOKENS_PER_MESSAGE


# --- override files -----------------------------------------------------------------------------


OVERRIDE = """\
quality_ranks:
  my-model: 2
providers:
  openai:
    default_model: gpt-4o
    models:
      - {id: gpt-4o, input_per_1k: "0.002"}
      - id: my-model
        family: my-model
        kind: chat
        context_window: 32000
        input_per_1k: "0.0001"
        output_per_1k: "0.0002"
        typical_output_tokens: 200
"""


def test_an_override_changes_a_price_adds_a_model_and_moves_the_default(tmp_path: Path) -> None:
    loaded = Catalog.load(_write(tmp_path, "override.yaml", OVERRIDE))
    gpt_4o = _model(loaded, "openai", "gpt-4o")
    assert gpt_4o.input_per_1k == Decimal("0.002")
    # Fields the override does not give keep their packaged values.
    assert gpt_4o.output_per_1k == Decimal("0.01")
    assert gpt_4o.context_window == 128000
    mine = _model(loaded, "openai", "my-model")
    assert (mine.kind, mine.quality_rank, mine.output_per_1k) == ("chat", 2, Decimal("0.0002"))
    assert loaded.default_model("openai") == "gpt-4o"
    assert loaded.default_embedding_model("openai") == "text-embedding-3-small"
    assert _model(loaded, "openrouter", "openai/gpt-4o").input_per_1k == Decimal("0.0025")
    assert len(loaded) == len(Catalog.load()) + 1


def test_an_override_may_add_a_provider(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "override.yml",
        """\
providers:
  acme:
    default_model: acme-1
    models:
      - {id: acme-1, family: acme-1, kind: chat, context_window: 4096,
         input_per_1k: "0.0001", output_per_1k: "0.0001", typical_output_tokens: 100}
""",
    )
    loaded = Catalog.load(path)
    assert loaded.providers() == (*PROVIDERS, "acme")
    assert loaded.default_embedding_model("acme") is None


def test_an_override_may_be_json_with_numbers_kept_exact(tmp_path: Path) -> None:
    # 0.07 is a JSON number, which a binary float would not hold exactly.
    text = '{"providers": {"anthropic": {"models": [{"id": "claude-3-opus-20240229", '
    text += '"output_per_1k": 0.07}]}}}'
    path = _write(tmp_path, "override.json", text)
    opus = _model(Catalog.load(path), "anthropic", "claude-3-opus-20240229")
    assert opus.output_per_1k == Decimal("0.07")


def test_unquoted_yaml_prices_are_read_exactly(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "override.yaml",
        "providers:\n  openai:\n    models:\n      - {id: gpt-4o, input_per_1k: 0.0001}\n",
    )
    assert _model(Catalog.load(path), "openai", "gpt-4o").input_per_1k == Decimal("0.0001")


def test_an_empty_override_changes_nothing(tmp_path: Path) -> None:
    loaded = Catalog.load(_write(tmp_path, "empty.yaml", ""))
    assert list(loaded) == list(Catalog.load())


def test_load_accepts_a_string_path(tmp_path: Path) -> None:
    loaded = Catalog.load(str(_write(tmp_path, "override.yaml", OVERRIDE)))
    assert loaded.model("openai", "my-model") is not None


# --- malformed override files -------------------------------------------------------------------


def _models_override(entry: str) -> str:
    return f"providers:\n  openai:\n    models:\n      - {entry}\n"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "bad.yaml",
            "providers:\n  openai: [unclosed\n",
            ["not valid YAML", "line"],
            id="bad-yaml",
        ),
        pytest.param(
            "bad.json",
            '{"providers": {',
            ["not valid JSON", "line 1"],
            id="bad-json",
        ),
        pytest.param(
            "price.yaml",
            _models_override('{id: gpt-4o, input_per_1k: "cheap"}'),
            ["providers.openai.models[0].input_per_1k: not a decimal number"],
            id="price-not-a-number",
        ),
        pytest.param(
            "negative.yaml",
            _models_override('{id: gpt-4o, output_per_1k: "-0.01"}'),
            ["providers.openai.models[0].output_per_1k: must not be negative"],
            id="negative-price",
        ),
        pytest.param(
            "infinite.yaml",
            _models_override("{id: gpt-4o, output_per_1k: .inf}"),
            ["providers.openai.models[0].output_per_1k: not a finite number"],
            id="infinite-price",
        ),
        pytest.param(
            "unknown.yaml",
            _models_override('{id: gpt-4o, colour: "blue"}'),
            ["providers.openai.models[0].colour: unknown field"],
            id="unknown-field",
        ),
        pytest.param(
            "top.yaml",
            "prices: {}\n",
            ["prices: unknown field"],
            id="unknown-top-level-field",
        ),
        pytest.param(
            "window.yaml",
            _models_override("{id: gpt-4o, context_window: 0}"),
            ["providers.openai.models[0].context_window"],
            id="zero-context-window",
        ),
        pytest.param(
            "kind.yaml",
            _models_override("{id: gpt-4o, kind: completion}"),
            ["providers.openai.models[0].kind"],
            id="unknown-kind",
        ),
        pytest.param(
            "rank.yaml",
            "quality_ranks:\n  gpt-4o: -1\n",
            ["quality_ranks.gpt-4o"],
            id="negative-rank",
        ),
        pytest.param(
            "provider.yaml",
            "providers:\n  Open AI: {}\n",
            ["providers['Open AI'] (key)"],
            id="bad-provider-name",
        ),
        pytest.param(
            "list.yaml",
            "- 1\n- 2\n",
            ["(document): expected a mapping"],
            id="not-a-mapping",
        ),
        pytest.param(
            "incomplete.yaml",
            _models_override("{id: gpt-9, family: gpt-9, kind: chat}"),
            [
                "providers.openai.models[0]",
                "'gpt-9' lacks context_window, input_per_1k, output_per_1k, typical_output_tokens",
            ],
            id="new-model-missing-fields",
        ),
        pytest.param(
            "dimensions.yaml",
            _models_override("{id: gpt-4o, dimensions: 10}"),
            ["providers.openai.models[0].dimensions: only embedding models have dimensions"],
            id="chat-model-with-dimensions",
        ),
        pytest.param(
            "default.yaml",
            "providers:\n  openai:\n    default_model: text-embedding-3-small\n",
            ["providers.openai.default_model: 'text-embedding-3-small' is not a chat model"],
            id="default-is-not-a-chat-model",
        ),
        pytest.param(
            "embedding-default.yaml",
            "providers:\n  openai:\n    default_embedding_model: gpt-9\n",
            ["providers.openai.default_embedding_model: 'gpt-9' is not an embedding model"],
            id="unknown-embedding-default",
        ),
        pytest.param(
            "no-default.yaml",
            "providers:\n  acme:\n    models: []\n",
            ["providers.acme: missing field default_model"],
            id="new-provider-without-default",
        ),
        pytest.param(
            "twice.yaml",
            "providers:\n  openai:\n    models:\n      - {id: gpt-4o}\n      - {id: gpt-4o}\n",
            ["providers.openai.models[1].id: 'gpt-4o' is listed twice"],
            id="duplicate-model",
        ),
        pytest.param(
            "dupkey.yaml",
            "providers:\n  openai: {}\n  openai: {}\n",
            ["not valid YAML", "duplicate key 'openai'", "line 3"],
            id="duplicate-yaml-key",
        ),
        pytest.param(
            "dupkey.json",
            '{"providers": {}, "providers": {}}',
            ["not valid JSON", "duplicate key 'providers'"],
            id="duplicate-json-key",
        ),
        pytest.param(
            "prices.toml",
            "",
            ["unknown catalog format '.toml'"],
            id="unknown-extension",
        ),
    ],
)
def test_a_malformed_override_names_the_file_and_the_field(
    tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(CatalogError) as raised:
        Catalog.load(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_a_missing_override_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(CatalogError, match="cannot read") as raised:
        Catalog.load(path)
    assert str(path) in str(raised.value)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "two.yaml",
        _models_override('{id: gpt-4o, input_per_1k: "x", output_per_1k: "-1"}'),
    )
    with pytest.raises(CatalogError) as raised:
        Catalog.load(path)
    assert "input_per_1k: not a decimal number" in str(raised.value)
    assert "output_per_1k: must not be negative" in str(raised.value)
