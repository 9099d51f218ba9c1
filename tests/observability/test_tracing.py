from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import anyio
import grpc  # type: ignore[import-untyped]
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusMessage
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from delos.runtime.errors import UpstreamUnavailable
from delos.runtime.observability import Tracing

pytestmark = pytest.mark.anyio

COMPLETE = "/delos.runtime.v1.RuntimeService/Complete"


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    kind: int
    attributes: dict[str, Any]
    status: StatusMessage
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An in-process OTLP/gRPC trace receiver."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                trace_state=span.trace_state,
                                kind=span.kind,
                                attributes=_attributes(span.attributes),
                                status=span.status,
                                resource=resource,
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> ReceivedSpan:
        [span] = [s for s in self.spans if s.name == name]
        return span


@dataclass
class Receiver:
    collector: Collector
    endpoint: str


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Receiver(collector, f"http://127.0.0.1:{port}")
    finally:
        server.stop(grace=None).wait()


async def test_rpc_and_attempt_spans_reach_the_collector_as_parent_and_child(
    receiver: Receiver,
) -> None:
    tracing = Tracing.from_settings(receiver.endpoint, service_name="delos-test")
    assert tracing.enabled
    with tracing.rpc_span(COMPLETE, {}) as rpc:
        rpc.set_client("team-a")
        rpc.set_cache_hit(False)
        rpc.set_rpc_status_code(0)
        with tracing.attempt_span("openai", "gpt-4o", "primary", "closed") as attempt:
            attempt.set_result(
                response_model="gpt-4o-2024-08-06",
                input_tokens=100,
                output_tokens=20,
                finish_reasons=["stop"],
                cost_usd=0.0031,
            )
        trace_id = rpc.trace_id
    tracing.shutdown()

    server = receiver.collector.named("delos.runtime.v1.RuntimeService/Complete")
    chat = receiver.collector.named("chat gpt-4o")
    assert server.trace_id == chat.trace_id == trace_id
    assert server.parent_span_id == ""
    assert chat.parent_span_id == server.span_id
    assert server.kind == SpanMessage.SPAN_KIND_SERVER
    assert chat.kind == SpanMessage.SPAN_KIND_CLIENT
    assert server.resource["service.name"] == "delos-test"
    assert server.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "delos.runtime.v1.RuntimeService",
        "rpc.method": "Complete",
        "rpc.grpc.status_code": 0,
        "delos.client": "team-a",
        "delos.cache.hit": False,
    }
    assert chat.attributes == {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.finish_reasons": ["stop"],
        "delos.provider": "openai",
        "delos.attempt.kind": "primary",
        "delos.breaker.state": "closed",
        "delos.cost_usd": 0.0031,
    }
    assert chat.status.code == StatusMessage.STATUS_CODE_UNSET


async def test_an_incoming_traceparent_is_continued(receiver: Receiver) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = {"traceparent": f"00-{trace_id}-{caller_span}-01", "tracestate": "vendor=x1"}
    tracing = Tracing.from_settings(receiver.endpoint)
    with tracing.rpc_span(COMPLETE, metadata) as rpc:
        assert rpc.trace_id == trace_id
    tracing.shutdown()
    server = receiver.collector.named("delos.runtime.v1.RuntimeService/Complete")
    assert (server.trace_id, server.parent_span_id) == (trace_id, caller_span)
    assert server.trace_state == "vendor=x1"


async def test_attempts_in_task_group_children_are_children_of_the_rpc_span(
    receiver: Receiver,
) -> None:
    tracing = Tracing.from_settings(receiver.endpoint)

    async def attempt(provider: str, model: str) -> None:
        with tracing.attempt_span(provider, model, "race", "closed"):
            await anyio.lowlevel.checkpoint()

    with tracing.rpc_span(COMPLETE, {}):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(attempt, "openai", "gpt-4o")
            tasks.start_soon(attempt, "gemini", "gemini-2.0-flash")
    tracing.shutdown()

    server = receiver.collector.named("delos.runtime.v1.RuntimeService/Complete")
    racers = [
        receiver.collector.named("chat gpt-4o"),
        receiver.collector.named("chat gemini-2.0-flash"),
    ]
    assert [r.parent_span_id for r in racers] == [server.span_id, server.span_id]
    assert racers[1].attributes["gen_ai.system"] == "gcp.gemini"


async def test_a_failed_attempt_has_error_status_with_a_redacted_description(
    receiver: Receiver,
) -> None:
    tracing = Tracing.from_settings(receiver.endpoint)
    with pytest.raises(GRPCError), tracing.rpc_span(COMPLETE, {}) as rpc:
        with (
            pytest.raises(UpstreamUnavailable),
            tracing.attempt_span("anthropic", "claude-sonnet", "primary", "half_open"),
        ):
            raise UpstreamUnavailable("anthropic", "503 echoing sk-ant-api03-0123456789abcdef")
        rpc.set_rpc_status_code(Status.UNAVAILABLE.value)
        raise GRPCError(Status.UNAVAILABLE, "every candidate provider failed")
    tracing.shutdown()

    chat = receiver.collector.named("chat claude-sonnet")
    assert chat.status.code == StatusMessage.STATUS_CODE_ERROR
    assert chat.status.message == "anthropic: 503 echoing [REDACTED]"
    assert chat.attributes["error.type"] == "UpstreamUnavailable"
    assert chat.attributes["delos.breaker.state"] == "half_open"
    assert "rpc.grpc.status_code" not in chat.attributes
    server = receiver.collector.named("delos.runtime.v1.RuntimeService/Complete")
    assert server.status.code == StatusMessage.STATUS_CODE_ERROR
    assert server.status.message == "every candidate provider failed"
    assert server.attributes["rpc.grpc.status_code"] == Status.UNAVAILABLE.value


async def test_an_explicit_error_is_kept_and_redacted_with_the_given_redactor(
    receiver: Receiver,
) -> None:
    tracing = Tracing.from_settings(receiver.endpoint, redact=lambda s: s.replace("hunter2", "***"))
    with tracing.attempt_span("openai", "gpt-4o", "hedge", "closed") as attempt:
        attempt.set_error("stream ended early near hunter2", error_type="UpstreamProtocolError")
    tracing.shutdown()
    chat = receiver.collector.named("chat gpt-4o")
    assert chat.status.message == "stream ended early near ***"
    assert chat.attributes["error.type"] == "UpstreamProtocolError"


async def test_a_cancelled_attempt_is_marked_cancelled_not_failed(receiver: Receiver) -> None:
    tracing = Tracing.from_settings(receiver.endpoint)
    with anyio.CancelScope() as scope, tracing.attempt_span("openai", "gpt-4o", "race", "closed"):
        scope.cancel()
        await anyio.lowlevel.checkpoint()
    tracing.shutdown()
    chat = receiver.collector.named("chat gpt-4o")
    assert chat.attributes["delos.cancelled"] is True
    assert chat.status.code == StatusMessage.STATUS_CODE_UNSET


async def test_an_injected_exporter_receives_the_spans() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing.from_settings(None, exporter=exporter)
    with tracing.rpc_span(COMPLETE, {}):
        pass
    tracing.shutdown()
    tracing.shutdown()  # a second shutdown is harmless
    assert [s.name for s in exporter.get_finished_spans()] == [
        "delos.runtime.v1.RuntimeService/Complete"
    ]


async def test_without_an_endpoint_tracing_is_a_shared_no_op() -> None:
    tracing = Tracing.from_settings(None)
    assert not tracing.enabled
    assert Tracing.from_settings(None) is tracing
    first = tracing.rpc_span(COMPLETE, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert tracing.attempt_span("openai", "gpt-4o", "primary", "closed") is first
    with first as span:
        assert not span.recording
        assert span.trace_id == ""
        span.set_result(input_tokens=1)
        span.set_error("ignored")
    with pytest.raises(RuntimeError), tracing.rpc_span(COMPLETE, {}):
        raise RuntimeError("passes through")
    tracing.shutdown()


def test_without_an_endpoint_opentelemetry_is_never_imported() -> None:
    program = textwrap.dedent(
        """
        import sys
        from delos.runtime.observability import Tracing
        tracing = Tracing.from_settings(None)
        with tracing.rpc_span("/s/M", {}) as rpc:
            rpc.set_client("c")
            with tracing.attempt_span("p", "m", "primary", "closed") as attempt:
                attempt.set_result(input_tokens=1)
        tracing.shutdown()
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", program], check=True)
