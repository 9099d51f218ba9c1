"""Suite ``memory``: the gateway's resident memory before and after 10k and 100k requests.

A gateway that keeps something per request (a log, a cache entry, a latency sample, a task)
grows with traffic; a flat one stays within a few percent once its pools and caches are warm.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from delos.bench._context import BenchContext, completion_request
from delos.bench._h2load import COMPLETE_PATH, LoadShape, grpc_frame, run_h2load
from delos.bench._report import render_table
from delos.bench._results import SuiteResult, Table, format_number
from delos.bench._servers import upstream_gateway
from delos.bench._targets import memory_target

__all__ = ["declare_memory", "run_memory"]

_CONCURRENCY = 16


def declare_memory(context: BenchContext) -> None:
    upstream_gateway(context)


def _mib(value: int) -> float:
    return value / (1024 * 1024)


def run_memory(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_memory(context)
    context.wait_ready()
    first, total = context.sizes.memory_requests
    frame = grpc_frame(completion_request())
    gateway = upstream_gateway(context)
    url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
    before = gateway.rss_bytes()
    directory = context.processes.directory
    tick = time.monotonic()
    result = run_h2load(url, frame, LoadShape(_CONCURRENCY, requests=first), directory=directory)
    after_first = gateway.rss_bytes()
    rest = run_h2load(
        url, frame, LoadShape(_CONCURRENCY, requests=total - first), directory=directory
    )
    after_total = gateway.rss_bytes()
    seconds = time.monotonic() - tick
    growth = 100.0 * (after_total - after_first) / max(after_first, 1)
    rows = [
        (
            "gateway, as shipped",
            format_number(_mib(before), 1),
            format_number(_mib(after_first), 1),
            format_number(_mib(after_total), 1),
            f"{growth:+.1f}%",
            str(result.requests + rest.requests),
            str(result.failed + rest.failed),
            format_number(seconds, 0),
        )
    ]
    targets = [memory_target(growth, first, total)]
    extra = ""
    if any(not t.passed for t in targets) and context.profile and not context.sizes.quick:
        extra = _allocations(context, frame)
    return SuiteResult(
        name="memory",
        title="Memory: resident set under sustained load",
        method=(
            f"A fresh gateway as shipped, unary `Complete` from h2load at concurrency "
            f"{_CONCURRENCY} to the instant upstream; resident set size from `/proc/<pid>/statm` "
            f"at start, after {first:,} and after {total:,} requests. When the target is missed, "
            "a gateway of its own runs under tracemalloc to show which lines grew. Known "
            "grower: h2 remembers the IDs of up to 2^16 closed streams per HTTP/2 connection "
            "(`H2Connection.MAX_CLOSED_STREAMS`, `h2/utilities.py` `SizeLimitDict`), about 100 "
            "bytes each, so one long-lived client connection grows the gateway by up to ~7 MB "
            f"before it levels off, and frees it when it closes. {context.pinning.describe()}"
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
        extra=extra,
        seconds=time.monotonic() - started,
    )


def _allocations(context: BenchContext, frame: bytes) -> str:
    """Where memory grows: tracemalloc in a gateway of its own, the lines whose allocations grew
    most between 10,000 and 30,000 requests."""
    output = context.processes.directory / "allocations.jsonl"
    gateway = upstream_gateway(context, tracemalloc=str(output))
    context.wait_ready()
    url = f"http://127.0.0.1:{gateway.port}{COMPLETE_PATH}"
    directory = context.processes.directory
    worker = gateway.workers[0]
    warm, measured = 10_000, 20_000
    run_h2load(url, frame, LoadShape(_CONCURRENCY, requests=warm), directory=directory)
    os.kill(worker.pid, signal.SIGUSR1)
    _wait_lines(output, 1)
    run_h2load(url, frame, LoadShape(_CONCURRENCY, requests=measured), directory=directory)
    os.kill(worker.pid, signal.SIGUSR1)
    _wait_lines(output, 2)
    rows = json.loads(output.read_text().splitlines()[1])
    table = Table(
        f"Allocations that grew from {warm:,} to {warm + measured:,} requests (tracemalloc)",
        ("where", "bytes", "bytes per request", "blocks"),
        tuple(
            (f"`{_short_path(where)}`", f"{size:+,}", f"{size / measured:+.1f}", f"{count:+,}")
            for where, size, count in rows
        ),
        note="The gateway as shipped, the same load; tracemalloc keeps one frame per allocation. "
        "Growth that is not here is outside Python's allocator (C extensions, "
        "fragmentation).",
    )
    return render_table(table)


def _short_path(where: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def _wait_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError("the gateway wrote no allocation snapshot")
