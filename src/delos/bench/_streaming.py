"""Suite ``streaming``: time to first token and per-chunk cost of relaying a 500-token stream.

Two phases, through the gateway and straight from the upstream:

- **burst** (concurrency 1): the upstream writes every chunk as fast as the socket takes them;
  the client times the first token. The gRPC client's own stack is timed too, against the bare
  grpclib echo (which streams at once): added TTFT = gateway percentile − direct percentile −
  echo percentile, what the gateway adds beyond its client's stack and its upstream. The three
  paths take turns over a few rounds, and each path's percentiles pool its rounds.
- **paced** (concurrency 16): one chunk every ``paced_interval_us``, so each chunk arrives in a
  read of its own, as from a real provider. Each chunk carries the upstream's send time on the
  shared monotonic clock; the client's receive time minus it is the chunk's delivery latency.
  Gateway CPU per relayed chunk comes from ``/proc`` over this phase.
"""

from __future__ import annotations

import asyncio
import time

from delos.bench._clients import StreamOutcome, direct_streams, grpc_streams
from delos.bench._context import BenchContext, completion_request
from delos.bench._profile import profile_summary, py_spy_available, record_during
from delos.bench._results import SuiteResult, Table, format_number, percentile
from delos.bench._servers import Gateway, echo, upstream, upstream_gateway
from delos.bench._targets import streaming_targets

__all__ = ["declare_streaming", "run_streaming"]

_PACED_CONCURRENCY = 16
_COLUMNS = (
    "path",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "added p50 ms",
    "added p99 ms",
    "added p99.9 ms",
    "gateway CPU µs/chunk",
    "bad streams",
)


def declare_streaming(context: BenchContext) -> None:
    upstream_gateway(context)
    echo(context)


def _content(tokens: int, interval_us: int) -> str:
    return f"tokens={tokens} interval_us={interval_us}"


def _ms(values: list[float]) -> tuple[float, float, float]:
    return (
        percentile(values, 0.5) * 1000,
        percentile(values, 0.99) * 1000,
        percentile(values, 0.999) * 1000,
    )


def _check(outcomes: list[StreamOutcome], label: str, tokens: int) -> int:
    """Streams that failed or lost chunks."""
    bad = [o for o in outcomes if not o.ok or o.chunks != tokens]
    if len(bad) == len(outcomes):
        first = bad[0]
        raise RuntimeError(f"{label}: every stream failed ({first.code}, {first.chunks} chunks)")
    return len(bad)


def _gateway_streams(
    gateway: Gateway, content: str, count: int, concurrency: int, stamped: bool
) -> list[StreamOutcome]:
    request = completion_request(content)
    return asyncio.run(
        grpc_streams(gateway.port, request, count=count, concurrency=concurrency, stamped=stamped)
    )


#: Burst rounds: the three paths take turns, so a slow spell of the shared machine (the direct
#: path's own p50 was seen to move from 0.2 to 1.1 ms within minutes) falls on all of them.
_ROUNDS = 5


class _BurstRuns:
    """The burst phase's streams on each path, gathered over interleaved rounds."""

    def __init__(self, url: str, echo_port: int, gateway: Gateway, content: str) -> None:
        self._url = url
        self._echo_port = echo_port
        self._gateway = gateway
        self._content = content
        self._request = completion_request(content)
        self.direct: list[StreamOutcome] = []
        self.echo: list[StreamOutcome] = []
        self.gateway: list[StreamOutcome] = []
        #: Gateway CPU over its burst streams only (seconds).
        self.gateway_cpu_seconds = 0.0

    def warm_up(self, count: int) -> None:
        asyncio.run(direct_streams(self._url, self._content, count=count, concurrency=1))
        asyncio.run(grpc_streams(self._echo_port, self._request, count=count, concurrency=1))
        _gateway_streams(self._gateway, self._content, count, 1, False)

    def round(self, count: int) -> None:
        """``count`` streams on each path in turn: direct, echo, gateway."""
        self.direct += asyncio.run(
            direct_streams(self._url, self._content, count=count, concurrency=1)
        )
        self.echo += asyncio.run(
            grpc_streams(self._echo_port, self._request, count=count, concurrency=1)
        )
        cpu_before = self._gateway.cpu_seconds()
        self.gateway += _gateway_streams(self._gateway, self._content, count, 1, False)
        self.gateway_cpu_seconds += self._gateway.cpu_seconds() - cpu_before


def run_streaming(context: BenchContext) -> SuiteResult:
    started = time.monotonic()
    declare_streaming(context)
    context.wait_ready()
    sizes = context.sizes
    tokens = sizes.stream_tokens
    url = f"http://127.0.0.1:{upstream(context).port}/v1/chat/completions"
    burst = _content(tokens, 0)
    paced = _content(tokens, sizes.paced_interval_us)
    paced_concurrency = min(_PACED_CONCURRENCY, sizes.paced_streams)

    floor, gateway = echo(context), upstream_gateway(context)
    burst_runs = _BurstRuns(url, floor.port, gateway, burst)
    burst_runs.warm_up(min(5, sizes.stream_count))
    rounds = 1 if sizes.quick else _ROUNDS
    for index in range(rounds):
        # Equal shares, the remainder in the last round: stream_count streams on each path.
        share = sizes.stream_count // rounds
        burst_runs.round(share + (sizes.stream_count % rounds if index == rounds - 1 else 0))
    direct_paced = asyncio.run(
        direct_streams(url, paced, count=sizes.paced_streams, concurrency=paced_concurrency)
    )
    direct_ttft = _ms([o.ttft for o in burst_runs.direct])
    echo_ttft = _ms([o.ttft for o in burst_runs.echo])
    direct_delay = _ms([d / 1e6 for o in direct_paced for d in o.chunk_delays_us])
    ttft_rows = [
        (
            "upstream, direct (aiohttp client)",
            *map(format_number, direct_ttft),
            "-",
            "-",
            "-",
            "-",
            str(_check(burst_runs.direct, "direct", tokens)),
        ),
        (
            "bare grpclib echo, same client (the client's own floor)",
            *map(format_number, echo_ttft),
            "-",
            "-",
            "-",
            "-",
            str(sum(1 for o in burst_runs.echo if not o.ok)),
        ),
    ]
    chunk_rows = [
        (
            "upstream, direct (aiohttp client)",
            *map(format_number, direct_delay),
            "-",
            "-",
            "-",
            "-",
            str(_check(direct_paced, "direct", tokens)),
        )
    ]
    outcomes = burst_runs.gateway
    burst_cpu = burst_runs.gateway_cpu_seconds / max(1, len(outcomes) * tokens)
    ttft = _ms([o.ttft for o in outcomes])
    added = tuple(g - d - e for g, d, e in zip(ttft, direct_ttft, echo_ttft, strict=True))
    label = "gateway, as shipped"
    ttft_rows.append(
        (
            label,
            *map(format_number, ttft),
            *map(format_number, added),
            format_number(burst_cpu * 1e6, 1),
            str(_check(outcomes, label, tokens)),
        )
    )
    cpu_before = gateway.cpu_seconds()
    outcomes = _gateway_streams(gateway, paced, sizes.paced_streams, paced_concurrency, True)
    chunks = sum(o.chunks for o in outcomes)
    paced_cpu = (gateway.cpu_seconds() - cpu_before) / max(1, chunks) * 1e6
    delay = _ms([d / 1e6 for o in outcomes for d in o.chunk_delays_us])
    added_delay = tuple(g - d for g, d in zip(delay, direct_delay, strict=True))
    chunk_rows.append(
        (
            label,
            *map(format_number, delay),
            *map(format_number, added_delay),
            format_number(paced_cpu, 1),
            str(_check(outcomes, label, tokens)),
        )
    )
    extra = _profile(context, gateway, paced, paced_cpu) if context.wants_profile else ""
    return SuiteResult(
        name="streaming",
        title=f"Streaming: {tokens}-token streams",
        method=(
            f"`CompleteStream` through the gateway as shipped (official grpcio client) and the "
            f"same stream straight from the instant upstream (aiohttp client, SSE). **Burst**: "
            f"{sizes.stream_count} streams on each path at concurrency 1, chunks written back to "
            f"back; TTFT is timed by the client; the paths take turns over {_ROUNDS} rounds, so a "
            "slower spell of the shared machine falls on each alike, and the percentiles pool "
            "the rounds. **Paced**: {sizes.paced_streams} streams at concurrency "
            f"{paced_concurrency}, one chunk every {sizes.paced_interval_us} µs, so each chunk "
            "is its own read; each chunk carries its send time on the machine's monotonic clock, "
            "so its delivery latency is measured end to end; gateway CPU per relayed chunk from "
            "`/proc/<pid>/stat` over this phase. The client stacks differ (grpcio vs aiohttp): "
            "for TTFT, the grpcio client's own cost is timed against the bare grpclib echo "
            "(which streams at once) and taken out, so `added` = gateway − direct − echo; for "
            "the paced chunks, `added` = gateway − direct, client stacks included. "
            f"{context.pinning.describe()}"
        ),
        tables=(
            Table("Time to first token, burst, concurrency 1", _COLUMNS, tuple(ttft_rows)),
            Table(
                f"Chunk delivery latency, paced, concurrency {paced_concurrency}",
                _COLUMNS,
                tuple(chunk_rows),
            ),
        ),
        targets=tuple(streaming_targets(added[1], paced_cpu)),
        extra=extra,
        seconds=time.monotonic() - started,
    )


def _profile(context: BenchContext, gateway: Gateway, content: str, cpu_per_chunk: float) -> str:
    """py-spy on the gateway while paced streams run back to back."""
    if not py_spy_available():
        return "No profile: py-spy is not installed (`pip install py-spy`)."
    seconds = context.sizes.profile_seconds
    output = context.processes.directory / "streaming-profile.txt"

    def load() -> None:
        deadline = time.monotonic() + seconds + 0.5
        while time.monotonic() < deadline:
            _gateway_streams(gateway, content, _PACED_CONCURRENCY, _PACED_CONCURRENCY, False)

    try:
        profile = record_during(gateway.workers[0].pid, seconds, output, load)
    except RuntimeError as error:
        return f"Profile not available: {error}"
    return profile_summary(
        profile,
        cpu_per_unit_us=cpu_per_chunk,
        unit="chunk",
        what=f"gateway as shipped, paced streams at concurrency {_PACED_CONCURRENCY}",
    )
