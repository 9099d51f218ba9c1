"""Scale-out scenarios where Redis fails under replicas sharing state on it.

Redis killed mid-run (SIGKILL, then started again empty) and Redis slowed (SIGSTOP, then
SIGCONT): the replicas must keep answering, limit on their own while Redis is away, and come
back to sharing once it returns. Each scenario hands back one table.
"""

from __future__ import annotations

import signal
import time

import anyio

from delos.bench._limited_provider import LimitedProvider
from delos.bench._replicas import (
    REDIS_DEADLINE,
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
from delos.bench._scale_out_sharing import scenario_table
from delos.testing import open_fake_server

__all__ = ["redis_away", "redis_slow"]


async def redis_away(setup: ScaleOutSetup) -> Table:
    rpm, rate = 120.0, 4.0
    phase = 4.0 if setup.quick else 6.0
    redis = setup.redis
    provider = LimitedProvider(rpm, None)
    marks: dict[str, float] = {}
    recovered: list[float] = []
    restarted = anyio.Event()

    def at(elapsed: float) -> None:
        if elapsed >= phase and "killed" not in marks:
            redis.kill()
            marks["killed"] = time.monotonic()
        elif elapsed >= 2 * phase and "back" not in marks:
            redis.start()
            marks["back"] = time.monotonic()
            restarted.set()

    async def watch_recovery() -> None:
        await restarted.wait()
        # Redis says nothing when a replica comes back: poll it, every 20 ms, for 10 s at most.
        for _ in range(500):
            if redis.live_replicas() >= REPLICAS:
                recovered.append(time.monotonic() - marks["back"])
                return
            await anyio.sleep(0.02)

    async with open_fake_server(provider) as fake:
        async with open_replicas(setup, fake.url, shared=True, limits=(rpm, 1e12)) as replicas:
            async with open_callers(replicas) as callers:
                # Spend the burst first, so that the limit binds from the start.
                await paced(callers, 200.0, 1.0, lambda i: scale_request(f"burst {i}"))
                async with anyio.create_task_group() as group:
                    group.start_soon(watch_recovery)
                    calls = await paced(
                        callers, rate, 3 * phase, lambda i: scale_request(f"steady {i}"), at
                    )
    away = (marks["killed"], marks["back"])
    admitted_away = provider.admitted_between(*away)
    admitted_after = provider.admitted_between(away[1], away[1] + phase)
    counts = tally([c for c in calls if away[0] <= c.outcome.started < away[1]])
    refused = [
        sum(start <= at < end for at in provider.refused)
        for start, end in ((away[0] - phase, away[0]), away, (away[1], away[1] + phase))
    ]
    return scenario_table(
        "Redis killed mid-run",
        f"RPM {rpm:.0f} on every replica and at the provider, the burst spent beforehand; "
        f"{rate:.0f} requests/s, above the limit, for {3 * phase:.0f} s. Redis is killed "
        f"(SIGKILL) at {phase:.0f} s and started again, empty, at {2 * phase:.0f} s. Away, "
        "each replica limits alone to the configured limit ÷ the last known live replicas. "
        "*After*: the same length of time once Redis is back. "
        "*Failed* are requests the provider refused (429): none is lost to Redis. "
        "*Recovered*: every replica's heartbeat is back on Redis (they beat every second, "
        "once the breaker around Redis lets a call through: it backs off to 2 s).",
        [
            "admitted while away / allowed",
            "admitted after / allowed",
            "upstream 429s before / while away / after",
            "while away: ok / limited / failed",
            "recovered after (ms)",
        ],
        [
            [
                f"{admitted_away} / {rpm / 60 * (away[1] - away[0]):.1f}",
                f"{admitted_after} / {rpm / 60 * phase:.1f}",
                " / ".join(str(count) for count in refused),
                f"{counts['ok']} / {counts['limited']} / {counts['failed']}",
                milliseconds(recovered[0]) if recovered else "not within the run",
            ]
        ],
    )


async def redis_slow(setup: ScaleOutSetup) -> Table:
    rate, seconds, pause_at, pause_for = 50.0, 6.0, 2.0, 2.0
    redis = setup.redis
    provider = LimitedProvider()
    window: list[float] = []

    def at(elapsed: float) -> None:
        if elapsed >= pause_at and not window:
            redis.signal(signal.SIGSTOP)
            window.append(time.monotonic())
        elif elapsed >= pause_at + pause_for and len(window) == 1:
            redis.signal(signal.SIGCONT)
            window.append(time.monotonic())

    never_binding = (1e9, 1e12)
    async with open_fake_server(provider) as fake:
        async with open_replicas(setup, fake.url, shared=True, limits=never_binding) as replicas:
            async with open_callers(replicas) as callers:
                calls = await paced(callers, rate, seconds, lambda i: scale_request(f"s {i}"), at)
    before = sorted(c.outcome.latency for c in calls if c.outcome.started < window[0])
    during = sorted(c.outcome.latency for c in calls if window[0] <= c.outcome.started < window[1])
    counts = tally(calls)
    return scenario_table(
        "Redis slowed",
        f"{rate:.0f} requests/s for {seconds:.0f} s; Redis stops answering (SIGSTOP) for "
        f"{pause_for:.0f} s. Every call to Redis has a {REDIS_DEADLINE * 1000:.0f} ms deadline, "
        "and after a few misses the breaker around Redis stops asking until it answers.",
        ["", "p50 (ms)", "p99 (ms)", "max (ms)", "ok / limited / failed (whole run)"],
        [
            [
                "before",
                milliseconds(percentile(before, 0.5)),
                milliseconds(percentile(before, 0.99)),
                milliseconds(before[-1]),
                "",
            ],
            [
                "Redis paused",
                milliseconds(percentile(during, 0.5)),
                milliseconds(percentile(during, 0.99)),
                milliseconds(during[-1]),
                f"{counts['ok']} / {counts['limited']} / {counts['failed']}",
            ],
        ],
    )
