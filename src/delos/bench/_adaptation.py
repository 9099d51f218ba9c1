"""Suite ``adaptation``: latency routing when the provider it prefers slows down tenfold.

Sequential latency-optimised calls (race width 1, so the router's choice alone decides) to two
fakes of equal speed. Once the router has a preferred provider, that provider becomes 10× slower:
how many calls until traffic moves, how many errors, and whether traffic returns once it recovers.
"""

from __future__ import annotations

import asyncio
import time

from delos.bench._clients import CallOutcome, grpc_unary
from delos.bench._context import BenchContext, completion_request
from delos.bench._results import SuiteResult, Table, format_number
from delos.bench._servers import FAKE_PROVIDERS, Gateway, fakes, scenario_gateway
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["declare_adaptation", "run_adaptation"]

_BASE_LATENCY = 0.01
_SLOWDOWN = 10.0


def declare_adaptation(context: BenchContext) -> None:
    scenario_gateway(context, "adaptation")


def _calls(gateway: Gateway, count: int) -> list[CallOutcome]:
    request = completion_request(model="gpt-4o", routing=pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED)
    return asyncio.run(grpc_unary(gateway.port, request, count=count, concurrency=1))


def _first(outcomes: list[CallOutcome], provider: str) -> int | None:
    """1-based index of the first call served by ``provider``."""
    return next((i + 1 for i, o in enumerate(outcomes) if o.provider == provider), None)


def _last(outcomes: list[CallOutcome], provider: str) -> int | None:
    found = [i + 1 for i, o in enumerate(outcomes) if o.provider == provider]
    return found[-1] if found else None


def run_adaptation(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_adaptation(context)
    context.wait_ready()
    shared = fakes(context)
    gateway = scenario_gateway(context, "adaptation")
    normal = {"base": _BASE_LATENCY, "jitter": 0.05}
    for provider in FAKE_PROVIDERS:
        shared.set_behaviour(provider, latency=normal)
    phase = max(12, context.sizes.scenario_requests // 10)

    warm = _calls(gateway, phase)
    # The router's current choice: with equal speeds it may still switch now and then.
    slowed = next((o.provider for o in reversed(warm) if o.ok), FAKE_PROVIDERS[0])
    other = next(p for p in FAKE_PROVIDERS if p != slowed)
    shared.set_behaviour(slowed, latency={"base": _BASE_LATENCY * _SLOWDOWN, "jitter": 0.05})
    slow_phase = _calls(gateway, phase)
    shared.set_behaviour(slowed, latency=normal)
    recovered = _calls(gateway, phase)

    def share(outcomes: list[CallOutcome], provider: str) -> str:
        served = sum(1 for o in outcomes if o.provider == provider)
        return f"{100.0 * served / max(len(outcomes), 1):.0f}%"

    def mean_ms(outcomes: list[CallOutcome]) -> str:
        good = [o.latency for o in outcomes if o.ok]
        return format_number(1000 * sum(good) / max(len(good), 1), 1)

    def errors(outcomes: list[CallOutcome]) -> str:
        return str(sum(1 for o in outcomes if not o.ok))

    moved_first = _first(slow_phase, other)
    moved_all = _last(slow_phase, slowed)
    back = _first(recovered, slowed)
    rows = (
        ("before (equal speed)", str(len(warm)), share(warm, slowed), mean_ms(warm), errors(warm)),
        (
            f"{slowed} {_SLOWDOWN:.0f}× slower",
            str(len(slow_phase)),
            share(slow_phase, slowed),
            mean_ms(slow_phase),
            errors(slow_phase),
        ),
        (
            f"{slowed} recovered",
            str(len(recovered)),
            share(recovered, slowed),
            mean_ms(recovered),
            errors(recovered),
        ),
    )
    summary = (
        ("calls until the first one moved to " + other, str(moved_first or "never")),
        (f"last call still sent to the slow {slowed}", str(moved_all or "none")),
        (f"calls after recovery until {slowed} is tried again", str(back or "never")),
        ("client-visible errors, all phases", str(int(errors(warm + slow_phase + recovered)))),
    )
    return SuiteResult(
        name="adaptation",
        title="Routing adaptation: one provider slows 10×",
        method=(
            f"Two fakes serving `gpt-4o`, {_BASE_LATENCY * 1000:.0f} ms each; sequential "
            f"latency-optimised `Complete` calls with race width 1, {phase} per phase. After "
            f"the first phase, the provider that served its last call becomes {_SLOWDOWN:.0f}× "
            "slower; in the third phase it is fast again."
        ),
        tables=(
            Table("Adaptation", ("event", "calls"), summary),
            Table(
                "Phases",
                ("phase", "calls", f"share to {slowed}", "mean latency ms", "errors"),
                rows,
            ),
        ),
        seconds=time.monotonic() - started,
    )
