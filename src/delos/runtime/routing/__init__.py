"""Routing: candidates, strategies, races, hedges, retries, fallbacks and what they cost.

Layout:
    _candidates.py  which (provider, model) pairs can serve a request, in strategy order
    _guards.py      breakers, limiters, latency table, retry budget, and the clock that times them
    _attempts.py    one guarded upstream attempt, its retries, and the request state they share
                    (completions, streams and embeddings alike)
    _outcome.py     answers, attempt records (kind, outcome) and their cost
    _fitness.py     whether a candidate can honour a request as asked, and why not
    _conversation.py  the conversation as one endpoint may receive it (foreign thinking out)
    _router.py      the router: races, hedges, retries, fallbacks, commit point
"""

from delos.runtime.routing._attempts import (
    CALL_DEADLINE,
    AttemptTimeLimit,
    RequestRun,
    Sink,
    StreamPiece,
    guarded_attempt,
    with_retries,
)
from delos.runtime.routing._candidates import Candidate, candidates_for, estimated_cost
from delos.runtime.routing._guards import Guards, ResiliencePolicy
from delos.runtime.routing._outcome import (
    AttemptKind,
    AttemptOutcome,
    AttemptRecord,
    RoutedAnswer,
    priced_usage,
)
from delos.runtime.routing._router import Router

__all__ = [
    "CALL_DEADLINE",
    "AttemptKind",
    "AttemptOutcome",
    "AttemptRecord",
    "AttemptTimeLimit",
    "Candidate",
    "Guards",
    "RequestRun",
    "ResiliencePolicy",
    "RoutedAnswer",
    "Router",
    "Sink",
    "StreamPiece",
    "candidates_for",
    "estimated_cost",
    "guarded_attempt",
    "priced_usage",
    "with_retries",
]
