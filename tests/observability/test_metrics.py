from __future__ import annotations

import socket
from decimal import Decimal
from typing import NamedTuple

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from delos.resilience import BreakerState
from delos.runtime.observability import Metrics, serve_metrics, serve_metrics_on
from delos.runtime.redaction import Redactor
from delos.runtime.routing import AttemptKind, AttemptOutcome, AttemptRecord

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


class Attempt(NamedTuple):
    provider: str
    model: str
    kind: AttemptKind
    outcome: AttemptOutcome
    cost_usd: float


def series(metrics: Metrics) -> Series:
    """Every sample of the text exposition, by name and labels."""
    parsed: Series = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(parsed: Series, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


def test_a_scripted_set_of_requests_renders_the_expected_series() -> None:
    metrics = Metrics()
    metrics.record_request(
        rpc="Complete",
        provider="openai",
        model="gpt-4o",
        status="OK",
        latency_s=0.2,
        ttft_s=0.04,
        prompt_tokens=100,
        completion_tokens=20,
        client="team-a",
        attempts=[
            Attempt("openai", "gpt-4o", AttemptKind.PRIMARY, AttemptOutcome.WON, 0.003),
            Attempt(
                "anthropic", "claude-sonnet", AttemptKind.RACE, AttemptOutcome.CANCELLED, 0.001
            ),
        ],
    )
    metrics.record_request(
        rpc="Complete",
        provider="anthropic",
        model="claude-sonnet",
        status="OK",
        latency_s=1.5,
        ttft_s=0.3,
        prompt_tokens=10,
        completion_tokens=5,
        client="team-a",
        attempts=[
            AttemptRecord(
                "openai", "gpt-4o", AttemptKind.PRIMARY, AttemptOutcome.FAILED, cost_usd=Decimal(0)
            ),
            AttemptRecord(
                "anthropic",
                "claude-sonnet",
                AttemptKind.FALLBACK,
                AttemptOutcome.WON,
                cost_usd=Decimal("0.5"),
            ),
        ],
    )
    metrics.record_request(
        rpc="CompleteStream",
        provider="",
        model="",
        status="UNAVAILABLE",
        latency_s=0.004,
        attempts=[
            Attempt("openai", "gpt-4o", AttemptKind.PRIMARY, AttemptOutcome.FAILED, 0.0),
            Attempt("openai", "gpt-4o", AttemptKind.RETRY, AttemptOutcome.FAILED, 0.0),
            Attempt("openai", "gpt-4o", AttemptKind.HEDGE, AttemptOutcome.FAILED, 0.0),
        ],
    )
    metrics.record_attempt(Attempt("openai", "gpt-4o", AttemptKind.HEDGE, AttemptOutcome.WON, 0.0))
    metrics.record_cache_hit()
    metrics.record_cache_miss()
    metrics.record_cache_miss()
    metrics.record_cache_coalesced()
    metrics.set_breaker_state("openai", "gpt-4o", BreakerState.OPEN)
    metrics.set_breaker_state("anthropic", "claude-sonnet", "half_open")
    metrics.observe_limiter_wait("openai", 0.3)

    s = series(metrics)
    requests = "delos_requests_total"
    assert value(s, requests, provider="openai", model="gpt-4o", rpc="Complete", status="OK") == 1
    assert (
        value(s, requests, provider="anthropic", model="claude-sonnet", rpc="Complete", status="OK")
        == 1
    )
    assert (
        value(
            s, requests, provider="none", model="none", rpc="CompleteStream", status="UNAVAILABLE"
        )
        == 1
    )
    tokens = "delos_tokens_total"
    assert value(s, tokens, provider="openai", model="gpt-4o", direction="prompt") == 100
    assert value(s, tokens, provider="openai", model="gpt-4o", direction="completion") == 20
    assert value(s, tokens, provider="anthropic", model="claude-sonnet", direction="prompt") == 10
    # Spend follows the attempts, each at its own provider: the cancelled racer cost money too.
    cost = "delos_cost_usd_total"
    assert value(s, cost, provider="openai", model="gpt-4o", client="team-a") == pytest.approx(
        0.003
    )
    assert value(
        s, cost, provider="anthropic", model="claude-sonnet", client="team-a"
    ) == pytest.approx(0.501)
    attempts = "delos_upstream_attempts_total"
    assert value(s, attempts, provider="openai", model="gpt-4o", kind="primary", outcome="won") == 1
    assert (
        value(s, attempts, provider="openai", model="gpt-4o", kind="primary", outcome="failed") == 2
    )
    assert value(s, "delos_races_started_total", provider="anthropic") == 1
    assert ("delos_races_won_total", frozenset({("provider", "anthropic")})) not in s
    assert value(s, "delos_hedges_started_total", provider="openai") == 2
    assert value(s, "delos_hedges_won_total", provider="openai") == 1
    assert value(s, "delos_retries_total", provider="openai") == 1
    assert value(s, "delos_fallbacks_total", provider="anthropic") == 1
    assert value(s, "delos_cache_hits_total") == 1
    assert value(s, "delos_cache_misses_total") == 2
    assert value(s, "delos_cache_coalesced_total") == 1
    assert value(s, "delos_breaker_state", provider="openai", model="gpt-4o") == 2
    assert value(s, "delos_breaker_state", provider="anthropic", model="claude-sonnet") == 1
    assert value(s, "delos_in_flight_requests") == 0

    latency = "delos_request_latency_seconds_bucket"
    openai_latency = {"provider": "openai", "model": "gpt-4o", "rpc": "Complete"}
    assert value(s, latency, le="0.1", **openai_latency) == 0
    assert value(s, latency, le="0.25", **openai_latency) == 1
    assert value(s, latency, le="0.001", provider="none", model="none", rpc="CompleteStream") == 0
    assert value(s, latency, le="0.005", provider="none", model="none", rpc="CompleteStream") == 1
    assert value(s, latency, le="60.0", **openai_latency) == 1
    ttft = "delos_time_to_first_token_seconds"
    assert value(s, ttft + "_count", provider="openai", model="gpt-4o") == 1
    assert value(s, ttft + "_sum", provider="openai", model="gpt-4o") == pytest.approx(0.04)
    assert ("delos_time_to_first_token_seconds_count", frozenset()) not in s
    wait = "delos_limiter_wait_seconds_bucket"
    assert value(s, wait, le="0.25", provider="openai") == 0
    assert value(s, wait, le="0.5", provider="openai") == 1


def test_without_attempts_the_cost_goes_to_the_answering_model_and_anonymous_client() -> None:
    metrics = Metrics()
    metrics.record_request(
        rpc="Complete",
        provider="together",
        model="llama",
        status="OK",
        latency_s=0.1,
        cost_usd=Decimal("0.25"),
    )
    s = series(metrics)
    assert (
        value(s, "delos_cost_usd_total", provider="together", model="llama", client="anonymous")
        == 0.25
    )


def test_answers_served_from_the_cache_count_no_tokens() -> None:
    metrics = Metrics()
    metrics.record_request(
        rpc="Complete",
        provider="openai",
        model="gpt-4o",
        status="OK",
        latency_s=0.001,
        prompt_tokens=100,
        completion_tokens=20,
        cached=True,
    )
    assert not any(name == "delos_tokens_total" for name, _ in series(metrics))


def test_label_values_that_are_not_plain_names_never_reach_the_exposition() -> None:
    metrics = Metrics(redact=Redactor(["tenant-secret"]))
    for model in ("sk-proj-0123456789abcdefghij", "gpt 4 please", "tenant-secret", "x" * 200):
        metrics.record_request(
            rpc="Complete", provider="openai", model=model, status="NOT_FOUND", latency_s=0.01
        )
    text = metrics.render().decode()
    assert "sk-proj" not in text
    assert "tenant-secret" not in text
    assert "gpt 4" not in text
    s = series(metrics)
    requests = "delos_requests_total"
    common = {"provider": "openai", "rpc": "Complete", "status": "NOT_FOUND"}
    assert value(s, requests, model="redacted", **common) == 2
    assert value(s, requests, model="invalid", **common) == 2


def test_two_instances_keep_separate_counts() -> None:
    first, second = Metrics(), Metrics()
    first.record_cache_hit()
    assert value(series(first), "delos_cache_hits_total") == 1
    assert value(series(second), "delos_cache_hits_total") == 0


def test_in_flight_gauge_counts_requests_started_and_not_yet_ended() -> None:
    metrics = Metrics()
    metrics.in_flight_started()
    metrics.in_flight_started()
    assert value(series(metrics), "delos_in_flight_requests") == 2
    metrics.in_flight_ended()
    metrics.in_flight_ended()
    assert value(series(metrics), "delos_in_flight_requests") == 0


def test_an_unknown_breaker_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown breaker state"):
        Metrics().set_breaker_state("openai", "gpt-4o", "ajar")


# -- the scrape endpoint --------------------------------------------------------------------------


async def _listener() -> anyio.abc.Listener[anyio.abc.SocketStream]:
    return await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)


@both_backends
@pytest.mark.anyio
async def test_the_endpoint_serves_the_exposition_and_404_elsewhere() -> None:
    metrics = Metrics()
    metrics.record_cache_hit()
    async with anyio.create_task_group() as tasks:
        port = await tasks.start(serve_metrics_on, metrics, await _listener())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            scraped = await http.get("/metrics")
            again = await http.get("/metrics?name[]=x")  # same keep-alive connection
            elsewhere = await http.get("/")
            posted = await http.post("/metrics", content=b"x")
        tasks.cancel_scope.cancel()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "delos_cache_hits_total 1.0" in scraped.text
    assert again.status_code == 200
    assert elsewhere.status_code == 404
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"


@both_backends
@pytest.mark.anyio
async def test_a_malformed_request_gets_400_and_the_endpoint_keeps_serving() -> None:
    metrics = Metrics()
    async with anyio.create_task_group() as tasks:
        port = await tasks.start(serve_metrics_on, metrics, await _listener())
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
            answer = b""
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass
        async with httpx.AsyncClient(trust_env=False) as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
        tasks.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert scraped.status_code == 200


@both_backends
@pytest.mark.anyio
async def test_serve_metrics_binds_the_configured_port() -> None:
    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    async with anyio.create_task_group() as tasks:
        port = await tasks.start(serve_metrics, Metrics(), "127.0.0.1", free_port)
        async with httpx.AsyncClient(trust_env=False) as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
        tasks.cancel_scope.cancel()
    assert port == free_port
    assert scraped.status_code == 200


@both_backends
@pytest.mark.anyio
async def test_port_zero_serves_nothing() -> None:
    async with anyio.create_task_group() as tasks:
        assert await tasks.start(serve_metrics, Metrics(), "127.0.0.1", 0) is None
