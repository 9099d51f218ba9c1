"""What a suite hands back: tables, targets with PASS/MISS, notes, and statistics helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "SuiteResult",
    "Table",
    "Target",
    "format_number",
    "percentile",
]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` for ``q`` in [0, 1]; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def format_number(value: float, digits: int = 2) -> str:
    """A table cell: thousands separators for large values, ``-`` for NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}" if digits else f"{value:.0f}"
    return f"{value:.{digits}f}"


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """A goal checked by the benchmark: ``measured`` compared with ``limit``."""

    name: str
    measured: float
    limit: float
    unit: str
    #: True when the measured value must be at most the limit; False for at least.
    at_most: bool = True
    #: Why a value could not be measured, instead of a number.
    unmeasured: str = ""

    @property
    def passed(self) -> bool:
        if self.unmeasured or math.isnan(self.measured):
            return False
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    @property
    def verdict(self) -> str:
        if self.unmeasured or math.isnan(self.measured):
            return "NOT RUN"
        return "PASS" if self.passed else "MISS"


@dataclass(frozen=True, slots=True)
class SuiteResult:
    name: str
    title: str
    #: What was measured and how, in a few sentences of Markdown.
    method: str
    tables: tuple[Table, ...] = ()
    targets: tuple[Target, ...] = ()
    notes: tuple[str, ...] = ()
    #: Pre-rendered Markdown (profiles), appended after the tables.
    extra: str = ""
    seconds: float = 0.0
    #: The machine's load average (its three figures) when the suite started and ended.
    load_average: tuple[str, str] = ("", "")
    failed: str = ""
    details: dict[str, float] = field(default_factory=dict)
