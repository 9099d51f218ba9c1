"""Suite ``scale-out``: three gateway replicas, one Redis, a provider with limits of its own.

The replicas (:mod:`delos.bench._replicas`) run on a real ``redis-server`` child
(:mod:`delos.bench._redis_child`) in front of :class:`LimitedProvider`; the scenarios compare
replicas sharing state on Redis with replicas on their own (:mod:`delos.bench._scale_out_sharing`)
and break Redis under them (:mod:`delos.bench._scale_out_faults`). Nothing carries over from one
scenario to the next: Redis is flushed (or started again) before each. The figures go to the
suite's section of ``docs/benchmarks.md`` and to the figures block of ``docs/scale-out.md``
(:mod:`delos.bench._scale_out_report`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from delos.bench._context import BenchContext
from delos.bench._redis_child import RedisChild
from delos.bench._replicas import REPLICAS, ScaleOutSetup
from delos.bench._results import SuiteResult, Table
from delos.bench._scale_out_faults import redis_away, redis_slow
from delos.bench._scale_out_sharing import cache, limits, shared_state_overhead, uneven_breaker

__all__ = ["SCENARIOS", "declare_scale_out", "run_scale_out"]

Scenario = Callable[[ScaleOutSetup], Awaitable[Table]]
SCENARIOS: tuple[Scenario, ...] = (
    limits,
    cache,
    uneven_breaker,
    shared_state_overhead,
    redis_away,
    redis_slow,
)


def declare_scale_out(context: BenchContext) -> None:
    """Nothing to start ahead: each scenario starts its own replicas and provider."""


def run_scale_out(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    setup = ScaleOutSetup(
        context.processes,
        RedisChild(context.processes),
        context.sizes.quick,
        context.pinning.server,
    )
    tables: list[Table] = []

    async def run() -> None:
        for scenario in SCENARIOS:
            if setup.redis.child is None:
                setup.redis.start()
            # An opening published by one scenario's replicas would cut the next one's off.
            setup.redis.command("FLUSHALL")
            tables.append(await scenario(setup))

    anyio.run(run, backend="asyncio")
    return SuiteResult(
        name="scale-out",
        title="Scale-out: three replicas, one Redis",
        method=_method(context),
        tables=tuple(tables),
        notes=("Discussion of these figures: [scale-out.md](scale-out.md).",),
        seconds=time.monotonic() - started,
    )


def _method(context: BenchContext) -> str:
    pinning = context.pinning
    placement = (
        f"The {REPLICAS} replicas share core {pinning.server[0]}; Redis, the provider and the "
        f"client run on core {pinning.load[0]}."
        if pinning.active
        else f"Nothing is pinned to a core: {pinning.reason}."
    )
    return (
        f"{REPLICAS} gateway processes (`python -m delos.bench.serve gateway`, configured from "
        "the environment like `delos-runtime serve`), one `redis-server`, and one fake OpenAI "
        "enforcing its own RPM and TPM (token buckets, 429 with Retry-After past them) served "
        "in the benchmark's process beside the grpcio client that spreads calls over the "
        "replicas. Every scenario but the Redis failures runs twice: replicas sharing state on "
        "Redis, and each on its own (`DELOS_RUNTIME_REDIS_URL` unset). "
        f"{placement}"
    )
