"""Reproducible benchmarks of the gateway: ``python -m delos.bench`` (``just bench``).

Every server runs in its own process on 127.0.0.1, load comes from an external generator
(h2load) or from clients in the benchmark's own process, and every run is bounded in count and
time. Results go to ``docs/benchmarks.md``.

Layout:
    __main__.py     ``python -m delos.bench``: runs _cli.main
    _cli.py         the command: suites to run, --quick, pinning, the reports to rewrite
    _suites.py      the suites in report order, and the runner
    _context.py     sizes (full or quick) and the servers suites share
    _pinning.py     which cores the servers under test and the load run on
    _servers.py     starting the gateway, upstream, fakes and reference servers
    _processes.py   child processes: started (pinned), measured from /proc, stopped by PID
    _h2load.py      load from h2load, gRPC frames
    _measure.py     one h2load point: throughput, latency, CPU per request
    _clients.py     grpcio and aiohttp clients that read answers (streams, scenarios)
    _targets.py     the hot-path targets: limits and judging
    _overhead.py, _streaming.py, _hedging.py, _adaptation.py, _breaker.py, _memory.py,
    _transport.py, _peers.py, _scale_out.py
                    one suite each
    _gc_stats.py    collection pauses timed in the gateway, read on a signal
    _profile.py     py-spy profiles summarised by self time
    _layers.py      which layer of the stack a profiled frame belongs to
    _limited_provider.py, _redis_child.py, _replicas.py, _scale_out_sharing.py,
    _scale_out_faults.py, _scale_out_report.py
                    the scale-out suite: its provider, Redis, replicas, scenarios, figures
    _results.py     tables, targets, percentiles
    _report.py      the Markdown report
    _upstream.py    the instant OpenAI-compatible upstream
    _echo.py        the bare grpclib echo server and the minimal forwarders
    serve.py        the entry point of every server process
"""

from delos.bench._cli import main
from delos.bench._context import BenchContext, Sizes
from delos.bench._results import SuiteResult, Table, Target, percentile
from delos.bench._suites import DEFAULT_SUITES, SUITES, Suite, run_suites

__all__ = [
    "DEFAULT_SUITES",
    "SUITES",
    "BenchContext",
    "Sizes",
    "Suite",
    "SuiteResult",
    "Table",
    "Target",
    "main",
    "percentile",
    "run_suites",
]
