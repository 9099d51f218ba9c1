"""The provider of the scale-out suite: the fake OpenAI behind limits of its own.

:class:`LimitedProvider` serves the fake OpenAI of :mod:`delos.testing` in the benchmark's process
and enforces its own requests and tokens per minute as token buckets, as OpenAI does, answering
429 with Retry-After past them. It records when it admitted and refused each call, so a scenario
can count what reached it in any window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from delos.testing import FakeControl, FakeRequest, FakeResponse
from delos.testing.fakes import FAKE_PROVIDERS

__all__ = ["LimitedProvider", "TokenBucket", "request_tokens"]


class TokenBucket:
    """``capacity`` tokens, refilled at ``capacity`` per minute on ``clock`` (seconds)."""

    def __init__(self, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.level = capacity
        self._clock = clock
        self._at = clock()

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0: it fits now)."""
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.capacity / 60)
        self._at = now
        return max(0.0, (amount - self.level) * 60 / self.capacity)


def request_tokens(body: Mapping[str, Any]) -> int:
    """The tokens a chat request (its JSON body) counts for, up front: its prompt's words plus
    its output cap (12 when it has none)."""
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or 12
    return max(words, 1) + int(cap)


@dataclass
class LimitedProvider:
    """The fake OpenAI behind its own RPM and TPM (None: unlimited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    control: FakeControl = field(default_factory=FakeControl)
    clock: Callable[[], float] = time.monotonic
    #: Arrival times (``clock`` seconds) of the calls answered, and of those refused (429).
    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    tokens: int = 0

    def __post_init__(self) -> None:
        self._inner = FAKE_PROVIDERS["openai"].make_handler(self.control)
        self._requests = self._bucket(self.requests_per_minute)
        self._tokens = self._bucket(self.tokens_per_minute)

    def _bucket(self, per_minute: float | None) -> TokenBucket | None:
        return TokenBucket(per_minute, self.clock) if per_minute else None

    async def __call__(self, request: FakeRequest) -> FakeResponse:
        if not request.path.endswith("/chat/completions"):
            return await self._inner(request)
        now = self.clock()
        tokens = request_tokens(request.json())
        charges = ((self._requests, 1), (self._tokens, tokens))
        waits = [bucket.wait_for(amount) for bucket, amount in charges if bucket is not None]
        if any(waits):
            self.refused.append(now)
            error = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}
            retry_after = [("retry-after", f"{max(waits):.3f}")]
            return FakeResponse.json({"error": error}, 429, retry_after)
        for bucket, amount in charges:
            if bucket is not None:
                bucket.level -= amount
        self.admitted.append(now)
        self.tokens += tokens
        return await self._inner(request)

    def admitted_between(self, start: float, end: float) -> int:
        return sum(start <= at < end for at in self.admitted)
