"""A real gateway on an ephemeral port in front of fake providers, for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from grpclib.client import Channel

from delos.runtime.config import Settings
from delos.runtime.grpc.server import RunningServer, open_server
from delos.runtime.routing import ResiliencePolicy
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub
from delos.testing import FakeControl, FakeServer
from delos.testing.fakes import FAKE_KEYS, open_fakes

SENTINEL_KEYS = FAKE_KEYS


@dataclass
class Harness:
    running: RunningServer
    channel: Channel
    stub: RuntimeServiceStub
    fakes: dict[str, FakeServer] = field(default_factory=dict)
    controls: dict[str, FakeControl] = field(default_factory=dict)


@asynccontextmanager
async def open_harness(
    providers: tuple[str, ...] = ("openai",),
    *,
    settings: Mapping[str, Any] | None = None,
    policy: ResiliencePolicy | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Harness]:
    """Fakes for ``providers``, a gateway on them, and a channel to the gateway."""
    async with AsyncExitStack() as stack:
        fakes = await stack.enter_async_context(open_fakes(providers))
        values: dict[str, Any] = {"port": 0, "metrics_port": 0, **fakes.settings}
        values.update(settings or {})
        extra: dict[str, Any] = {"policy": policy}
        if clock is not None:
            extra["clock"] = clock
        running = await stack.enter_async_context(
            open_server(Settings.model_validate(values), **extra)
        )
        channel = Channel("127.0.0.1", running.port)
        stack.callback(channel.close)
        yield Harness(running, channel, RuntimeServiceStub(channel), fakes.servers, fakes.controls)
