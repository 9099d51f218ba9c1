"""Where the gateway's CPU goes: py-spy samples of the gateway process, summarised by self time.

py-spy attaches to the running process by PID (no code change, ``--nonblocking`` so the process is
not paused), records collapsed stacks while the load runs, and the leaf frame of each sample is the
function that was running. A function's share of the samples times the CPU time per request
measured without the profiler gives its self time per request.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from delos.bench._results import Table

__all__ = ["Profile", "profile_table", "py_spy_available", "record_profile"]

_LINE_NUMBER = re.compile(r":\d+\)$")


def py_spy_available() -> bool:
    return shutil.which("py-spy") is not None


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    #: Function (with its file) → samples in which it was the running frame.
    self_samples: dict[str, int]
    #: Function → samples in which it was anywhere on the stack.
    total_samples: dict[str, int]


def start_recording(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` for ``seconds``; wait for it with :func:`finish_recording`."""
    command = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "400",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_recording(process: subprocess.Popen[bytes], output: Path, timeout: float) -> Profile:
    """Wait for py-spy and read its collapsed stacks. Raises RuntimeError if it failed."""
    try:
        _, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("py-spy did not finish") from None
    if not output.exists():
        raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
    return _parse(output.read_text())


def record_profile(pid: int, seconds: float, output: Path) -> Profile:
    process = start_recording(pid, seconds, output)
    return finish_recording(process, output, timeout=seconds + 30)


def _short(frame: str) -> str:
    """``send_message (grpclib/server.py)``: the function and the tail of its file path."""
    frame = _LINE_NUMBER.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def _parse(text: str) -> Profile:
    self_samples: collections.Counter[str] = collections.Counter()
    total_samples: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            total_samples[frame] += count
    return Profile(samples, dict(self_samples), dict(total_samples))


def profile_table(
    profile: Profile, *, cpu_per_unit_us: float, unit: str, title: str, top: int = 15
) -> Table:
    """The ``top`` functions by self time, in µs per ``unit`` (request or chunk)."""
    rows = []
    ranked = sorted(profile.self_samples.items(), key=lambda item: -item[1])[:top]
    for function, count in ranked:
        share = count / profile.samples if profile.samples else 0.0
        inclusive = profile.total_samples.get(function, 0) / max(profile.samples, 1)
        rows.append(
            (
                f"`{function}`",
                f"{share * 100:.1f}%",
                f"{share * cpu_per_unit_us:.1f}",
                f"{inclusive * 100:.0f}%",
            )
        )
    return Table(
        title,
        ("function (self time)", "share of samples", f"µs per {unit}", "on stack"),
        tuple(rows),
        note=f"{profile.samples} samples; µs per {unit} = share × measured CPU per {unit} "
        f"({cpu_per_unit_us:.0f} µs, measured without the profiler).",
    )
