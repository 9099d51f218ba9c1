"""Every fault × {unary, stream} × {fallback routing, specific provider}, with invariants.

After every scenario: no request still in flight in the gateway or at any fake (every upstream
request closed), every attempt timer settled, and every attempt that produced tokens billed.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.routing import ResiliencePolicy
from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing.fakes import FAKE_KEYS, FAKE_PROVIDERS
from tests.chaos.scenarios import FAULTS, OBSERVED, ChaosFault, expected
from tests.gateway.harness import Harness, open_harness

pytestmark = pytest.mark.anyio

#: Short limits so that silence is detected quickly; the client deadline bounds everything.
POLICY = ResiliencePolicy(first_token_timeout=0.5, unary_timeout=1.0, idle_timeout=0.5)
DEADLINE = 8.0


def scenarios() -> list[Any]:
    cases = []
    for provider in FAKE_PROVIDERS:
        for fault in FAULTS:
            if fault.providers is not None and provider not in fault.providers:
                continue
            for mode in ("unary", "stream"):
                for routing in ("fallback", "specific"):
                    cases.append(
                        pytest.param(
                            provider,
                            fault,
                            mode,
                            routing,
                            id=f"{provider}-{fault.name}-{mode}-{routing}",
                        )
                    )
    return cases


def healthy_partner(provider: str) -> str:
    return "together" if provider == "openai" else "openai"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("provider", "fault", "mode", "routing"), scenarios())
async def test_fault(provider: str, fault: ChaosFault, mode: str, routing: str) -> None:
    partner = healthy_partner(provider)
    providers = (provider, partner) if routing == "fallback" else (provider,)
    settings: dict[str, Any] = {"quality_order": (provider, partner)}
    if fault.behaviour is None:
        url = f"http://127.0.0.1:{closed_port()}"
        settings.update(
            {
                key: (
                    url + value.removeprefix(value.split("/v1")[0].split("/api")[0])
                    if key.endswith(("base_url", "ollama_url"))
                    else value
                )
                for key, value in FAKE_PROVIDERS[provider].settings_for(url).items()
            }
        )
    async with open_harness(providers, settings=settings, policy=POLICY) as h:
        if fault.behaviour is not None:
            h.controls[provider].behaviour = fault.behaviour
        params = pb.CompletionParams(messages=[pb.Message(role="user", content="hello chaos")])
        if routing == "fallback":
            params.routing = pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED
        else:
            params.provider = provider
        with anyio.fail_after(DEADLINE + 5):
            outcome, summary, text = await _call(h, mode, pb.CompleteRequest(params=params))
        await _check_invariants(h)
    want = expected(fault, mode, routing)
    observed = outcome if outcome != "ok" else f"ok ({summary.provider})"
    OBSERVED.append((provider, fault.name, mode, routing, want, observed))
    assert outcome == want, f"expected {want}, got {outcome}: {summary}"
    if outcome == "ok":
        assert summary.finish_reason in ("stop", "length")
        assert text.strip()
        for attempt in summary.attempts:
            if attempt.usage.total_tokens:
                assert attempt.cost_usd > 0 or attempt.provider == "ollama"
        if fault.name == "no_final_usage" and summary.provider == provider:
            assert summary.usage.estimated and summary.cost_estimated
    else:
        assert provider in summary  # the error names the provider
    for secret in FAKE_KEYS.values():
        assert secret not in str(summary)


async def _call(h: Harness, mode: str, request: pb.CompleteRequest) -> tuple[str, Any, str]:
    try:
        if mode == "unary":
            response = await h.stub.Complete(request, timeout=DEADLINE)
            return "ok", response, response.content
        chunks: list[pb.StreamChunk] = []
        async with h.stub.CompleteStream.open(timeout=DEADLINE) as stream:
            await stream.send_message(request, end=True)
            async for chunk in stream:
                chunks.append(chunk)
        return "ok", chunks[-1], "".join(c.delta for c in chunks)
    except GRPCError as error:
        return Status(error.status).name, error.message or "", ""


async def _check_invariants(h: Harness) -> None:
    with anyio.fail_after(5):
        for fake in h.fakes.values():
            await fake.wait_until(lambda stats: stats.active_responses == 0)
        await h.running.service.calls.wait_idle()
    for key, snapshot in h.running.gateway.guards.latency.snapshots().items():
        assert snapshot.in_flight == 0, f"attempt on {key} never settled"
    metrics = h.running.gateway.metrics.render().decode()
    assert not any(secret in metrics for secret in FAKE_KEYS.values())
