"""Garbage collection for a long-running server process.

Everything alive once the server is up (modules, the catalog, protobuf descriptors, pools) lives
as long as the process, yet CPython's full collections walk all of it again and again: with
the default thresholds that is a pause of several milliseconds every few hundred requests, the
periodic stall in the tail latency. :func:`settle_heap` moves that start-up heap out of the
collector's sight (``gc.freeze``) and lets the young generation grow larger between
collections, so collections are rarer and each only walks what requests allocated.
Reference cycles are still collected; the measured effect is in docs/benchmarks.md.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_GENERATION_THRESHOLD", "settle_heap"]

#: Allocations (minus deallocations) of container objects between young-generation collections
#: (CPython's default: 700). A request allocates a few hundred; most die with it.
YOUNG_GENERATION_THRESHOLD: Final = 10_000


def settle_heap() -> None:
    """Collect once, freeze what survives, and raise the young generation's threshold. Call it
    once the server is up, before it takes requests."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
