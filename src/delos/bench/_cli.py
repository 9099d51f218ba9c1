"""``python -m delos.bench [suite ...] [--quick] [--output PATH]``: run, rewrite the report.

The benchmark's own process pins itself to the load core first (see :mod:`delos.bench._pinning`),
so everything it starts runs there unless started as a server under test. The scale-out suite's
figures also refresh the figures block of ``scale-out.md`` beside the report, when it has one.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from delos.bench._context import BenchContext, Sizes
from delos.bench._h2load import h2load_available
from delos.bench._pinning import Pinning, pin_this_process
from delos.bench._processes import ProcessSet
from delos.bench._report import machine_facts, write_report
from delos.bench._results import SuiteResult
from delos.bench._scale_out_report import refresh_figures
from delos.bench._suites import DEFAULT_SUITES, SUITES, load_average, run_suites

__all__ = ["main"]

DEFAULT_OUTPUT = Path("docs/benchmarks.md")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m delos.bench",
        description="Reproducible benchmarks of the gateway; results in docs/benchmarks.md.",
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="suite",
        help=f"suites to run (default: {' '.join(DEFAULT_SUITES)}; also: peers)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (smoke test)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the report to rewrite")
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy profiles of the gateway"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="pin nothing to a core (the OS places every process)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    names = list(arguments.suites) or list(DEFAULT_SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite {unknown[0]!r}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    if not h2load_available():
        print(
            "h2load is missing: apt-get update && apt-get install -y nghttp2-client",
            file=sys.stderr,
        )
        return 2
    sizes = Sizes.tiny() if arguments.quick else Sizes.full()
    command = "python -m delos.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    command = command.strip()
    pinning = Pinning.detect(enabled=not arguments.no_pin)
    facts = machine_facts()
    facts["pinning"] = pinning.fact()
    companion = arguments.output.parent / "scale-out.md"
    refreshed: list[SuiteResult] = []

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def write(results: Sequence[SuiteResult]) -> None:
        facts["load average at end"] = load_average()
        write_report(arguments.output, results, command=command, facts=facts, order=list(SUITES))
        for result in results:
            if result.name == "scale-out" and not result.failed and result not in refreshed:
                refreshed.append(result)
                date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                if refresh_figures(companion, result, command=command, date=date):
                    report(f"refreshed the figures of {companion}")

    with pin_this_process(pinning.load), ProcessSet() as processes:
        context = BenchContext(sizes, processes, profile=not arguments.no_profile, pinning=pinning)
        # The report is rewritten after each suite, so an interrupted run keeps what it measured.
        results = run_suites(context, names, report=report, on_result=write)
    report(f"wrote {arguments.output}")
    return 1 if any(r.failed for r in results) else 0
