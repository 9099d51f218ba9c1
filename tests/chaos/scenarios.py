"""The chaos matrix: every fault, what the client must see, written down before running it.

``expected(fault, mode, routing)`` is the contract. ``fallback`` routing puts the faulty provider
first (quality routing with a configured order) and a healthy provider second; ``specific`` asks
for the faulty provider alone. "ok" means a complete, well-formed answer (from the healthy provider
when the faulty one cannot give one); anything else is the exact gRPC status the client gets —
within the deadline, never a hang, never an OK stream that is secretly truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from delos.testing import Behaviour, Fault

__all__ = ["FAULTS", "OBSERVED", "ChaosFault", "expected"]

#: (provider, fault, mode, routing, expected, observed) of every scenario run, for the report.
OBSERVED: list[tuple[str, str, str, str, str, str]] = []


@dataclass(frozen=True)
class ChaosFault:
    name: str
    behaviour: Behaviour | None  # None: connection refused (nothing listens)
    #: The gRPC status for the faulty provider alone (None: it still answers well).
    alone: str | None
    #: Only some providers can produce it (e.g. a bad CRC needs a binary framing).
    providers: frozenset[str] | None = None
    #: The fault only shows in streams (unary answers are unaffected).
    stream_only: bool = False
    #: Streams fail after output reached the client: an error, never a fallback.
    after_commit: bool = False


def _http(status: int, **extra: object) -> Behaviour:
    return Behaviour(fault=Fault.HTTP_ERROR, error_status=status, **extra)  # type: ignore[arg-type]


FAULTS: Final[tuple[ChaosFault, ...]] = (
    ChaosFault("connection_refused", None, "UNAVAILABLE"),
    ChaosFault("reset_before_headers", Behaviour(fault=Fault.RESET_BEFORE_HEADERS), "UNAVAILABLE"),
    ChaosFault(
        "reset_mid_body", Behaviour(fault=Fault.RESET_MID_BODY), "UNAVAILABLE", after_commit=True
    ),
    ChaosFault("headers_then_silence", Behaviour(fault=Fault.HEADERS_THEN_SILENCE), "UNAVAILABLE"),
    ChaosFault(
        "silence_before_headers", Behaviour(fault=Fault.SILENCE_BEFORE_HEADERS), "UNAVAILABLE"
    ),
    ChaosFault(
        "slow_drip",
        Behaviour(fault=Fault.SLOW_DRIP),
        "UNAVAILABLE",
        stream_only=True,
        after_commit=True,
    ),
    ChaosFault("http_500", _http(500), "UNAVAILABLE"),
    ChaosFault("http_502", _http(502), "UNAVAILABLE"),
    ChaosFault("http_503", _http(503), "UNAVAILABLE"),
    ChaosFault("http_504", _http(504), "UNAVAILABLE"),
    ChaosFault(
        "anthropic_529",
        _http(529, retry_after=1),
        "UNAVAILABLE",
        providers=frozenset({"anthropic"}),
    ),
    ChaosFault("http_429_seconds", _http(429, retry_after=2), "RESOURCE_EXHAUSTED"),
    ChaosFault(
        "http_429_date",
        _http(429, retry_after="Wed, 21 Oct 2065 07:28:00 GMT"),
        "RESOURCE_EXHAUSTED",
    ),
    ChaosFault("http_401", _http(401), "FAILED_PRECONDITION"),
    ChaosFault("http_403", _http(403), "FAILED_PRECONDITION"),
    ChaosFault(
        "invalid_json", Behaviour(fault=Fault.INVALID_JSON), "UNAVAILABLE", after_commit=True
    ),
    ChaosFault("wrong_content_type", Behaviour(fault=Fault.WRONG_CONTENT_TYPE), "UNAVAILABLE"),
    ChaosFault("truncated", Behaviour(fault=Fault.TRUNCATED), "UNAVAILABLE", after_commit=True),
    ChaosFault(
        "stream_error_event",
        Behaviour(fault=Fault.STREAM_ERROR_EVENT),
        "UNAVAILABLE",
        stream_only=True,
        after_commit=True,
    ),
    ChaosFault("oversized_body", Behaviour(fault=Fault.OVERSIZED_BODY), "UNAVAILABLE"),
    ChaosFault(
        "bad_crc",
        Behaviour(fault=Fault.BAD_CRC),
        "UNAVAILABLE",
        providers=frozenset({"bedrock"}),
        stream_only=True,
        after_commit=True,
    ),
    ChaosFault("no_final_usage", Behaviour(fault=Fault.NO_FINAL_USAGE), None),
)


def expected(fault: ChaosFault, mode: str, routing: str) -> str:
    """ "ok" or the gRPC status name the client must get."""
    if fault.alone is None or (fault.stream_only and mode == "unary"):
        return "ok"
    if mode == "stream" and fault.after_commit:
        return fault.alone  # output already reached the client: no fallback, an error
    return "ok" if routing == "fallback" else fault.alone
