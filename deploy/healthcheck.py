"""The container's health check: exit 0 when the gateway answers grpc.health.v1 with SERVING.

Run by the Dockerfile's HEALTHCHECK inside the container. It dials the gateway's own port
(``DELOS_RUNTIME_PORT``) on loopback; with TLS on (``DELOS_RUNTIME_TLS_CERT``) it trusts that
certificate and skips the host name, which loopback cannot match. ``grpc.health.v1`` needs no
client key.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys

from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

#: Longer than this and the check counts as failed, seconds.
DEADLINE_SECONDS = 3.0


def tls_context(certificate: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certificate)
    context.check_hostname = False
    # The leaf alone is trusted, also when a CA signed it.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.set_alpn_protocols(["h2"])
    return context


async def is_serving(port: int, context: ssl.SSLContext | None) -> bool:
    channel = Channel("127.0.0.1", port, ssl=context)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(), timeout=DEADLINE_SECONDS)
    finally:
        channel.close()
    return reply.status == HealthCheckResponse.SERVING


def main() -> int:
    port = int(os.environ.get("DELOS_RUNTIME_PORT") or 9001)
    certificate = os.environ.get("DELOS_RUNTIME_TLS_CERT")
    context = tls_context(certificate) if certificate else None
    try:
        serving = asyncio.run(is_serving(port, context))
    except Exception as error:
        print(f"unhealthy: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if not serving:
        print("unhealthy: not serving", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
