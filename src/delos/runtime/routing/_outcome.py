"""What a routed request produced: the answer, its cost, and every attempt made for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

from delos.runtime.catalog import ModelInfo, estimate_prompt_tokens, price_known, usage_cost_usd
from delos.runtime.values import Thinking, ToolCall, Usage

__all__ = ["AttemptKind", "AttemptOutcome", "AttemptRecord", "RoutedAnswer", "priced_usage"]


class AttemptKind(enum.Enum):
    """Why an attempt was made; the value is what the wire and the metrics carry."""

    PRIMARY = "primary"
    RACE = "race"
    """Started together with the other best candidates (latency routing)."""
    HEDGE = "hedge"
    """Started after the primary stayed silent past its p95 time to first token."""
    RETRY = "retry"
    """The same provider again, after a transient failure."""
    FALLBACK = "fallback"
    """The next candidate, after the ones before it failed."""
    SKIPPED = "skipped"
    """Not attempted: the candidate cannot honour the request as asked (the error says why)."""


class AttemptOutcome(enum.Enum):
    """How an attempt ended; the value is what the wire and the metrics carry."""

    PENDING = "pending"
    """Still running (never seen once the request finished)."""
    WON = "won"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Lost a race or hedge, or the client or the deadline ended the request."""
    SKIPPED = "skipped"
    """Never started: the candidate cannot honour the request as asked."""


@dataclass(slots=True)
class AttemptRecord:
    """One upstream call."""

    provider: str
    model: str
    kind: AttemptKind
    outcome: AttemptOutcome = AttemptOutcome.PENDING
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
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    #: Thinking blocks signed by another endpoint, left out of what this one was sent.
    thinking_dropped: int = 0

    @property
    def cost_estimated(self) -> bool:
        """True when the cost is not the provider's reported usage at a known price."""
        return self.usage.estimated or (
            self.model_info is not None and not price_known(self.model_info)
        )

    @property
    def total_cost_usd(self) -> Decimal:
        """What every attempt cost: the answer plus raced, hedged and failed losers."""
        if self.cached:
            return Decimal(0)
        return sum((a.cost_usd for a in self.attempts), Decimal(0))


def priced_usage(
    model: ModelInfo,
    reported: Usage | None,
    prompt_tokens_estimate: int,
    generated_text: str,
) -> tuple[Usage, Decimal]:
    """The usage to bill and its USD cost: the provider's report, else an estimate (the
    request's estimated prompt tokens, and the tokens of the text generated so far)."""
    usage = reported
    if usage is None:
        usage = Usage(
            prompt_tokens_estimate,
            estimate_prompt_tokens([generated_text]) if generated_text else 0,
            estimated=True,
        )
    return usage, usage_cost_usd(model, usage)
