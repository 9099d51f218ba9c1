"""The model catalog: which models each provider serves, their context windows, prices,
capabilities and parameter rules.

Layout:
    catalog.yaml   the data, shipped in the package (prices in USD per 1,000 tokens)
    _model.py      the values: ModelInfo, ParameterRules, LongContextPrice, ModelKind, CatalogError
    _loader.py     reading, validating and merging catalog files into those values
    _catalog.py    the immutable Catalog index (Catalog.load reads through the loader), costs

``Catalog.load(path)`` reads the packaged catalog and merges the file at ``path`` over it. The
file has the packaged catalog's shape and holds only what changes:

- ``quality_ranks``: each family given replaces or adds that family's rank.
- ``parameter_rules`` and ``capabilities`` (by family prefix): each prefix given replaces or
  adds that prefix's entry, whole. A chat model takes the entry of the longest prefix its
  family starts with (``claude-sonnet-4-5`` before ``claude-``); a rules entry's missing fields
  take the defaults of :class:`ParameterRules`, not those of a shorter prefix.
- ``providers.<name>``: a provider not yet known is added (and must give ``default_model``);
  ``default_model`` and ``default_embedding_model`` replace the packaged values when given.
- ``providers.<name>.models``: an entry whose ``id`` the provider already lists changes only the
  fields it gives (``{id: gpt-4o, input_per_1k: "0.002"}`` changes one price); a field that is
  a list or a mapping (``capabilities``, ``long_context``) is replaced whole. An entry with a
  new ``id`` adds a model and must give every field but the optional ones
  (``cached_input_per_1k``, ``cache_write_per_1k``, ``long_context``, ``capabilities``,
  ``price_known``; with ``price_known: false`` the prices may be left out too).
- Nothing is removed.
"""

from delos.runtime.catalog._catalog import (
    DISCOVERED_CONTEXT_WINDOW,
    PROMPT_TOKENS_PER_MESSAGE,
    Catalog,
    cost_usd,
    estimate_cost_usd,
    estimate_prompt_tokens,
    price_known,
    usage_cost_usd,
)
from delos.runtime.catalog._model import (
    CAPABILITIES,
    UNRANKED_QUALITY,
    CatalogError,
    LongContextPrice,
    ModelInfo,
    ModelKind,
    ParameterRules,
)

__all__ = [
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
]
