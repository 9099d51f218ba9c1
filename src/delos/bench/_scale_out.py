"""Scale-out on one machine: three gateway processes, one Redis, a provider with its own limits.

``python -m delos.bench._scale_out [--quick] [--report docs/scale-out.md]``

Each gateway is ``python -m delos.bench.serve gateway`` in its own process, configured from the
environment like ``delos-runtime serve``; ``redis-server`` is a child process too (started,
killed, paused and resumed by its PID). The provider is the fake OpenAI of
:mod:`delos.testing`, served in this process behind :class:`LimitedProvider`, which enforces its
own RPM and TPM as token buckets (as OpenAI does) and answers 429 with Retry-After past them.
The client (grpcio, in this process) spreads requests across the replicas: round-robin, or
7:2:1 where an uneven spread is the point.

Every scenario runs twice where it makes a point: replicas sharing state on Redis, and the same
replicas each on its own (``DELOS_RUNTIME_REDIS_URL`` unset), the state of things before. The
six scenarios stay in one module (past the usual size): they share the provider, Redis and the
replicas' set-up, and each is one table. The figures go between markers in
``docs/scale-out.md``; the rest of that page is written by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from delos.bench._clients import CallOutcome, UnaryCaller, open_caller
from delos.bench._processes import Child, ProcessSet, free_port, gateway_environment
from delos.bench._results import percentile
from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import (
    Behaviour,
    FakeControl,
    FakeRequest,
    FakeResponse,
    Fault,
    Latency,
    open_fake_server,
)
from delos.testing.fakes import FAKE_KEYS, FAKE_PROVIDERS

__all__ = ["LimitedProvider", "main"]

REPLICAS = 3
#: The shared-state deadline the gateways run with (their default), seconds.
REDIS_DEADLINE = 0.05


# -- the provider -------------------------------------------------------------------------------


class _Bucket:
    """A token bucket of `capacity` refilled at `capacity` per minute, on the monotonic clock."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.level = capacity
        self.at = time.monotonic()

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0: it fits now)."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / 60)
        self.at = now
        return max(0.0, (amount - self.level) * 60 / self.capacity)


@dataclass
class LimitedProvider:
    """The fake OpenAI behind its own RPM and TPM (None: unlimited). A request's tokens are its
    prompt's words plus its output cap (12 when it has none), as OpenAI counts them up front."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    control: FakeControl = field(default_factory=FakeControl)
    #: Arrival times (monotonic seconds) of the calls answered, and of those refused (429).
    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    tokens: int = 0

    def __post_init__(self) -> None:
        self._inner = FAKE_PROVIDERS["openai"].make_handler(self.control)
        self._requests = _Bucket(self.requests_per_minute) if self.requests_per_minute else None
        self._tokens = _Bucket(self.tokens_per_minute) if self.tokens_per_minute else None

    async def __call__(self, request: FakeRequest) -> FakeResponse:
        if not request.path.endswith("/chat/completions"):
            return await self._inner(request)
        now = time.monotonic()
        tokens = _request_tokens(request)
        waits = [
            bucket.wait_for(amount)
            for bucket, amount in ((self._requests, 1), (self._tokens, tokens))
            if bucket is not None
        ]
        if any(waits):
            self.refused.append(now)
            error = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}
            retry_after = [("retry-after", f"{max(waits):.3f}")]
            return FakeResponse.json({"error": error}, 429, retry_after)
        for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
            if bucket is not None:
                bucket.level -= amount
        self.admitted.append(now)
        self.tokens += tokens
        return await self._inner(request)

    def admitted_between(self, start: float, end: float) -> int:
        return sum(start <= at < end for at in self.admitted)


def _request_tokens(request: FakeRequest) -> int:
    body = request.json()
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or 12
    return max(words, 1) + int(cap)


# -- Redis and the replicas ---------------------------------------------------------------------


class _Redis:
    """A ``redis-server`` child on a fixed loopback port, so it can come back where it was."""

    def __init__(self, processes: ProcessSet) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._executable = executable
        self._processes = processes
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: Child | None = None
        self.start()

    def start(self) -> None:
        arguments = [self._executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        arguments += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
        self.child = self._processes.start("redis", arguments, python_module=False)
        deadline = time.monotonic() + 10
        while not self.command("PING").startswith(b"+PONG"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.child.log_tail()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        assert self.child is not None
        os.kill(self.child.pid, signal.SIGKILL)
        self._processes.stop(self.child)
        self.child = None

    def signal(self, number: signal.Signals) -> None:
        assert self.child is not None
        os.kill(self.child.pid, number)

    def command(self, *words: str) -> bytes:
        """One command in the inline protocol; b"" when Redis does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(65536)
        except OSError:
            return b""

    def round_trips(self) -> int:
        """Scripts run so far: every call the limiter, breakers and heartbeats make is one
        (``INFO commandstats`` also counts the commands each script runs inside)."""
        total = 0
        for line in self.command("INFO", "commandstats").decode().splitlines():
            name, _, rest = line.partition(":")
            if name in ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval"):
                total += int(rest.split(",")[0].removeprefix("calls="))
        return total

    def live_replicas(self) -> int:
        reply = self.command("ZCARD", "delos:v1:replicas")
        return int(reply[1:]) if reply.startswith(b":") else 0


@contextlib.asynccontextmanager
async def _replicas(
    processes: ProcessSet,
    provider_url: str,
    redis: _Redis | None,
    *,
    limits: tuple[float, float] | None = None,
    breaker: dict[str, float] | None = None,
) -> AsyncIterator[list[Child]]:
    """`REPLICAS` gateways on the provider; shared on `redis` when given."""
    settings = {
        "DELOS_RUNTIME_OPENAI_KEY": FAKE_KEYS["openai"],
        "DELOS_RUNTIME_OPENAI_BASE_URL": provider_url + "/v1",
        "DELOS_RUNTIME_RACE_WIDTH": "1",
    }
    if redis is not None:
        settings["DELOS_RUNTIME_REDIS_URL"] = redis.url
    if limits is not None:
        settings["DELOS_RUNTIME_OPENAI_RPM"] = str(limits[0])
        settings["DELOS_RUNTIME_OPENAI_TPM"] = str(limits[1])
    children = []
    for index in range(REPLICAS):
        port = free_port()
        arguments = ["gateway", "--port", str(port), "--transport", "httpx-aiohttp"]
        if breaker:
            arguments += ["--breaker", json.dumps(breaker)]
        environ = gateway_environment(**settings)
        children.append(processes.start(f"gateway-{index}", arguments, environ=environ, port=port))
    try:
        await anyio.to_thread.run_sync(processes.wait_ready, children)
        yield children
    finally:
        for child in children:
            processes.stop(child)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class _Call:
    outcome: CallOutcome
    replica: int


def _request(text: str, *, cache: bool = False) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            model="gpt-4o",
            messages=[pb.Message(role="user", content=text)],
            max_tokens=16,
            use_cache=cache,
        )
    )


@contextlib.asynccontextmanager
async def _callers(replicas: Sequence[Child]) -> AsyncIterator[list[UnaryCaller]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_caller(child.port)) for child in replicas]


async def _paced(
    callers: Sequence[UnaryCaller],
    rate: float,
    seconds: float,
    request: Callable[[int], pb.CompleteRequest],
    at: Callable[[float], None] = lambda elapsed: None,
    route: Callable[[int], int] | None = None,
) -> list[_Call]:
    """`rate` calls a second for `seconds`, round-robin over `callers` unless `route` maps a
    call's index to a replica; `at(elapsed)` is called before each call is sent (to change the
    world mid-run)."""
    calls: list[_Call] = []

    async def one(index: int) -> None:
        replica = route(index) if route is not None else index % len(callers)
        calls.append(_Call(await callers[replica](request(index)), replica))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for index in range(round(rate * seconds)):
            await anyio.sleep(max(0.0, started + index / rate - time.monotonic()))
            at(time.monotonic() - started)
            group.start_soon(one, index)
    return calls


def _tally(calls: Sequence[_Call]) -> dict[str, int]:
    """Answered, refused by the gateway's own limiter, and failed otherwise (a provider's 429
    among them)."""
    ok = sum(call.outcome.ok for call in calls)
    limited = sum("local rate limit" in call.outcome.message for call in calls)
    return {"ok": ok, "limited": limited, "failed": len(calls) - ok - limited}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class Report:
    quick: bool
    sections: list[str] = field(default_factory=list)

    def table(self, title: str, note: str, header: Sequence[str], rows: list[list[str]]) -> None:
        lines = [f"### {title}", "", note, "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        self.sections.append("\n".join(lines))
        print("\n".join(lines), "\n", flush=True)


async def _limits(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    rpm, tpm, rate = 120.0, 4000.0, 30.0
    seconds = 5.0 if report.quick else 10.0
    rows = []
    for mode in ("shared", "local"):
        provider = LimitedProvider(rpm, tpm)
        async with open_fake_server(provider) as fake:
            shared = redis if mode == "shared" else None
            async with _replicas(processes, fake.url, shared, limits=(rpm, tpm)) as replicas:
                async with _callers(replicas) as callers:
                    started = time.monotonic()
                    calls = await _paced(
                        callers, rate, seconds, lambda i: _request(f"question {i} on scale")
                    )
                    elapsed = time.monotonic() - started
        allowed = rpm + rpm / 60 * elapsed  # a full bucket, then its refill
        admitted = len(provider.admitted)
        tally = _tally(calls)
        rows.append(
            [
                mode,
                str(len(calls)),
                str(admitted),
                f"{allowed:.0f}",
                f"{(admitted / allowed - 1) * 100:+.1f} %",
                str(len(provider.refused)),
                f"{provider.tokens} / {tpm + tpm / 60 * elapsed:.0f}",
                f"{tally['ok']} / {tally['limited']} / {tally['failed']}",
            ]
        )
    report.table(
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


async def _cache(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    identical = 30
    rows = [
        await _cache_run(processes, redis if mode == "shared" else None, mode, identical)
        for mode in ("shared", "local")
    ]
    report.table(
        "Cache: identical requests across replicas",
        f"{identical} identical cacheable requests at once, spread over the {REPLICAS} "
        "replicas; the provider takes 200 ms to answer. Target: one upstream call.",
        ["replicas", "requests", "answered", "upstream calls"],
        rows,
    )


async def _cache_run(
    processes: ProcessSet, redis: _Redis | None, mode: str, identical: int
) -> list[str]:
    provider = LimitedProvider(control=FakeControl(Behaviour(latency=Latency(base=0.2))))
    calls: list[CallOutcome] = []
    async with open_fake_server(provider) as fake:
        async with _replicas(processes, fake.url, redis) as replicas, _callers(replicas) as callers:

            async def one(index: int) -> None:
                request = _request(f"the same question {mode}", cache=True)
                calls.append(await callers[index % len(callers)](request))

            async with anyio.create_task_group() as group:
                for index in range(identical):
                    group.start_soon(one, index)
    return [mode, str(identical), str(sum(c.ok for c in calls)), str(len(provider.admitted))]


async def _breaker(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    rate, seconds, fail_at = 20.0, 5.0, 1.0
    rows = [
        await _breaker_run(
            processes, redis if mode == "shared" else None, mode, rate, seconds, fail_at
        )
        for mode in ("shared", "local")
    ]
    report.table(
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
    processes: ProcessSet,
    redis: _Redis | None,
    mode: str,
    rate: float,
    seconds: float,
    fail_at: float,
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
        async with _replicas(processes, fake.url, redis, breaker=breaker) as replicas:
            async with _callers(replicas) as callers:
                await _paced(callers, rate, seconds, lambda i: _request(f"q {i}"), at, _uneven)
    since = [t - started_failing[0] for t in provider.admitted if t >= started_failing[0]]
    return [mode, str(len(since)), _ms(max(since, default=0.0))]


async def _overhead(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    rate = 50.0
    count = 300 if report.quick else 1000
    rows = []
    for mode in ("local", "shared"):
        provider = LimitedProvider()
        limits = (1e9, 1e12)  # a limiter on the path, never binding
        async with open_fake_server(provider) as fake:
            shared = redis if mode == "shared" else None
            async with _replicas(processes, fake.url, shared, limits=limits) as replicas:
                async with _callers(replicas) as callers:
                    await _paced(callers, rate, 1.0, lambda i: _request(f"warm {i}"))
                    idle_from, idle_trips = time.monotonic(), redis.round_trips()
                    await anyio.sleep(2.0)
                    idle_rate = (redis.round_trips() - idle_trips) / (time.monotonic() - idle_from)
                    trips, cpu = redis.round_trips(), sum(c.cpu_seconds() for c in replicas)
                    started = time.monotonic()
                    calls = await _paced(callers, rate, count / rate, lambda i: _request(f"o {i}"))
                    await anyio.sleep(0.2)  # the settlements, sent after the answers
                    elapsed = time.monotonic() - started
                    trips = redis.round_trips() - trips - round(idle_rate * elapsed)
                    cpu = sum(c.cpu_seconds() for c in replicas) - cpu
        latencies = sorted(c.outcome.latency for c in calls if c.outcome.ok)
        rows.append(
            [
                mode,
                str(len(latencies)),
                _ms(percentile(latencies, 0.5)),
                _ms(percentile(latencies, 0.99)),
                _ms(cpu / len(calls)),
                f"{trips / len(calls):.2f}",
            ]
        )
    report.table(
        "Overhead of shared state",
        f"{count} requests at {rate:.0f} requests/s over the {REPLICAS} replicas, a configured "
        "limit on the path that never binds. *Round trips*: scripts Redis ran during the run, "
        "less its idle rate (heartbeats, breaker polls). Target: one before the call (the "
        "reservation) and one after (its settlement, sent in the background).",
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


async def _redis_away(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    rpm, rate = 120.0, 4.0
    phase = 4.0 if report.quick else 6.0
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
        async with _replicas(processes, fake.url, redis, limits=(rpm, 1e12)) as replicas:
            async with _callers(replicas) as callers:
                # Spend the burst first, so that the limit binds from the start.
                await _paced(callers, 200.0, 1.0, lambda i: _request(f"burst {i}"))
                async with anyio.create_task_group() as group:
                    group.start_soon(watch_recovery)
                    calls = await _paced(
                        callers, rate, 3 * phase, lambda i: _request(f"steady {i}"), at
                    )
    away = (marks["killed"], marks["back"])
    admitted_away = provider.admitted_between(*away)
    during = [c for c in calls if away[0] <= c.outcome.started < away[1]]
    tally = _tally(during)
    refused = [
        sum(start <= at < end for at in provider.refused)
        for start, end in ((away[0] - phase, away[0]), away, (away[1], away[1] + phase))
    ]
    report.table(
        "Redis killed mid-run",
        f"RPM {rpm:.0f} on every replica and at the provider, the burst spent beforehand; "
        f"{rate:.0f} requests/s, above the limit, for {3 * phase:.0f} s. Redis is killed "
        f"(SIGKILL) at {phase:.0f} s and started again, empty, at {2 * phase:.0f} s. Away, "
        "each replica limits alone to the configured limit ÷ the last known live replicas. "
        "*Failed* are requests the provider refused (429): none is lost to Redis. "
        "*Recovered*: every replica's heartbeat is back on Redis (they beat every second, "
        "once the breaker around Redis lets a call through: it backs off to 5 s).",
        [
            "admitted while away / allowed",
            "upstream 429s before / while away / after",
            "while away: ok / limited / failed",
            "recovered after (ms)",
        ],
        [
            [
                f"{admitted_away} / {rpm / 60 * (away[1] - away[0]):.1f}",
                " / ".join(str(count) for count in refused),
                f"{tally['ok']} / {tally['limited']} / {tally['failed']}",
                _ms(recovered[0]) if recovered else "not within the run",
            ]
        ],
    )


async def _redis_slow(processes: ProcessSet, redis: _Redis, report: Report) -> None:
    rate, seconds, pause_at, pause_for = 50.0, 6.0, 2.0, 2.0
    provider = LimitedProvider()
    window: list[float] = []

    def at(elapsed: float) -> None:
        if elapsed >= pause_at and not window:
            redis.signal(signal.SIGSTOP)
            window.append(time.monotonic())
        elif elapsed >= pause_at + pause_for and len(window) == 1:
            redis.signal(signal.SIGCONT)
            window.append(time.monotonic())

    async with open_fake_server(provider) as fake:
        async with _replicas(processes, fake.url, redis, limits=(1e9, 1e12)) as replicas:
            async with _callers(replicas) as callers:
                calls = await _paced(callers, rate, seconds, lambda i: _request(f"s {i}"), at)
    before = sorted(c.outcome.latency for c in calls if c.outcome.started < window[0])
    during = sorted(c.outcome.latency for c in calls if window[0] <= c.outcome.started < window[1])
    tally = _tally(calls)
    report.table(
        "Redis slowed",
        f"{rate:.0f} requests/s for {seconds:.0f} s; Redis stops answering (SIGSTOP) for "
        f"{pause_for:.0f} s. Every call to Redis has a {REDIS_DEADLINE * 1000:.0f} ms deadline, "
        "and after a few misses the breaker around Redis stops asking until it answers.",
        ["", "p50 (ms)", "p99 (ms)", "max (ms)", "ok / limited / failed (whole run)"],
        [
            [
                "before",
                _ms(percentile(before, 0.5)),
                _ms(percentile(before, 0.99)),
                _ms(before[-1]),
                "",
            ],
            [
                "Redis paused",
                _ms(percentile(during, 0.5)),
                _ms(percentile(during, 0.99)),
                _ms(during[-1]),
                f"{tally['ok']} / {tally['limited']} / {tally['failed']}",
            ],
        ],
    )


_SCENARIOS = (_limits, _cache, _breaker, _overhead, _redis_away, _redis_slow)


#: The generated figures sit between these markers of the report; the rest is written by hand.
FIGURES_START = "<!-- figures: python -m delos.bench._scale_out -->"
FIGURES_END = "<!-- /figures -->"


def _write(path: Path, report: Report) -> None:
    command = "python -m delos.bench._scale_out" + (" --quick" if report.quick else "")
    figures = "\n\n".join(
        [
            FIGURES_START,
            f"Measured by `{command}` on one machine ({os.cpu_count()} CPUs): {REPLICAS} gateway "
            "processes, one `redis-server`, one fake OpenAI enforcing its own limits, the "
            "client in the benchmark's process.",
            *report.sections,
            FIGURES_END,
        ]
    )
    text = path.read_text() if path.exists() else ""
    if FIGURES_START in text and FIGURES_END in text:
        before, rest = text.split(FIGURES_START, 1)
        after = rest.split(FIGURES_END, 1)[1]
        text = before + figures + after
    else:
        text = text + ("\n" if text else "") + figures + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m delos.bench._scale_out")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--report", type=Path, help="write the figures to this Markdown file")
    arguments = parser.parse_args(argv)
    report = Report(arguments.quick)

    async def run() -> None:
        with ProcessSet() as processes:
            redis = _Redis(processes)
            for scenario in _SCENARIOS:
                if redis.child is None:
                    redis.start()
                # Nothing carries over: an opening published by one scenario's replicas
                # would cut the next scenario's off.
                redis.command("FLUSHALL")
                await scenario(processes, redis, report)

    anyio.run(run, backend="asyncio")
    if arguments.report:
        _write(arguments.report, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
