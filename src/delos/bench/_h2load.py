"""Load from h2load (nghttp2), an external generator that costs the servers under test nothing.

gRPC over h2load: the request body is a prebuilt gRPC frame (a zero compression flag, a 4-byte
big-endian length, the serialised protobuf), posted with ``content-type: application/grpc``.
h2load judges success by the HTTP status alone; a gRPC error still answers 200 with the error in
the trailers, so callers check what the upstream served (see the suites) instead of trusting
h2load's count. Per-request durations come from h2load's ``--log-file``.
"""

from __future__ import annotations

import re
import resource
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

__all__ = [
    "H2loadResult",
    "LoadShape",
    "grpc_frame",
    "h2load_available",
    "parse_summary",
    "run_h2load",
]

COMPLETE_PATH = "/delos.runtime.v1.RuntimeService/Complete"


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def grpc_frame(message: Message) -> bytes:
    """A length-prefixed, uncompressed gRPC message."""
    payload = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


@dataclass(frozen=True, slots=True)
class LoadShape:
    """How much load: ``concurrency`` requests in flight, for a duration or a count.

    ``duration`` and ``warmup`` are seconds; when ``requests`` is set the run is count-based.
    """

    concurrency: int
    duration: float = 5.0
    warmup: float = 1.0
    requests: int | None = None

    def connections(self, http1: bool) -> tuple[int, int]:
        """(connections, streams per connection). HTTP/1.1 has one request in flight each."""
        if http1:
            return self.concurrency, 1
        clients = min(self.concurrency, 16)
        return clients, max(1, self.concurrency // clients)


@dataclass(frozen=True, slots=True)
class H2loadResult:
    requests: int
    succeeded: int
    failed: int
    #: Wall time of the measured phase (seconds).
    elapsed: float
    requests_per_second: float
    #: Per-request durations of the measured phase (microseconds).
    durations_us: tuple[int, ...]
    #: CPU time h2load itself used, warm-up included (seconds).
    cpu_seconds: float = 0.0


_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed"
)


def run_h2load(
    url: str,
    body: bytes,
    shape: LoadShape,
    *,
    directory: Path,
    grpc: bool = True,
    headers: tuple[str, ...] = (),
) -> H2loadResult:
    """Run h2load against ``url`` (127.0.0.1 only). Raises RuntimeError if it fails or stalls."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only load 127.0.0.1")
    body_path = directory / "h2load-body.bin"
    body_path.write_bytes(body)
    log_path = directory / "h2load-requests.log"
    log_path.unlink(missing_ok=True)
    clients, streams = shape.connections(http1=not grpc)
    command = ["h2load", "-t", "1", "-c", str(clients), "-m", str(streams), "-d", str(body_path)]
    if grpc:
        command += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    else:
        command += ["--h1", "-H", "content-type: application/json"]
    for header in headers:
        command += ["-H", header]
    if shape.requests is not None:
        command += ["-n", str(max(shape.requests, clients))]
        bound = 60.0 + shape.requests / 100.0
    else:
        # h2load takes whole units: milliseconds.
        command += ["-D", f"{round(shape.duration * 1000)}ms"]
        if shape.warmup > 0:
            command += ["--warm-up-time", f"{round(shape.warmup * 1000)}ms"]
        bound = shape.duration + shape.warmup + 60.0
    command += ["--log-file", str(log_path), url]
    before = _children_cpu()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=bound)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"h2load did not finish within {bound:.0f} s") from error
    cpu_seconds = _children_cpu() - before  # the only child reaped meanwhile is h2load
    counts = parse_summary(completed.stdout)
    if completed.returncode != 0 or counts is None:
        raise RuntimeError(
            f"h2load failed ({completed.returncode}): {completed.stdout}{completed.stderr}"
        )
    requests, succeeded, failed, rate = counts
    # h2load's "finished in" includes the warm-up; its rate covers the measured phase only.
    elapsed = requests / rate if rate else 0.0
    durations = _durations(log_path)
    return H2loadResult(
        requests=requests,
        succeeded=succeeded,
        failed=failed,
        elapsed=elapsed,
        requests_per_second=rate,
        durations_us=durations,
        cpu_seconds=cpu_seconds,
    )


def _children_cpu() -> float:
    """User and system CPU of every child process reaped so far (seconds)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def parse_summary(output: str) -> tuple[int, int, int, float] | None:
    """(requests done, succeeded, failed, requests per second) from h2load's summary."""
    finished = _FINISHED.search(output)
    counts = _REQUESTS.search(output)
    if finished is None or counts is None:
        return None
    return (
        int(counts.group(3)),
        int(counts.group(4)),
        int(counts.group(5)),
        float(finished.group(3)),
    )


def _durations(log_path: Path) -> tuple[int, ...]:
    values = []
    try:
        with open(log_path) as log:
            for line in log:
                fields = line.split("\t")
                if len(fields) >= 3 and fields[1].startswith("2"):
                    values.append(int(fields[2]))
    except FileNotFoundError:
        return ()
    return tuple(values)
