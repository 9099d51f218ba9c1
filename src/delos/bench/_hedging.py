"""Suite ``hedging``: a heavy-tailed upstream, hedging off and on.

Both fakes (OpenAI and OpenRouter, serving the ``gpt-4o`` family) take ``base`` seconds to the
first token, and 5% of calls take 20 times as long. With hedging on, the gateway starts a second
attempt on the other provider once the first has produced no token after the live p95 time to
first token (at least 50 ms, and only once 20 samples exist).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from delos.bench._clients import StreamOutcome, grpc_streams
from delos.bench._context import BenchContext, completion_request
from delos.bench._results import SuiteResult, Table, Target, format_number, percentile
from delos.bench._servers import FAKE_PROVIDERS, Gateway, fakes, scenario_gateway
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["declare_hedging", "run_hedging"]

_BASE_TTFT = 0.05
_TAIL_PROBABILITY = 0.05
_TAIL_FACTOR = 20.0
_CONCURRENCY = 8


def declare_hedging(context: BenchContext) -> None:
    scenario_gateway(context, "hedging", hedging=False)
    scenario_gateway(context, "hedging", hedging=True)


@dataclass(frozen=True, slots=True)
class _Run:
    label: str
    ttft_ms: tuple[float, float, float]
    requests: int
    upstream_attempts: int
    hedges_started: int
    hedges_won: int
    errors: int

    @property
    def extra_attempts(self) -> float:
        """Upstream attempts beyond one per request, as a percentage of requests."""
        return 100.0 * (self.upstream_attempts - self.requests) / max(self.requests, 1)


def _heavy_tail(context: BenchContext) -> None:
    shared = fakes(context)
    ttft = {
        "base": _BASE_TTFT * context.sizes.hedging_latency_scale,
        "jitter": 0.1,
        "tail_probability": _TAIL_PROBABILITY,
        "tail_factor": _TAIL_FACTOR,
    }
    for provider in FAKE_PROVIDERS:
        shared.set_behaviour(provider, time_to_first_token=ttft, completion_tokens=12)


def _streams(gateway: Gateway, count: int) -> list[StreamOutcome]:
    # Quality routing puts OpenAI first every time, so the hedge always goes to OpenRouter.
    request = completion_request(model="gpt-4o", routing=pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED)
    return asyncio.run(grpc_streams(gateway.port, request, count=count, concurrency=_CONCURRENCY))


def _measure(context: BenchContext, label: str, gateway: Gateway) -> _Run:
    shared = fakes(context)
    count = context.sizes.scenario_requests
    # Enough calls for the latency table's p95 (20 samples) before measuring.
    _streams(gateway, max(25, count // 20))
    before = sum(shared.requests(p) for p in FAKE_PROVIDERS)
    outcomes = _streams(gateway, count)
    attempts = sum(shared.requests(p) for p in FAKE_PROVIDERS) - before
    good = [o for o in outcomes if o.ok]
    ttfts = [o.ttft for o in good]
    hedges = [a for o in good for a in o.attempts if a[1] == "hedge"]
    return _Run(
        label,
        (
            percentile(ttfts, 0.5) * 1000,
            percentile(ttfts, 0.99) * 1000,
            percentile(ttfts, 0.999) * 1000,
        ),
        len(outcomes),
        attempts,
        len(hedges),
        sum(1 for a in hedges if a[2] == "won"),
        len(outcomes) - len(good),
    )


def run_hedging(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_hedging(context)
    context.wait_ready()
    _heavy_tail(context)
    runs = [
        _measure(context, "hedging off", scenario_gateway(context, "hedging", hedging=False)),
        _measure(context, "hedging on", scenario_gateway(context, "hedging", hedging=True)),
    ]
    off, on = runs
    rows = tuple(
        (
            run.label,
            str(run.requests),
            *(format_number(v, 1) for v in run.ttft_ms),
            f"{run.extra_attempts:.1f}%",
            str(run.hedges_started),
            str(run.hedges_won),
            str(run.errors),
        )
        for run in runs
    )
    cut = off.ttft_ms[1] / on.ttft_ms[1] if on.ttft_ms[1] > 0 else float("nan")
    targets = (
        Target("hedging cuts p99 TTFT by", cut, 3.0, "×", at_most=False),
        Target("extra upstream attempts with hedging", on.extra_attempts, 10.0, "%"),
    )
    return SuiteResult(
        name="hedging",
        title="Hedging: heavy-tailed upstream",
        method=(
            f"Two fakes (`delos.testing`, OpenAI and OpenRouter, both serving `gpt-4o`) answer "
            f"streams with a time to first token of "
            f"{_BASE_TTFT * context.sizes.hedging_latency_scale * 1000:.0f} ms (log-normal "
            f"jitter 0.1), {_TAIL_PROBABILITY:.0%} of calls {_TAIL_FACTOR:.0f}× slower. "
            f"{context.sizes.scenario_requests} `CompleteStream` calls at concurrency "
            f"{_CONCURRENCY} per gateway, after a warm-up that fills the latency table; one "
            "gateway with `DELOS_RUNTIME_HEDGING=false`, one with `true`. TTFT is timed by the "
            "client; extra attempts = upstream requests counted by the fakes − calls."
        ),
        tables=(
            Table(
                "TTFT with and without hedging",
                (
                    "gateway",
                    "calls",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "extra attempts",
                    "hedges started",
                    "hedges won",
                    "errors",
                ),
                rows,
                note="A hedge is `won` when its attempt produced the answer.",
            ),
        ),
        targets=targets,
        seconds=time.monotonic() - started,
    )
