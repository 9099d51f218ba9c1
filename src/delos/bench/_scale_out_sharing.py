"""Scale-out scenarios that compare replicas sharing state on Redis with replicas on their own.

Each runs twice, ``shared`` and ``local``, on a fresh :class:`LimitedProvider` and fresh replicas,
and hands back one table: limits (one provider limit across replicas), cache (identical requests
across replicas), breaker (a provider that starts failing) and the overhead of shared state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from delos.bench._clients import CallOutcome
from delos.bench._limited_provider import LimitedProvider
from delos.bench._replicas import (
    REPLICAS,
    ScaleOutSetup,
    milliseconds,
    open_callers,
    open_replicas,
    paced,
    scale_request,
    tally,
)
from delos.bench._results import Table, percentile
from delos.testing import Behaviour, FakeControl, Fault, Latency, open_fake_server

__all__ = ["cache", "limits", "scenario_table", "shared_state_overhead", "uneven_breaker"]

_MODES = ("shared", "local")


def scenario_table(
    title: str, note: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> Table:
    return Table(title, tuple(columns), tuple(tuple(row) for row in rows), note=note)


async def limits(setup: ScaleOutSetup) -> Table:
    rpm, tpm, rate = 120.0, 4000.0, 30.0
    seconds = 5.0 if setup.quick else 10.0
    rows = []
    for mode in _MODES:
        provider = LimitedProvider(rpm, tpm)
        async with open_fake_server(provider) as fake:
            shared = mode == "shared"
            async with open_replicas(setup, fake.url, shared=shared, limits=(rpm, tpm)) as replicas:
                async with open_callers(replicas) as callers:
                    started = time.monotonic()
                    calls = await paced(
                        callers, rate, seconds, lambda i: scale_request(f"question {i} on scale")
                    )
                    elapsed = time.monotonic() - started
        allowed = rpm + rpm / 60 * elapsed  # a full bucket, then its refill
        admitted = len(provider.admitted)
        counts = tally(calls)
        rows.append(
            [
                mode,
                str(len(calls)),
                str(admitted),
                f"{allowed:.0f}",
                f"{(admitted / allowed - 1) * 100:+.1f} %",
                str(len(provider.refused)),
                f"{provider.tokens} / {tpm + tpm / 60 * elapsed:.0f}",
                f"{counts['ok']} / {counts['limited']} / {counts['failed']}",
            ]
        )
    return scenario_table(
        "Limits: one provider limit, three replicas",
        f"RPM {rpm:.0f} and TPM {tpm:.0f} configured on every replica and enforced by the "
        f"provider (token buckets, 429 past them); {rate:.0f} requests/s for {seconds:.0f} s, "
        "round-robin. *Allowed* is the provider's bucket plus its refill over the run; "
        "*tokens* are prompt words plus the output cap, as the provider counts them, against "
        "what its TPM allows. Client outcomes: answered / refused by the gateway's own limiter "
        "(RESOURCE_EXHAUSTED) / failed otherwise (a provider 429 among them).",
        [
            "replicas",
            "sent",
            "reached provider",
            "allowed",
            "overshoot",
            "upstream 429s",
            "tokens / allowed",
            "ok / limited / failed",
        ],
        rows,
    )


async def cache(setup: ScaleOutSetup) -> Table:
    identical = 30
    rows = [await _cache_run(setup, mode, identical) for mode in _MODES]
    return scenario_table(
        "Cache: identical requests across replicas",
        f"{identical} identical cacheable requests at once, spread over the {REPLICAS} "
        "replicas; the provider takes 200 ms to answer. Target: one upstream call.",
        ["replicas", "requests", "answered", "upstream calls"],
        rows,
    )


async def _cache_run(setup: ScaleOutSetup, mode: str, identical: int) -> list[str]:
    provider = LimitedProvider(control=FakeControl(Behaviour(latency=Latency(base=0.2))))
    calls: list[CallOutcome] = []
    async with open_fake_server(provider) as fake:
        async with (
            open_replicas(setup, fake.url, shared=mode == "shared") as replicas,
            open_callers(replicas) as callers,
        ):

            async def one(index: int) -> None:
                request = scale_request(f"the same question {mode}", cache=True)
                calls.append(await callers[index % len(callers)](request))

            async with anyio.create_task_group() as group:
                for index in range(identical):
                    group.start_soon(one, index)
    return [mode, str(identical), str(sum(c.ok for c in calls)), str(len(provider.admitted))]


async def uneven_breaker(setup: ScaleOutSetup) -> Table:
    rate, seconds, fail_at = 20.0, 5.0, 1.0
    rows = [await _breaker_run(setup, mode, rate, seconds, fail_at) for mode in _MODES]
    return scenario_table(
        "Breaker: a provider that starts failing",
        f"{rate:.0f} requests/s spread 7:2:1 over the {REPLICAS} replicas; after "
        f"{fail_at:.0f} s every call to the provider fails (HTTP 500). A breaker opens after 5 "
        "calls with half of them failed (window 10); each replica retries within its budget. "
        "Target: every replica stops within 1 s.",
        ["replicas", "calls the failing provider still received", "last call after (ms)"],
        rows,
    )


def _uneven(index: int) -> int:
    """Seven calls in ten to the first replica, two to the second, one to the third: a load
    balancer's uneven spread, which local breakers make the quiet replicas pay for."""
    return (0, 0, 0, 0, 0, 0, 0, 1, 1, 2)[index % 10]


async def _breaker_run(
    setup: ScaleOutSetup, mode: str, rate: float, seconds: float, fail_at: float
) -> list[str]:
    breaker = {"window_size": 10, "minimum_calls": 5, "wait_in_open": 30.0}
    provider = LimitedProvider()
    failing = provider.control.behaviour.with_fault(Fault.HTTP_ERROR, error_status=500)
    started_failing: list[float] = []

    def at(elapsed: float) -> None:
        if elapsed >= fail_at and not started_failing:
            provider.control.behaviour = failing
            started_failing.append(time.monotonic())

    async with open_fake_server(provider) as fake:
        shared = mode == "shared"
        async with open_replicas(setup, fake.url, shared=shared, breaker=breaker) as replicas:
            async with open_callers(replicas) as callers:
                await paced(callers, rate, seconds, lambda i: scale_request(f"q {i}"), at, _uneven)
    since = [t - started_failing[0] for t in provider.admitted if t >= started_failing[0]]
    return [mode, str(len(since)), milliseconds(max(since, default=0.0))]


async def shared_state_overhead(setup: ScaleOutSetup) -> Table:
    rate = 50.0
    count = 300 if setup.quick else 1000
    redis = setup.redis
    rows = []
    for mode in ("local", "shared"):
        provider = LimitedProvider()
        never_binding = (1e9, 1e12)  # a limiter on the path
        async with open_fake_server(provider) as fake:
            async with open_replicas(
                setup, fake.url, shared=mode == "shared", limits=never_binding
            ) as replicas:
                async with open_callers(replicas) as callers:
                    await paced(callers, rate, 1.0, lambda i: scale_request(f"warm {i}"))
                    idle_from, idle_trips = time.monotonic(), redis.round_trips()
                    await anyio.sleep(2.0)
                    idle_rate = (redis.round_trips() - idle_trips) / (time.monotonic() - idle_from)
                    trips, cpu = redis.round_trips(), sum(c.cpu_seconds() for c in replicas)
                    started = time.monotonic()
                    calls = await paced(
                        callers, rate, count / rate, lambda i: scale_request(f"o {i}")
                    )
                    await anyio.sleep(0.2)  # the settlements, sent after the answers
                    elapsed = time.monotonic() - started
                    trips = redis.round_trips() - trips - round(idle_rate * elapsed)
                    cpu = sum(c.cpu_seconds() for c in replicas) - cpu
        latencies = sorted(c.outcome.latency for c in calls if c.outcome.ok)
        rows.append(
            [
                mode,
                str(len(latencies)),
                milliseconds(percentile(latencies, 0.5)),
                milliseconds(percentile(latencies, 0.99)),
                milliseconds(cpu / len(calls)),
                f"{trips / len(calls):.2f}",
            ]
        )
    return scenario_table(
        "Overhead of shared state",
        f"{count} requests at {rate:.0f} requests/s over the {REPLICAS} replicas, a configured "
        "limit on the path that never binds. *Round trips*: scripts Redis ran during the run, "
        "less its idle rate (heartbeats, breaker polls). Target: at most one before the call "
        "and one after; the reservation carries the settlement of the replica's previous call, "
        "so one per request is the expected figure.",
        [
            "replicas",
            "answered",
            "p50 (ms)",
            "p99 (ms)",
            "gateway CPU per request (ms)",
            "Redis round trips per request",
        ],
        rows,
    )
