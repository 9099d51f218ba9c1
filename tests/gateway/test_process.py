"""The `delos-runtime` process: start-up errors, and SIGTERM draining in-flight work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel

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
