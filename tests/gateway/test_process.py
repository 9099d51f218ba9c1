"""The `delos-runtime` process: start-up errors, and SIGTERM draining in-flight work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib.client import Channel
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub
from delos.testing import Behaviour, FakeControl, Latency, open_fake_server
from delos.testing.fake_openai import fake_openai_handler

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gateway_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DELOS_", "AWS_", "GOOGLE_"))}
    env.update(extra)
    return env


def test_an_invalid_variable_stops_start_up_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "delos.cli", "serve", "--workers", "1"],
        env=gateway_env(DELOS_RUNTIME_PORT="ninety", DELOS_RUNTIME_OPENAI_KEY="sk-secret-123456"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DELOS_RUNTIME_PORT" in result.stderr
    assert "sk-secret-123456" not in result.stderr + result.stdout


def test_a_malformed_catalog_stops_start_up_saying_where(tmp_path: Path) -> None:
    catalog = tmp_path / "prices.yaml"
    catalog.write_text(
        "providers:\n  openai:\n    models:\n      - {id: gpt-4o, input_per_1k: x}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "delos.cli", "serve", "--workers", "1"],
        env=gateway_env(DELOS_RUNTIME_CATALOG=str(catalog)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "prices.yaml" in result.stderr and "input_per_1k" in result.stderr


async def test_sigterm_lets_an_in_flight_stream_complete_then_exits_zero() -> None:
    control = FakeControl(
        behaviour=Behaviour(
            tokens_per_second=20.0, completion_tokens=20, time_to_first_token=Latency(base=0.0)
        )
    )
    async with open_fake_server(fake_openai_handler(control)) as fake:
        port = free_port()
        process = await anyio.open_process(
            [sys.executable, "-m", "delos.cli", "serve", "--workers", "1"],
            env=gateway_env(
                DELOS_RUNTIME_PORT=str(port),
                DELOS_RUNTIME_OPENAI_KEY="sk-test",
                DELOS_RUNTIME_OPENAI_BASE_URL=fake.url + "/v1",
                DELOS_RUNTIME_METRICS_PORT="0",
            ),
        )
        try:
            with anyio.fail_after(60):
                channel = await _connect(port)
            stub = RuntimeServiceStub(channel)
            chunks: list[pb.StreamChunk] = []
            with anyio.fail_after(30):
                async with stub.CompleteStream.open() as stream:
                    await stream.send_message(
                        pb.CompleteRequest(
                            params=pb.CompletionParams(
                                messages=[pb.Message(role="user", content="tell me")],
                                provider="openai",
                            )
                        ),
                        end=True,
                    )
                    async for chunk in stream:
                        chunks.append(chunk)
                        if len(chunks) == 2:
                            process.send_signal(signal.SIGTERM)
                code = await process.wait()
            channel.close()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    assert chunks[-1].finish_reason == "stop"
    assert len(chunks) == 21  # every delta, then the summary: the drain let it finish


async def _connect(port: int) -> Channel:
    while True:
        channel = Channel("127.0.0.1", port)
        try:
            await RuntimeServiceStub(channel).Health(pb.HealthRequest(), timeout=1)
            return channel
        except (ConnectionRefusedError, OSError, TimeoutError):
            channel.close()
            await anyio.sleep(0.1)


# -- several workers: one metrics endpoint for the host ---------------------------------------


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets in /proc")
async def test_workers_are_scraped_summed_on_one_endpoint_without_ports_of_their_own(
    tmp_path: Path,
) -> None:
    port, metrics_port = free_port(), free_port()
    requests = 16
    command = [sys.executable, "-m", "delos.cli", "serve", "--workers", "2", "--demo"]
    with (tmp_path / "gateway.log").open("wb") as log:
        process = await anyio.open_process(
            [*command, "--port", str(port)],
            # TMPDIR: the workers' metrics directory is created here, so the test can read it.
            env=gateway_env(DELOS_RUNTIME_METRICS_PORT=str(metrics_port), TMPDIR=str(tmp_path)),
            stdout=log,
            stderr=log,
        )
    try:
        with anyio.fail_after(60):
            workers = await _wait_for_listening_children(process.pid, port, count=2)
        # A connection per request: SO_REUSEPORT spreads connections, not calls, over workers.
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for _ in range(requests):
                    tasks.start_soon(_complete_on_a_new_connection, port)
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        directory = _metrics_directory(tmp_path)
        per_worker = _completes_per_worker(directory)
        worker_ports = _listening_ports(workers)
        parent_ports = _listening_ports([process.pid])
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, (tmp_path / "gateway.log").read_text()
    assert scrape.status_code == 200
    assert _completes(scrape.text) == requests
    assert sorted(per_worker) == sorted(str(pid) for pid in workers)
    assert all(count > 0 for count in per_worker.values()), per_worker  # both served some
    assert worker_ports == {port}  # no per-worker metrics port
    assert metrics_port in parent_ports
    assert not directory.exists()  # removed at exit


async def _complete_on_a_new_connection(port: int) -> None:
    channel = Channel("127.0.0.1", port)
    try:
        request = pb.CompleteRequest(
            params=pb.CompletionParams(
                messages=[pb.Message(role="user", content="hello")], provider="openai"
            )
        )
        await RuntimeServiceStub(channel).Complete(request)
    finally:
        channel.close()


def _completes(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "delos_requests_total" and sample.labels["rpc"] == "Complete"
    )


def _metrics_directory(parent: Path) -> Path:
    (directory,) = parent.glob("delos-metrics-*")
    return directory


def _completes_per_worker(directory: Path) -> dict[str, float]:
    """Complete calls recorded by each worker (its pid), read from its own counter file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(path)])
        counts[path.stem.removeprefix("counter_")] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "delos_requests_total" and sample.labels["rpc"] == "Complete"
        )
    return counts


async def _wait_for_listening_children(parent: int, port: int, *, count: int) -> list[int]:
    """The children of ``parent`` listening on ``port``, once ``count`` of them do."""
    while True:
        listening = [pid for pid in _children(parent) if port in _listening_ports([pid])]
        if len(listening) >= count:
            return listening
        await anyio.sleep(0.1)  # polling other processes' start-up: no event to wait on


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports the processes ``pids`` listen on (from their socket inodes in /proc)."""
    inodes = set()
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports
