"""The grpclib server: RuntimeService, grpc.health.v1 and reflection, with graceful shutdown.

grpclib is asyncio-only, so the process runs on anyio's asyncio backend (with uvloop when it is
installed); everything under the handlers is anyio code.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection

from delos.resilience import Clock, Sleep
from delos.runtime.config import NO_PROVIDERS_CONFIGURED, ConfigError, Settings
from delos.runtime.gateway import Gateway, open_gateway
from delos.runtime.grpc._grpclib_private import TunedServer, check_supported, stop_accepting
from delos.runtime.grpc._heap import settle_heap
from delos.runtime.grpc.auth import ClientKeys, install_auth, warn_if_exposed
from delos.runtime.grpc.service import RuntimeService
from delos.runtime.grpc.tls import server_ssl_context
from delos.runtime.observability import serve_metrics
from delos.runtime.reports import serving
from delos.runtime.routing import ResiliencePolicy

__all__ = [
    "RunningServer",
    "bind_grpc_port",
    "listening_socket",
    "open_server",
    "serve_until_signalled",
]

log = logging.getLogger("delos.runtime.grpc.server")

#: h2 remembers up to 65,536 closed streams per connection (to tell a late frame from a protocol
#: error); on the long-lived connections of a busy gateway that is resident memory that grows for
#: hours. A thousand recent streams is plenty to recognise late frames.
_MAX_CLOSED_STREAMS = 1024

#: Connections the kernel queues before the server accepts them.
_BACKLOG = 1024


def _bound_h2_memory() -> None:
    import h2.connection

    h2.connection.H2Connection.MAX_CLOSED_STREAMS = _MAX_CLOSED_STREAMS


@dataclass
class RunningServer:
    server: TunedServer
    service: RuntimeService
    gateway: Gateway
    host: str
    port: int
    #: The Prometheus endpoint's port, None when it is off.
    metrics_port: int | None = None

    async def drain(self, grace_seconds: float) -> None:
        """Stop accepting, let in-flight calls finish within ``grace_seconds``, then close."""
        calls = self.service.calls
        calls.draining = True
        stop_accepting(self.server)
        with anyio.move_on_after(grace_seconds) as scope:
            await calls.wait_idle()
        if scope.cancelled_caught:
            log.warning("shutdown grace period over; cancelling %d call(s)", calls.in_flight)
        self.server.close()
        await self.server.wait_closed()
        self.server.close_connections()


@asynccontextmanager
async def open_server(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    reuse_port: bool = False,
    policy: ResiliencePolicy | None = None,
    workers: int = 1,
    worker_index: int = 0,
    clock: Clock | None = None,
    sleep: Sleep = anyio.sleep,
) -> AsyncIterator[RunningServer]:
    """Serve on ``settings.host``/``settings.port`` (0: an ephemeral port) for the block.

    ``policy`` tunes the resilience layer; ``clock`` and ``sleep`` are the one clock of the
    gateway (tests inject a fake one).
    """
    _bound_h2_memory()
    keys = ClientKeys.from_settings(settings.api_keys, settings.api_keys_file)
    ssl_context = server_ssl_context(settings.tls_cert, settings.tls_key)
    async with (
        open_gateway(
            settings,
            transport=transport,
            policy=policy,
            workers=workers,
            clock=clock,
            sleep=sleep,
        ) as gateway,
        anyio.create_task_group() as tasks,
    ):
        service = RuntimeService(gateway)

        async def check_serving() -> bool:
            return await serving(gateway)

        check = ServiceCheck(check_serving, check_ttl=1.0, check_timeout=3.0)
        health = Health({service: [check]})
        handlers = ServerReflection.extend([service, health])
        server = TunedServer(handlers, max_concurrent_streams=settings.max_concurrent_streams)
        check_supported(server)
        install_auth(server, keys)
        warn_if_exposed(settings.host, keys, log)
        listening = bind_grpc_port(settings, reuse_port=reuse_port)
        port = int(listening.getsockname()[1])
        # asyncio listens again with the backlog given here (its default is 100).
        await server.start(sock=listening, ssl=ssl_context, backlog=_BACKLOG)
        # With --workers N the supervising process serves every worker's metrics (workers get 0).
        metrics_port = settings.metrics_port
        try:
            metrics_bound = await tasks.start(
                serve_metrics, gateway.metrics, settings.host, metrics_port
            )
        except OSError as error:
            raise _address_error(
                "DELOS_RUNTIME_METRICS_PORT", settings.host, metrics_port, error
            ) from None
        running = RunningServer(server, service, gateway, settings.host, port, metrics_bound)
        try:
            yield running
        finally:
            tasks.cancel_scope.cancel()
            if not service.calls.draining:
                server.close()
                with anyio.CancelScope(shield=True):
                    await server.wait_closed()
            server.close_connections()


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket for ``host``:``port`` (0: an ephemeral port).

    Bound here rather than by grpclib so that the bound port is known without reaching into the
    server, and so that an address in use is an ``OSError`` raised before anything started.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family, backlog=_BACKLOG, reuse_port=reuse_port)


def bind_grpc_port(settings: Settings, *, reuse_port: bool = False) -> socket.socket:
    """The gRPC listening socket. Raises :class:`ConfigError` naming the variable when the
    address cannot be bound (in use, not local, not permitted)."""
    try:
        return listening_socket(settings.host, settings.port, reuse_port=reuse_port)
    except OSError as error:
        raise _address_error("DELOS_RUNTIME_PORT", settings.host, settings.port, error) from None


def _address_error(variable: str, host: str, port: int, error: OSError) -> ConfigError:
    reason = error.strerror or str(error)
    return ConfigError(
        f"{variable}: cannot listen on {host}:{port} ({reason}); stop what holds the address "
        "or choose another port (DELOS_RUNTIME_HOST for the address)"
    )


async def serve_until_signalled(
    settings: Settings, *, reuse_port: bool = False, workers: int = 1, worker_index: int = 0
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the configured grace period."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_server(
            settings, reuse_port=reuse_port, workers=workers, worker_index=worker_index
        ) as running:
            settle_heap()
            names = ", ".join(running.gateway.providers) or "none"
            log.info(
                "delos-runtime listening on %s:%d (providers: %s)",
                running.host,
                running.port,
                names,
            )
            if not running.gateway.providers:
                log.warning("%s", NO_PROVIDERS_CONFIGURED)
            async for received in signals:
                log.info(
                    "received %s: draining (grace %.1f s)",
                    signal.Signals(received).name,
                    settings.shutdown_grace_seconds,
                )
                await running.drain(settings.shutdown_grace_seconds)
                break
