"""`python -m delos.bench --quick` runs every default suite end to end and renders the report.

All but scale-out: its scenarios are seconds-long phases by design (a limit's refill, Redis away
and back), it starts three gateways per scenario and needs `redis-server`; even quick it would
multiply this test's time. Its pieces are tested in test_scale_out.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from delos.bench import DEFAULT_SUITES, SUITES
from delos.bench._h2load import h2load_available

SMOKED = tuple(name for name in DEFAULT_SUITES if name != "scale-out")

pytestmark = pytest.mark.skipif(
    not h2load_available(), reason="h2load missing: apt-get install -y nghttp2-client"
)


#: A variable every process of the run inherits, so that the servers of another benchmark
#: running on the machine meanwhile are not taken for this run's.
MARKER = ("SMOKE_RUN", uuid.uuid4().hex)


def bench_servers() -> set[int]:
    """PIDs of this run's server processes now running."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes() if b"delos.bench.serve" in command else b""
        except OSError:
            continue
        if f"{MARKER[0]}={MARKER[1]}".encode() in environ.split(b"\0"):
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, set[int]]:
    output = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    output.write_text("# Our benchmarks\n\nA hand-written introduction.\n")
    completed = subprocess.run(
        [sys.executable, "-m", "delos.bench", "--quick", "--output", str(output), *SMOKED],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, MARKER[0]: MARKER[1]},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return output.read_text(), completed.stderr, bench_servers()


def test_every_default_suite_runs_and_renders_its_section(
    quick_report: tuple[str, str, set[int]],
) -> None:
    report, _, _ = quick_report
    for name in SMOKED:
        section = re.search(
            rf"<!-- begin suite: {name} -->\n(.*?)<!-- end suite: {name} -->", report, re.DOTALL
        )
        assert section is not None, f"no section for {name}"
        assert "The suite did not complete" not in section.group(1), section.group(1)
        assert "\n| " in section.group(1), f"{name} rendered no table"


def test_the_peers_suite_runs_only_when_asked_for(quick_report: tuple[str, str, set[int]]) -> None:
    report, _, _ = quick_report
    assert "peers" in SUITES
    assert "begin suite: peers" not in report


def test_the_report_keeps_the_introduction_and_states_machine_and_targets(
    quick_report: tuple[str, str, set[int]],
) -> None:
    report, _, _ = quick_report
    assert report.startswith("# Our benchmarks\n\nA hand-written introduction.\n")
    assert "## Machine" in report and "| cores | " in report
    summary = report.split("## Summary", 1)[1].split("## Machine", 1)[0]
    verdicts = re.findall(r"\*\*(PASS|MISS|NOT RUN|FAILED)\*\*", summary)
    assert verdicts and "FAILED" not in verdicts


def test_no_server_process_outlives_the_run(quick_report: tuple[str, str, set[int]]) -> None:
    _, stderr, leftovers = quick_report
    assert leftovers == set(), stderr[-2000:]
