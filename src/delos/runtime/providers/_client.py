"""One pooled HTTP client per provider, with a swappable transport."""

from __future__ import annotations

import httpx

from delos.runtime.config import Settings

__all__ = ["open_http_client"]


def open_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A client with keep-alive pooling. Deadlines come from the caller's cancel scopes; the
    timeouts here only bound a connect and an idle read that nothing else would bound."""
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds, read=300.0, write=60.0, pool=30.0
    )
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30.0)
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, transport=transport, follow_redirects=False, trust_env=False
    )
