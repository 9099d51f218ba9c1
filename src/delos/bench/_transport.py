"""Suite ``transport``: what the HTTP client costs, in a minimal forwarder.

A grpclib forwarder (one upstream POST per call, nothing else) with aiohttp (the client of the
forwarder the overhead suite judges the gateway against) and with httpx on its own transport (the
gateway's fallback, ``DELOS_RUNTIME_HTTP_TRANSPORT=httpx``). The overhead suite shows the
fallback inside the whole request path.
"""

from __future__ import annotations

import time

from delos.bench._context import BenchContext
from delos.bench._measure import (
    COLUMNS,
    Measurement,
    measure_direct,
    measure_grpc,
    measurement_row,
)
from delos.bench._results import SuiteResult, Table
from delos.bench._servers import forwarders, upstream

__all__ = ["comparison", "declare_transport", "run_transport"]

_CONCURRENCY = 16


def declare_transport(context: BenchContext) -> None:
    forwarders(context)


def comparison(by_client: dict[str, Measurement]) -> str:
    """What the fallback costs against aiohttp, from the concurrency-16 points."""
    aiohttp = by_client.get("aiohttp")
    httpx = by_client.get("httpx")
    if aiohttp is None or httpx is None:
        return "Only one client measured: no comparison."
    throughput = httpx.requests_per_second / max(aiohttp.requests_per_second, 1e-9)
    cpu = httpx.cpu_us / max(aiohttp.cpu_us, 1e-9)
    return (
        f"At concurrency {_CONCURRENCY}, httpx's own transport serves {throughput:.2f}× the "
        f"requests of aiohttp at {cpu:.2f}× its CPU per request: the cost of the fallback."
    )


def run_transport(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_transport(context)
    context.wait_ready()
    source = upstream(context)
    direct = measure_direct(context, source, _CONCURRENCY)
    rows = [measurement_row(direct, direct)]
    by_client: dict[str, Measurement] = {}
    for client, server in forwarders(context).items():
        label = f"minimal forwarder, {client}"
        m = measure_grpc(context, label, server.port, server, _CONCURRENCY, upstream=source)
        by_client[client] = m
        rows.append(measurement_row(m, direct))
    return SuiteResult(
        name="transport",
        title="HTTP client transport: a minimal forwarder",
        method=(
            "A grpclib server (uvloop) whose `Complete` handler POSTs the chat request to the "
            "instant upstream and answers with its content — the least a gateway does. h2load "
            f"loads it at concurrency {_CONCURRENCY} as in the overhead suite. Clients: aiohttp's "
            "own session (the overhead suite's reference forwarder) and httpx with its own "
            f"transport (httpcore; the gateway's fallback). {context.pinning.describe()}"
        ),
        tables=(Table("Forwarder by HTTP client", COLUMNS, tuple(rows)),),
        notes=(comparison(by_client),),
        seconds=time.monotonic() - started,
    )
