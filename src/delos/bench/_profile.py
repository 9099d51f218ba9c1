"""Where the gateway's CPU goes: py-spy samples of the gateway process, summarised by self time.

py-spy attaches to the running process by PID (no code change, ``--nonblocking`` so the process is
not paused), records collapsed stacks (``--format raw``) while the load runs, and the leaf frame
of each sample is the function that was running. A function's share of the samples times the
CPU time per request measured without the profiler gives its self time per request; the same
for each layer of the stack (:mod:`delos.bench._layers`).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from delos.bench._layers import LAYERS, frame_path, layer_of
from delos.bench._report import render_table
from delos.bench._results import Table

__all__ = [
    "Profile",
    "layer_table",
    "parse_collapsed",
    "profile_summary",
    "profile_table",
    "py_spy_available",
    "record_during",
]

_LINE_NUMBER = re.compile(r":\d+\)$")
#: What a file's path is shortened after, in this order: an installed package, the gateway's
#: source checkout, the standard library.
_PATH_PREFIXES = tuple(
    re.compile(pattern)
    for pattern in (r"^.*/site-packages/", r"^.*/src/", r"^.*/lib/python3\.\d+/")
)
#: Samples a second: enough for a stable top 15 in a few seconds, little enough not to slow the
#: process (py-spy reads its memory from outside, on another core).
_RATE = 400


def py_spy_available() -> bool:
    return shutil.which("py-spy") is not None


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    #: Function (with its file) → samples in which it was the running frame.
    self_samples: dict[str, int]
    #: Function → samples in which it was anywhere on the stack.
    total_samples: dict[str, int]
    #: Layer of the stack (:data:`delos.bench._layers.LAYERS`) → samples of its running frames.
    layer_samples: dict[str, int]


def record_during(pid: int, seconds: float, output: Path, load: Callable[[], None]) -> Profile:
    """Profile ``pid`` for ``seconds`` while ``load()`` runs (it should last a little longer).

    Raises RuntimeError when py-spy fails or does not finish.
    """
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(_RATE), "--nonblocking", "--full-filenames", "--format", "raw"]
    command += ["--output", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        load()
        _, errors = process.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError("py-spy did not finish") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if not output.exists():
        raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
    return parse_collapsed(output.read_text())


def _short(frame: str) -> str:
    """``send_message (grpclib/server.py)``: the function and the tail of its file path."""
    frame = _LINE_NUMBER.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in _PATH_PREFIXES:
        if prefix.match(where):
            where = prefix.sub("", where, count=1)
            break
    return f"{name} ({where})" if where else name


def parse_collapsed(text: str) -> Profile:
    """Read py-spy's raw output: one ``frame;frame;... count`` line per distinct stack."""
    self_samples: collections.Counter[str] = collections.Counter()
    total_samples: collections.Counter[str] = collections.Counter()
    layer_samples: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if f]
        if not raw:
            continue
        frames = [_short(f) for f in raw]
        samples += count
        self_samples[frames[-1]] += count
        layer_samples[layer_of(frame_path(raw[-1]))] += count
        for frame in set(frames):
            total_samples[frame] += count
    return Profile(samples, dict(self_samples), dict(total_samples), dict(layer_samples))


def _note(profile: Profile, cpu_per_unit_us: float, unit: str) -> str:
    return (
        f"{profile.samples} samples; µs per {unit} = share × measured CPU per {unit} "
        f"({cpu_per_unit_us:.0f} µs, measured without the profiler)."
    )


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
        note=_note(profile, cpu_per_unit_us, unit),
    )


def layer_table(profile: Profile, *, cpu_per_unit_us: float, unit: str, title: str) -> Table:
    """Self time by layer of the stack, every layer listed (in :data:`LAYERS` order)."""
    rows = []
    for layer in LAYERS:
        count = profile.layer_samples.get(layer, 0)
        share = count / profile.samples if profile.samples else 0.0
        rows.append((layer, f"{share * 100:.1f}%", f"{share * cpu_per_unit_us:.1f}"))
    return Table(
        title,
        ("layer (self time)", "share of samples", f"µs per {unit}"),
        tuple(rows),
        note=_note(profile, cpu_per_unit_us, unit),
    )


def profile_summary(profile: Profile, *, cpu_per_unit_us: float, unit: str, what: str) -> str:
    """The layer table and the top 15 functions, as Markdown."""
    layers = layer_table(
        profile, cpu_per_unit_us=cpu_per_unit_us, unit=unit, title=f"Profile by layer: {what}"
    )
    functions = profile_table(
        profile,
        cpu_per_unit_us=cpu_per_unit_us,
        unit=unit,
        title=f"Profile, top 15 functions by self time: {what}",
    )
    return render_table(layers) + "\n\n" + render_table(functions)
