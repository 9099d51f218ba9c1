"""``redis-server`` as a child process of the benchmark, on a fixed loopback port.

The port is chosen once, so a Redis killed mid-run (SIGKILL, as a crash) comes back where the
gateways expect it. It is paused and resumed by signals to its PID (SIGSTOP, SIGCONT) and read
with one-line inline commands, so the benchmark needs no Redis client of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

from delos.bench._processes import Child, ProcessSet, free_port

__all__ = ["REPLICAS_KEY", "RedisChild"]

#: The sorted set where every gateway replica sharing state records its heartbeat.
REPLICAS_KEY = "delos:v1:replicas"


class RedisChild:
    """A started ``redis-server``. Raises RuntimeError when it is not installed or won't start."""

    def __init__(self, processes: ProcessSet) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install -y redis-server): the scale-out "
                "suite runs its replicas on a real Redis"
            )
        self._executable = executable
        self._processes = processes
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: Child | None = None
        self.start()

    def start(self) -> None:
        """Start it (again), empty, and wait until it answers PING."""
        arguments = [self._executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        arguments += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
        self.child = self._processes.start("redis", arguments, python_module=False)
        deadline = time.monotonic() + 10
        while not self.command("PING").startswith(b"+PONG"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.child.log_tail()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        assert self.child is not None
        os.kill(self.child.pid, signal.SIGKILL)
        self._processes.stop(self.child)
        self.child = None

    def signal(self, number: signal.Signals) -> None:
        assert self.child is not None
        os.kill(self.child.pid, number)

    def command(self, *words: str) -> bytes:
        """One command in the inline protocol; b"" when Redis does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(65536)
        except OSError:
            return b""

    def round_trips(self) -> int:
        """Scripts run so far: every call the limiter, breakers and heartbeats make is one
        (``INFO commandstats`` also counts the commands each script runs inside)."""
        total = 0
        for line in self.command("INFO", "commandstats").decode().splitlines():
            name, _, rest = line.partition(":")
            if name in ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval"):
                total += int(rest.split(",")[0].removeprefix("calls="))
        return total

    def live_replicas(self) -> int:
        reply = self.command("ZCARD", REPLICAS_KEY)
        return int(reply[1:]) if reply.startswith(b":") else 0
