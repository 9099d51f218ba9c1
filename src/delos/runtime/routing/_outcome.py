"""What a routed request produced: the answer, its cost, and every attempt made for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from delos.runtime.catalog import ModelInfo, cost_usd, estimate_prompt_tokens
from delos.runtime.values import ChatMessage, Usage

__all__ = ["AttemptRecord", "RoutedAnswer", "priced_usage"]


@dataclass(slots=True)
class AttemptRecord:
    """One upstream call. ``kind``: primary, race, hedge, retry or fallback."""

    provider: str
    model: str
    kind: str
    outcome: str = "pending"  # won, failed, cancelled
    error: str = ""
    usage: Usage | None = None
    cost_usd: Decimal = Decimal(0)
    latency_s: float = 0.0


@dataclass(slots=True)
class RoutedAnswer:
    """A finished answer (unary, or a stream once it ended well)."""

    content: str
    finish_reason: str
    provider: str
    model: str
    model_info: ModelInfo | None
    usage: Usage
    cost_usd: Decimal
    latency_s: float
    time_to_first_token_s: float
    attempts: list[AttemptRecord] = field(default_factory=list)
    cached: bool = False
    cost_saved_usd: Decimal = Decimal(0)

    @property
    def total_cost_usd(self) -> Decimal:
        """What every attempt cost: the answer plus raced, hedged and failed losers."""
        if self.cached:
            return Decimal(0)
        return sum((a.cost_usd for a in self.attempts), Decimal(0))


def priced_usage(
    model: ModelInfo,
    reported: Usage | None,
    messages: tuple[ChatMessage, ...],
    generated_text: str,
) -> tuple[Usage, Decimal]:
    """The usage to bill and its USD cost: the provider's report, else an estimate."""
    usage = reported
    if usage is None:
        usage = Usage(
            estimate_prompt_tokens(m.content for m in messages),
            estimate_prompt_tokens([generated_text]) if generated_text else 0,
            estimated=True,
        )
    return usage, cost_usd(model, usage.prompt_tokens, usage.completion_tokens)
