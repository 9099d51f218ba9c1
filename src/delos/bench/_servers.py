"""The servers suites share, each in its own process, and the controls of the fakes.

Ports are chosen before a process starts, so a gateway can be started alongside the upstream it
points at instead of after it. The servers under test (gateways, the bare echo, the forwarders)
start pinned to the context's server core; the upstream and the fakes run where the benchmark's
own process runs (the load core, see :mod:`delos.bench._pinning`).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delos.bench._context import BenchContext
from delos.bench._gc_stats import GcProbe
from delos.bench._processes import Child, free_port, gateway_environment

__all__ = [
    "FAKE_PROVIDERS",
    "FALLBACK_TRANSPORT",
    "FORWARDER_CLIENT",
    "SHIPPED_TRANSPORT",
    "Fakes",
    "Gateway",
    "echo",
    "fakes",
    "forwarder",
    "forwarders",
    "http_json",
    "scenario_gateway",
    "upstream",
    "upstream_gateway",
]

#: The fakes behind the scenario suites: two providers serving the ``gpt-4o`` family.
FAKE_PROVIDERS = ("openai", "openrouter")
_FAKE_PREFIX = {"openai": "/v1", "together": "/v1", "openrouter": "/api/v1"}

#: ``DELOS_RUNTIME_HTTP_TRANSPORT`` of the gateway as shipped (its default), and of its fallback.
SHIPPED_TRANSPORT = "auto"
FALLBACK_TRANSPORT = "httpx"
#: The minimal forwarder's client that the gateway's throughput is judged against.
FORWARDER_CLIENT = "aiohttp"


@dataclass
class Gateway:
    """One gateway: its workers (processes sharing the port) and the port."""

    workers: list[Child]
    port: int
    #: Where its first worker writes its collector totals (``--gc-stats``), if it does.
    gc_stats: Path | None = None

    @property
    def gc_probe(self) -> GcProbe | None:
        return GcProbe(self.workers[0].pid, self.gc_stats) if self.gc_stats else None

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers)

    def rss_bytes(self) -> int:
        return sum(w.rss_bytes() for w in self.workers)

    def logs(self) -> str:
        return "\n".join(w.log_tail() for w in self.workers)


@dataclass
class Fakes:
    """The :mod:`delos.testing` fakes in one process, one port per provider."""

    child: Child
    ports: dict[str, int]

    def base_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.ports[provider]}{_FAKE_PREFIX[provider]}"

    def set_behaviour(self, provider: str, **behaviour: Any) -> None:
        """Replace one fake's behaviour (fields of :class:`delos.testing.Behaviour`)."""
        http_json(f"http://127.0.0.1:{self.ports[provider]}/__bench/behaviour", behaviour)

    def requests(self, provider: str) -> int:
        """Requests the fake has served (control requests excluded)."""
        stats = http_json(f"http://127.0.0.1:{self.ports[provider]}/__bench/stats")
        return int(stats["requests"])


def http_json(url: str, payload: object | None = None) -> Any:
    """GET (or POST ``payload`` to) a JSON endpoint on 127.0.0.1."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only talk to 127.0.0.1")
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def upstream(context: BenchContext, *, unpinned: bool = False) -> Child:
    """The instant upstream (see :mod:`delos.bench._upstream`), on the load core or, when
    ``unpinned``, a second one on every core."""
    cores = context.pinning.cores(under_test=False, unpinned=unpinned)

    def start() -> Child:
        port = free_port()
        arguments = ["upstream", "--port", str(port)]
        return context.processes.start("upstream", arguments, port=port, cores=cores)

    return context.server(f"upstream:{'unpinned' if unpinned else 'load'}", start)


def upstream_requests(child: Child) -> int:
    return int(http_json(f"http://127.0.0.1:{child.port}/__bench/stats")["requests"])


def echo(context: BenchContext) -> Child:
    """The bare grpclib echo server (see :mod:`delos.bench._echo`)."""

    def start() -> Child:
        port = free_port()
        return context.processes.start(
            "echo", ["echo", "--port", str(port)], port=port, cores=context.pinning.server
        )

    return context.server("echo", start)


def forwarder(context: BenchContext, client: str = FORWARDER_CLIENT) -> Child:
    """The minimal grpclib forwarder to the upstream with ``client`` (aiohttp or httpx)."""
    base = f"http://127.0.0.1:{upstream(context).port}/v1"

    def start() -> Child:
        port = free_port()
        arguments = ["forwarder", "--port", str(port), "--upstream", base, "--client", client]
        return context.processes.start(
            f"forwarder-{client}", arguments, port=port, cores=context.pinning.server
        )

    return context.server(f"forwarder:{client}", start)


def forwarders(context: BenchContext) -> dict[str, Child]:
    """One minimal forwarder per client of the sizes, each in its own process."""
    return {client: forwarder(context, client) for client in context.sizes.forwarder_clients}


def _start_gateway(
    context: BenchContext,
    settings: Mapping[str, str],
    *,
    transport: str = SHIPPED_TRANSPORT,
    workers: int = 1,
    breaker: Mapping[str, float] | None = None,
    extra_arguments: tuple[str, ...] = (),
    gc_stats: Path | None = None,
    unpinned: bool = False,
) -> Gateway:
    port = free_port()
    arguments = ["gateway", "--port", str(port), "--transport", transport]
    arguments += ["--workers", str(workers)]
    if workers > 1:
        arguments.append("--reuse-port")
    if breaker:
        arguments += ["--breaker", json.dumps(dict(breaker))]
    arguments += list(extra_arguments)
    if gc_stats is not None:
        arguments += ["--gc-stats", str(gc_stats)]
    environ = gateway_environment(**settings)
    cores = context.pinning.cores(under_test=True, unpinned=unpinned)
    children = [
        context.processes.start(
            f"gateway-{transport}-{i}", arguments, environ=environ, port=port, cores=cores
        )
        for i in range(workers)
    ]
    return Gateway(children, port, gc_stats)


def _provider_settings(base_urls: Mapping[str, str], **extra: str) -> dict[str, str]:
    values = {}
    for provider, url in base_urls.items():
        values[f"DELOS_RUNTIME_{provider.upper()}_KEY"] = f"bench-{provider}-key"
        values[f"DELOS_RUNTIME_{provider.upper()}_BASE_URL"] = url
    values.update(extra)
    return values


def upstream_gateway(
    context: BenchContext,
    transport: str = SHIPPED_TRANSPORT,
    workers: int = 1,
    *,
    tracemalloc: str = "",
    gc_default: bool = False,
    unpinned: bool = False,
) -> Gateway:
    """A gateway whose one provider (OpenAI) is the instant upstream; when ``unpinned``, on
    every core, in front of the unpinned upstream.

    It times its collections (:attr:`Gateway.gc_probe`; a callback per collection, a few per
    thousand requests, nothing measurable) unless ``tracemalloc`` names the file its allocation
    diffs go to instead (both answer SIGUSR1). ``gc_default`` runs it with CPython's collector
    settings instead of its own (see ``serve.py``).
    """
    base = f"http://127.0.0.1:{upstream(context, unpinned=unpinned).port}/v1"
    # A configured limit far above the load: the limiter does its work on every request
    # without ever making one wait.
    settings = _provider_settings(
        {"openai": base}, DELOS_RUNTIME_OPENAI_RPM="60000000", DELOS_RUNTIME_OPENAI_TPM="6000000000"
    )
    extra: tuple[str, ...] = ("--tracemalloc", tracemalloc) if tracemalloc else ()
    if gc_default:
        extra += ("--gc-default",)
    collector = "defaults" if gc_default else "shipped"
    placement = "unpinned" if unpinned else "pinned"
    name = f"{transport}-{workers}-{collector}-{placement}"
    stats = context.processes.directory / f"gc-{name}.json"
    return context.server(
        f"gateway:{name}:{tracemalloc}",
        lambda: _start_gateway(
            context,
            settings,
            transport=transport,
            workers=workers,
            extra_arguments=extra,
            gc_stats=None if tracemalloc else stats,
            unpinned=unpinned,
        ),
    )


def fakes(context: BenchContext) -> Fakes:
    def start() -> Fakes:
        ports = {provider: free_port() for provider in FAKE_PROVIDERS}
        spec = ",".join(f"{p}={port}" for p, port in ports.items())
        return Fakes(context.processes.start("fakes", ["fakes", "--ports", spec]), ports)

    return context.server("fakes", start)


def scenario_gateway(context: BenchContext, suite: str, *, hedging: bool = False) -> Gateway:
    """A gateway of ``suite``'s own in front of both fakes (routing state never carries over
    from another suite). Latency routing races nothing (race width 1), so that the adaptation
    suite sees the router's own choice; breakers wait ``breaker_wait_in_open``."""
    shared = fakes(context)
    settings = _provider_settings(
        {p: shared.base_url(p) for p in FAKE_PROVIDERS},
        DELOS_RUNTIME_RACE_WIDTH="1",
        DELOS_RUNTIME_HEDGING="true" if hedging else "false",
    )
    breaker = {"wait_in_open": context.sizes.breaker_wait_in_open}
    return context.server(
        f"gateway:{suite if context.sizes.isolated_scenarios else 'scenario'}:{hedging}",
        lambda: _start_gateway(context, settings, breaker=breaker),
    )
