"""Routing: candidates, strategies, fallbacks and the attempts they make.

Layout:
    _candidates.py  which (provider, model) pairs can serve a request, in strategy order
    _outcome.py     answers, attempt records and their cost
    _router.py      the router: unary fallbacks and committed streams
"""

from delos.runtime.routing._candidates import Candidate, candidates_for, estimated_cost
from delos.runtime.routing._outcome import AttemptRecord, RoutedAnswer, priced_usage
from delos.runtime.routing._router import RoutedStream, Router

__all__ = [
    "AttemptRecord",
    "Candidate",
    "RoutedAnswer",
    "RoutedStream",
    "Router",
    "candidates_for",
    "estimated_cost",
    "priced_usage",
]
