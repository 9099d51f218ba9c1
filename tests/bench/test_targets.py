"""The hot-path targets judged from measurements."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

from delos.bench._measure import Measurement
from delos.bench._targets import (
    OverheadPoints,
    overhead_targets,
    peers_target,
    streaming_targets,
)


def _point(
    rps: float, p50: float = 1.0, p99: float = 1.5, cpu: float = 300.0, c: int = 16
) -> Measurement:
    return Measurement("x", c, int(rps * 10), rps, (p50, p99, p99), cpu)


def _points(**changes: Measurement | None) -> OverheadPoints:
    values: dict[str, Measurement | None] = {
        "direct_1": _point(20_000, 0.02, 0.05, c=1),
        "gateway_1": _point(2_000, 0.3, 0.5, c=1),
        "echo_16": _point(6_000, 1.0, 1.6),
        "forwarder_16": _point(3_500, 2.0, 3.0),
        "gateway_16": _point(3_000, 2.0, 3.6, cpu=320.0),
        "pair_one_16": _point(2_900),
        "pair_two_16": _point(5_365),
    }
    values.update(changes)
    return OverheadPoints(**values)  # type: ignore[arg-type]


def test_a_gateway_on_every_side_of_its_limits_passes_them_all() -> None:
    targets = overhead_targets(_points())
    assert [t.verdict for t in targets] == ["PASS"] * 6
    by_name = {t.name.split(" (")[0]: t for t in targets}
    assert by_name["1 worker ÷ bare grpclib echo, req/s at concurrency 16"].measured == 0.5
    assert math.isclose(
        by_name["1 worker ÷ minimal aiohttp forwarder, req/s at concurrency 16"].measured,
        3000 / 3500,
    )
    assert by_name["gateway CPU per request at concurrency 16"].measured == 320.0
    assert math.isclose(by_name["added p99 latency at concurrency 1"].measured, 0.45)
    assert by_name["gateway p99 ÷ p50 at concurrency 16"].measured == 1.8
    pair = by_name["2 workers ÷ 1 worker, req/s at concurrency 16, both unpinned"]
    assert math.isclose(pair.measured, 1.85)


def test_the_tail_target_names_the_references_ratios() -> None:
    tail = next(t for t in overhead_targets(_points()) if "p99 ÷ p50" in t.name)
    assert "(echo 1.6×, forwarder 1.5×)" in tail.name


def test_misses_are_judged_on_the_right_side_of_each_limit() -> None:
    slow = _point(2_000, 2.0, 10.0, cpu=500.0)
    targets = overhead_targets(_points(gateway_16=slow, gateway_1=_point(900, 1, 2, c=1)))
    verdicts = {t.name.split(" (")[0]: t.verdict for t in targets}
    assert verdicts == {
        "1 worker ÷ bare grpclib echo, req/s at concurrency 16": "MISS",
        "1 worker ÷ minimal aiohttp forwarder, req/s at concurrency 16": "MISS",
        "gateway CPU per request at concurrency 16": "MISS",
        "added p99 latency at concurrency 1": "MISS",
        "gateway p99 ÷ p50 at concurrency 16": "MISS",
        "2 workers ÷ 1 worker, req/s at concurrency 16, both unpinned": "PASS",
    }


def test_the_cpu_target_names_the_references_cpu() -> None:
    echo, forwarder = _point(6_000, cpu=200.0), _point(3_500, cpu=340.0)
    cpu = next(
        t
        for t in overhead_targets(_points(echo_16=echo, forwarder_16=forwarder))
        if t.name.startswith("gateway CPU")
    )
    assert "(echo 200 µs, forwarder 340 µs)" in cpu.name


def test_the_second_worker_target_says_how_busy_the_two_workers_kept_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 4,000 req/s at 400 µs of worker CPU and 100 µs of load a request: 2 s of CPU a second.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    two = dataclasses.replace(_point(4_000, cpu=400.0), load_cpu_us=100.0)
    pair = overhead_targets(_points(pair_two_16=two))[-1]
    assert pair.name.endswith(
        "(2 workers kept 2 cores 100% busy: 400 µs of worker CPU and 100 µs of load a request)"
    )


def test_an_unmeasured_second_worker_is_not_judged() -> None:
    two = overhead_targets(_points(pair_two_16=None))[-1]
    assert two.verdict == "NOT RUN"
    assert two.unmeasured


def test_stream_targets() -> None:
    fast, slow = streaming_targets(0.4, 45.0)
    assert fast.verdict == "PASS" and fast.unit == "ms"
    assert slow.verdict == "MISS" and slow.unit == "µs"


def test_the_peer_ratio_says_why_it_is_missing() -> None:
    assert peers_target(_point(3_000), _point(1_500), "").verdict == "PASS"
    assert peers_target(_point(3_000), _point(2_500), "").verdict == "MISS"
    missing = peers_target(_point(3_000), None, "Portkey gateway not measured: npm is missing")
    assert missing.verdict == "NOT RUN"
    assert "npm is missing" in missing.unmeasured
