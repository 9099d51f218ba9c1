"""Which (provider, model) pairs can serve a request, in the order a strategy prefers them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from delos.runtime.catalog import Catalog, ModelInfo, estimate_cost_usd, estimate_prompt_tokens
from delos.runtime.config import NO_PROVIDERS_CONFIGURED, enabling_variables
from delos.runtime.errors import (
    NoProvidersConfigured,
    ProviderNotConfigured,
    UnknownModel,
)
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.providers.base import Provider
from delos.runtime.routing._fitness import (
    Unable,
    models_with,
    none_able,
    required_capabilities,
    unable,
)

__all__ = ["Candidate", "CandidatePlan", "candidates_for", "estimated_cost"]


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: Provider
    model: ModelInfo

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider.name, self.model.id)


@dataclass(frozen=True, slots=True)
class CandidatePlan:
    """The candidates to try, in order, and those skipped as unable to honour the request."""

    candidates: list[Candidate]
    skipped: list[tuple[Candidate, Unable]]


def estimated_cost(candidate: Candidate, request: CompletionInput) -> Decimal:
    """USD this request would cost on ``candidate``, before any token is generated."""
    prompt_tokens = estimate_prompt_tokens(m.content for m in request.messages)
    return estimate_cost_usd(candidate.model, prompt_tokens, request.max_tokens)


def candidates_for(
    request: CompletionInput,
    *,
    providers: dict[str, Provider],
    catalog: Catalog,
    quality_order: Sequence[str],
    latency_of: Callable[[Candidate], float | None] = lambda c: None,
    admitted: Callable[[Candidate], bool] = lambda c: True,
) -> CandidatePlan:
    """Candidates in preference order. Raises NOT_FOUND / FAILED_PRECONDITION / UNAVAILABLE
    errors, or INVALID_ARGUMENT when no candidate can honour the request as asked.

    ``admitted`` filters out candidates a breaker is cutting off; when it removes every one, the
    unfiltered list is returned so the caller reports the breakers' errors rather than "none".
    """
    if not providers:
        raise NoProvidersConfigured(NO_PROVIDERS_CONFIGURED)
    wanted = request.provider
    if wanted is not None and wanted not in providers:
        raise ProviderNotConfigured(
            f"provider {wanted!r} is not configured: set {enabling_variables(wanted)}"
        )
    pool = [p for name, p in providers.items() if wanted is None or name == wanted]
    found: list[Candidate] = []
    if request.model is None:
        for provider in pool:
            model = catalog.model(provider.name, catalog.default_model(provider.name))
            if model is not None:
                found.append(Candidate(provider, model))
    else:
        matches = catalog.resolve(request.model, kind="chat")
        if not matches:
            suggestions = catalog.close_matches(request.model)
            hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
            raise UnknownModel(f"model: unknown model {request.model!r}{hint}")
        by_provider = {p.name: p for p in pool}
        seen: set[str] = set()
        for model in matches:
            serving = by_provider.get(model.provider)
            if serving is not None and model.provider not in seen:
                seen.add(model.provider)
                found.append(Candidate(serving, model))
        if not found:
            served_by = sorted({m.provider for m in matches})
            where = f"provider {wanted!r}" if wanted else "any configured provider"
            raise UnknownModel(
                f"model: {request.model!r} is not served by {where}; it is served by "
                f"{', '.join(served_by)}"
            )
    able: list[Candidate] = []
    skipped: list[tuple[Candidate, Unable]] = []
    needed = required_capabilities(request)
    for candidate in found:
        why = unable(candidate.model, request, needed)
        if why is None:
            able.append(candidate)
        else:
            skipped.append((candidate, why))
    if not able:
        missing = skipped[0][1].setting
        raise none_able(
            [(c.provider.name, why) for c, why in skipped],
            able_models=models_with(catalog, missing, list(providers)),
        )
    ordered = _order(request, able, quality_order, latency_of)
    kept = [c for c in ordered if admitted(c)]
    return CandidatePlan(kept or ordered, skipped)


def _order(
    request: CompletionInput,
    found: list[Candidate],
    quality_order: Sequence[str],
    latency_of: Callable[[Candidate], float | None],
) -> list[Candidate]:
    if len(found) < 2:
        return found

    def latency(candidate: Candidate) -> float:
        value = latency_of(candidate)
        return value if value is not None else 0.0  # unexplored: try it, never assume slow

    match request.routing:
        case Routing.COST | Routing.SPECIFIC:
            return sorted(found, key=lambda c: (estimated_cost(c, request), latency(c)))
        case Routing.QUALITY:
            rank = {name: index for index, name in enumerate(quality_order)}
            return sorted(
                found, key=lambda c: (rank.get(c.provider.name, len(rank)), c.model.quality_rank)
            )
        case Routing.LATENCY:
            return sorted(found, key=latency)
