"""The grpclib server: RuntimeService, grpc.health.v1 and reflection, with graceful shutdown.

grpclib is asyncio-only, so the process runs on anyio's asyncio backend (with uvloop when it is
installed); everything under the handlers is anyio code.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from delos.runtime.config import Settings
from delos.runtime.gateway import Gateway, open_gateway
from delos.runtime.routing import ResiliencePolicy
from delos.runtime.service import RuntimeService
from delos.runtime.status import serving

__all__ = ["RunningServer", "open_server", "serve_until_signalled"]

log = logging.getLogger("delos.runtime.server")


@dataclass
class RunningServer:
    server: Server
    service: RuntimeService
    gateway: Gateway
    host: str
    port: int

    async def drain(self, grace_seconds: float) -> None:
        """Stop accepting, let in-flight calls finish within ``grace_seconds``, then close."""
        self.service.draining = True
        listening = getattr(self.server, "_server", None)  # grpclib has no public "stop accepting"
        if listening is not None:
            listening.close()
        with anyio.move_on_after(grace_seconds) as scope:
            await self.service.wait_idle()
        if scope.cancelled_caught:
            log.warning("shutdown grace period over; cancelling %d call(s)", self.service.in_flight)
        self.server.close()
        await self.server.wait_closed()


@asynccontextmanager
async def open_server(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    reuse_port: bool = False,
    policy: ResiliencePolicy | None = None,
    workers: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[RunningServer]:
    """Serve on ``settings.host``/``settings.port`` (0: an ephemeral port) for the block.

    ``policy`` and ``clock`` tune the resilience layer (tests inject a fake clock).
    """
    async with open_gateway(
        settings, transport=transport, policy=policy, workers=workers, clock=clock
    ) as gateway:
        service = RuntimeService(gateway)

        async def check_serving() -> bool:
            return await serving(gateway)

        check = ServiceCheck(check_serving, check_ttl=1.0, check_timeout=3.0)
        health = Health({service: [check]})
        handlers = ServerReflection.extend([service, health])
        server = Server(handlers)
        await server.start(settings.host, settings.port, reuse_port=reuse_port or None)
        port = _bound_port(server, settings.port)
        running = RunningServer(server, service, gateway, settings.host, port)
        try:
            yield running
        finally:
            if not service.draining:
                server.close()
                with anyio.CancelScope(shield=True):
                    await server.wait_closed()


def _bound_port(server: Server, configured: int) -> int:
    """The port actually bound (differs from the configured one when that is 0)."""
    listening = getattr(server, "_server", None)
    sockets = getattr(listening, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else configured


async def serve_until_signalled(
    settings: Settings, *, reuse_port: bool = False, workers: int = 1
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the configured grace period."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_server(settings, reuse_port=reuse_port, workers=workers) as running:
            names = ", ".join(running.gateway.providers) or "none"
            log.info(
                "delos-runtime listening on %s:%d (providers: %s)",
                running.host,
                running.port,
                names,
            )
            if not running.gateway.providers:
                log.warning(
                    "no providers configured: set a provider key such as "
                    "DELOS_RUNTIME_OPENAI_KEY, or start with --demo"
                )
            async for received in signals:
                log.info(
                    "received %s: draining (grace %.1f s)",
                    signal.Signals(received).name,
                    settings.shutdown_grace_seconds,
                )
                await running.drain(settings.shutdown_grace_seconds)
                break
