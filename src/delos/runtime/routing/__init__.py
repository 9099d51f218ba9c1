"""Routing: candidates, strategies, races, hedges, retries, fallbacks and what they cost.

Layout:
    _candidates.py  which (provider, model) pairs can serve a request, in strategy order
    _guards.py      breakers, limiters, latency table and retry budget around the providers
    _attempts.py    one guarded upstream attempt and the request state attempts share
    _outcome.py     answers, attempt records and their cost
    _router.py      the router: races, hedges, retries, fallbacks, commit point
"""

from delos.runtime.routing._attempts import RequestRun, Sink
from delos.runtime.routing._candidates import Candidate, candidates_for, estimated_cost
from delos.runtime.routing._guards import Guards, ResiliencePolicy
from delos.runtime.routing._outcome import AttemptRecord, RoutedAnswer, priced_usage
from delos.runtime.routing._router import Router

__all__ = [
    "AttemptRecord",
    "Candidate",
    "Guards",
    "RequestRun",
    "ResiliencePolicy",
    "RoutedAnswer",
    "Router",
    "Sink",
    "candidates_for",
    "estimated_cost",
    "priced_usage",
]
