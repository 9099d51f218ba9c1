"""The catalog's lookups: the immutable :class:`Catalog` index and cost arithmetic."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from delos.runtime.values import Usage

from ._loader import read_catalog
from ._model import UNRANKED_QUALITY, ModelInfo, ModelKind

__all__ = [
    "DISCOVERED_CONTEXT_WINDOW",
    "PROMPT_TOKENS_PER_MESSAGE",
    "Catalog",
    "cost_usd",
    "estimate_cost_usd",
    "estimate_prompt_tokens",
    "price_known",
    "usage_cost_usd",
]

#: Context window (tokens) assumed for a discovered model of a family the catalog does not know.
#: Kept small on purpose: Ollama silently truncates prompts beyond its ``num_ctx`` setting, which
#: defaults to a few thousand tokens, so a larger guess would only hide truncation.
DISCOVERED_CONTEXT_WINDOW = 4096

#: Tokens added per message by :func:`estimate_prompt_tokens` for role markers and separators.
PROMPT_TOKENS_PER_MESSAGE = 4

_A_MODEL_OF_KIND: dict[ModelKind, str] = {"chat": "a chat model", "embedding": "an embedding model"}

#: Distinct model names whose resolution a catalog remembers at most.
_MAX_REMEMBERED_NAMES = 4096
_THOUSAND = Decimal(1000)
_ZERO = Decimal(0)


class Catalog:
    """An immutable index of the models of every provider.

    Providers keep the order of ``default_models``; models keep their given order within a
    provider. Lookups never raise for an unknown model (they return None or an empty tuple);
    the per-provider defaults raise :class:`KeyError` for an unknown provider.
    """

    __slots__ = (
        "_by_family",
        "_by_id",
        "_by_provider",
        "_default_embedding_models",
        "_default_models",
        "_models",
        "_quality_ranks",
        "_resolved",
    )

    _models: tuple[ModelInfo, ...]
    _by_provider: Mapping[str, Mapping[str, ModelInfo]]
    _by_id: Mapping[str, tuple[ModelInfo, ...]]
    _by_family: Mapping[str, tuple[ModelInfo, ...]]
    _default_models: Mapping[str, str]
    _default_embedding_models: Mapping[str, str | None]
    _quality_ranks: Mapping[str, int]
    #: Names already resolved (the catalog is immutable, so the answers never change).
    _resolved: dict[tuple[str, ModelKind | None], tuple[ModelInfo, ...]]

    def __init__(
        self,
        models: Iterable[ModelInfo],
        *,
        default_models: Mapping[str, str],
        default_embedding_models: Mapping[str, str | None] | None = None,
        quality_ranks: Mapping[str, int] | None = None,
    ) -> None:
        """Index ``models``.

        ``quality_ranks`` (family to rank) is kept for models added later by
        :meth:`with_discovered_models`; the given models carry their own rank.
        Raises :class:`ValueError` on a duplicate (provider, id), a model of a provider without
        a default model, or a default that is not a model of the right kind of that provider.
        """
        embedding_defaults = dict(default_embedding_models or {})
        by_provider: dict[str, dict[str, ModelInfo]] = {name: {} for name in default_models}
        for model in models:
            served = by_provider.get(model.provider)
            if served is None:
                raise ValueError(f"model {model.id!r}: provider {model.provider!r} has no default")
            if model.id in served:
                raise ValueError(f"model {model.id!r} is listed twice for {model.provider!r}")
            served[model.id] = model
        for provider, model_id in default_models.items():
            _check_default(by_provider[provider], provider, model_id, "chat")
        for provider, embedding_id in embedding_defaults.items():
            if provider not in by_provider:
                raise ValueError(f"embedding default for unknown provider {provider!r}")
            if embedding_id is not None:
                _check_default(by_provider[provider], provider, embedding_id, "embedding")

        ordered = tuple(m for served in by_provider.values() for m in served.values())
        by_id: dict[str, list[ModelInfo]] = {}
        by_family: dict[str, list[ModelInfo]] = {}
        for model in ordered:
            by_id.setdefault(model.id, []).append(model)
            by_family.setdefault(model.family, []).append(model)

        state: dict[str, object] = {
            "_models": ordered,
            "_by_provider": by_provider,
            "_by_id": {key: tuple(value) for key, value in by_id.items()},
            "_by_family": {key: tuple(value) for key, value in by_family.items()},
            "_default_models": dict(default_models),
            "_default_embedding_models": {p: embedding_defaults.get(p) for p in by_provider},
            "_quality_ranks": dict(quality_ranks or {}),
            "_resolved": {},
        }
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Catalog is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Catalog is immutable; cannot delete {name!r}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """The packaged catalog, with the changes of the file at ``path`` applied if given.

        The file is YAML (``.yaml``, ``.yml``) or JSON (``.json``) of the packaged catalog's
        shape; see the package documentation for the merge rule. Raises :class:`CatalogError`
        naming the file and the field at fault.
        """
        contents = read_catalog(path)
        return cls(
            contents.models,
            default_models=contents.default_models,
            default_embedding_models=contents.default_embedding_models,
            quality_ranks=contents.quality_ranks,
        )

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"<Catalog: {len(self._models)} models of {len(self._by_provider)} providers>"

    def providers(self) -> tuple[str, ...]:
        return tuple(self._by_provider)

    def model(self, provider: str, model_id: str) -> ModelInfo | None:
        return self._by_provider.get(provider, {}).get(model_id)

    def chat_models(self, provider: str) -> tuple[ModelInfo, ...]:
        """The provider's chat models; empty for an unknown provider."""
        return self._of_kind(provider, "chat")

    def embedding_models(self, provider: str) -> tuple[ModelInfo, ...]:
        """The provider's embedding models; empty for an unknown provider or none served."""
        return self._of_kind(provider, "embedding")

    def default_model(self, provider: str) -> str:
        """The chat model used when a request names none. Raises KeyError if unknown."""
        return self._default_models[provider]

    def default_embedding_model(self, provider: str) -> str | None:
        """The embedding model used when a request names none, None if the provider has no
        embeddings. Raises KeyError for an unknown provider."""
        return self._default_embedding_models[provider]

    def quality_rank(self, family: str) -> int:
        return self._quality_ranks.get(family, UNRANKED_QUALITY)

    def family_members(self, family: str) -> tuple[ModelInfo, ...]:
        """Every provider's models of ``family``, in provider order."""
        return self._by_family.get(family, ())

    def resolve(self, model: str, *, kind: ModelKind | None = None) -> tuple[ModelInfo, ...]:
        """The models a request's ``model`` field may mean, best match first.

        ``model`` is an exact model id on any provider (first those exact matches, then the
        models of the same family on the other providers) or a family name (all its members).
        Matching is exact, case included. Empty when nothing matches.
        """
        key = (model, kind)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolve(model, kind)
            # Remembered when found: the catalog never changes, and names are asked again and
            # again; unknown names (a client's typo, or worse) are not kept.
            if resolved and len(self._resolved) < _MAX_REMEMBERED_NAMES:
                self._resolved[key] = resolved
        return resolved

    def _resolve(self, model: str, kind: ModelKind | None) -> tuple[ModelInfo, ...]:
        exact = self._by_id.get(model, ())
        exact_providers = {m.provider for m in exact}
        found: list[ModelInfo] = list(exact)
        for family in dict.fromkeys(m.family for m in exact):
            found.extend(
                m for m in self.family_members(family) if m.provider not in exact_providers
            )
        # The name may also be a family of its own (an id that is also a family name is the
        # common case, and then adds nothing new).
        found.extend(m for m in self.family_members(model) if m not in found)
        return tuple(m for m in found if kind is None or m.kind == kind)

    def close_matches(self, name: str, n: int = 5) -> list[str]:
        """Up to ``n`` model ids and family names resembling ``name``, for "did you mean" hints."""
        candidates: dict[str, str] = {}
        for key in (*self._by_id, *self._by_family):
            candidates.setdefault(key.lower(), key)
        matches = difflib.get_close_matches(name.lower(), list(candidates), n=n)
        return [candidates[match] for match in matches]

    def with_discovered_models(
        self, provider: str, model_ids: Iterable[str], *, context_window: int | None = None
    ) -> Catalog:
        """A catalog that also lists ``model_ids`` as zero-priced models of ``provider``.

        Meant for Ollama, whose models are found at run time. The family of ``name:tag`` is
        ``name``. A model of a family the provider already serves copies that model's kind,
        context window, output length, dimensions, capabilities and rules (so
        ``nomic-embed-text:latest`` stays an embedding model); any other becomes a chat model
        with ``context_window`` tokens (default :data:`DISCOVERED_CONTEXT_WINDOW`), no
        capabilities and the default rules. Ids already listed are left as they are.

        The price is known (zero) when the provider is free: every model the catalog lists for
        it costs nothing, knowingly, as a local server's do. On any other provider a discovered
        model's ``price_known`` is False. Raises KeyError for an unknown provider.
        """
        served = self._by_provider[provider]
        free = all(
            m.price_known and m.input_per_1k == 0 and m.output_per_1k == 0 for m in served.values()
        )
        added: list[ModelInfo] = []
        for model_id in dict.fromkeys(model_ids):
            if model_id in served:
                continue
            family = _strip_tag(model_id)
            sibling = next((m for m in served.values() if m.family == family), None)
            if sibling is not None:
                template = replace(sibling, id=model_id)
            else:
                template = ModelInfo(
                    provider=provider,
                    id=model_id,
                    family=family,
                    kind="chat",
                    context_window=context_window or DISCOVERED_CONTEXT_WINDOW,
                    input_per_1k=_ZERO,
                    output_per_1k=_ZERO,
                    typical_output_tokens=300,
                    quality_rank=self.quality_rank(family),
                )
            added.append(
                replace(
                    template,
                    input_per_1k=_ZERO,
                    output_per_1k=_ZERO,
                    cached_input_per_1k=None,
                    cache_write_per_1k=None,
                    long_context=None,
                    price_known=free,
                )
            )
        if not added:
            return self
        return Catalog(
            (*self._models, *added),
            default_models=self._default_models,
            default_embedding_models=self._default_embedding_models,
            quality_ranks=self._quality_ranks,
        )

    def _of_kind(self, provider: str, kind: ModelKind) -> tuple[ModelInfo, ...]:
        served = self._by_provider.get(provider, {})
        return tuple(m for m in served.values() if m.kind == kind)


def usage_cost_usd(model: ModelInfo, usage: Usage) -> Decimal:
    """The price in USD of ``usage`` on ``model``, exactly.

    Prompt tokens read from the provider's cache cost the cached-input price, those written to
    it the cache-write price (each the input price where the catalog has none), the other
    prompt tokens the input price; completion tokens (reasoning included) cost the output
    price. A prompt longer than the model's ``long_context.prompt_tokens_above`` tokens bills
    the whole request at that tier's prices. The result is only as good as the prices:
    ``model.price_known`` says whether it is an estimate.

    Raises ValueError for a negative token count, or cache reads and writes that add up to more
    than the prompt (``Usage.prompt_tokens`` includes them).
    """
    prompt, read, written = usage.prompt_tokens, usage.cache_read_tokens, usage.cache_write_tokens
    if min(prompt, usage.completion_tokens, read, written) < 0:
        raise ValueError("token counts must not be negative")
    uncached = prompt - read - written
    if uncached < 0:
        raise ValueError(
            f"cache reads ({read}) and writes ({written}) exceed the prompt tokens ({prompt})"
        )
    tier = model.long_context
    if tier is not None and prompt > tier.prompt_tokens_above:
        input_price, output_price = tier.input_per_1k, tier.output_per_1k
        read_price, write_price = tier.cached_input_per_1k, tier.cache_write_per_1k
    else:
        input_price, output_price = model.input_per_1k, model.output_per_1k
        read_price, write_price = model.cached_input_per_1k, model.cache_write_per_1k
    # Decimal arithmetic is exact here: token counts and catalog prices have far fewer digits
    # than the 28 significant digits of the default context.
    total = (
        uncached * input_price
        + read * (input_price if read_price is None else read_price)
        + written * (input_price if write_price is None else write_price)
        + usage.completion_tokens * output_price
    )
    return total / _THOUSAND


def price_known(model: ModelInfo) -> bool:
    """Whether the catalog knows ``model``'s price, so that a cost computed from it (from a
    reported usage) is exact; False for a model discovered on a provider that is not free, or
    listed with ``price_known: false``. A free local model's price (0) is known."""
    return model.price_known


def cost_usd(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The price in USD of ``prompt_tokens`` in (none cached) and ``completion_tokens`` out,
    exactly: :func:`usage_cost_usd` without cache reads or writes.

    Raises ValueError for a negative token count.
    """
    return usage_cost_usd(model, Usage(prompt_tokens, completion_tokens))


def estimate_cost_usd(
    model: ModelInfo, prompt_tokens: int, max_tokens: int | None = None
) -> Decimal:
    """The expected price in USD of a request before it runs.

    The completion is assumed to be ``max_tokens`` long when the request caps it, else the
    model's ``typical_output_tokens``. Raises ValueError for a negative token count.
    """
    completion_tokens = model.typical_output_tokens if max_tokens is None else max_tokens
    return cost_usd(model, prompt_tokens, completion_tokens)


def estimate_prompt_tokens(texts: Iterable[str]) -> int:
    """A cheap estimate of the prompt tokens of messages with contents ``texts``.

    Each message counts one token per 4 bytes of UTF-8, rounded up, plus
    :data:`PROMPT_TOKENS_PER_MESSAGE`. Counting bytes rather than characters keeps the
    estimate near four characters a token for English while not undercounting scripts whose
    characters each take a token or more (CJK characters are 3 bytes in UTF-8).
    """
    total = 0
    for text in texts:
        total += -(-len(text.encode("utf-8")) // 4) + PROMPT_TOKENS_PER_MESSAGE
    return total


def _check_default(
    served: Mapping[str, ModelInfo], provider: str, model_id: str, kind: ModelKind
) -> None:
    model = served.get(model_id)
    if model is None or model.kind != kind:
        raise ValueError(
            f"default model {model_id!r} is not {_A_MODEL_OF_KIND[kind]} of {provider!r}"
        )


def _strip_tag(model_id: str) -> str:
    """``name:tag`` → ``name``; a ``:`` inside a registry host (``host:5000/name``) stays."""
    name, colon, tag = model_id.rpartition(":")
    return name if colon and name and "/" not in tag else model_id
