"""The knobs every fake provider shares: latency, token rate, faults, scripted failures.

A :class:`FakeControl` is the mutable switchboard of one fake. Tests and the demo change its
``behaviour`` while it runs, or queue one-shot behaviours (``fail_next``) that the next requests
consume in order.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "Behaviour",
    "FakeControl",
    "Fault",
    "Latency",
    "count_tokens",
    "reply_words",
]


class Fault(enum.Enum):
    """What a fake does wrong. Each fake implements every fault its wire format allows."""

    NONE = "none"
    RESET_BEFORE_HEADERS = "reset_before_headers"
    RESET_MID_BODY = "reset_mid_body"
    HEADERS_THEN_SILENCE = "headers_then_silence"
    SILENCE_BEFORE_HEADERS = "silence_before_headers"
    #: One token per second (streams only).
    SLOW_DRIP = "slow_drip"
    #: Answer with ``error_status`` and the provider's error body.
    HTTP_ERROR = "http_error"
    #: Unary: the body is not valid JSON. Streams: an event after the first tokens is corrupt.
    INVALID_JSON = "invalid_json"
    WRONG_CONTENT_TYPE = "wrong_content_type"
    #: The stream (or body) ends early, without its terminator.
    TRUNCATED = "truncated"
    #: A stream starts well, then carries the provider's in-stream error event (streams only).
    STREAM_ERROR_EVENT = "stream_error_event"
    #: An endless answer (unary body, or a stream's first event) far past any sane size.
    OVERSIZED_BODY = "oversized_body"
    #: AWS event-stream only: a frame whose message CRC is wrong.
    BAD_CRC = "bad_crc"
    #: The stream completes but never reports usage.
    NO_FINAL_USAGE = "no_final_usage"
    #: The answer is JSON that does not conform to the requested schema.
    NONCONFORMING_JSON = "nonconforming_json"


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in seconds: ``base`` scaled by a random draw.

    ``tail_probability`` of the draws are multiplied by ``tail_factor`` (a heavy tail: e.g. 5% of
    calls 20× slower); ``jitter`` is the relative spread of a log-normal factor around 1.
    """

    base: float = 0.0
    jitter: float = 0.0
    tail_probability: float = 0.0
    tail_factor: float = 1.0

    def draw(self, rng: random.Random) -> float:
        value = self.base
        if self.jitter > 0:
            value *= math.exp(rng.gauss(0.0, self.jitter))
        if self.tail_probability > 0 and rng.random() < self.tail_probability:
            value *= self.tail_factor
        return max(0.0, value)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a fake answers one request."""

    #: Before response headers (seconds).
    latency: Latency = Latency()
    #: After headers, before the first token of a stream (seconds).
    time_to_first_token: Latency = Latency()
    #: Streamed tokens per second; None sends them as fast as possible.
    tokens_per_second: float | None = None
    #: Words in a generated answer (each word is one token and one stream delta).
    completion_tokens: int = 12
    #: A fixed answer instead of a generated one.
    reply: str | None = None
    fault: Fault = Fault.NONE
    error_status: int = 500
    #: Retry-After sent with 429/503/529, seconds; a string is sent verbatim (HTTP-date).
    retry_after: float | str | None = None
    #: Tokens to send before a mid-stream fault (reset, truncation, error event).
    tokens_before_fault: int = 3

    @property
    def token_interval(self) -> float:
        """Seconds between two streamed tokens: one second for a slow drip, else from the rate."""
        if self.fault is Fault.SLOW_DRIP:
            return 1.0
        return 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0

    def with_fault(self, fault: Fault, **changes: object) -> Behaviour:
        return replace(self, fault=fault, **changes)  # type: ignore[arg-type]


@dataclass
class FakeControl:
    """The mutable state of one fake provider."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    seed: int = 0
    _queue: deque[Behaviour] = field(default_factory=deque)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def queue(self, behaviours: Sequence[Behaviour]) -> None:
        """The next requests use these behaviours, in order, then ``behaviour`` again."""
        self._queue.extend(behaviours)

    def fail_next(self, count: int, fault: Fault = Fault.HTTP_ERROR, **changes: object) -> None:
        self.queue([self.behaviour.with_fault(fault, **changes)] * count)

    def next_behaviour(self) -> Behaviour:
        return self._queue.popleft() if self._queue else self.behaviour


_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wise owls "
    "watch calm rivers carry bright leaves toward distant blue hills"
).split()


def reply_words(prompt: str, count: int) -> list[str]:
    """A deterministic answer of ``count`` words (each one token), derived from the prompt."""
    start = sum(prompt.encode()) % len(_WORDS)
    return [_WORDS[(start + i) % len(_WORDS)] for i in range(max(1, count))]


def count_tokens(texts: Sequence[str] | Callable[[], Sequence[str]]) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word, at least one per text."""
    items = texts() if callable(texts) else texts
    return sum(max(1, len(text.split())) for text in items)
