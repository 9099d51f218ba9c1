"""Suite ``overhead``: unary Complete through the gateway, beside its references, in one run.

At each concurrency: the upstream called directly, the bare grpclib echo (the framework's
ceiling), the minimal grpclib → aiohttp → upstream forwarder (the least a gateway does) and one
gateway worker as shipped, each pinned to the same core. At concurrency 16 also: the same gateway
with CPython's collector defaults (the garbage-collection comparison), the gateway on httpx's own
transport (the fallback, no target), and two workers. Then a py-spy profile of the gateway under
the same load.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from delos.bench._context import BenchContext, completion_request
from delos.bench._gc_stats import GcTotals
from delos.bench._h2load import COMPLETE_PATH, LoadShape, grpc_frame, run_h2load
from delos.bench._measure import (
    COLUMNS,
    DIRECT_LABEL,
    Measurement,
    check_gateway,
    measure_direct,
    measure_grpc,
    measurement_row,
    warm_up,
)
from delos.bench._pinning import pin_this_process
from delos.bench._processes import Child
from delos.bench._profile import profile_summary, py_spy_available, record_during
from delos.bench._results import SuiteResult, Table, format_number
from delos.bench._servers import (
    FALLBACK_TRANSPORT,
    FORWARDER_CLIENT,
    Gateway,
    echo,
    forwarder,
    upstream,
    upstream_gateway,
    upstream_requests,
)
from delos.bench._targets import OverheadPoints, overhead_targets

__all__ = ["GC_COLUMNS", "declare_overhead", "gc_row", "run_overhead"]

_TOP = 16
_ECHO = "bare grpclib echo"
_FORWARDER = f"minimal forwarder, {FORWARDER_CLIENT}"
_SHIPPED = "gateway, 1 worker, as shipped"
_GC_DEFAULTS = "gateway, 1 worker, CPython GC defaults"
_FALLBACK = "gateway, 1 worker, httpx transport (slow path, documented cost)"
_PAIR_ONE = "gateway, 1 worker, unpinned"
_PAIR_TWO = "gateway, 2 workers, unpinned"

GC_COLUMNS = (
    "gateway",
    "collector (thresholds, frozen objects)",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99/p50",
    "gen 0 per 1k req",
    "gen 1 per 1k req",
    "gen 2 per 1k req",
    "GC ms per 1k req",
    "max pause ms",
)


def declare_overhead(context: BenchContext) -> None:
    upstream(context)
    echo(context)
    forwarder(context)
    upstream_gateway(context)
    upstream_gateway(context, gc_default=True)
    if context.sizes.fallback_transport:
        upstream_gateway(context, FALLBACK_TRANSPORT)
    if context.sizes.two_workers:
        upstream_gateway(context, unpinned=True)
        upstream_gateway(context, workers=2, unpinned=True)


def gc_row(label: str, m: Measurement, totals: GcTotals, requests: int) -> tuple[str, ...]:
    """A row of :data:`GC_COLUMNS`: ``requests`` is what the gateway served while counted."""
    per_thousand = totals.per_thousand(requests)
    return (
        label,
        totals.settings(),
        format_number(m.requests_per_second, 0),
        *(format_number(v) for v in m.latency_ms[:2]),
        format_number(m.tail_ratio, 1),
        *(format_number(v, 1) for v in per_thousand),
        format_number(1000.0 * totals.total_ms / max(requests, 1), 1),
        format_number(totals.max_pause_ms),
    )


def _measure_collected(
    context: BenchContext, label: str, gateway: Gateway, source: Child
) -> tuple[Measurement, GcTotals, int]:
    """The concurrency-16 point with the gateway's collections counted over the measured run
    only (the warm-up's are discarded), and the requests it served meanwhile."""
    probe = gateway.gc_probe
    assert probe is not None, "started with --tracemalloc, not --gc-stats"
    url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
    warm_up(context, url, grpc_frame(completion_request()), _TOP, grpc=True)
    probe.take()
    served = upstream_requests(source)
    m = measure_grpc(context, label, gateway.port, gateway, _TOP, upstream=source, warm=False)
    totals = probe.take()
    return m, totals, upstream_requests(source) - served


def run_overhead(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_overhead(context)
    context.wait_ready()
    sizes = context.sizes
    source = upstream(context)
    bare_echo = echo(context)
    minimal = forwarder(context)
    shipped = upstream_gateway(context)
    defaults = upstream_gateway(context, gc_default=True)
    check_gateway(shipped, "the gateway")
    check_gateway(defaults, "the gateway with CPython's collector defaults")

    rows: list[tuple[str, ...]] = []
    points: dict[tuple[str, int], Measurement] = {}
    gc_rows: list[tuple[str, ...]] = []
    for concurrency in sizes.concurrencies:
        direct = measure_direct(context, source, concurrency)
        measured = [
            direct,
            measure_grpc(context, _ECHO, bare_echo.port, bare_echo, concurrency),
            measure_grpc(context, _FORWARDER, minimal.port, minimal, concurrency, upstream=source),
        ]
        if concurrency == _TOP:
            m, totals, served = _measure_collected(context, _SHIPPED, shipped, source)
            gc_rows.append(gc_row("as shipped", m, totals, served))
            measured.append(m)
            m, totals, served = _measure_collected(context, _GC_DEFAULTS, defaults, source)
            gc_rows.append(gc_row("CPython defaults (`--gc-default`)", m, totals, served))
            measured.append(m)
            measured += _extra_gateways(context, source)
        else:
            measured.append(
                measure_grpc(context, _SHIPPED, shipped.port, shipped, concurrency, upstream=source)
            )
        for m in measured:
            points[(m.label, concurrency)] = m
            rows.append(measurement_row(m, direct))

    rounds, echo_16, forwarder_16, gateway_16 = _interleaved(
        context,
        {_ECHO: bare_echo, _FORWARDER: minimal, _SHIPPED: shipped},
        source,
        {label: points[(label, _TOP)] for label in (_ECHO, _FORWARDER, _SHIPPED)},
    )
    targets = overhead_targets(
        OverheadPoints(
            direct_1=points[(DIRECT_LABEL, 1)],
            gateway_1=points[(_SHIPPED, 1)],
            echo_16=echo_16,
            forwarder_16=forwarder_16,
            gateway_16=gateway_16,
            pair_one_16=points.get((_PAIR_ONE, _TOP)),
            pair_two_16=points.get((_PAIR_TWO, _TOP)),
        )
    )
    extra = ""
    if context.wants_profile:
        extra = _profile(context, shipped, points[(_SHIPPED, _TOP)].cpu_us)
    return SuiteResult(
        name="overhead",
        title="Overhead: unary Complete",
        method=_method(context),
        tables=(
            Table("Unary Complete", COLUMNS, tuple(rows)),
            Table(
                f"Interleaved rounds at concurrency {_TOP}: the ratios the targets judge",
                _ROUND_COLUMNS,
                tuple(rounds),
                note=_ROUNDS_NOTE,
            ),
            Table(
                f"Garbage collection, one gateway worker at concurrency {_TOP}",
                GC_COLUMNS,
                tuple(gc_rows),
                note=_GC_NOTE,
            ),
        ),
        targets=tuple(targets),
        extra=extra,
        seconds=time.monotonic() - started,
    )


_ROUNDS = 5
_ROUND_SECONDS = 4.0
_ROUND_COLUMNS = (
    "round",
    "echo req/s",
    "forwarder req/s",
    "gateway req/s",
    "gateway ÷ echo",
    "gateway ÷ forwarder",
    "gateway CPU µs/req",
)
_ROUNDS_NOTE = (
    f"The three servers take turns, {_ROUNDS} rounds of {_ROUND_SECONDS:.0f} s each, so a "
    "slower or faster spell of the shared machine falls on all three alike; the targets take "
    "the median ratio and the median CPU per request. The 10-second points above give the "
    "latency percentiles."
)


def _interleaved(
    context: BenchContext,
    servers: dict[str, Child | Gateway],
    source: Child,
    long_points: dict[str, Measurement],
) -> tuple[list[tuple[str, ...]], Measurement, Measurement, Measurement]:
    """Echo, forwarder and gateway in turn at concurrency 16; the rows, and each server's
    10-second point with its req/s and CPU replaced by their medians over the rounds (the
    gateway's: the median ratios to the other two, applied to their medians)."""
    rounds = 1 if context.sizes.quick else _ROUNDS
    shape = (
        LoadShape(_TOP, requests=max(60, _TOP * 4), warmup=0.0)
        if context.sizes.quick
        else LoadShape(_TOP, duration=_ROUND_SECONDS, warmup=0.5)
    )
    taken: dict[str, list[Measurement]] = {label: [] for label in servers}
    rows: list[tuple[str, ...]] = []
    for index in range(rounds):
        for label, server in servers.items():
            taken[label].append(
                measure_grpc(
                    context,
                    label,
                    server.port,
                    server,
                    _TOP,
                    upstream=source if label != _ECHO else None,
                    warm=False,  # warm from the 10-second points
                    shape=shape,
                )
            )
        echo_rps, forwarder_rps, gateway_rps, gateway_cpu = (
            taken[_ECHO][-1].requests_per_second,
            taken[_FORWARDER][-1].requests_per_second,
            taken[_SHIPPED][-1].requests_per_second,
            taken[_SHIPPED][-1].cpu_us,
        )
        rows.append(
            (
                str(index + 1),
                format_number(echo_rps),
                format_number(forwarder_rps),
                format_number(gateway_rps),
                f"{gateway_rps / max(echo_rps, 1e-9):.2f} ×",
                f"{gateway_rps / max(forwarder_rps, 1e-9):.2f} ×",
                format_number(gateway_cpu),
            )
        )

    def median(values: list[float]) -> float:
        return statistics.median(values)

    echo_rps = median([m.requests_per_second for m in taken[_ECHO]])
    forwarder_rps = median([m.requests_per_second for m in taken[_FORWARDER]])
    to_echo = median(
        [
            g.requests_per_second / max(e.requests_per_second, 1e-9)
            for g, e in zip(taken[_SHIPPED], taken[_ECHO], strict=True)
        ]
    )
    to_forwarder = median(
        [
            g.requests_per_second / max(f.requests_per_second, 1e-9)
            for g, f in zip(taken[_SHIPPED], taken[_FORWARDER], strict=True)
        ]
    )
    gateway_cpu = median([m.cpu_us for m in taken[_SHIPPED]])
    rows.append(
        (
            "median",
            format_number(echo_rps),
            format_number(forwarder_rps),
            "-",
            f"{to_echo:.2f} ×",
            f"{to_forwarder:.2f} ×",
            format_number(gateway_cpu),
        )
    )
    echo_16 = dataclasses.replace(
        long_points[_ECHO],
        requests_per_second=echo_rps,
        cpu_us=median([m.cpu_us for m in taken[_ECHO]]),
    )
    forwarder_16 = dataclasses.replace(
        long_points[_FORWARDER],
        requests_per_second=forwarder_rps,
        cpu_us=median([m.cpu_us for m in taken[_FORWARDER]]),
    )
    # One req/s cannot carry two ratios; the targets read each ratio against its own reference.
    gateway_16 = dataclasses.replace(
        long_points[_SHIPPED], requests_per_second=to_echo * echo_rps, cpu_us=gateway_cpu
    )
    forwarder_16 = dataclasses.replace(
        forwarder_16, requests_per_second=gateway_16.requests_per_second / to_forwarder
    )
    return rows, echo_16, forwarder_16, gateway_16


def _extra_gateways(context: BenchContext, source: Child) -> list[Measurement]:
    """The fallback transport and two workers, at concurrency 16, when the sizes ask for them."""
    measured = []
    if context.sizes.fallback_transport:
        fallback = upstream_gateway(context, FALLBACK_TRANSPORT)
        check_gateway(fallback, "the gateway on httpx's transport")
        measured.append(
            measure_grpc(context, _FALLBACK, fallback.port, fallback, _TOP, upstream=source)
        )
    if context.sizes.two_workers:
        measured += _pair(context)
    return measured


def _pair(context: BenchContext) -> list[Measurement]:
    """One worker and two workers sharing the port, with the upstream and h2load, all placed
    by the OS on every core: both sides of the ratio under the same conditions."""
    source = upstream(context, unpinned=True)
    measured = []
    with pin_this_process(context.pinning.machine):
        for label, workers in ((_PAIR_ONE, 1), (_PAIR_TWO, 2)):
            gateway = upstream_gateway(context, workers=workers, unpinned=True)
            check_gateway(gateway, f"the {workers}-worker gateway")
            measured.append(
                measure_grpc(context, label, gateway.port, gateway, _TOP, upstream=source)
            )
    return measured


_GC_NOTE = (
    "Collections counted by a `gc.callbacks` hook in the gateway (`serve.py gateway "
    "--gc-stats`) over the measured run only, per 1,000 requests the upstream served meanwhile. "
    "Allocations per request are not shown: CPython keeps no per-request count, and tracing "
    "every allocation (tracemalloc) would cost more than the work it measures."
)


def _method(context: BenchContext) -> str:
    return (
        "h2load (one thread) posts a prebuilt gRPC frame to `Complete` through each server to "
        "the instant upstream, and the same request as JSON straight to the upstream over "
        "HTTP/1.1. References measured in the same run: a bare grpclib echo server (uvloop, no "
        "work: the framework's ceiling) and a minimal grpclib → aiohttp → upstream forwarder "
        "(one POST per call: the least a gateway does). The gateway runs as shipped "
        "(`DELOS_RUNTIME_HTTP_TRANSPORT=auto`, its default); its fallback on httpx's own "
        "transport (`DELOS_RUNTIME_HTTP_TRANSPORT=httpx`) is measured once, without a target. "
        "`added` = percentile − direct percentile at the same concurrency; CPU from "
        "`/proc/<pid>/stat` of the server process(es) under test over the measured run. "
        f"{context.pinning.describe()} **Two workers** (sharing the port with SO_REUSEPORT) are "
        "compared with one worker measured the same way, not with the pinned row: both "
        "unpinned, with an upstream of their own and h2load, every process placed by the OS "
        f"on every core, at concurrency {_TOP} over {_TOP} connections. Pinning the second "
        "worker to the load's core starves the one-threaded h2load beside it (tried: lower "
        "and noisier); on two cores the load's own share of the CPU keeps the ratio below 2 "
        "either way. The garbage-collection table compares the gateway as shipped with the "
        "same gateway after `gc.unfreeze()` and `gc.set_threshold(700, 10, 10)` once serving "
        "(`--gc-default`)."
    )


def _profile(context: BenchContext, gateway: Gateway, cpu_us: float) -> str:
    """py-spy on the worker under concurrency-16 load: self time by layer and by function."""
    if not py_spy_available():
        return "No profile: py-spy is not installed (`pip install py-spy`)."
    seconds = context.sizes.profile_seconds
    url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
    frame = grpc_frame(completion_request())
    shape = LoadShape(_TOP, duration=seconds + 1.0, warmup=0.5)

    def load() -> None:
        run_h2load(url, frame, shape, directory=context.processes.directory)

    output = context.processes.directory / "overhead-profile.txt"
    try:
        profile = record_during(gateway.workers[0].pid, seconds, output, load)
    except RuntimeError as error:
        return f"Profile not available: {error}"
    return profile_summary(
        profile,
        cpu_per_unit_us=cpu_us,
        unit="request",
        what=f"gateway as shipped, unary Complete at concurrency {_TOP}",
    )
