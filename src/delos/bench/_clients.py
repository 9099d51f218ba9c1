"""Load from clients that must read answers: the official grpcio client, and aiohttp for SSE.

h2load cannot time a stream's first token or read a response's fields, so streams and the
scenario suites use these. Each runs in the benchmark's own process, never the gateway's.
Every run is bounded by a count and a per-call deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]

from delos.runtime.v1 import runtime_pb2 as pb

__all__ = [
    "CallOutcome",
    "StreamOutcome",
    "UnaryCaller",
    "direct_streams",
    "grpc_streams",
    "grpc_unary",
    "open_caller",
]

_OPTIONS = (("grpc.enable_http_proxy", 0),)


@dataclass(slots=True)
class CallOutcome:
    #: When the call started, seconds on the monotonic clock.
    started: float
    #: Call duration (seconds).
    latency: float
    ok: bool
    code: str = ""
    provider: str = ""
    #: (provider, kind, outcome) of each upstream attempt.
    attempts: tuple[tuple[str, str, str], ...] = ()
    message: str = ""


@dataclass(slots=True)
class StreamOutcome:
    started: float
    #: Time to the first non-empty delta (seconds); NaN when there was none.
    ttft: float
    latency: float
    ok: bool
    chunks: int = 0
    code: str = ""
    provider: str = ""
    attempts: tuple[tuple[str, str, str], ...] = ()
    #: For upstream chunks stamped with their send time: delivery latency (microseconds).
    chunk_delays_us: list[int] = field(default_factory=list)


def _attempts(items: object) -> tuple[tuple[str, str, str], ...]:
    return tuple((a.provider, a.kind, a.outcome) for a in items)  # type: ignore[attr-defined]


async def _bounded(count: int, concurrency: int, one: Callable[[int], object]) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await one(index)  # type: ignore[misc]

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))


class UnaryCaller:
    """Complete calls on one open channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._call = channel.unary_unary(
            "/delos.runtime.v1.RuntimeService/Complete",
            request_serializer=pb.CompleteRequest.SerializeToString,
            response_deserializer=pb.CompleteResponse.FromString,
        )
        self._list = channel.unary_unary(
            "/delos.runtime.v1.RuntimeService/ListProviders",
            request_serializer=pb.ListProvidersRequest.SerializeToString,
            response_deserializer=pb.ListProvidersResponse.FromString,
        )

    async def breaker_state(self, provider: str) -> str:
        """The provider's breaker state as ListProviders reports it (closed, open, half_open)."""
        response = await self._list(pb.ListProvidersRequest(), timeout=10.0)
        for info in response.providers:
            if info.name == provider:
                return str(info.breaker_state)
        return ""

    async def __call__(self, message: pb.CompleteRequest, deadline: float = 10.0) -> CallOutcome:
        started = time.monotonic()
        try:
            response = await self._call(message, timeout=deadline)
        except grpc.aio.AioRpcError as error:
            return CallOutcome(
                started,
                time.monotonic() - started,
                False,
                error.code().name,
                message=error.details() or "",
            )
        return CallOutcome(
            started,
            time.monotonic() - started,
            True,
            provider=response.provider,
            attempts=_attempts(response.attempts),
        )


@asynccontextmanager
async def open_caller(port: int) -> AsyncIterator[UnaryCaller]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS) as channel:
        yield UnaryCaller(channel)


async def grpc_unary(
    port: int,
    request: pb.CompleteRequest | Callable[[int], pb.CompleteRequest],
    *,
    count: int,
    concurrency: int,
    deadline: float = 10.0,
) -> list[CallOutcome]:
    """``count`` Complete calls, ``concurrency`` in flight; outcomes in completion order."""
    outcomes: list[CallOutcome] = []
    async with open_caller(port) as call:

        async def one(index: int) -> None:
            message = request(index) if callable(request) else request
            outcomes.append(await call(message, deadline))

        await _bounded(count, concurrency, one)
    return outcomes


def _stamp_delay(text: str, now_us: int) -> int | None:
    try:
        return now_us - int(text)
    except ValueError:
        return None


async def grpc_streams(
    port: int,
    request: pb.CompleteRequest,
    *,
    count: int,
    concurrency: int,
    deadline: float = 60.0,
    stamped: bool = False,
) -> list[StreamOutcome]:
    """``count`` CompleteStream calls; ``stamped`` reads each delta as an upstream send time."""
    outcomes: list[StreamOutcome] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS) as channel:
        open_stream = channel.unary_stream(
            "/delos.runtime.v1.RuntimeService/CompleteStream",
            request_serializer=pb.CompleteRequest.SerializeToString,
            response_deserializer=pb.StreamChunk.FromString,
        )

        async def one(index: int) -> None:
            started = time.monotonic()
            outcome = StreamOutcome(started, float("nan"), 0.0, False)
            try:
                async for chunk in open_stream(request, timeout=deadline):
                    if chunk.delta:
                        if outcome.chunks == 0:
                            outcome.ttft = time.monotonic() - started
                        outcome.chunks += 1
                        if stamped:
                            delay = _stamp_delay(chunk.delta, time.monotonic_ns() // 1000)
                            if delay is not None:
                                outcome.chunk_delays_us.append(delay)
                    elif chunk.finish_reason:
                        outcome.ok = True
                        outcome.provider = chunk.provider
                        outcome.attempts = _attempts(chunk.attempts)
            except grpc.aio.AioRpcError as error:
                outcome.ok = False
                outcome.code = error.code().name
            outcome.latency = time.monotonic() - started
            outcomes.append(outcome)

        await _bounded(count, concurrency, one)
    return outcomes


async def direct_streams(
    url: str,
    content: str,
    *,
    count: int,
    concurrency: int,
    model: str = "gpt-4o",
    deadline: float = 60.0,
) -> list[StreamOutcome]:
    """The same streams read straight from an OpenAI-compatible upstream (SSE over aiohttp)."""
    import aiohttp

    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    outcomes: list[StreamOutcome] = []
    timeout = aiohttp.ClientTimeout(total=deadline)
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int) -> None:
            started = time.monotonic()
            outcome = StreamOutcome(started, float("nan"), 0.0, False)
            buffer = b""
            async with session.post(url, data=body, headers=headers) as response:
                async for data in response.content.iter_any():
                    now_us = time.monotonic_ns() // 1000
                    buffer += data
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        if event == b"data: [DONE]":
                            outcome.ok = True
                            continue
                        start = event.find(b'"content":" ')
                        if start < 0:
                            continue
                        stamp = event[start + 12 : event.index(b'"', start + 12)]
                        if outcome.chunks == 0:
                            outcome.ttft = time.monotonic() - started
                        outcome.chunks += 1
                        delay = _stamp_delay(stamp.decode(), now_us)
                        if delay is not None:
                            outcome.chunk_delays_us.append(delay)
            outcome.latency = time.monotonic() - started
            outcomes.append(outcome)

        await _bounded(count, concurrency, one)
    return outcomes
