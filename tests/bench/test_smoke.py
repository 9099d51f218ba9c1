"""`python -m delos.bench --quick` runs every suite end to end and renders the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from delos.bench import DEFAULT_SUITES, SUITES
from delos.bench._h2load import h2load_available

pytestmark = pytest.mark.skipif(
    not h2load_available(), reason="h2load missing: apt-get install -y nghttp2-client"
)


def bench_servers() -> set[int]:
    """PIDs of the benchmark's server processes now running."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"delos.bench.serve" in command:
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, set[int]]:
    already_running = bench_servers()
    output = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    output.write_text("# Our benchmarks\n\nA hand-written introduction.\n")
    completed = subprocess.run(
        [sys.executable, "-m", "delos.bench", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return output.read_text(), completed.stderr, bench_servers() - already_running


def test_every_default_suite_runs_and_renders_its_section(
    quick_report: tuple[str, str, set[int]],
) -> None:
    report, _, _ = quick_report
    for name in DEFAULT_SUITES:
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
