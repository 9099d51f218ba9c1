"""The generated protobuf, grpclib and mypy files match proto/ (``just proto`` rebuilds them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("runtime_pb2.py", "runtime_grpc.py", "runtime_pb2.pyi")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "proto"),
            f"--python_out={tmp_path}",
            f"--grpclib_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            "delos/runtime/v1/runtime.proto",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "delos/runtime/v1" / name).read_text()
        committed = (ROOT / "src/delos/runtime/v1" / name).read_text()
        assert fresh == committed, f"src/delos/runtime/v1/{name} is stale: run `just proto`"
