"""``--workers N``: N processes serving one port through SO_REUSEPORT, shut down together.

Each worker is a full gateway with its own state: rate limiters, breakers, latency table and
response cache are per process (documented in the README). Configured RPM/TPM limits are split
across workers (see :meth:`ProviderLimiter.for_worker_share`) so that N workers together never
exceed a provider's limit. The parent supervises: it forwards SIGTERM/SIGINT, exits 0 once every
worker drained and exited 0, and serves the one Prometheus endpoint of the host, summing what
the workers write to a shared directory (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Final

import anyio.from_thread
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from pydantic import SecretStr

from delos.runtime.config import ConfigError, Settings
from delos.runtime.observability import configure_logging, serve_metrics
from delos.runtime.redaction import Redactor

__all__ = ["default_worker_count", "run_workers"]

log = logging.getLogger("delos.runtime.grpc.workers")

# prometheus_client picks its value store when it is imported, from this variable: a worker must
# find it in its environment at exec, before it imports anything (the spawn start method
# re-imports our modules before the target runs).
_MULTIPROCESS_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def default_worker_count() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _worker_main(settings_json: str, workers: int, index: int) -> None:
    import anyio

    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.env, Redactor(settings.secrets()))
    options = {"use_uvloop": True} if _has_uvloop() else {}
    try:
        anyio.run(_serve, settings, workers, index, backend="asyncio", backend_options=options)
    except KeyboardInterrupt:
        pass


async def _serve(settings: Settings, workers: int, index: int) -> None:
    from delos.runtime.grpc.server import serve_until_signalled

    await serve_until_signalled(settings, reuse_port=True, workers=workers, worker_index=index)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_workers(settings: Settings, workers: int) -> int:
    """Run ``workers`` gateway processes on one port until a signal; the exit status.

    Raises :class:`ConfigError` when the metrics port cannot be bound (before any worker starts).
    """
    with _open_metrics_endpoint(settings) as directory:
        return _supervise(settings, workers, directory)


def _supervise(settings: Settings, workers: int, metrics_directory: str | None) -> int:
    context = multiprocessing.get_context("spawn")
    if metrics_directory is not None:
        # The parent serves the endpoint; the workers only record, to the shared directory.
        settings = settings.model_copy(update={"metrics_port": 0})
    processes = _start_workers(context, settings, workers, metrics_directory)
    log.info("started %d workers on %s:%d", workers, settings.host, settings.port)
    stopping = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    forgotten: set[int] = set()
    while any(p.is_alive() for p in processes):
        for process in processes:
            process.join(timeout=0.5)
        if metrics_directory is not None:
            _forget_exited(processes, metrics_directory, forgotten)
        if not stopping.is_set() and any(p.exitcode not in (None, 0) for p in processes):
            log.error("a worker exited unexpectedly; stopping the others")
            forward(signal.SIGTERM, None)
    codes = [p.exitcode for p in processes]
    return 0 if all(code == 0 for code in codes) else 1


def _start_workers(
    context: SpawnContext, settings: Settings, workers: int, metrics_directory: str | None
) -> list[BaseProcess]:
    # Secrets travel to the children through a pipe (the pickled arguments), not the command line.
    settings_json = _settings_json(settings)
    saved = os.environ.get(_MULTIPROCESS_VARIABLE)
    if metrics_directory is not None:
        os.environ[_MULTIPROCESS_VARIABLE] = metrics_directory  # inherited by each exec
    try:
        processes: list[BaseProcess] = []
        for index in range(workers):
            process: BaseProcess = context.Process(
                target=_worker_main,
                args=(settings_json, workers, index),
                daemon=False,
            )
            process.start()
            processes.append(process)
        return processes
    finally:
        if saved is None:
            os.environ.pop(_MULTIPROCESS_VARIABLE, None)
        else:
            os.environ[_MULTIPROCESS_VARIABLE] = saved


# -- the host's one metrics endpoint --------------------------------------------------------------


class _EveryWorker:
    """The metrics of every worker, summed from the files they write to one directory."""

    def __init__(self, directory: str) -> None:
        # A registry holding the collector alone: a metric also registered here would be
        # exported twice (a caveat of prometheus_client's multiprocess mode).
        self._registry = CollectorRegistry(auto_describe=False)
        # prometheus_client leaves its multiprocess helpers unannotated.
        MultiProcessCollector(self._registry, path=directory)  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        return generate_latest(self._registry)


@contextmanager
def _open_metrics_endpoint(settings: Settings) -> Iterator[str | None]:
    """A fresh directory for the workers' metrics, served summed on ``settings.metrics_port``
    from a background event loop for the block; None (and no endpoint) when metrics are off.

    Raises :class:`ConfigError` naming ``DELOS_RUNTIME_METRICS_PORT`` when it cannot be bound.
    """
    if not settings.metrics_port:
        yield None
        return
    # A new directory each run is empty: files left by an earlier run would be counted again.
    directory = tempfile.mkdtemp(prefix="delos-metrics-")
    try:
        with anyio.from_thread.start_blocking_portal() as portal:
            try:
                endpoint, _ = portal.start_task(
                    serve_metrics, _EveryWorker(directory), settings.host, settings.metrics_port
                )
            except OSError as error:
                raise ConfigError(
                    f"DELOS_RUNTIME_METRICS_PORT: cannot listen on {settings.host}:"
                    f"{settings.metrics_port} ({error.strerror or error})"
                ) from None
            try:
                yield directory
            finally:
                endpoint.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _forget_exited(processes: list[BaseProcess], directory: str, forgotten: set[int]) -> None:
    """Drop the live gauges (requests in flight, connection waiters, breaker states) of workers
    that exited; their counters and histograms stay, so totals never go down."""
    for process in processes:
        pid = process.pid
        if process.exitcode is not None and pid is not None and pid not in forgotten:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            forgotten.add(pid)


def _settings_json(settings: Settings) -> str:
    """The settings with secrets revealed, for the children only (never logged)."""
    data = settings.model_dump(mode="json")
    for name in data:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data)
