"""Suite ``transport``: which HTTP client transport the adapters should use.

A minimal grpclib forwarder (one upstream POST per call, nothing else) with three clients:
httpx with its default transport (httpcore), httpx over ``httpx-aiohttp``'s transport (aiohttp
under httpx's API; what the adapters can take through ``open_http_client(settings, transport)``),
and aiohttp itself (the ceiling of that transport). The gateway rows of the ``overhead`` suite
show the same choice inside the whole request path.
"""

from __future__ import annotations

import time

from delos.bench._context import BenchContext
from delos.bench._overhead import (
    COLUMNS,
    Measurement,
    measure_direct,
    measure_grpc,
    measurement_row,
)
from delos.bench._results import SuiteResult, Table
from delos.bench._servers import forwarders, upstream

__all__ = ["declare_transport", "recommendation", "run_transport"]

_CONCURRENCIES = (1, 16)


def declare_transport(context: BenchContext) -> None:
    forwarders(context)


def recommendation(by_client: dict[tuple[str, int], Measurement]) -> str:
    """Which transport the adapters should use, from the concurrency-16 throughput."""
    default = by_client.get(("httpx", 16))
    candidate = by_client.get(("httpx-aiohttp", 16))
    if default is None or candidate is None:
        return "Not enough measurements for a recommendation."
    gain = candidate.requests_per_second / max(default.requests_per_second, 1e-9)
    cpu = candidate.cpu_us / max(default.cpu_us, 1e-9)
    if gain >= 1.1:
        return (
            f"**Recommendation: use `httpx-aiohttp`'s `AiohttpTransport`** — at concurrency 16 "
            f"the forwarder serves {gain:.2f}× the requests of httpx's default transport, at "
            f"{cpu:.2f}× its CPU per request."
        )
    return (
        f"**Recommendation: keep httpx's default transport** — `httpx-aiohttp` gives "
        f"{gain:.2f}× its throughput at concurrency 16 ({cpu:.2f}× its CPU per request), not "
        "enough to justify another dependency."
    )


def run_transport(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_transport(context)
    context.wait_ready()
    source = upstream(context)
    servers = forwarders(context)
    rows: list[tuple[str, ...]] = []
    by_client: dict[tuple[str, int], Measurement] = {}
    concurrencies = _CONCURRENCIES if not context.sizes.quick else (16,)
    for concurrency in concurrencies:
        direct = measure_direct(context, source, concurrency)
        rows.append(measurement_row(direct, direct))
        for client in context.sizes.forwarder_clients:
            server = servers[client]
            m = measure_grpc(
                context, f"forwarder, {client}", server.port, server, concurrency, upstream=source
            )
            by_client[(client, concurrency)] = m
            rows.append(measurement_row(m, direct))
    return SuiteResult(
        name="transport",
        title="HTTP client transport: a minimal forwarder",
        method=(
            "A grpclib server (uvloop) whose `Complete` handler POSTs the chat request to the "
            "instant upstream and answers with its content — the least a gateway does. h2load "
            "loads it as in the overhead suite. Clients: httpx with its default transport, "
            "httpx with `httpx_aiohttp.AiohttpTransport`, and aiohttp's own client session."
        ),
        tables=(Table("Forwarder by HTTP client", COLUMNS, tuple(rows)),),
        notes=(recommendation(by_client),),
        seconds=time.monotonic() - started,
    )
