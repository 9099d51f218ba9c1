"""What every suite shares: its size (full or quick), the processes, request messages.

Suites ask the context for servers by name (:meth:`BenchContext.server`); a server is started
once and handed to every suite that asks while it runs. The full run stops every process after
each suite, so suites do not share state; the quick run starts all servers at once, which is what
keeps the smoke test short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from delos.bench._pinning import Pinning
from delos.bench._processes import ProcessSet
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["BenchContext", "Sizes", "completion_request"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How long each suite runs. Durations are seconds; counts are requests."""

    quick: bool
    load_seconds: float
    warmup_seconds: float
    concurrencies: tuple[int, ...]
    stream_count: int
    stream_tokens: int
    paced_streams: int
    paced_interval_us: int
    scenario_requests: int
    memory_requests: tuple[int, int]
    breaker_wait_in_open: float
    #: How long py-spy samples the gateway under load (0: no profile).
    profile_seconds: float
    #: Also measure the gateway on httpx's own transport (the slow fallback), and two workers.
    fallback_transport: bool = True
    two_workers: bool = True
    #: Clients of the minimal forwarder in the transport suite; the first is the gateway's own.
    forwarder_clients: tuple[str, ...] = ("aiohttp", "httpx")
    #: Scenario suites each get a gateway of their own (False: one shared, quicker to start).
    isolated_scenarios: bool = True
    #: Multiplies the fakes' latencies in the hedging suite (the quick run shrinks them).
    hedging_latency_scale: float = 1.0

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            quick=False,
            load_seconds=10.0,
            warmup_seconds=1.0,
            concurrencies=(1, 16),
            stream_count=1000,
            stream_tokens=500,
            paced_streams=32,
            paced_interval_us=2000,
            scenario_requests=2000,
            memory_requests=(10_000, 100_000),
            breaker_wait_in_open=15.0,
            profile_seconds=8.0,
        )

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(
            quick=True,
            load_seconds=0.3,
            warmup_seconds=0.1,
            concurrencies=(1, 16),
            stream_count=8,
            stream_tokens=50,
            paced_streams=4,
            paced_interval_us=500,
            scenario_requests=40,
            memory_requests=(200, 400),
            breaker_wait_in_open=0.3,
            profile_seconds=0.0,
            # Two more gateways to start would double the smoke test's start-up.
            fallback_transport=False,
            two_workers=False,
            forwarder_clients=("aiohttp",),
            isolated_scenarios=False,
            hedging_latency_scale=0.1,
        )


@dataclass
class BenchContext:
    sizes: Sizes
    processes: ProcessSet
    #: Where the peers' virtual environments live.
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "delos-bench")
    #: Profile the gateway (py-spy) under load, in every run that is not quick.
    profile: bool = True
    pinning: Pinning = field(default_factory=Pinning)
    _servers: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_profile(self) -> bool:
        """Profiles are taken in full runs unless ``--no-profile``; the quick run has no time."""
        return self.profile and self.sizes.profile_seconds > 0

    def server(self, key: str, start: Callable[[], T]) -> T:
        """The server named ``key``, started by ``start`` the first time it is asked for."""
        if key not in self._servers:
            self._servers[key] = start()
        return self._servers[key]  # type: ignore[no-any-return]

    def wait_ready(self) -> None:
        """Wait until every server started so far accepts connections."""
        self.processes.wait_all_ready()

    def reset(self) -> None:
        """Stop every server."""
        self.processes.stop_all()
        self._servers.clear()


def completion_request(
    content: str = "Say hello in five words.",
    *,
    model: str = "gpt-4o",
    provider: str = "",
    routing: int = 0,
) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            model=model,
            provider=provider,
            routing=routing,  # type: ignore[arg-type]
            messages=[pb.Message(role="user", content=content)],
        )
    )
