"""A real ``redis-server`` per test, on a free loopback port, started and stopped by PID.

Nothing here mocks Redis: Lua, ``TIME``, expiry and hash tags are what is under test. The
tests skip, saying why, only when ``redis-server`` is not installed (``.ci/run`` installs it).
The ``redis_server`` fixture (tests/conftest.py) serves every test package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    """A free loopback port whose cluster-bus twin (port + 10000) is a valid port too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + 10000 <= 65535:
            return port


class RedisServer:
    """One ``redis-server`` process: no persistence, foreground, loopback only."""

    def __init__(self, directory: Path, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self._directory = directory
        self._extra = extra
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        assert REDIS_SERVER is not None
        # (A free port found by bind-and-close could in principle be taken again before
        # redis-server binds it; the readiness check below would then fail loudly.)
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self._directory),
                "--loglevel", "warning",
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.005)  # readiness polling, not a wait for behaviour

    def command(self, *words: str) -> bytes:
        """One command over a raw socket (inline protocol): set-up and checks, out of band."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(65536)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to clients."""
        assert self._process is not None
        self._process.kill()
        self._process.wait()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (the "slow Redis" case)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._process is None:
            return
        os.kill(self.pid, signal.SIGCONT)
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def serve_redis(directory: Path, *extra: str) -> Iterator[RedisServer]:
    """A started server for a fixture to yield from; skips when redis-server is missing."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(directory, *extra)
    try:
        yield server
    finally:
        server.stop()
