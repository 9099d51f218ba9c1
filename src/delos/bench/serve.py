"""The processes a benchmark starts, one role each: ``python -m delos.bench.serve ROLE``.

Roles: ``gateway`` (the gateway under test, configured from the environment like
``delos-runtime serve``), ``upstream`` (the instant OpenAI-compatible upstream), ``fakes`` (the
fakes of :mod:`delos.testing` with a control endpoint), ``echo`` (a bare grpclib server) and
``forwarder`` (a minimal grpclib-to-HTTP forwarder). Each listens on 127.0.0.1 only, prints
``READY <json>`` on stdout once it accepts connections, and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _ready(info: object) -> None:
    print("READY " + json.dumps(info), flush=True)


def _run_asyncio(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the fast extra
        asyncio.run(main())
    else:
        uvloop.run(main())


# -- gateway ------------------------------------------------------------------------------------


def _serve_gateway(arguments: argparse.Namespace) -> None:
    import anyio

    from delos.resilience import BreakerConfig
    from delos.runtime.config import Settings
    from delos.runtime.grpc._heap import settle_heap
    from delos.runtime.grpc.server import open_server
    from delos.runtime.observability import configure_logging
    from delos.runtime.redaction import Redactor
    from delos.runtime.routing import ResiliencePolicy

    environ = dict(os.environ)
    environ["DELOS_RUNTIME_HOST"] = "127.0.0.1"
    environ["DELOS_RUNTIME_PORT"] = str(arguments.port)
    # The gateway builds its clients as it ships; the setting only pins which transport.
    environ["DELOS_RUNTIME_HTTP_TRANSPORT"] = arguments.transport
    settings = Settings.from_environ(environ)
    # Logging as `delos-runtime serve` sets it up: the per-request line is part of the cost.
    configure_logging(settings.log_level, settings.env, Redactor(settings.secrets()))
    policy = ResiliencePolicy.from_settings(settings)
    if arguments.breaker:
        breaker = BreakerConfig(**json.loads(arguments.breaker))
        policy = dataclasses.replace(policy, breaker=breaker)

    if arguments.tracemalloc:
        _trace_allocations(arguments.tracemalloc)
    on_signal = _record_collections(Path(arguments.gc_stats)) if arguments.gc_stats else None

    async def main() -> None:
        async with open_server(
            settings,
            reuse_port=arguments.reuse_port,
            policy=policy,
            workers=arguments.workers,
        ) as running:
            settle_heap()  # as `delos-runtime serve` does once it listens
            if arguments.gc_default:
                _collector_defaults()
            if on_signal is not None:
                asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
            _ready({"port": running.port, "pid": os.getpid()})
            await anyio.sleep_forever()

    backend_options = {"use_uvloop": True}
    anyio.run(main, backend="asyncio", backend_options=backend_options)


def _record_collections(path: Path) -> Callable[[], None]:
    """Time every collection from now on; the returned function writes the totals to ``path``
    and starts over (the SIGUSR1 handler)."""
    from delos.bench._gc_stats import GcRecorder, write_totals

    recorder = GcRecorder()
    recorder.install()
    return lambda: write_totals(recorder, path)


def _collector_defaults() -> None:
    """CPython's own collector settings, whatever the gateway tuned at start-up: nothing frozen
    out of the collector, and its default thresholds."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def _trace_allocations(path: str) -> None:
    """Trace allocations; on each SIGUSR1, append to ``path`` the lines whose memory grew most
    since the previous SIGUSR1 (one JSON list per signal)."""
    import tracemalloc

    tracemalloc.start(1)
    previous: list[tracemalloc.Snapshot] = []

    def dump(signum: int, frame: object) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        rows = []
        if previous:
            for stat in snapshot.compare_to(previous[-1], "lineno")[:15]:
                where = stat.traceback[0]
                rows.append([f"{where.filename}:{where.lineno}", stat.size_diff, stat.count_diff])
        previous[:] = [snapshot]
        with open(path, "a") as output:
            output.write(json.dumps(rows) + "\n")

    signal.signal(signal.SIGUSR1, dump)


# -- fakes --------------------------------------------------------------------------------------


def _behaviour_of(spec: dict[str, Any]) -> Any:
    from delos.testing import Behaviour, Fault, Latency

    values: dict[str, Any] = dict(spec)
    for name in ("latency", "time_to_first_token"):
        if name in values:
            values[name] = Latency(**values[name])
    if "fault" in values:
        values["fault"] = Fault(values["fault"])
    return Behaviour(**values)


def _serve_fakes(arguments: argparse.Namespace) -> None:
    import anyio

    from delos.testing import FakeControl, FakeRequest, FakeResponse, open_fake_server
    from delos.testing.fake_openai import OpenAIFlavour, fake_openai_handler

    def with_control(flavour: OpenAIFlavour, seed: int) -> Any:
        control = FakeControl(seed=seed)
        inner = fake_openai_handler(control, flavour)
        counts = {"requests": 0}

        async def handle(request: FakeRequest) -> FakeResponse:
            if request.path == "/__bench/behaviour":
                control.behaviour = _behaviour_of(request.json())
                return FakeResponse.json({"ok": True})
            if request.path == "/__bench/stats":
                return FakeResponse.json(counts)
            if request.method == "POST":  # model listings (availability probes) excluded
                counts["requests"] += 1
            return await inner(request)  # type: ignore[no-any-return]

        return handle

    ports = dict(item.split("=") for item in arguments.ports.split(","))

    async def main() -> None:
        async with AsyncExitStack() as stack:
            for index, (name, port) in enumerate(ports.items()):
                handler = with_control(OpenAIFlavour(name), arguments.seed + index)
                await stack.enter_async_context(open_fake_server(handler, port=int(port)))
            _ready({name: int(port) for name, port in ports.items()})
            await anyio.sleep_forever()

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


# -- references ---------------------------------------------------------------------------------


def _serve_upstream(arguments: argparse.Namespace) -> None:
    from delos.bench._upstream import serve_upstream

    async def main() -> None:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(serve_upstream(arguments.port, ready))
        _ready({"port": await ready, "pid": os.getpid()})
        await task

    _run_asyncio(main)


def _serve_echo(arguments: argparse.Namespace) -> None:
    from delos.bench._echo import open_echo_server

    async def main() -> None:
        server = await open_echo_server(arguments.port, reuse_port=arguments.reuse_port)
        _ready({"port": arguments.port, "pid": os.getpid()})
        await server.wait_closed()

    _run_asyncio(main)


def _serve_forwarder(arguments: argparse.Namespace) -> None:
    from delos.bench._echo import open_forwarder_server

    async def main() -> None:
        server, _close = await open_forwarder_server(
            arguments.port, arguments.upstream, arguments.client
        )
        _ready({"port": arguments.port, "pid": os.getpid()})
        await server.wait_closed()

    _run_asyncio(main)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m delos.bench.serve")
    roles = parser.add_subparsers(dest="role", required=True)
    gateway = roles.add_parser("gateway", help="the gateway, configured from the environment")
    gateway.add_argument("--port", type=int, required=True)
    gateway.add_argument("--reuse-port", action="store_true")
    gateway.add_argument("--workers", type=int, default=1, help="workers sharing the port")
    gateway.add_argument(
        "--transport",
        choices=("auto", "httpx"),
        default="auto",
        help="DELOS_RUNTIME_HTTP_TRANSPORT: auto (as shipped) or httpx (the fallback)",
    )
    gateway.add_argument("--breaker", help="BreakerConfig fields as a JSON object")
    # Both answer SIGUSR1.
    signalled = gateway.add_mutually_exclusive_group()
    signalled.add_argument("--tracemalloc", help="trace allocations; SIGUSR1 appends a diff here")
    signalled.add_argument(
        "--gc-stats", help="time collections; SIGUSR1 writes the totals here as JSON and resets"
    )
    gateway.add_argument(
        "--gc-default",
        action="store_true",
        help="once serving, undo the gateway's collector tuning (unfreeze, thresholds 700/10/10)",
    )
    fakes = roles.add_parser("fakes", help="delos.testing fakes with a control endpoint")
    fakes.add_argument("--ports", required=True, help="provider=port pairs, comma-separated")
    fakes.add_argument("--seed", type=int, default=1)
    upstream = roles.add_parser("upstream", help="the instant upstream")
    upstream.add_argument("--port", type=int, default=0)
    echo = roles.add_parser("echo", help="a bare grpclib echo server")
    echo.add_argument("--port", type=int, required=True)
    echo.add_argument("--reuse-port", action="store_true")
    forwarder = roles.add_parser("forwarder", help="a minimal grpclib forwarder")
    forwarder.add_argument("--port", type=int, required=True)
    forwarder.add_argument("--upstream", required=True, help="base URL, e.g. http://…/v1")
    forwarder.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    return parser


_ROLES: dict[str, Callable[[argparse.Namespace], None]] = {
    "gateway": _serve_gateway,
    "fakes": _serve_fakes,
    "upstream": _serve_upstream,
    "echo": _serve_echo,
    "forwarder": _serve_forwarder,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        _ROLES[arguments.role](arguments)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
