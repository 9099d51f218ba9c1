"""One pooled HTTP client per provider, with a swappable transport.

The transport is the largest single cost of the hot path: httpx's own (httpcore) spends several
times more CPU per request than aiohttp's (docs/benchmarks.md). On asyncio, where the server runs,
the adapters use aiohttp under httpx's API (``httpx-aiohttp``) when it is installed; under trio
(the adapters' tests run on both backends) httpx's own transport, the only one that runs there.
``DELOS_RUNTIME_HTTP_TRANSPORT`` (``auto``, ``httpx``, ``aiohttp``) overrides the choice.
"""

from __future__ import annotations

import importlib.util

import httpx
import sniffio

from delos.runtime.config import DEFAULT_MAX_CONNECTIONS, Settings

__all__ = ["open_http_client"]

#: Connections beyond the requests' own, for availability probes and model discovery.
_PROBE_CONNECTIONS = 8
#: Idle connections kept open for reuse at most.
_KEEPALIVE_CONNECTIONS = 128


def _limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=max_connections + _PROBE_CONNECTIONS,
        max_keepalive_connections=min(max_connections, _KEEPALIVE_CONNECTIONS),
        keepalive_expiry=30.0,
    )


def _default_transport(
    settings: Settings, limits: httpx.Limits, *, exact_paths: bool
) -> httpx.AsyncBaseTransport | None:
    if settings.http_transport == "httpx" or exact_paths:
        return None
    try:
        on_asyncio = sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        on_asyncio = False
    if not on_asyncio or importlib.util.find_spec("httpx_aiohttp") is None:
        return None  # aiohttp runs only on asyncio, and only when installed
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=limits, trust_env=False)


def open_http_client(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    exact_paths: bool = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> httpx.AsyncClient:
    """A client with keep-alive pooling. Deadlines come from the caller's cancel scopes; the
    timeouts here only bound a connect and an idle read that nothing else would bound.

    ``exact_paths``: the request path must go out byte for byte as built (SigV4 signs it, and
    aiohttp re-quotes percent-encoded paths), so httpx's own transport is used.

    ``max_connections``: the requests the router lets run at once towards this provider (its
    connection slots); the pool holds that many plus a few for probes, so a request that got a
    slot never queues here, and the pool timeout only bounds a probe.
    """
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds, read=300.0, write=60.0, pool=5.0
    )
    limits = _limits(max_connections)
    return httpx.AsyncClient(
        timeout=timeout,
        limits=limits,
        transport=transport or _default_transport(settings, limits, exact_paths=exact_paths),
        follow_redirects=False,
        trust_env=False,
    )
