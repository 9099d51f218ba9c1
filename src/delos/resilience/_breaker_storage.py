"""Where a circuit breaker keeps its state record: the `BreakerStorage` protocol.

A breaker keeps its sliding window and half-open trial slots in memory; only the small
`BreakerRecord` (state, timing, back-off step) goes through storage, so a storage can be shared
by several breaker objects for the same name, or outlive them. The in-memory implementation
is the default; an external one must use a clock that all its readers share (a wall clock),
since record times are expressed on the clock of the breaker that wrote them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BreakerRecord", "BreakerState", "BreakerStorage", "InMemoryBreakerStorage"]


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The persisted part of a breaker's state.

    `opened_at` and `half_open_at` are clock times in seconds (None unless they apply);
    `consecutive_opens` counts openings since the breaker last closed and sets the back-off of
    the wait in OPEN; `generation` increases by one on every transition, so a breaker can tell
    that another writer changed the record.
    """

    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    half_open_at: float | None = None
    consecutive_opens: int = 0
    generation: int = 0


class BreakerStorage(Protocol):
    """Synchronous load/save of breaker records by breaker name.

    Both calls run inside breaker transitions, which may happen in `finally` blocks and under
    cancellation, so they must not block on I/O for long and must not raise on a missing name.
    Concurrent writers follow "last writer wins".
    """

    def load(self, name: str) -> BreakerRecord | None:
        """Return the stored record for `name`, or None when there is none."""
        ...

    def save(self, name: str, record: BreakerRecord) -> None:
        """Store `record` as the current record for `name`."""
        ...


class InMemoryBreakerStorage:
    """A `BreakerStorage` held in a dict, shared by the breakers of one process."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}

    def load(self, name: str) -> BreakerRecord | None:
        """Return the stored record for `name`, or None when there is none."""
        return self._records.get(name)

    def save(self, name: str, record: BreakerRecord) -> None:
        """Store `record` as the current record for `name`."""
        self._records[name] = record
