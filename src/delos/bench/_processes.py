"""The processes a benchmark owns: started, read from ``/proc``, and always stopped by PID.

A :class:`ProcessSet` is a context manager: every process started through it is terminated
(SIGTERM, then SIGKILL) when the block ends, whether the benchmark finished or failed. Nothing
else is ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from delos.bench._pinning import pinned_command

__all__ = ["Child", "ProcessSet", "free_port", "gateway_environment"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gateway_environment(**values: str) -> dict[str, str]:
    """This process's environment without any gateway or cloud setting, plus ``values``."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("DELOS_", "AWS_", "GOOGLE_"))
    }
    environ.update(
        {
            "DELOS_LOG_LEVEL": "warning",
            "DELOS_RUNTIME_METRICS_PORT": "0",
            "DELOS_RUNTIME_HOST": "127.0.0.1",
        }
    )
    environ.update(values)
    return environ


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: The port it listens on, when chosen before it started.
    port: int = 0
    info: Any = None
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (seconds, 10 ms resolution)."""
        with open(f"/proc/{self.pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # Fields 14 and 15 of proc(5) (utime, stime), counted after the command name.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        """Resident set size (bytes)."""
        with open(f"/proc/{self.pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessSet:
    """Owns child processes; stops all of them on exit."""

    def __init__(self) -> None:
        self._children: list[Child] = []
        self._directory = tempfile.TemporaryDirectory(prefix="delos-bench-")

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()
        self._directory.cleanup()

    @property
    def directory(self) -> Path:
        return Path(self._directory.name)

    def start(
        self,
        name: str,
        arguments: Sequence[str],
        *,
        environ: Mapping[str, str] | None = None,
        python_module: bool = True,
        port: int = 0,
        cores: Sequence[int] = (),
    ) -> Child:
        """Start ``python -m delos.bench.serve ARGUMENTS`` (or a command) without waiting.

        ``cores``: the cores it may run on, from its first instruction (empty: those of this
        process).
        """
        command = (
            [sys.executable, "-m", "delos.bench.serve", *arguments]
            if python_module
            else list(arguments)
        )
        log_path = self.directory / f"{name}-{len(self._children)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                pinned_command(command, cores),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(environ) if environ is not None else None,
            )
        child = Child(name, process, log_path, port)
        self._children.append(child)
        return child

    def wait_ready(self, children: Sequence[Child], timeout: float = 60.0) -> None:
        """Wait for each child's ``READY <json>`` line. Raises RuntimeError with its log."""
        deadline = time.monotonic() + timeout
        for child in children:
            if child.ready:
                continue
            assert child.process.stdout is not None
            os.set_blocking(child.process.stdout.fileno(), True)
            line = _read_line(child, deadline)
            if not line.startswith(b"READY "):
                raise RuntimeError(
                    f"{child.name} did not start (exit code {child.process.poll()}):\n"
                    f"{child.log_tail()}"
                )
            child.info = json.loads(line[6:])
            child.ready = True

    def wait_all_ready(self, timeout: float = 60.0) -> None:
        self.wait_ready(list(self._children), timeout)

    def stop(self, child: Child) -> None:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
        if child.process.stdout is not None:
            child.process.stdout.close()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in list(reversed(self._children)):
            self.stop(child)


def _read_line(child: Child, deadline: float) -> bytes:
    """The first line the child prints, or what it printed before exiting or the deadline."""
    stdout = child.process.stdout
    assert stdout is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buffer and time.monotonic() < deadline:
            if not selector.select(timeout=min(deadline - time.monotonic(), 0.5)):
                if child.process.poll() is not None:
                    break  # exited without a line; its log says why
                continue
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
    return buffer.split(b"\n", 1)[0]
