"""The values a catalog is made of: :class:`ModelInfo`, its kind, and :class:`CatalogError`.

Both the loader (which builds them from files) and :class:`~delos.runtime.catalog.Catalog`
(which indexes them) import this module, and it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeAlias

__all__ = ["UNRANKED_QUALITY", "CatalogError", "ModelInfo", "ModelKind"]

ModelKind: TypeAlias = Literal["chat", "embedding"]

#: Quality rank of a family the catalog does not rank: after every ranked family.
UNRANKED_QUALITY = 100


class CatalogError(Exception):
    """A catalog file cannot be read or is malformed.

    The message names the file and the place in the document, e.g.
    ``prices.yaml: providers.openai.models[2].input_per_1k: not a decimal number``.
    """


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model as one provider serves it.

    ``id`` is the provider's own model id; ``family`` names the same model across providers.
    Prices are USD per 1,000 tokens; ``context_window`` and ``typical_output_tokens`` are tokens.
    ``dimensions`` is the vector length of an embedding model and None for a chat model.
    ``quality_rank`` orders families for quality routing: lower is better.
    """

    provider: str
    id: str
    family: str
    kind: ModelKind
    context_window: int
    input_per_1k: Decimal
    output_per_1k: Decimal
    typical_output_tokens: int
    dimensions: int | None = None
    quality_rank: int = UNRANKED_QUALITY
