"""One pooled HTTP client per provider.

The client is the largest single cost of the hot path after the gRPC server itself, and layers
on top of it multiply that cost (docs/benchmarks.md). On asyncio, where the server runs, the
adapters use :class:`~._h1.H1Client`; on trio (the adapters' tests run on both backends), httpx.
Both send a request's path byte for byte as built, which SigV4 (Bedrock) signs.
``DELOS_RUNTIME_HTTP_TRANSPORT`` (``auto``, ``httpx``) can pin httpx: the slower fallback, its
measured cost in docs/benchmarks.md.
"""

from __future__ import annotations

import httpx
import sniffio

from delos.runtime.config import DEFAULT_MAX_CONNECTIONS, Settings
from delos.runtime.providers._h1 import H1Client
from delos.runtime.providers._transport import HttpxClient, UpstreamClient

__all__ = ["open_http_client"]

#: Connections beyond the requests' own, for availability probes and model discovery.
_PROBE_CONNECTIONS = 8
#: Idle connections kept open for reuse at most.
_KEEPALIVE_CONNECTIONS = 128
#: How long one read of an answer may wait for bytes (seconds). Deadlines come from the
#: caller's cancel scopes; this only bounds what nothing else would.
_READ_TIMEOUT = 300.0


def _on_asyncio() -> bool:
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def open_http_client(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> UpstreamClient:
    """A client with keep-alive pooling. Call it inside the event loop it will serve.

    ``transport``: an httpx transport (tests give a mock) makes it an httpx client.
    ``max_connections``: the requests the router lets run at once towards this provider (its
    connection slots); the pool holds that many plus a few for probes, so a request that got a
    slot never queues here.
    """
    pool_size = max_connections + _PROBE_CONNECTIONS
    if transport is None and settings.http_transport == "auto" and _on_asyncio():
        return H1Client(
            connect_timeout=settings.connect_timeout_seconds,
            max_idle=min(max_connections, _KEEPALIVE_CONNECTIONS),
        )
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds, read=_READ_TIMEOUT, write=60.0, pool=5.0
    )
    limits = httpx.Limits(
        max_connections=pool_size,
        max_keepalive_connections=min(max_connections, _KEEPALIVE_CONNECTIONS),
        keepalive_expiry=30.0,
    )
    return HttpxClient(
        httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )
    )
