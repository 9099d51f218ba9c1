"""The benchmark's pure pieces: statistics, verdicts, the report writer, profiles, the upstream."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from delos.bench import SuiteResult, Table, Target, percentile
from delos.bench._h2load import grpc_frame, parse_summary
from delos.bench._pinning import Pinning
from delos.bench._processes import ProcessSet
from delos.bench._profile import parse_collapsed, profile_table
from delos.bench._report import GENERATED_MARKER, render_suite, write_report
from delos.bench._upstream import UpstreamCounters, _Connection
from delos.runtime.v1 import runtime_pb2 as pb


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile([7.0], 0.999) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_a_target_passes_only_on_the_right_side_of_its_limit() -> None:
    assert Target("latency", 0.9, 1.0, "ms").verdict == "PASS"
    assert Target("latency", 1.1, 1.0, "ms").verdict == "MISS"
    assert Target("throughput", 2500.0, 2000.0, "req/s", at_most=False).verdict == "PASS"
    assert Target("throughput", 1500.0, 2000.0, "req/s", at_most=False).verdict == "MISS"
    assert Target("ratio", math.nan, 3.0, "×", at_most=False).verdict == "NOT RUN"


def _result(name: str, cell: str) -> SuiteResult:
    table = Table("numbers", ("what", "value"), (("x", cell),))
    return SuiteResult(name, f"Suite {name}", "How it was measured.", tables=(table,))


def test_rewriting_the_report_keeps_the_intro_and_the_sections_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nWritten by hand.\n")
    facts = {"cores": "2"}
    write_report(path, [_result("a", "1"), _result("b", "2")], command="bench", facts=facts)
    text = write_report(path, [_result("b", "3")], command="bench b", facts=facts, order=["a", "b"])
    assert text.startswith("# Benchmarks\n\nWritten by hand.\n")
    assert text.count(GENERATED_MARKER) == 1
    assert "| x | 1 |" in text  # suite a kept
    assert "| x | 3 |" in text and "| x | 2 |" not in text  # suite b replaced
    assert text.index("Suite a") < text.index("Suite b")


def test_the_summary_gathers_the_targets_of_every_section_kept_or_new(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    facts = {"cores": "2"}
    fast = SuiteResult("a", "Suite a", "How.", targets=(Target("latency", 0.5, 1.0, "ms"),))
    slow = SuiteResult("b", "Suite b", "How.", targets=(Target("latency", 2.0, 1.0, "ms"),))
    write_report(path, [fast], command="bench a", facts=facts)
    text = write_report(path, [slow], command="bench b", facts=facts, order=["a", "b"])
    summary = text.split("## Summary", 1)[1].split("## Machine", 1)[0]
    assert "| Suite a | latency | 0.50 ms | ≤ 1.00 ms | **PASS** |" in summary
    assert "| Suite b | latency | 2.00 ms | ≤ 1.00 ms | **MISS** |" in summary


def test_a_profile_attributes_self_time_to_the_leaf_frame() -> None:
    collapsed = (
        "main (app.py:1);handle (grpclib/server.py:10);send (anyio/_backends/_asyncio.py:5) 30\n"
        "main (app.py:1);handle (grpclib/server.py:12) 10\n"
    )
    profile = parse_collapsed(collapsed)
    assert profile.samples == 40
    assert profile.self_samples == {
        "send (anyio/_backends/_asyncio.py)": 30,
        "handle (grpclib/server.py)": 10,
    }
    table = profile_table(profile, cpu_per_unit_us=100.0, unit="request", title="t")
    assert table.rows[0][:3] == ("`send (anyio/_backends/_asyncio.py)`", "75.0%", "75.0")


def test_a_grpc_frame_is_a_flag_a_length_and_the_message() -> None:
    message = pb.CompleteRequest(params=pb.CompletionParams(model="gpt-4o"))
    frame = grpc_frame(message)
    assert frame[0] == 0
    (length,) = struct.unpack(">I", frame[1:5])
    assert pb.CompleteRequest.FromString(frame[5 : 5 + length]) == message


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def test_the_instant_upstream_answers_a_chat_completion_split_across_reads() -> None:
    connection = _Connection(UpstreamCounters(), {})
    transport = _Transport()
    connection.connection_made(cast(Any, transport))
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    request = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    for index in range(len(request)):
        connection.data_received(request[index : index + 1])
    head, _, answer = transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    payload = json.loads(answer)
    assert payload["model"] == "gpt-4o"
    assert payload["choices"][0]["message"]["content"]
    assert connection.counters.requests == 1


def test_h2load_summaries_are_read_whatever_the_unit_of_the_run_time() -> None:
    output = (
        "finished in 928us, 34482.76 req/s, 11.31MB/s\n"
        "requests: 32 total, 32 started, 32 done, 30 succeeded, 2 failed, 0 errored, 0 timeout\n"
    )
    assert parse_summary(output) == (32, 30, 2, 34482.76)
    assert parse_summary(output.replace("928us", "5.00s")) == (32, 30, 2, 34482.76)
    assert parse_summary("connect failed") is None


def test_a_suite_section_records_its_machine_pinning_and_load() -> None:
    result = SuiteResult("a", "Suite a", "How.", seconds=12.0, load_average=("0.10", "1.20"))
    section = render_suite(result, command="bench a", date="today", machine="CPU, 2 cores")
    assert (
        "_today · `bench a` · 12 s · CPU, 2 cores · load average 0.10 at start, 1.20 at end_"
        in (section)
    )


def test_pinning_names_its_cores_or_why_there_is_none() -> None:
    pinned = Pinning(server=(0,), load=(1,), machine=(0, 1))
    assert pinned.cores(under_test=True, unpinned=True) == (0, 1)
    assert pinned.active
    assert "core 0" in pinned.describe() and "core 1" in pinned.describe()
    assert pinned.cores(under_test=True) == (0,)
    assert pinned.cores(under_test=False) == ()  # inherited from the benchmark's process
    off = Pinning.detect(enabled=False)
    assert not off.active
    assert "--no-pin" in off.describe()
    assert off.cores(under_test=True) == off.cores(under_test=True, unpinned=True) == ()


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None,
    reason="no CPU affinity or no taskset here",
)
def test_a_child_started_on_a_core_runs_only_there() -> None:
    core = min(os.sched_getaffinity(0))
    script = "import os; print('READY', sorted(os.sched_getaffinity(0)), flush=True)"
    with ProcessSet() as processes:
        child = processes.start(
            "pinned", [sys.executable, "-c", script], python_module=False, cores=(core,)
        )
        assert child.process.stdout is not None
        assert child.process.stdout.readline().decode().split(" ", 1)[1].strip() == f"[{core}]"
