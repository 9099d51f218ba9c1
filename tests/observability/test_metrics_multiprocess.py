"""Metrics under ``--workers N``: prometheus_client's multiprocess files, summed across workers.

prometheus_client chooses its value store when it is imported, so each "worker" here is a real
process started with ``PROMETHEUS_MULTIPROC_DIR`` set; this process only reads the files, as the
supervisor does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

_WORKER = """
import os, sys
from delos.runtime.observability import Metrics

requests, breaker = int(sys.argv[1]), sys.argv[2]
metrics = Metrics()
for _ in range(requests):
    metrics.record_request(
        rpc="Complete", provider="openai", model="gpt-4o", status="OK", latency_s=0.1
    )
metrics.set_breaker_state("openai", "gpt-4o", breaker)
metrics.observe_connection_wait("openai", 0.0, waiting=3)
metrics.in_flight_started()
print(os.getpid(), flush=True)
os._exit(0)  # ends with the request still in flight, as a worker that dies does
"""


def run_worker(directory: Path, requests: int, breaker: str) -> int:
    """Record as one worker would, in a process of its own; its pid."""
    result = subprocess.run(
        [sys.executable, "-c", _WORKER, str(requests), breaker],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout)


def summed(directory: Path) -> Series:
    """What the supervisor's endpoint serves: every worker's files, combined."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    parsed: Series = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return parsed


REQUESTS = (
    "delos_requests_total",
    frozenset({"provider": "openai", "model": "gpt-4o", "rpc": "Complete", "status": "OK"}.items()),
)
LATENCY_COUNT = (
    "delos_request_latency_seconds_count",
    frozenset({"provider": "openai", "model": "gpt-4o", "rpc": "Complete"}.items()),
)
BREAKER = ("delos_breaker_state", frozenset({"provider": "openai", "model": "gpt-4o"}.items()))
WAITERS = ("delos_connection_waiters", frozenset({"provider": "openai"}.items()))
IN_FLIGHT = ("delos_in_flight_requests", frozenset())


def test_counters_and_histograms_add_up_and_gauges_combine_by_their_mode(tmp_path: Path) -> None:
    run_worker(tmp_path, requests=3, breaker="open")
    run_worker(tmp_path, requests=2, breaker="closed")

    parsed = summed(tmp_path)

    assert parsed[REQUESTS] == 5
    assert parsed[LATENCY_COUNT] == 5
    assert parsed[BREAKER] == 2  # the worst state: one worker's breaker is open
    assert parsed[WAITERS] == 6
    assert parsed[IN_FLIGHT] == 2


def test_an_exited_worker_leaves_its_counts_but_not_its_live_gauges(tmp_path: Path) -> None:
    opened = run_worker(tmp_path, requests=3, breaker="open")
    run_worker(tmp_path, requests=2, breaker="half_open")

    mark_process_dead(opened, str(tmp_path))  # what the supervisor does when a worker exits
    parsed = summed(tmp_path)

    assert parsed[REQUESTS] == 5  # totals never go down
    assert parsed[BREAKER] == 1
    assert parsed[WAITERS] == 3
    assert parsed[IN_FLIGHT] == 1
