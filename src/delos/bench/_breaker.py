"""Suite ``breaker``: a provider starts failing, the breaker cuts it off, then it recovers.

Two fakes serve ``gpt-4o``; the primary (the one the router picks first) starts answering HTTP
500. Counted: client-visible errors and upstream attempts on the failing provider before the
breaker cuts it off (a call whose attempts skip it), then, once the provider is healthy again,
the time until a call is served by it (bounded below by the breaker's wait in the open state).
A second scenario pins the failing provider (no fallback): every call fails, and the breaker
turns slow failures into fast ones.
"""

from __future__ import annotations

import asyncio
import time

from delos.bench._clients import CallOutcome, UnaryCaller, open_caller
from delos.bench._context import BenchContext, completion_request
from delos.bench._results import SuiteResult, Table, format_number, percentile
from delos.bench._servers import FAKE_PROVIDERS, Fakes, Gateway, fakes, scenario_gateway
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["declare_breaker", "run_breaker"]

_LATENCY = {"base": 0.005, "jitter": 0.05}
_FAILING = {"latency": _LATENCY, "fault": "http_error", "error_status": 500}
_PROBE_INTERVAL = 0.05


def declare_breaker(context: BenchContext) -> None:
    scenario_gateway(context, "breaker")


def _attempted(outcome: CallOutcome, provider: str) -> bool:
    return any(a[0] == provider for a in outcome.attempts) or not outcome.ok


async def _until_cut_off(
    call: UnaryCaller, request: pb.CompleteRequest, provider: str, limit: int
) -> tuple[list[CallOutcome], int | None]:
    """Calls until the provider's breaker is open; the number of calls it took."""
    outcomes: list[CallOutcome] = []
    for index in range(limit):
        outcomes.append(await call(request))
        if await call.breaker_state(provider) == "open":
            return outcomes, index + 1
    return outcomes, None


async def _recovery(
    call: UnaryCaller, request: pb.CompleteRequest, provider: str, bound: float
) -> tuple[float | None, int]:
    """Seconds from now until a call is served by ``provider``, and the calls made meanwhile."""
    healed = time.monotonic()
    calls = 0
    while time.monotonic() - healed < bound:
        outcome = await call(request)
        calls += 1
        if outcome.ok and outcome.provider == provider:
            return time.monotonic() - healed, calls
        await asyncio.sleep(_PROBE_INTERVAL)
    return None, calls


def _p50_ms(outcomes: list[CallOutcome]) -> str:
    return format_number(percentile([o.latency for o in outcomes], 0.5) * 1000, 1)


async def _fallback_scenario(
    context: BenchContext, shared: Fakes, call: UnaryCaller
) -> tuple[list[tuple[str, str]], str]:
    # Quality routing tries OpenAI first every time (cost routing breaks the price tie by
    # latency, which would move traffic away before the breaker has anything to do).
    request = completion_request(model="gpt-4o", routing=pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED)
    warm = [await call(request) for _ in range(20)]
    primary = FAKE_PROVIDERS[0]
    before = shared.requests(primary)
    shared.set_behaviour(primary, **_FAILING)
    outcomes, cut_at = await _until_cut_off(call, request, primary, limit=200)
    cut_off_at = time.monotonic()
    wasted = shared.requests(primary) - before
    # Calls after the cut-off show what an open breaker costs a client.
    after = [await call(request) for _ in range(20)]
    shared.set_behaviour(primary, latency=_LATENCY)
    wait = context.sizes.breaker_wait_in_open
    since_heal, probes = await _recovery(call, request, primary, bound=wait * 4 + 10.0)
    since_cut_off = time.monotonic() - cut_off_at if since_heal is not None else None
    rows = [
        ("failing provider", primary),
        ("calls until the breaker opened", str(cut_at or "never")),
        (
            "calls before cut-off that tried the failing provider",
            str(sum(1 for o in outcomes if _attempted(o, primary))),
        ),
        ("client-visible errors before cut-off", str(sum(1 for o in outcomes if not o.ok))),
        ("upstream attempts on the failing provider", str(wasted)),
        ("p50 latency before the failure ms", _p50_ms(warm)),
        ("p50 latency, failing, before cut-off (retry + fallback) ms", _p50_ms(outcomes)),
        ("p50 latency after cut-off ms", _p50_ms(after)),
        ("client-visible errors after cut-off", str(sum(1 for o in after if not o.ok))),
        (
            "recovery: seconds from healthy again to serving again",
            format_number(since_heal, 2) if since_heal is not None else "not within bound",
        ),
        (
            "recovery: seconds from cut-off to serving again",
            format_number(since_cut_off, 2) if since_cut_off is not None else "-",
        ),
        ("breaker wait in open state (configured) s", format_number(wait, 1)),
        ("calls during recovery (one every 50 ms)", str(probes)),
    ]
    return rows, primary


async def _pinned_scenario(
    context: BenchContext, shared: Fakes, call: UnaryCaller, provider: str
) -> list[tuple[str, str]]:
    model = "gpt-4o" if provider == "openai" else "openai/gpt-4o"
    request = completion_request(
        model=model, provider=provider, routing=pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER
    )
    # Start from a closed breaker: healthy calls until its half-open trials have succeeded.
    deadline = time.monotonic() + context.sizes.breaker_wait_in_open * 4 + 10.0
    while await call.breaker_state(provider) != "closed" and time.monotonic() < deadline:
        await call(request)
        await asyncio.sleep(_PROBE_INTERVAL)
    before = shared.requests(provider)
    shared.set_behaviour(provider, **_FAILING)
    outcomes = [await call(request) for _ in range(30)]
    shared.set_behaviour(provider, latency=_LATENCY)
    state = await call.breaker_state(provider)
    attempts = shared.requests(provider) - before
    fast = [o for o in outcomes if "circuit open" in o.message.lower()]
    first_fast = next((i + 1 for i, o in enumerate(outcomes) if o in fast), None)
    return [
        ("calls (all fail: the only provider is down)", str(len(outcomes))),
        ("errors", str(sum(1 for o in outcomes if not o.ok))),
        ("upstream attempts for them", str(attempts)),
        ("first call refused by the open breaker", str(first_fast or "none")),
        ("p50 time to fail before cut-off ms", _p50_ms([o for o in outcomes if o not in fast])),
        ("p50 time to fail after cut-off ms", _p50_ms(fast)),
        ("status codes seen", ", ".join(sorted({o.code for o in outcomes if o.code})) or "-"),
        ("breaker state afterwards", state),
    ]


async def _scenarios(
    context: BenchContext, shared: Fakes, gateway: Gateway
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    async with open_caller(gateway.port) as call:
        fallback_rows, primary = await _fallback_scenario(context, shared, call)
        pinned_rows = await _pinned_scenario(context, shared, call, primary)
    return fallback_rows, pinned_rows


def run_breaker(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_breaker(context)
    context.wait_ready()
    shared = fakes(context)
    gateway = scenario_gateway(context, "breaker")
    for provider in FAKE_PROVIDERS:
        shared.set_behaviour(provider, latency=_LATENCY)
    fallback_rows, pinned_rows = asyncio.run(_scenarios(context, shared, gateway))
    return SuiteResult(
        name="breaker",
        title="Breaker: a provider starts failing",
        method=(
            "Two fakes serving `gpt-4o` (5 ms); sequential quality-routed `Complete` calls. "
            "The primary (OpenAI) starts answering HTTP 500; calls go on until ListProviders "
            "reports its breaker open, then it is healed and calls (one every 50 ms) go on "
            "until one is served by it again. "
            "Breaker: default thresholds (50% of the last 20 calls, at least 10), wait in open "
            f"{context.sizes.breaker_wait_in_open:g} s. Then the same provider, pinned by "
            "`provider=`, fails 30 calls in a row."
        ),
        tables=(
            Table("With a fallback provider", ("measure", "value"), tuple(fallback_rows)),
            Table("Pinned to the failing provider", ("measure", "value"), tuple(pinned_rows)),
        ),
        seconds=time.monotonic() - started,
    )
