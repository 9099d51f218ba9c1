"""One load point: h2load at a concurrency against a server, with its CPU and latency.

Shared by the suites that load a server with h2load (overhead, transport, peers): the gRPC
``Complete`` call through a gateway or a reference server, and the same request as JSON straight
to the upstream (the direct baseline).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

from delos.bench._clients import grpc_unary
from delos.bench._context import BenchContext, completion_request
from delos.bench._h2load import COMPLETE_PATH, LoadShape, grpc_frame, run_h2load
from delos.bench._processes import Child
from delos.bench._results import format_number, percentile
from delos.bench._servers import Gateway, upstream_requests

__all__ = [
    "COLUMNS",
    "DIRECT_BODY",
    "DIRECT_LABEL",
    "Measurement",
    "UsesCpu",
    "check_gateway",
    "latency_percentiles",
    "load_shape",
    "measure_direct",
    "measure_grpc",
    "measurement_row",
    "warm_up",
]

DIRECT_BODY = (
    b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in five words."}]}'
)
DIRECT_LABEL = "upstream, direct (HTTP/1.1)"


class UsesCpu(Protocol):
    """A server whose CPU time can be read (a process, a gateway's workers, a process tree)."""

    def cpu_seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Measurement:
    label: str
    concurrency: int
    requests: int
    requests_per_second: float
    #: Latency percentiles (milliseconds): p50, p99, p99.9.
    latency_ms: tuple[float, float, float]
    #: CPU time of the server process(es) per request (microseconds).
    cpu_us: float
    errors: int = 0
    #: CPU time of the load per request: h2load and the upstream (microseconds; None when
    #: the point has no upstream).
    load_cpu_us: float | None = None

    @property
    def tail_ratio(self) -> float:
        """p99 ÷ p50: how far the tail stands from the typical call."""
        p50, p99, _ = self.latency_ms
        return p99 / p50 if p50 > 0 else math.nan


def latency_percentiles(durations_us: tuple[int, ...]) -> tuple[float, float, float]:
    values = [d / 1000.0 for d in durations_us]
    return (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 0.999))


def load_shape(context: BenchContext, concurrency: int) -> LoadShape:
    """A measured point: ``load_seconds`` after h2load's own warm-up (a count when quick)."""
    sizes = context.sizes
    if sizes.quick:
        return LoadShape(concurrency, requests=max(60, concurrency * 4), warmup=0.0)
    return LoadShape(concurrency, duration=sizes.load_seconds, warmup=sizes.warmup_seconds)


def warm_up(context: BenchContext, url: str, body: bytes, concurrency: int, grpc: bool) -> None:
    """Load before measuring, so pools, caches and the JIT-less interpreter's caches are warm."""
    shape = LoadShape(concurrency, duration=context.sizes.warmup_seconds, warmup=0.0)
    if context.sizes.quick:
        shape = LoadShape(concurrency, requests=max(20, concurrency * 2))
    run_h2load(url, body, shape, directory=context.processes.directory, grpc=grpc)


def measure_grpc(
    context: BenchContext,
    label: str,
    port: int,
    cpu_of: UsesCpu,
    concurrency: int,
    *,
    upstream: Child | None = None,
    body: bytes | None = None,
    warm: bool = True,
    shape: LoadShape | None = None,
) -> Measurement:
    """h2load on Complete at ``port``; errors are calls the upstream never saw. ``shape``:
    instead of the suite's usual load."""
    url = f"http://127.0.0.1:{port}{COMPLETE_PATH}"
    frame = body or grpc_frame(completion_request())
    measured = _warmed(
        context, url, frame, shape or load_shape(context, concurrency), warm=warm, grpc=True
    )
    served_before = upstream_requests(upstream) if upstream else 0
    cpu_before = cpu_of.cpu_seconds()
    upstream_before = upstream.cpu_seconds() if upstream else 0.0
    result = run_h2load(url, frame, measured, directory=context.processes.directory)
    cpu = cpu_of.cpu_seconds() - cpu_before
    requests = max(result.requests, 1)
    errors = result.failed
    load_cpu_us = None
    if upstream is not None:
        # Every good call reaches the upstream once; calls still in flight when h2load stops
        # reached it without being counted, so at most ``concurrency`` extra.
        errors += max(0, result.succeeded - (upstream_requests(upstream) - served_before))
        load_cpu = result.cpu_seconds + upstream.cpu_seconds() - upstream_before
        load_cpu_us = load_cpu / requests * 1e6
    return Measurement(
        label,
        concurrency,
        result.requests,
        result.requests_per_second,
        latency_percentiles(result.durations_us),
        cpu / requests * 1e6,
        errors,
        load_cpu_us,
    )


def _warmed(
    context: BenchContext, url: str, body: bytes, shape: LoadShape, *, warm: bool, grpc: bool
) -> LoadShape:
    """Warm up, and return ``shape`` without h2load's own warm-up: h2load does not count the
    requests of its warm-up phase, so CPU read around a run that has one would be divided by
    too few requests (an eighth too few for 4 s measured after half a second of warm-up)."""
    if warm:
        warm_up(context, url, body, shape.concurrency, grpc=grpc)
    elif shape.requests is None and shape.warmup > 0:
        separate = LoadShape(shape.concurrency, duration=shape.warmup, warmup=0.0)
        run_h2load(url, body, separate, directory=context.processes.directory, grpc=grpc)
    return dataclasses.replace(shape, warmup=0.0)


def measure_direct(context: BenchContext, upstream: Child, concurrency: int) -> Measurement:
    """The chat request as JSON straight to the upstream over HTTP/1.1."""
    url = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
    shape = _warmed(
        context, url, DIRECT_BODY, load_shape(context, concurrency), warm=True, grpc=False
    )
    cpu_before = upstream.cpu_seconds()
    result = run_h2load(url, DIRECT_BODY, shape, directory=context.processes.directory, grpc=False)
    cpu = upstream.cpu_seconds() - cpu_before
    return Measurement(
        DIRECT_LABEL,
        concurrency,
        result.requests,
        result.requests_per_second,
        latency_percentiles(result.durations_us),
        cpu / max(result.requests, 1) * 1e6,
        result.failed,
    )


def check_gateway(gateway: Gateway, name: str) -> None:
    """Raise RuntimeError (with the gateway's log) unless a few Complete calls succeed."""
    outcomes = asyncio.run(grpc_unary(gateway.port, completion_request(), count=3, concurrency=1))
    if not all(o.ok for o in outcomes):
        codes = ", ".join(o.code for o in outcomes if not o.ok)
        raise RuntimeError(f"{name} does not answer Complete ({codes}):\n{gateway.logs()}")


COLUMNS = (
    "server",
    "concurrency",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "p99/p50",
    "added p50 ms",
    "added p99 ms",
    "CPU µs/req",
    "errors",
)


def measurement_row(m: Measurement, direct: Measurement | None) -> tuple[str, ...]:
    """A row of :data:`COLUMNS`; ``added`` is against ``direct`` at the same concurrency."""
    added = (
        tuple(g - d for g, d in zip(m.latency_ms[:2], direct.latency_ms[:2], strict=True))
        if direct is not None and m.label != direct.label
        else (math.nan, math.nan)
    )
    return (
        m.label,
        str(m.concurrency),
        format_number(m.requests_per_second, 0),
        *(format_number(v) for v in m.latency_ms),
        format_number(m.tail_ratio, 1),
        *(format_number(v) for v in added),
        format_number(m.cpu_us, 0),
        str(m.errors),
    )
