"""Garbage-collection pauses of the gateway: a ``gc.callbacks`` hook and the probe that reads it.

``serve.py gateway --gc-stats PATH`` installs a :class:`GcRecorder` in the gateway's process: it
times every collection, by generation. On SIGUSR1 the gateway writes the totals since the
previous signal to PATH as JSON and starts over; :class:`GcProbe`, in the benchmark's process,
sends that signal and reads the file. The JSON also carries the collector's thresholds and the
objects frozen out of it (``gc.freeze()``) at that moment, so a table says which settings the
figures belong to.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GENERATIONS",
    "GcProbe",
    "GcRecorder",
    "GcTotals",
    "GenerationTotals",
    "write_totals",
]

GENERATIONS = 3


@dataclass(frozen=True, slots=True)
class GenerationTotals:
    """Collections of one generation: how many, and their pauses (milliseconds)."""

    collections: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class GcTotals:
    """What :class:`GcRecorder` counted between two signals."""

    generations: tuple[GenerationTotals, ...]
    #: ``gc.get_threshold()`` when the totals were written.
    threshold: tuple[int, ...]
    #: ``gc.get_freeze_count()``: objects the collector no longer looks at.
    frozen: int

    @classmethod
    def from_json(cls, text: str) -> GcTotals:
        """Parse what :func:`write_totals` wrote. Raises ValueError on anything else."""
        try:
            data = json.loads(text)
            generations = tuple(
                GenerationTotals(int(g["collections"]), float(g["total_ms"]), float(g["max_ms"]))
                for g in data["generations"]
            )
            threshold = tuple(int(value) for value in data["threshold"])
            frozen = int(data["frozen"])
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not GC totals: {text[:200]!r}") from error
        if len(generations) != GENERATIONS:
            raise ValueError(f"expected {GENERATIONS} generations, got {len(generations)}")
        return cls(generations, threshold, frozen)

    def per_thousand(self, requests: int) -> tuple[float, ...]:
        """Collections of each generation per 1,000 requests."""
        return tuple(1000.0 * g.collections / max(requests, 1) for g in self.generations)

    @property
    def max_pause_ms(self) -> float:
        return max(g.max_ms for g in self.generations)

    @property
    def total_ms(self) -> float:
        return sum(g.total_ms for g in self.generations)

    def settings(self) -> str:
        """``700/10/10, 0 frozen``: the thresholds and the frozen objects, for a table cell."""
        return "/".join(str(v) for v in self.threshold) + f", {self.frozen:,} frozen"


class GcRecorder:
    """Times collections by generation, from ``gc.callbacks`` (``clock``: nanoseconds)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self._clock = clock
        self._started = 0
        self._counts = [0] * GENERATIONS
        self._total_ns = [0] * GENERATIONS
        self._max_ns = [0] * GENERATIONS

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        elapsed = self._clock() - self._started
        generation = int(info["generation"])
        self._counts[generation] += 1
        self._total_ns[generation] += elapsed
        if elapsed > self._max_ns[generation]:
            self._max_ns[generation] = elapsed

    def take(self) -> dict[str, Any]:
        """The totals so far as a JSON-ready dict, and start over."""
        # Swapped before reading: a collection may run (and call back) while this builds the dict.
        counts, totals, maxima = self._counts, self._total_ns, self._max_ns
        self._counts, self._total_ns, self._max_ns = (
            [0] * GENERATIONS,
            [0] * GENERATIONS,
            [0] * GENERATIONS,
        )
        return {
            "generations": [
                {"collections": c, "total_ms": t / 1e6, "max_ms": m / 1e6}
                for c, t, m in zip(counts, totals, maxima, strict=True)
            ],
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
        }

    def install(self) -> None:
        gc.callbacks.append(self)


def write_totals(recorder: GcRecorder, path: Path) -> None:
    """Write ``recorder``'s totals to ``path`` whole (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(recorder.take()))
    os.replace(partial, path)


@dataclass(frozen=True, slots=True)
class GcProbe:
    """The benchmark's side: signals a gateway started with ``--gc-stats path``."""

    pid: int
    path: Path

    def take(self, timeout: float = 10.0) -> GcTotals:
        """The gateway's totals since the previous call (or its start), then zeroed.

        Raises RuntimeError when the gateway writes nothing within ``timeout`` seconds.
        """
        self.path.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway (pid {self.pid}) wrote no GC totals")
            time.sleep(0.01)
        return GcTotals.from_json(self.path.read_text())
