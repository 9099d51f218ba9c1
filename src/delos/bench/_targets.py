"""The hot-path targets, in one place: their limits and how each is judged from measurements.

Throughput targets are ratios to references measured in the same run on the same core (the bare
grpclib echo, the minimal aiohttp forwarder, Portkey's gateway), so they hold on any machine; CPU
and latency targets are absolute. The scenario suites (hedging, breaker) judge their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from delos.bench._measure import Measurement
from delos.bench._results import Target

__all__ = [
    "ADDED_P99_MS",
    "ADDED_TTFT_P99_MS",
    "CPU_PER_CHUNK_US",
    "CPU_PER_REQUEST_US",
    "ECHO_SHARE",
    "FORWARDER_SHARE",
    "PORTKEY_RATIO",
    "RSS_GROWTH_PERCENT",
    "TAIL_RATIO",
    "TWO_WORKERS_RATIO",
    "OverheadPoints",
    "memory_target",
    "overhead_targets",
    "peers_target",
    "streaming_targets",
]

#: One worker at concurrency 16: at least this share of the bare echo's and of the minimal
#: forwarder's requests per second, at most this much CPU per request (µs).
ECHO_SHARE = 0.45
FORWARDER_SHARE = 0.75
CPU_PER_REQUEST_US = 350.0
#: Latency added at concurrency 1 over calling the upstream directly, p99 (ms).
ADDED_P99_MS = 0.5
#: p99 ÷ p50 at concurrency 16: a tail no longer than twice the typical call.
TAIL_RATIO = 2.0
#: Two workers against one, same load.
TWO_WORKERS_RATIO = 1.8
#: Streams: gateway CPU per relayed chunk (µs) and added time to first token, p99 (ms).
CPU_PER_CHUNK_US = 40.0
ADDED_TTFT_P99_MS = 0.5
#: One worker against Portkey's gateway on the same upstream and core, at concurrency 16.
PORTKEY_RATIO = 1.5
#: Resident memory growth from the first to the last sample (%).
RSS_GROWTH_PERCENT = 10.0


@dataclass(frozen=True, slots=True)
class OverheadPoints:
    """The measurements of the overhead suite that its targets are judged on."""

    direct_1: Measurement
    gateway_1: Measurement
    echo_16: Measurement
    forwarder_16: Measurement
    gateway_16: Measurement
    #: One worker and two workers, both placed by the OS (None when not measured).
    pair_one_16: Measurement | None = None
    pair_two_16: Measurement | None = None


def _ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.requests_per_second / max(denominator.requests_per_second, 1e-9)


def _machine_share(two: Measurement) -> str:
    """How busy the two-worker run kept the machine: the workers' CPU and the load's (h2load
    and the upstream) per request, times the rate, over every core. Near 100 %, the ratio is
    bounded by the cores the load takes, not by the workers."""
    if two.load_cpu_us is None:
        return ""
    cores = os.cpu_count() or 1
    busy = two.requests_per_second * (two.cpu_us + two.load_cpu_us) / 1e6 / cores
    return (
        f" (2 workers kept {cores} cores {busy:.0%} busy: {two.cpu_us:.0f} µs of worker CPU "
        f"and {two.load_cpu_us:.0f} µs of load a request)"
    )


def overhead_targets(points: OverheadPoints) -> list[Target]:
    gateway = points.gateway_16
    targets = [
        Target(
            "1 worker ÷ bare grpclib echo, req/s at concurrency 16",
            _ratio(gateway, points.echo_16),
            ECHO_SHARE,
            "×",
            at_most=False,
        ),
        Target(
            "1 worker ÷ minimal aiohttp forwarder, req/s at concurrency 16",
            _ratio(gateway, points.forwarder_16),
            FORWARDER_SHARE,
            "×",
            at_most=False,
        ),
        Target(
            f"gateway CPU per request at concurrency 16 (echo {points.echo_16.cpu_us:.0f} µs, "
            f"forwarder {points.forwarder_16.cpu_us:.0f} µs)",
            gateway.cpu_us,
            CPU_PER_REQUEST_US,
            "µs",
        ),
        Target(
            "added p99 latency at concurrency 1",
            points.gateway_1.latency_ms[1] - points.direct_1.latency_ms[1],
            ADDED_P99_MS,
            "ms",
        ),
        Target(
            f"gateway p99 ÷ p50 at concurrency 16 (echo {points.echo_16.tail_ratio:.1f}×, "
            f"forwarder {points.forwarder_16.tail_ratio:.1f}×)",
            gateway.tail_ratio,
            TAIL_RATIO,
            "×",
        ),
    ]
    one, two = points.pair_one_16, points.pair_two_16
    share = "" if two is None else _machine_share(two)
    targets.append(
        Target(
            f"2 workers ÷ 1 worker, req/s at concurrency 16, both unpinned{share}",
            _ratio(two, one) if one is not None and two is not None else float("nan"),
            TWO_WORKERS_RATIO,
            "×",
            at_most=False,
            unmeasured="" if one is not None and two is not None else "not measured in this run",
        )
    )
    return targets


def streaming_targets(added_ttft_p99_ms: float, cpu_per_chunk_us: float) -> list[Target]:
    return [
        Target("added TTFT p99 at concurrency 1", added_ttft_p99_ms, ADDED_TTFT_P99_MS, "ms"),
        Target(
            "gateway CPU per relayed chunk, paced, concurrency 16",
            cpu_per_chunk_us,
            CPU_PER_CHUNK_US,
            "µs",
        ),
    ]


def peers_target(gateway: Measurement | None, portkey: Measurement | None, why: str) -> Target:
    """``why``: the reason there is no ratio, when one of the two was not measured."""
    measured = gateway is not None and portkey is not None
    return Target(
        "1 worker ÷ Portkey's gateway, req/s at concurrency 16",
        _ratio(gateway, portkey) if gateway is not None and portkey is not None else float("nan"),
        PORTKEY_RATIO,
        "×",
        at_most=False,
        unmeasured="" if measured else (why or "not measured"),
    )


def memory_target(growth_percent: float, first: int, total: int) -> Target:
    return Target(
        f"RSS growth from {first:,} to {total:,} requests",
        abs(growth_percent),
        RSS_GROWTH_PERCENT,
        "%",
    )
