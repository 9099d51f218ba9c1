"""The values a catalog is made of: :class:`ModelInfo` (with its parameter rules, capabilities and
price tiers), its kind, and :class:`CatalogError`.

Both the loader (which builds them from files) and :class:`~delos.runtime.catalog.Catalog`
(which indexes them) import this module, and it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, TypeAlias

__all__ = [
    "CAPABILITIES",
    "UNRANKED_QUALITY",
    "CatalogError",
    "LongContextPrice",
    "ModelInfo",
    "ModelKind",
    "ParameterRules",
]

ModelKind: TypeAlias = Literal["chat", "embedding"]

#: What a chat model can take beyond plain text: tool calling, images, documents (PDF),
#: reasoning controls (effort or budget), a native JSON-schema output mode.
CAPABILITIES: Final = ("tools", "vision", "documents", "reasoning", "json_schema")


@dataclass(frozen=True, slots=True)
class ParameterRules:
    """What a model accepts of the sampling parameters (a request may ask temperature 0 to 2).

    A candidate whose rules a request breaks is skipped, never sent a clamped value.
    """

    #: Highest temperature accepted (Claude models: 1.0).
    temperature_max: float = 2.0
    #: False for models that refuse ``temperature`` and ``top_p`` altogether (reasoning models).
    sampling: bool = True
    #: True for models that refuse ``temperature`` and ``top_p`` in the same request.
    temperature_or_top_p: bool = False


@dataclass(frozen=True, slots=True)
class LongContextPrice:
    """Prices (USD per 1,000 tokens) that replace the base ones for a whole request whose prompt
    is longer than ``prompt_tokens_above`` tokens (Gemini 2.5 Pro above 200K, for instance).

    A cache price left None is this tier's ``input_per_1k``, as in the base tier.
    """

    prompt_tokens_above: int
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None = None
    cache_write_per_1k: Decimal | None = None


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
    ``cached_input_per_1k`` prices prompt tokens read from the provider's prompt cache and
    ``cache_write_per_1k`` those written to it (the default 5-minute cache); None where the
    provider has no such price (the input price applies). ``capabilities`` is a subset of
    :data:`CAPABILITIES`; ``rules`` what the model accepts of the sampling parameters.
    ``price_known`` is False when the catalog has no price for the model (a model discovered on
    a provider that is not free, or one an operator listed without a price): its prices are then
    a guess, 0 unless given, and a cost computed from them is an estimate. A free local model
    (Ollama's) costs 0 and its price is known.
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
    cached_input_per_1k: Decimal | None = None
    cache_write_per_1k: Decimal | None = None
    long_context: LongContextPrice | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    rules: ParameterRules = field(default_factory=ParameterRules)
    price_known: bool = True
