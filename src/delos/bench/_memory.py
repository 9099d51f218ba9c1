"""Suite ``memory``: the gateway's resident memory before and after 10k and 100k requests.

A gateway that keeps something per request (a log, a cache entry, a latency sample, a task)
grows with traffic; a flat one stays within a few percent once its pools and caches are warm.
"""

from __future__ import annotations

import time

from delos.bench._context import BenchContext, completion_request
from delos.bench._h2load import COMPLETE_PATH, LoadShape, grpc_frame, run_h2load
from delos.bench._results import SuiteResult, Table, Target, format_number
from delos.bench._servers import upstream_gateway

__all__ = ["declare_memory", "run_memory"]

_CONCURRENCY = 16


def declare_memory(context: BenchContext) -> None:
    for transport in context.sizes.transports:
        upstream_gateway(context, transport)


def _mib(value: int) -> float:
    return value / (1024 * 1024)


def run_memory(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_memory(context)
    context.wait_ready()
    first, total = context.sizes.memory_requests
    frame = grpc_frame(completion_request())
    rows, targets = [], []
    for transport in context.sizes.transports:
        gateway = upstream_gateway(context, transport)
        url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
        before = gateway.rss_bytes()
        directory = context.processes.directory
        tick = time.monotonic()
        result = run_h2load(
            url, frame, LoadShape(_CONCURRENCY, requests=first), directory=directory
        )
        after_first = gateway.rss_bytes()
        rest = run_h2load(
            url, frame, LoadShape(_CONCURRENCY, requests=total - first), directory=directory
        )
        after_total = gateway.rss_bytes()
        seconds = time.monotonic() - tick
        growth = 100.0 * (after_total - after_first) / max(after_first, 1)
        rows.append(
            (
                f"gateway, {transport}",
                format_number(_mib(before), 1),
                format_number(_mib(after_first), 1),
                format_number(_mib(after_total), 1),
                f"{growth:+.1f}%",
                str(result.requests + rest.requests),
                str(result.failed + rest.failed),
                format_number(seconds, 0),
            )
        )
        targets.append(
            Target(
                f"RSS growth from {first:,} to {total:,} requests ({transport})",
                abs(growth),
                10.0,
                "%",
            )
        )
    return SuiteResult(
        name="memory",
        title="Memory: resident set under sustained load",
        method=(
            f"A fresh gateway per transport, unary `Complete` from h2load at concurrency "
            f"{_CONCURRENCY} to the instant upstream; resident set size from `/proc/<pid>/statm` "
            f"at start, after {first:,} and after {total:,} requests."
        ),
        tables=(
            Table(
                "Resident memory (MiB)",
                (
                    "gateway",
                    "at start",
                    f"after {first:,}",
                    f"after {total:,}",
                    "growth",
                    "requests",
                    "failed",
                    "seconds",
                ),
                tuple(rows),
            ),
        ),
        targets=tuple(targets),
        seconds=time.monotonic() - started,
    )
