"""The suites, in report order, and the runner that gives each its servers and a time bound."""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from delos.bench._adaptation import declare_adaptation, run_adaptation
from delos.bench._breaker import declare_breaker, run_breaker
from delos.bench._context import BenchContext
from delos.bench._hedging import declare_hedging, run_hedging
from delos.bench._memory import declare_memory, run_memory
from delos.bench._overhead import declare_overhead, run_overhead
from delos.bench._peers import declare_peers, run_peers
from delos.bench._results import SuiteResult
from delos.bench._scale_out import declare_scale_out, run_scale_out
from delos.bench._streaming import declare_streaming, run_streaming
from delos.bench._transport import declare_transport, run_transport

__all__ = ["DEFAULT_SUITES", "SUITES", "Suite", "load_average", "run_suites"]


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    title: str
    #: Asks the context for the servers the suite needs (starting them, not waiting).
    declare: Callable[[BenchContext], None]
    run: Callable[[BenchContext], SuiteResult]


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("overhead", "Overhead: unary Complete", declare_overhead, run_overhead),
        Suite("streaming", "Streaming", declare_streaming, run_streaming),
        Suite("hedging", "Hedging", declare_hedging, run_hedging),
        Suite("adaptation", "Routing adaptation", declare_adaptation, run_adaptation),
        Suite("breaker", "Breaker", declare_breaker, run_breaker),
        Suite("memory", "Memory", declare_memory, run_memory),
        Suite("transport", "HTTP client transport", declare_transport, run_transport),
        Suite("scale-out", "Scale-out", declare_scale_out, run_scale_out),
        Suite("peers", "Peers", declare_peers, run_peers),
    )
}

#: What ``python -m delos.bench`` runs without suite names; peers (which install other
#: gateways) only when asked for.
DEFAULT_SUITES = tuple(name for name in SUITES if name != "peers")


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_suites(
    context: BenchContext,
    names: Sequence[str],
    *,
    report: Callable[[str], None] = lambda line: None,
    on_result: Callable[[list[SuiteResult]], None] = lambda results: None,
) -> list[SuiteResult]:
    """Run ``names`` in order. A suite that fails is reported as failed; the others still run.

    In the quick configuration every suite's servers start together before the first suite runs;
    in the full one each suite starts its own and they are stopped after it.
    """
    suites = [SUITES[name] for name in names]
    if context.sizes.quick:
        for suite in suites:
            suite.declare(context)
    results = []
    for suite in suites:
        started, load_at_start = time.monotonic(), load_average()
        report(f"suite {suite.name}: running")
        try:
            result = suite.run(context)
        except Exception as error:
            detail = "".join(traceback.format_exception_only(error)).strip()
            report(f"suite {suite.name}: failed: {detail}")
            result = SuiteResult(
                suite.name,
                suite.title,
                "The suite did not complete.",
                failed=detail[-2000:],
                seconds=time.monotonic() - started,
            )
        finally:
            if not context.sizes.quick:
                context.reset()
        result = dataclasses.replace(result, load_average=(load_at_start, load_average()))
        report(f"suite {suite.name}: done in {result.seconds:.1f} s")
        results.append(result)
        on_result(results)
    return results
