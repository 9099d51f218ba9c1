"""``--workers N``: N processes serving one port through SO_REUSEPORT, shut down together.

Each worker is a full gateway with its own state: rate limiters, breakers, latency table and
response cache are per process (documented in the README). Configured RPM/TPM limits are split
across workers (see :meth:`ProviderLimiter.for_worker_share`) so that N workers together never
exceed a provider's limit. The parent only supervises: it forwards SIGTERM/SIGINT and exits 0 once
every worker drained and exited 0.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess
from types import FrameType

from pydantic import SecretStr

from delos.runtime.config import Settings
from delos.runtime.observability import configure_logging
from delos.runtime.redaction import Redactor

__all__ = ["default_worker_count", "run_workers"]

log = logging.getLogger("delos.runtime.grpc.workers")


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
    """Run ``workers`` gateway processes on one port until a signal; the exit status."""
    context = multiprocessing.get_context("spawn")
    # Secrets travel to the children through a pipe (the pickled arguments), not the command line.
    settings_json = _settings_json(settings)
    processes: list[BaseProcess] = []
    for index in range(workers):
        process: BaseProcess = context.Process(
            target=_worker_main,
            args=(settings_json, workers, index),
            daemon=False,
        )
        process.start()
        processes.append(process)
    log.info("started %d workers on %s:%d", workers, settings.host, settings.port)
    stopping = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(p.is_alive() for p in processes):
        for process in processes:
            process.join(timeout=0.5)
        if not stopping.is_set() and any(p.exitcode not in (None, 0) for p in processes):
            log.error("a worker exited unexpectedly; stopping the others")
            forward(signal.SIGTERM, None)
    codes = [p.exitcode for p in processes]
    return 0 if all(code == 0 for code in codes) else 1


def _settings_json(settings: Settings) -> str:
    """The settings with secrets revealed, for the children only (never logged)."""
    data = settings.model_dump(mode="json")
    for name in data:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data)
