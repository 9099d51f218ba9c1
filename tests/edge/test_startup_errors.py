"""Start-up problems end with one line naming the variable or address, exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


def _serve(environ: Mapping[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DELOS_")}
    return subprocess.run(
        [sys.executable, "-m", "delos.cli", "serve", *arguments],
        env={**base, "DELOS_RUNTIME_METRICS_PORT": "0", **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_a_tls_certificate_that_does_not_exist(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    result = _serve(
        {"DELOS_RUNTIME_TLS_CERT": str(tmp_path / "nowhere.pem"), "DELOS_RUNTIME_TLS_KEY": str(key)}
    )
    _assert_one_line(result, "DELOS_RUNTIME_TLS_CERT", "nowhere.pem")


def test_a_key_file_without_a_pem_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("not a key\n")
    result = _serve({"DELOS_RUNTIME_TLS_CERT": str(cert), "DELOS_RUNTIME_TLS_KEY": str(key)})
    _assert_one_line(result, "DELOS_RUNTIME_TLS_KEY", "no PEM private key")


def test_malformed_client_keys() -> None:
    result = _serve({"DELOS_RUNTIME_API_KEYS": "no-colon-here"})
    _assert_one_line(result, "DELOS_RUNTIME_API_KEYS", "name:key")


def test_a_missing_client_keys_file(tmp_path: Path) -> None:
    result = _serve({"DELOS_RUNTIME_API_KEYS_FILE": str(tmp_path / "keys.txt")})
    _assert_one_line(result, "DELOS_RUNTIME_API_KEYS_FILE", "keys.txt")


def test_a_missing_catalog_names_its_variable(tmp_path: Path) -> None:
    result = _serve({"DELOS_RUNTIME_CATALOG": str(tmp_path / "catalog.yaml")})
    _assert_one_line(result, "DELOS_RUNTIME_CATALOG", "catalog.yaml")


def test_a_grpc_port_in_use(taken_port: int) -> None:
    result = _serve({}, "--port", str(taken_port), "--workers", "1")
    _assert_one_line(result, "DELOS_RUNTIME_PORT", f"127.0.0.1:{taken_port}")


def test_a_metrics_port_in_use(taken_port: int) -> None:
    result = _serve({"DELOS_RUNTIME_METRICS_PORT": str(taken_port)}, "--port", "0")
    _assert_one_line(result, "DELOS_RUNTIME_METRICS_PORT", f"127.0.0.1:{taken_port}")


def test_with_several_workers_the_parent_reports_once(taken_port: int) -> None:
    result = _serve({}, "--port", str(taken_port), "--workers", "2")
    _assert_one_line(result, "DELOS_RUNTIME_PORT", f"127.0.0.1:{taken_port}")
