"""Traces: an OpenTelemetry span per RPC and per upstream attempt, exported over OTLP/gRPC.

Without an endpoint, :class:`Tracing` is a no-op whose span methods return one shared context
manager: OpenTelemetry is not even imported. With one, spans go through a ``BatchSpanProcessor``
to an ``OTLPSpanExporter``. The RPC span continues the caller's W3C ``traceparent`` from gRPC
metadata; attempt spans carry the GenAI semantic-convention attributes (``gen_ai.*``) and ours
(``delos.*``). The current span lives in a context variable, which tasks started in an anyio
task group inherit, so attempts raced in child tasks are children of the RPC span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from delos.runtime.redaction import Redactor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["SpanHandle", "Tracing"]

AttributeValue = str | bool | int | float | Sequence[str]

#: Our provider names → the ``gen_ai.system`` values of the semantic conventions.
GEN_AI_SYSTEMS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
}


class SpanHandle:
    """What handlers may record on a span. This base class records nothing (tracing off)."""

    __slots__ = ()

    #: False when nothing is recorded: skip computing attributes that only tracing needs.
    recording: ClassVar[bool] = False

    @property
    def trace_id(self) -> str:
        """The trace id as 32 hex digits, ``""`` when tracing is off (to quote in logs)."""
        return ""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute; values are names and numbers, never prompts or keys."""

    def set_client(self, name: str) -> None:
        """Name the client key the request came with (``delos.client``)."""

    def set_cache_hit(self, hit: bool) -> None:
        """Whether the answer came from the cache (``delos.cache.hit``)."""

    def set_result(
        self,
        *,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] = (),
        cost_usd: float | None = None,
    ) -> None:
        """Record what the call produced: model, usage in tokens, finish reasons, cost in USD."""

    def set_rpc_status_code(self, code: int) -> None:
        """The gRPC status code the call ended with (0 is OK)."""

    def set_error(self, message: str, *, error_type: str | None = None) -> None:
        """Mark the span failed (status ERROR); ``message`` is redacted before it is kept."""


class _NoopSpanContext:
    """The context manager every span method returns when tracing is off."""

    __slots__ = ()

    def __enter__(self) -> SpanHandle:
        return _NOOP_SPAN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


_NOOP_SPAN: Final = SpanHandle()
_NOOP_CONTEXT: Final = _NoopSpanContext()


class Tracing:
    """Span factory. Build it with :meth:`from_settings`; this base class traces nothing."""

    enabled: ClassVar[bool] = False

    @classmethod
    def from_settings(
        cls,
        endpoint: str | None,
        *,
        service_name: str = "delos-runtime",
        exporter: SpanExporter | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> Tracing:
        """Tracing to the OTLP/gRPC collector at ``endpoint`` (``http://host:4317``).

        With neither ``endpoint`` nor ``exporter``: the no-op. ``exporter`` replaces the OTLP
        exporter (tests). ``redact`` masks error descriptions (default: anything shaped like a
        provider key); pass the gateway's redactor.
        """
        if endpoint is None and exporter is None:
            return _NOOP_TRACING
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            # insecure=True means plaintext gRPC to a local collector; an https:// endpoint
            # still gets TLS (the exporter decides by the scheme).
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        return _OtelTracing(service_name, exporter, redact if redact is not None else Redactor())

    def rpc_span(
        self, name: str, incoming_metadata: Mapping[str, Any]
    ) -> AbstractContextManager[SpanHandle]:
        """A server span for one RPC (``name``: ``package.Service/Method``), continuing the
        caller's trace when the metadata carries ``traceparent`` (and ``tracestate``)."""
        return _NOOP_CONTEXT

    def attempt_span(
        self, provider: str, model: str, kind: str, breaker_state: str, *, operation: str = "chat"
    ) -> AbstractContextManager[SpanHandle]:
        """A client span for one upstream call, child of the current span.

        ``kind``: primary, race, hedge, retry or fallback; ``breaker_state``: closed,
        half_open or open; ``operation``: the GenAI operation name (chat, embeddings). An
        exception leaving the block marks the span failed (redacted); a cancellation marks it
        ``delos.cancelled``.
        """
        return _NOOP_CONTEXT

    def shutdown(self) -> None:
        """Export the spans still buffered, then stop. Blocks (up to the exporter's timeout)."""


_NOOP_TRACING: Final = Tracing()


class _OtelSpan(SpanHandle):
    __slots__ = ("_failed", "_redact", "_span")

    recording = True

    def __init__(self, span: Span, redact: Callable[[str], str]) -> None:
        self._span = span
        self._redact = redact
        self._failed = False

    @property
    def trace_id(self) -> str:
        return f"{self._span.get_span_context().trace_id:032x}"

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_client(self, name: str) -> None:
        self._span.set_attribute("delos.client", name)

    def set_cache_hit(self, hit: bool) -> None:
        self._span.set_attribute("delos.cache.hit", hit)

    def set_result(
        self,
        *,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] = (),
        cost_usd: float | None = None,
    ) -> None:
        span = self._span
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if cost_usd is not None:
            span.set_attribute("delos.cost_usd", float(cost_usd))

    def set_rpc_status_code(self, code: int) -> None:
        """The gRPC status code the call ended with (0 is OK)."""
        self._span.set_attribute("rpc.grpc.status_code", code)

    def set_error(self, message: str, *, error_type: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._failed = True
        self._span.set_status(Status(StatusCode.ERROR, self._redact(message)))
        if error_type:
            self._span.set_attribute("error.type", error_type)

    def finish(self, error: BaseException | None) -> None:
        """Record how the block ended; the span itself is ended by its context manager."""
        if error is None or self._failed:
            return
        if isinstance(error, Exception):
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.set_error(str(message), error_type=type(error).__name__)
        else:  # cancellation (a race loser, a client gone): not a failure of this call
            self._span.set_attribute("delos.cancelled", True)


class _OtelTracing(Tracing):
    enabled = True

    def __init__(
        self, service_name: str, exporter: SpanExporter, redact: Callable[[str], str]
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        # A provider of our own rather than the global one: two gateways in a process (tests,
        # embedding) must not share exporters, and shutdown() must only stop ours.
        self._provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            shutdown_on_exit=False,
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("delos.runtime")
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = SpanKind.SERVER
        self._client_kind = SpanKind.CLIENT
        self._redact = redact
        self._closed = False

    @contextmanager
    def rpc_span(self, name: str, incoming_metadata: Mapping[str, Any]) -> Iterator[SpanHandle]:
        parent = self._propagator.extract(incoming_metadata)
        method = name.rpartition("/")
        attributes: dict[str, AttributeValue] = {"rpc.system": "grpc"}
        if method[1]:
            attributes["rpc.service"] = method[0].lstrip("/")
            attributes["rpc.method"] = method[2]
        with self._tracer.start_as_current_span(
            name.lstrip("/"),
            context=parent,
            kind=self._server_kind,
            attributes=attributes,
            # Exception events would carry unredacted messages and tracebacks; finish() records
            # a redacted description instead.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield from _traced(_OtelSpan(span, self._redact))

    @contextmanager
    def attempt_span(
        self, provider: str, model: str, kind: str, breaker_state: str, *, operation: str = "chat"
    ) -> Iterator[SpanHandle]:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.system": GEN_AI_SYSTEMS.get(provider, provider),
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "delos.provider": provider,
            "delos.attempt.kind": kind,
            "delos.breaker.state": breaker_state,
        }
        with self._tracer.start_as_current_span(
            f"{operation} {model}",
            kind=self._client_kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield from _traced(_OtelSpan(span, self._redact))

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._provider.force_flush()
        self._provider.shutdown()


def _traced(handle: _OtelSpan) -> Iterator[SpanHandle]:
    try:
        yield handle
    except BaseException as error:
        handle.finish(error)
        raise
    handle.finish(None)
