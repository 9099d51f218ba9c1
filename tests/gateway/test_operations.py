"""Operations end to end: traces, metrics, logs without secrets, client keys, TLS."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.observability import configure_logging
from delos.runtime.redaction import Redactor
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub
from delos.testing import Fault
from delos.testing.fakes import FAKE_KEYS
from tests.gateway.harness import open_harness
from tests.observability.servers import write_self_signed
from tests.observability.test_tracing import Receiver, receiver  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

COMPLETE = "delos.runtime.v1.RuntimeService/Complete"


def gpt4o(**fields: object) -> pb.CompleteRequest:
    fields.setdefault("messages", [pb.Message(role="user", content="hello there")])
    return pb.CompleteRequest(params=pb.CompletionParams(model="gpt-4o", **fields))  # type: ignore[arg-type]


async def test_spans_for_a_raced_and_a_retried_request_reach_the_collector(
    receiver: Receiver,  # noqa: F811
) -> None:
    async with open_harness(
        ("openai", "openrouter"), settings={"observe_endpoint": receiver.endpoint}
    ) as h:
        await h.stub.Complete(
            gpt4o(routing=pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED),
            metadata={"traceparent": "00-0af7651916cd43dd8448eb211c00f0aa-b7ad6b7169203331-01"},
        )
        h.controls["openai"].fail_next(1, Fault.HTTP_ERROR, error_status=500)
        await h.stub.Complete(gpt4o(provider="openai"))
    # Leaving the harness shut tracing down, which flushed every span.
    spans = receiver.collector.spans
    rpcs = [s for s in spans if s.name == COMPLETE]
    assert len(rpcs) == 2
    raced, retried = rpcs
    assert raced.trace_id == "0af7651916cd43dd8448eb211c00f0aa"  # the caller's trace continued
    children = {rpc.span_id: [s for s in spans if s.parent_span_id == rpc.span_id] for rpc in rpcs}
    race_kinds = sorted(s.attributes["delos.attempt.kind"] for s in children[raced.span_id])
    assert race_kinds == ["race", "race"]
    retry_kinds = [s.attributes["delos.attempt.kind"] for s in children[retried.span_id]]
    assert retry_kinds == ["primary", "retry"]
    won = next(
        s for s in children[retried.span_id] if s.attributes["delos.attempt.kind"] == "retry"
    )
    assert won.attributes["gen_ai.system"] == "openai"
    assert won.attributes["gen_ai.request.model"] == "gpt-4o"
    assert won.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert won.attributes["gen_ai.usage.output_tokens"] == 12
    assert won.attributes["delos.breaker.state"] == "closed"
    assert won.attributes["delos.cost_usd"] > 0
    for span in spans:
        for value in span.attributes.values():
            assert not any(key in str(value) for key in FAKE_KEYS.values())


async def test_a_metrics_scrape_shows_the_workload() -> None:
    async with open_harness(("openai", "openrouter"), settings={"metrics_port": 0}) as h:
        await h.stub.Complete(gpt4o())
        await h.stub.Complete(gpt4o(use_cache=True))
        await h.stub.Complete(gpt4o(use_cache=True))
        with pytest.raises(GRPCError):
            await h.stub.Complete(gpt4o(temperature=9))
        text = h.running.gateway.metrics.render().decode()
    assert 'status="OK"' in text and 'status="INVALID_ARGUMENT"' in text
    assert "delos_cache_hits_total 1.0" in text.replace("{}", "")
    assert 'provider="openai"' in text
    for key in FAKE_KEYS.values():
        assert key not in text


async def test_the_metrics_endpoint_serves_prometheus_text(free_tcp_port: int) -> None:
    async with open_harness(settings={"metrics_port": free_tcp_port}) as h:
        await h.stub.Complete(gpt4o(provider="openai"))
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{h.running.metrics_port}/metrics")
    assert scrape.status_code == 200
    assert "delos_requests_total" in scrape.text


async def test_no_key_appears_in_logs_errors_or_metrics_during_failures() -> None:
    messages: list[str] = []
    buffer = io.StringIO()
    handler = configure_logging("debug", "production", Redactor(FAKE_KEYS.values()), stream=buffer)
    try:
        async with open_harness(("openai", "openrouter")) as h:
            for status in (401, 500, 429):
                h.controls["openai"].fail_next(2, Fault.HTTP_ERROR, error_status=status)
                with pytest.raises(GRPCError) as raised:
                    await h.stub.Complete(gpt4o(provider="openai"))
                messages.append(raised.value.message or "")
            metrics = h.running.gateway.metrics.render().decode()
    finally:
        logging.getLogger().removeHandler(handler)
    output = buffer.getvalue() + "".join(messages) + metrics
    assert '"rpc": "Complete"' in buffer.getvalue() or '"rpc":"Complete"' in buffer.getvalue()
    for key in FAKE_KEYS.values():
        assert key not in output


async def test_client_keys_guard_everything_but_health() -> None:
    settings = {"api_keys": "ci:secret-ci-key-123,ops:secret-ops-key-456"}
    async with open_harness(settings=settings) as h:
        request = gpt4o(provider="openai")
        with pytest.raises(GRPCError) as missing:
            await h.stub.Complete(request)
        with pytest.raises(GRPCError) as wrong:
            await h.stub.Complete(request, metadata={"authorization": "Bearer nope"})
        ok = await h.stub.Complete(request, metadata={"authorization": "Bearer secret-ops-key-456"})
        health = await h.stub.Health(pb.HealthRequest())
        metrics = h.running.gateway.metrics.render().decode()
    assert missing.value.status is Status.UNAUTHENTICATED
    assert wrong.value.status is Status.UNAUTHENTICATED
    assert "secret" not in (wrong.value.message or "")
    assert ok.content and health.status == pb.HealthResponse.STATUS_SERVING
    assert 'client="ops"' in metrics  # spend is attributed to the key's name


async def test_tls_round_trip_with_a_self_signed_certificate(tmp_path: Path) -> None:
    pair = write_self_signed(tmp_path)
    settings = {"tls_cert": str(pair.cert), "tls_key": str(pair.key)}
    async with open_harness(settings=settings) as h:
        context = ssl.create_default_context(cafile=str(pair.cert))
        context.set_alpn_protocols(["h2"])
        channel = Channel("127.0.0.1", h.running.port, ssl=context)
        try:
            with anyio.fail_after(10):
                response = await RuntimeServiceStub(channel).Complete(gpt4o(provider="openai"))
        finally:
            channel.close()
    assert response.content
