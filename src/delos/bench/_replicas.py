"""What every scale-out scenario stands on: the replicas, their clients, and paced load.

Each replica is ``python -m delos.bench.serve gateway`` in its own process, configured from the
environment like ``delos-runtime serve``, sharing state on Redis or (``redis=None``) each on its
own, the state of things before Redis. The client (grpcio, in the benchmark's process) spreads
calls across the replicas: round-robin, or by a route where an uneven spread is the point.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.to_thread

from delos.bench._clients import CallOutcome, UnaryCaller, open_caller
from delos.bench._processes import Child, ProcessSet, free_port, gateway_environment
from delos.bench._redis_child import RedisChild
from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing.fakes import FAKE_KEYS

__all__ = [
    "REDIS_DEADLINE",
    "REPLICAS",
    "Call",
    "ScaleOutSetup",
    "milliseconds",
    "open_callers",
    "open_replicas",
    "paced",
    "scale_request",
    "tally",
]

REPLICAS = 3
#: The shared-state deadline the gateways run with (their default), seconds.
REDIS_DEADLINE = 0.05


@dataclass(frozen=True, slots=True)
class ScaleOutSetup:
    """What the scenarios share: the processes, the Redis, the run's size, the gateways' cores."""

    processes: ProcessSet
    redis: RedisChild
    quick: bool
    #: Cores the replicas are pinned to (empty: not pinned).
    cores: tuple[int, ...] = ()


@contextlib.asynccontextmanager
async def open_replicas(
    setup: ScaleOutSetup,
    provider_url: str,
    *,
    shared: bool,
    limits: tuple[float, float] | None = None,
    breaker: dict[str, float] | None = None,
) -> AsyncIterator[list[Child]]:
    """:data:`REPLICAS` gateways on the provider, sharing state on Redis when ``shared``;
    ``limits`` are their (RPM, TPM); stopped when the block ends."""
    settings = {
        "DELOS_RUNTIME_OPENAI_KEY": FAKE_KEYS["openai"],
        "DELOS_RUNTIME_OPENAI_BASE_URL": provider_url + "/v1",
        "DELOS_RUNTIME_RACE_WIDTH": "1",
    }
    if shared:
        settings["DELOS_RUNTIME_REDIS_URL"] = setup.redis.url
    if limits is not None:
        settings["DELOS_RUNTIME_OPENAI_RPM"] = str(limits[0])
        settings["DELOS_RUNTIME_OPENAI_TPM"] = str(limits[1])
    processes = setup.processes
    children = []
    for index in range(REPLICAS):
        port = free_port()
        arguments = ["gateway", "--port", str(port)]
        if breaker:
            arguments += ["--breaker", json.dumps(breaker)]
        environ = gateway_environment(**settings)
        children.append(
            processes.start(
                f"gateway-{index}", arguments, environ=environ, port=port, cores=setup.cores
            )
        )
    try:
        await anyio.to_thread.run_sync(processes.wait_ready, children)
        yield children
    finally:
        for child in children:
            processes.stop(child)


@contextlib.asynccontextmanager
async def open_callers(replicas: Sequence[Child]) -> AsyncIterator[list[UnaryCaller]]:
    """One grpcio channel per replica."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_caller(child.port)) for child in replicas]


@dataclass
class Call:
    outcome: CallOutcome
    replica: int


def scale_request(text: str, *, cache: bool = False) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            model="gpt-4o",
            messages=[pb.Message(role="user", content=text)],
            max_tokens=16,
            use_cache=cache,
        )
    )


async def paced(
    callers: Sequence[UnaryCaller],
    rate: float,
    seconds: float,
    request: Callable[[int], pb.CompleteRequest],
    at: Callable[[float], None] = lambda elapsed: None,
    route: Callable[[int], int] | None = None,
) -> list[Call]:
    """``rate`` calls a second for ``seconds``, round-robin over ``callers`` unless ``route``
    maps a call's index to a replica; ``at(elapsed)`` is called before each call is sent (to
    change the world mid-run)."""
    calls: list[Call] = []

    async def one(index: int) -> None:
        replica = route(index) if route is not None else index % len(callers)
        calls.append(Call(await callers[replica](request(index)), replica))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for index in range(round(rate * seconds)):
            await anyio.sleep(max(0.0, started + index / rate - time.monotonic()))
            at(time.monotonic() - started)
            group.start_soon(one, index)
    return calls


def tally(calls: Sequence[Call]) -> dict[str, int]:
    """Answered, refused by the gateway's own limiter, and failed otherwise (a provider's 429
    among them)."""
    ok = sum(call.outcome.ok for call in calls)
    limited = sum("local rate limit" in call.outcome.message for call in calls)
    return {"ok": ok, "limited": limited, "failed": len(calls) - ok - limited}


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"
