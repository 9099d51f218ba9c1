"""Collection totals: counted by generation from gc callbacks, written as JSON, read back."""

from __future__ import annotations

import gc
import json

import pytest

from delos.bench._gc_stats import GcRecorder, GcTotals


class _Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _collect(recorder: GcRecorder, clock: _Clock, generation: int, nanoseconds: int) -> None:
    recorder("start", {"generation": generation})
    clock.now += nanoseconds
    recorder("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_collections_are_counted_and_timed_by_generation_then_start_over() -> None:
    clock = _Clock()
    recorder = GcRecorder(clock)
    _collect(recorder, clock, 0, 100_000)
    _collect(recorder, clock, 0, 300_000)
    _collect(recorder, clock, 2, 5_000_000)
    totals = GcTotals.from_json(json.dumps(recorder.take()))
    zero, one, two = totals.generations
    assert (zero.collections, zero.total_ms, zero.max_ms) == (2, 0.4, 0.3)
    assert one.collections == 0
    assert (two.collections, two.max_ms) == (1, 5.0)
    assert totals.max_pause_ms == 5.0
    assert totals.total_ms == pytest.approx(5.4)
    assert totals.per_thousand(4000) == (0.5, 0.0, 0.25)
    assert totals.threshold == gc.get_threshold()
    assert totals.frozen == gc.get_freeze_count()
    again = GcTotals.from_json(json.dumps(recorder.take()))
    assert all(g.collections == 0 for g in again.generations)


def test_the_settings_cell_names_thresholds_and_frozen_objects() -> None:
    totals = GcTotals.from_json(
        json.dumps(
            {
                "generations": [{"collections": 0, "total_ms": 0, "max_ms": 0}] * 3,
                "threshold": [50000, 20, 20],
                "frozen": 123456,
            }
        )
    )
    assert totals.settings() == "50000/20/20, 123,456 frozen"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"threshold": [700, 10, 10], "frozen": 0}',
        '{"generations": [{"collections": 1, "total_ms": 1, "max_ms": 1}], '
        '"threshold": [700, 10, 10], "frozen": 0}',
    ],
)
def test_anything_else_than_totals_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        GcTotals.from_json(text)
