"""Suite ``overhead``: unary Complete through the gateway, against the upstream called directly
and a bare grpclib echo server; one and two gateway workers; a profile when a target is missed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from delos.bench._clients import grpc_unary
from delos.bench._context import BenchContext, completion_request
from delos.bench._h2load import COMPLETE_PATH, LoadShape, grpc_frame, run_h2load
from delos.bench._processes import Child
from delos.bench._profile import (
    finish_recording,
    profile_table,
    py_spy_available,
    start_recording,
)
from delos.bench._results import SuiteResult, Table, Target, format_number, percentile
from delos.bench._servers import Gateway, echo, upstream, upstream_gateway, upstream_requests

__all__ = [
    "COLUMNS",
    "DIRECT_BODY",
    "Measurement",
    "check_gateway",
    "declare_overhead",
    "latency_percentiles",
    "measure_direct",
    "measure_grpc",
    "measurement_row",
    "run_overhead",
    "should_profile",
]


DIRECT_BODY = (
    b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in five words."}]}'
)


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


def latency_percentiles(durations_us: tuple[int, ...]) -> tuple[float, float, float]:
    values = [d / 1000.0 for d in durations_us]
    return (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 0.999))


def _warm(url: str, body: bytes, shape: LoadShape, context: BenchContext, grpc: bool) -> None:
    warm = LoadShape(shape.concurrency, duration=shape.warmup, warmup=0.0)
    if context.sizes.quick:
        warm = LoadShape(shape.concurrency, requests=max(20, shape.concurrency * 2))
    run_h2load(url, body, warm, directory=context.processes.directory, grpc=grpc)


def _shape(context: BenchContext, concurrency: int) -> LoadShape:
    sizes = context.sizes
    if sizes.quick:
        return LoadShape(concurrency, requests=max(60, concurrency * 4), warmup=0.0)
    return LoadShape(concurrency, duration=sizes.load_seconds, warmup=sizes.warmup_seconds)


def measure_grpc(
    context: BenchContext,
    label: str,
    port: int,
    cpu_of: Gateway | Child,
    concurrency: int,
    *,
    upstream: Child | None = None,
    body: bytes | None = None,
    shape: LoadShape | None = None,
) -> Measurement:
    """h2load on Complete at ``port``; errors are calls the upstream never saw."""
    url = f"http://127.0.0.1:{port}{COMPLETE_PATH}"
    frame = body or grpc_frame(completion_request())
    shape = shape or _shape(context, concurrency)
    _warm(url, frame, shape, context, grpc=True)
    served_before = upstream_requests(upstream) if upstream else 0
    cpu_before = cpu_of.cpu_seconds()
    result = run_h2load(url, frame, shape, directory=context.processes.directory)
    cpu = cpu_of.cpu_seconds() - cpu_before
    errors = result.failed
    if upstream is not None:
        # Every good call reaches the upstream once; calls still in flight when h2load stops
        # reached it without being counted, so at most ``concurrency`` extra.
        errors += max(0, result.succeeded - (upstream_requests(upstream) - served_before))
    return Measurement(
        label,
        concurrency,
        result.requests,
        result.requests_per_second,
        latency_percentiles(result.durations_us),
        cpu / max(result.requests, 1) * 1e6,
        errors,
    )


def measure_direct(context: BenchContext, upstream: Child, concurrency: int) -> Measurement:
    url = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
    shape = _shape(context, concurrency)
    _warm(url, DIRECT_BODY, shape, context, grpc=False)
    cpu_before = upstream.cpu_seconds()
    result = run_h2load(url, DIRECT_BODY, shape, directory=context.processes.directory, grpc=False)
    cpu = upstream.cpu_seconds() - cpu_before
    return Measurement(
        "upstream, direct (HTTP/1.1)",
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


def measurement_row(m: Measurement, direct: Measurement | None) -> tuple[str, ...]:
    added = (
        tuple(g - d for g, d in zip(m.latency_ms, direct.latency_ms, strict=True))
        if direct is not None and m.label != direct.label
        else (float("nan"),) * 3
    )
    return (
        m.label,
        str(m.concurrency),
        format_number(m.requests_per_second, 0),
        *(format_number(v) for v in m.latency_ms),
        *(format_number(v) for v in added),
        format_number(m.cpu_us, 0),
        str(m.errors),
    )


COLUMNS = (
    "server",
    "concurrency",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "added p50 ms",
    "added p99 ms",
    "added p99.9 ms",
    "CPU µs/req",
    "errors",
)


def declare_overhead(context: BenchContext) -> None:
    upstream(context)
    echo(context)
    for transport in context.sizes.transports:
        upstream_gateway(context, transport)
    for transport in context.sizes.two_worker_transports:
        upstream_gateway(context, transport, workers=2)


def run_overhead(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_overhead(context)
    context.wait_ready()
    source = upstream(context)
    bare_echo = echo(context)
    gateways = {
        transport: upstream_gateway(context, transport) for transport in context.sizes.transports
    }
    for name, gateway in gateways.items():
        check_gateway(gateway, f"the gateway ({name})")

    rows: list[tuple[str, ...]] = []
    by_key: dict[tuple[str, int], Measurement] = {}
    for concurrency in context.sizes.concurrencies:
        direct = measure_direct(context, source, concurrency)
        bare = measure_grpc(context, "bare grpclib echo", bare_echo.port, bare_echo, concurrency)
        measured = [direct, bare]
        for name, gateway in gateways.items():
            label = f"gateway, 1 worker, {name}"
            measured.append(
                measure_grpc(context, label, gateway.port, gateway, concurrency, upstream=source)
            )
        for m in measured:
            by_key[(m.label, concurrency)] = m
            rows.append(measurement_row(m, direct))

    top = max(context.sizes.concurrencies)
    worker_rows, two_workers = _two_workers(context, source, top, by_key)
    rows.extend(worker_rows)
    targets = _targets(context, by_key, two_workers, top)
    extra = ""
    if should_profile(context, targets):
        extra = "\n\n".join(
            _profile(context, transport, gateway, source) for transport, gateway in gateways.items()
        )
    return SuiteResult(
        name="overhead",
        title="Overhead: unary Complete",
        method=(
            "h2load (one thread) posts a prebuilt gRPC frame to `Complete` through the gateway "
            "to the instant upstream, and the same request as JSON straight to the upstream over "
            "HTTP/1.1; a bare grpclib echo server (uvloop, no work) is the framework's ceiling. "
            "`added` = gateway percentile − direct percentile at the same concurrency. CPU from "
            "`/proc/<pid>/stat` of the server process(es) under test. Gateway rows: "
            "`httpx-aiohttp` (aiohttp under httpx's API, the default on asyncio) and httpx's own "
            "transport (`DELOS_RUNTIME_HTTP_TRANSPORT=httpx`); two "
            f"workers share the port with SO_REUSEPORT and are loaded over "
            f"{min(top, 16)} connections."
        ),
        tables=(Table("Unary Complete", COLUMNS, tuple(rows)),),
        targets=tuple(targets),
        extra=extra,
        seconds=time.monotonic() - started,
    )


def should_profile(context: BenchContext, targets: list[Target]) -> bool:
    """Profiles explain missed targets of a full run; the quick run has no time for them."""
    missed = any(not t.passed for t in targets)
    return missed and context.profile and context.sizes.profile_seconds > 0 and py_spy_available()


def _two_workers(
    context: BenchContext,
    source: Child,
    concurrency: int,
    by_key: dict[tuple[str, int], Measurement],
) -> tuple[list[tuple[str, ...]], dict[str, float]]:
    """Two workers sharing the port (SO_REUSEPORT), for each transport, at ``concurrency``."""
    rows, ratios = [], {}
    direct = by_key.get(("upstream, direct (HTTP/1.1)", concurrency))
    for transport in context.sizes.two_worker_transports:
        gateway = upstream_gateway(context, transport, workers=2)
        check_gateway(gateway, f"the two-worker gateway ({transport})")
        label = f"gateway, 2 workers, {transport}"
        m = measure_grpc(context, label, gateway.port, gateway, concurrency, upstream=source)
        rows.append(measurement_row(m, direct))
        one = by_key[(f"gateway, 1 worker, {transport}", concurrency)]
        ratios[transport] = m.requests_per_second / max(one.requests_per_second, 1e-9)
    return rows, ratios


def _targets(
    context: BenchContext,
    by_key: dict[tuple[str, int], Measurement],
    two_workers: dict[str, float],
    top: int,
) -> list[Target]:
    targets = []
    direct_1 = by_key[("upstream, direct (HTTP/1.1)", 1)]
    for transport in context.sizes.transports:
        one = by_key[(f"gateway, 1 worker, {transport}", 1)]
        targets.append(
            Target(
                f"added p99 latency at concurrency 1 ({transport})",
                one.latency_ms[1] - direct_1.latency_ms[1],
                1.0,
                "ms",
            )
        )
        if 16 in context.sizes.concurrencies:
            sixteen = by_key[(f"gateway, 1 worker, {transport}", 16)]
            echo = by_key[("bare grpclib echo", 16)]
            targets.append(
                Target(
                    f"1 worker at concurrency 16 ({transport})",
                    sixteen.requests_per_second,
                    2000.0,
                    "req/s",
                    at_most=False,
                )
            )
            targets.append(
                Target(
                    f"1 worker vs bare echo at concurrency 16 ({transport})",
                    100.0 * sixteen.requests_per_second / echo.requests_per_second,
                    40.0,
                    "%",
                    at_most=False,
                )
            )
        if transport not in two_workers:
            continue
        targets.append(
            Target(
                f"2 workers vs 1 at concurrency {top} ({transport})",
                two_workers[transport],
                1.7,
                "×",
                at_most=False,
            )
        )
    return targets


def _profile(context: BenchContext, transport: str, gateway: Gateway, source: Child) -> str:
    """Profile one worker under concurrency-16 load; a table of self time per request."""
    seconds = max(context.sizes.profile_seconds, 1.0)
    worker = gateway.workers[0]
    output = context.processes.directory / f"overhead-profile-{transport}.txt"
    url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
    frame = grpc_frame(completion_request())
    # CPU per request without the profiler, then the same load with it.
    plain = measure_grpc(context, "profile", gateway.port, gateway, 16, upstream=source)
    recorder = start_recording(worker.pid, seconds, output)
    run_h2load(
        url,
        frame,
        LoadShape(16, duration=seconds + 1.0, warmup=0.5),
        directory=context.processes.directory,
    )
    try:
        profile = finish_recording(recorder, output, timeout=seconds + 30)
    except RuntimeError as error:
        return f"Profile not available: {error}"
    table = profile_table(
        profile,
        cpu_per_unit_us=plain.cpu_us,
        unit="request",
        title=f"Profile: gateway ({transport}), unary Complete at concurrency 16",
    )
    from delos.bench._report import render_table

    return render_table(table)
