"""Observability: Prometheus metrics, structured redacted logs, OpenTelemetry traces.

Layout:
    _metrics.py   Metrics (a registry of its own, recorded from plain values such as an
                  AttemptLike) and the HTTP/1.1 scrape endpoints serve_metrics, serve_metrics_on
    _logging.py   configure_logging (JsonFormatter in production, ReadableFormatter otherwise,
                  every line redacted) and log_request
    _tracing.py   Tracing: RPC and attempt spans (SpanHandle) over OTLP/gRPC, or a no-op without
                  an endpoint
"""

from delos.runtime.observability._logging import (
    JsonFormatter,
    ReadableFormatter,
    configure_logging,
    log_request,
)
from delos.runtime.observability._metrics import (
    ANONYMOUS,
    AttemptLike,
    Metrics,
    serve_metrics,
    serve_metrics_on,
)
from delos.runtime.observability._tracing import SpanHandle, Tracing

__all__ = [
    "ANONYMOUS",
    "AttemptLike",
    "JsonFormatter",
    "Metrics",
    "ReadableFormatter",
    "SpanHandle",
    "Tracing",
    "configure_logging",
    "log_request",
    "serve_metrics",
    "serve_metrics_on",
]
