"""The model catalog: which models each provider serves, their context windows and prices.

Layout:
    catalog.yaml   the data, shipped in the package (prices in USD per 1,000 tokens)
    _model.py      the values: ModelInfo, ModelKind, CatalogError
    _loader.py     reading, validating and merging catalog files into those values
    _catalog.py    the immutable Catalog index (Catalog.load reads through the loader), costs

``Catalog.load(path)`` reads the packaged catalog and merges the file at ``path`` over it. The
file has the packaged catalog's shape and holds only what changes:

- ``quality_ranks``: each family given replaces or adds that family's rank.
- ``providers.<name>``: a provider not yet known is added (and must give ``default_model``);
  ``default_model`` and ``default_embedding_model`` replace the packaged values when given.
- ``providers.<name>.models``: an entry whose ``id`` the provider already lists changes only the
  fields it gives (``{id: gpt-4o, input_per_1k: "0.002"}`` changes one price); an entry with a
  new ``id`` adds a model and must give every field.
- Nothing is removed.
"""

from delos.runtime.catalog._catalog import (
    DISCOVERED_CONTEXT_WINDOW,
    PROMPT_TOKENS_PER_MESSAGE,
    Catalog,
    cost_usd,
    estimate_cost_usd,
    estimate_prompt_tokens,
)
from delos.runtime.catalog._model import UNRANKED_QUALITY, CatalogError, ModelInfo, ModelKind

__all__ = [
    "DISCOVERED_CONTEXT_WINDOW",
    "PROMPT_TOKENS_PER_MESSAGE",
    "UNRANKED_QUALITY",
    "Catalog",
    "CatalogError",
    "ModelInfo",
    "ModelKind",
    "cost_usd",
    "estimate_cost_usd",
    "estimate_prompt_tokens",
]
