"""Suite ``peers`` (``just bench peers``): other gateways on the same upstream, same load.

LiteLLM's proxy (PyPI ``litellm[proxy]``) and Portkey's gateway (npm ``@portkey-ai/gateway``) are
installed into their own environments under the cache directory, started in their own processes
in front of the instant upstream, and loaded over HTTP/1.1 by h2load like the direct baseline.
One gateway worker is measured in the same run, pinned to the same core as each peer (their API
is HTTP/JSON, ours gRPC: the comparison is of what each adds on top of the same upstream). A peer
that does not install or start is reported so, with the reason, and its target is not judged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from delos.bench._context import BenchContext
from delos.bench._h2load import LoadShape, run_h2load
from delos.bench._measure import (
    COLUMNS,
    DIRECT_BODY,
    Measurement,
    check_gateway,
    latency_percentiles,
    measure_direct,
    measure_grpc,
    measurement_row,
)
from delos.bench._processes import Child, free_port
from delos.bench._results import SuiteResult, Table
from delos.bench._servers import upstream, upstream_gateway
from delos.bench._targets import peers_target

__all__ = ["PEERS", "declare_peers", "run_peers"]

_CONCURRENCIES = (1, 16)
_LITELLM = "LiteLLM proxy"
_PORTKEY = "Portkey gateway"
_GATEWAY = "Delos gateway, 1 worker, as shipped"
#: The proxy refuses to start without a master key; this one guards a loopback-only process.
_LITELLM_KEY = "sk-delos-bench-4f1c2b7e9a0d"


def declare_peers(context: BenchContext) -> None:
    upstream(context)
    upstream_gateway(context)


def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its descendants (peers may fork workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        members.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in members)


class _Tree:
    def __init__(self, child: Child) -> None:
        self.child = child

    def cpu_seconds(self) -> float:
        return _tree_cpu_seconds(self.child.pid)


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"exited with {child.process.returncode}: {child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"not answering {url} after {timeout:.0f} s: {child.log_tail()}")


def _install(command: list[str], what: str, timeout: float, cwd: Path | None = None) -> None:
    """Run an installer; RuntimeError saying why ``what`` could not be installed."""
    try:
        subprocess.run(command, cwd=cwd, check=True, timeout=timeout, capture_output=True)
    except FileNotFoundError:
        raise RuntimeError(f"{what} could not be installed: `{command[0]}` is missing") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not install within {timeout:.0f} s") from None
    except subprocess.CalledProcessError as error:
        output = (error.stderr or error.stdout or b"").decode(errors="replace").strip()
        raise RuntimeError(
            f"{what} could not be installed (`{' '.join(command[:4])} …` exited "
            f"{error.returncode}): {output[-400:]}"
        ) from None


def _install_litellm(cache: Path) -> Path:
    venv = cache / "litellm-venv"
    litellm = venv / "bin" / "litellm"
    if not litellm.exists():
        _install([sys.executable, "-m", "venv", str(venv)], "a virtual environment", 300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "litellm[proxy]"]
        _install(pip, "LiteLLM's proxy (PyPI `litellm[proxy]`)", 1200)
    return litellm


def _start_litellm(context: BenchContext, base_url: str) -> tuple[Child, str, tuple[str, ...]]:
    litellm = _install_litellm(context.cache_dir)
    config = context.processes.directory / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        f"      api_base: {base_url}\n"
        "      api_key: bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {_LITELLM_KEY}\n"
    )
    port = free_port()
    environ = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    command = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    child = context.processes.start(
        "litellm", command, environ=environ, python_module=False, cores=context.pinning.server
    )
    _wait_http(f"http://127.0.0.1:{port}/health/liveliness", child, timeout=180)
    headers = (f"authorization: Bearer {_LITELLM_KEY}",)
    return child, f"http://127.0.0.1:{port}/v1/chat/completions", headers


def _start_portkey(context: BenchContext, base_url: str) -> tuple[Child, str, tuple[str, ...]]:
    directory = context.cache_dir / "portkey"
    script = directory / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        directory.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "@portkey-ai/gateway"]
        _install(npm, "Portkey's gateway (npm `@portkey-ai/gateway`)", 600, cwd=directory)
    if not script.exists():
        raise RuntimeError(f"Portkey's gateway installed without {script.name}: its layout changed")
    port = free_port()
    command = ["node", str(script), f"--port={port}"]
    child = context.processes.start(
        "portkey", command, python_module=False, cores=context.pinning.server
    )
    _wait_http(f"http://127.0.0.1:{port}/", child, timeout=60)
    headers = (
        "authorization: Bearer bench",
        "x-portkey-provider: openai",
        f"x-portkey-custom-host: {base_url}",
    )
    return child, f"http://127.0.0.1:{port}/v1/chat/completions", headers


Starter = Callable[[BenchContext, str], tuple[Child, str, tuple[str, ...]]]
PEERS: dict[str, Starter] = {_LITELLM: _start_litellm, _PORTKEY: _start_portkey}


def _measure_peer(
    context: BenchContext, label: str, url: str, headers: tuple[str, ...], cpu: _Tree, c: int
) -> Measurement:
    directory = context.processes.directory
    sizes = context.sizes
    warm = LoadShape(c, duration=sizes.warmup_seconds, warmup=0.0)
    run_h2load(url, DIRECT_BODY, warm, directory=directory, grpc=False, headers=headers)
    before = cpu.cpu_seconds()
    shape = LoadShape(c, duration=sizes.load_seconds, warmup=0.0)
    result = run_h2load(url, DIRECT_BODY, shape, directory=directory, grpc=False, headers=headers)
    spent = cpu.cpu_seconds() - before

    return Measurement(
        label,
        c,
        result.requests,
        result.requests_per_second,
        latency_percentiles(result.durations_us),
        spent / max(result.requests, 1) * 1e6,
        result.failed,
    )


def run_peers(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_peers(context)
    context.wait_ready()
    source = upstream(context)
    gateway = upstream_gateway(context)
    check_gateway(gateway, "the gateway")
    base_url = f"http://127.0.0.1:{source.port}/v1"
    directs = {c: measure_direct(context, source, c) for c in _CONCURRENCIES}
    rows = [measurement_row(directs[c], directs[c]) for c in _CONCURRENCIES]
    ours = {
        c: measure_grpc(context, _GATEWAY, gateway.port, gateway, c, upstream=source)
        for c in _CONCURRENCIES
    }
    rows += [measurement_row(ours[c], directs[c]) for c in _CONCURRENCIES]
    notes = []
    measured: dict[tuple[str, int], Measurement] = {}
    why_not: dict[str, str] = {}
    for name, start in PEERS.items():
        try:
            child, url, headers = start(context, base_url)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            why_not[name] = f"{name} not measured: {str(error)[-400:]}"
            notes.append(f"**{why_not[name]}**")
            continue
        for concurrency in _CONCURRENCIES:
            try:
                m = _measure_peer(context, name, url, headers, _Tree(child), concurrency)
            except RuntimeError as error:
                why_not.setdefault(name, f"{name} failed at concurrency {concurrency}")
                notes.append(f"**{name} at concurrency {concurrency} failed:** {error}")
                continue
            measured[(name, concurrency)] = m
            rows.append(measurement_row(m, directs[concurrency]))
        context.processes.stop(child)
    target = peers_target(ours[16], measured.get((_PORTKEY, 16)), why_not.get(_PORTKEY, ""))
    return SuiteResult(
        name="peers",
        title="Peers: other gateways on the same upstream",
        method=(
            "Each peer runs in its own process (LiteLLM's proxy in its own virtual environment, "
            "Portkey's gateway under Node.js) in front of the instant upstream; h2load posts the "
            "OpenAI chat request over HTTP/1.1. One worker of our gateway, as shipped, is "
            "measured in the same run over gRPC (h2load with a prebuilt frame). `added` is "
            "against the upstream called directly; CPU is each server's whole process tree. "
            f"{context.pinning.describe()} Each peer's process tree is pinned to the same core "
            "as our gateway."
        ),
        tables=(Table("Peers", COLUMNS, tuple(rows)),),
        targets=(target,),
        notes=tuple(notes),
        seconds=time.monotonic() - started,
    )
