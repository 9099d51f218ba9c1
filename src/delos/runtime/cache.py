"""The response cache: canonical request keys, a bounded TTL store, and single flight.

``cache_key`` hashes exactly the fields that decide an answer. ``ResponseCache`` keeps answers
under that key, bounded by entry count and by bytes, each entry with its own time to live; its
``get_or_compute`` makes concurrent identical misses share one upstream call. ``replay_chunks``
cuts a cached answer into stream chunks.

The cache is not thread-safe: it lives on one event loop, and no method yields to the loop while
the store is in an inconsistent state.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
from cachetools import TLRUCache

from delos.runtime.values import (
    ChatMessage,
    ContentPart,
    DocumentPart,
    ImagePart,
    Reasoning,
    TextPart,
    Tool,
)

if TYPE_CHECKING:
    from delos.runtime.inputs import CompletionInput
    from delos.runtime.routing._outcome import RoutedAnswer

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "CacheOutcome",
    "CacheStats",
    "CachedAnswer",
    "ResponseCache",
    "cache_key",
    "replay_chunks",
    "request_cache_key",
]

#: Bytes charged to every entry on top of its content: the key, the answer object, the
#: provider and model strings, and the store's bookkeeping, rounded up.
ENTRY_OVERHEAD_BYTES: Final = 512

#: Bumped whenever the key layout changes, so old and new keys never collide.
_KEY_VERSION: Final = 1

CacheOutcome = Literal["hit", "miss", "coalesced"]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer. Token counts in tokens; ``cost_usd`` is what producing it cost, USD."""

    content: str
    finish_reason: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: Decimal

    @classmethod
    def from_routed(cls, answer: RoutedAnswer) -> CachedAnswer:
        """The part of a routed answer worth keeping (no attempts, no latencies)."""
        return cls(
            content=answer.content,
            finish_reason=answer.finish_reason,
            provider=answer.provider,
            model=answer.model,
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            usage_estimated=answer.usage.estimated,
            cost_usd=answer.cost_usd,
        )

    @property
    def size_bytes(self) -> int:
        """What the entry counts against ``max_bytes``: UTF-8 content plus a fixed overhead."""
        return len(self.content.encode("utf-8", "surrogatepass")) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was built, and its current size.

    ``hits``/``misses`` count lookups; a ``get_or_compute`` call counts as exactly one of
    ``hits``, ``misses`` or ``coalesced`` (it waited for another caller's computation).
    ``evictions`` are entries pushed out by a bound; ``expirations`` entries whose TTL ended.
    ``in_flight`` is the number of computations running now.
    """

    hits: int
    misses: int
    coalesced: int
    entries: int
    bytes: int
    evictions: int
    expirations: int
    in_flight: int


# -- keys -----------------------------------------------------------------------------------------


def cache_key(
    *,
    family: str,
    messages: Sequence[ChatMessage],
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: Sequence[str],
    output_schema: Mapping[str, Any] | None,
    tools: Sequence[Tool] = (),
    tool_choice: str = "",
    parallel_tool_calls: bool | None = None,
    reasoning: Reasoning | None = None,
) -> str:
    """The cache key of a request: hex SHA-256 of a canonical JSON document.

    Fields, and why each counts:

    - ``family``: the model family the router resolved (not the provider's model id), so the
      same family answered by two providers shares entries.
    - ``messages``: every message, in order, byte for byte (no trimming: whitespace changes what
      a model sees): role, content, parts (images and documents by a digest of their bytes),
      tool calls, the call a tool result answers, cache breakpoints.
    - ``temperature``, ``top_p``: sampling; None ("provider default") differs from any number.
      Numbers are normalised, so ``1`` and ``1.0`` give the same key.
    - ``max_tokens``: bounds the answer; None differs from any number.
    - ``stop``: compared as a set (a model stops at the first of any), so order and repeats
      do not count.
    - ``output_schema``: canonical JSON (sorted keys, numbers normalised); None (free text)
      differs from ``{}`` (any JSON).
    - ``tools`` (names, descriptions, schemas), ``tool_choice``, ``parallel_tool_calls`` and
      ``reasoning``: each changes what the model may answer.

    Nothing else counts: metadata, routing, the client's provider choice, cache flags and the
    prompt reference (whose rendered messages are already in ``messages``).
    """
    document = {
        "version": _KEY_VERSION,
        "family": family,
        "messages": [_message_document(m) for m in messages],
        "temperature": _canonical(temperature),
        "top_p": _canonical(top_p),
        "max_tokens": max_tokens,
        "stop": sorted(set(stop)),
        "output_schema": _canonical(output_schema),
        "tools": [[t.name, t.description, _canonical(t.parameters)] for t in tools],
        "tool_choice": tool_choice,
        "parallel_tool_calls": parallel_tool_calls,
        "reasoning": (
            None
            if reasoning is None
            else [reasoning.effort, reasoning.budget_tokens, reasoning.include_thoughts]
        ),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _message_document(message: ChatMessage) -> list[Any]:
    if not (
        message.parts or message.tool_calls or message.tool_call_id or message.cache_breakpoint
    ):
        return [message.role, message.content]  # the shape of plain messages' keys stays
    return [
        message.role,
        message.content,
        [_part_document(p) for p in message.parts],
        [[c.id, c.name, c.arguments_json, c.signature] for c in message.tool_calls],
        message.tool_call_id,
        message.cache_breakpoint,
    ]


def _part_document(part: ContentPart) -> list[Any]:
    if isinstance(part, TextPart):
        return ["text", part.text]
    if isinstance(part, ImagePart):
        return ["image", part.url, hashlib.sha256(part.data).hexdigest(), part.media_type]
    if isinstance(part, DocumentPart):
        return ["document", hashlib.sha256(part.data).hexdigest(), part.media_type, part.name]
    return ["thinking", part.text, part.signature, part.redacted_data, part.provider]


def request_cache_key(request: CompletionInput, *, family: str) -> str:
    """``cache_key`` of a validated request whose prompt has already been resolved."""
    return cache_key(
        family=family,
        messages=request.messages,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=request.stop,
        output_schema=request.output_schema,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        reasoning=request.reasoning,
    )


def _canonical(value: Any) -> Any:
    """A JSON-ready copy in which equal numbers are spelled alike: 1 and 1.0, 0 and -0.0."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_canonical(v) for v in value]
    raise TypeError(f"cannot build a cache key from a {type(value).__name__}")


# -- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    answer: CachedAnswer
    ttl_seconds: float


class _Store(TLRUCache[str, _Entry]):
    """A TLRU cache that counts what it pushes out.

    cachetools evicts through ``popitem`` and expires through ``expire``: overriding both is
    its documented way to observe removals.
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        super().__init__(
            maxsize=max_bytes,
            ttu=lambda _key, entry, now: now + entry.ttl_seconds,
            timer=clock,
            getsizeof=lambda entry: entry.answer.size_bytes,
        )
        self.evictions = 0
        self.expirations = 0

    def popitem(self) -> tuple[str, _Entry]:
        item = super().popitem()
        self.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        expired = super().expire(time)
        self.expirations += len(expired)
        return expired


class _Flight:
    """One running computation; followers wait on ``done`` and read ``answer``."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        #: Set when the computation succeeded; None when it failed or was cancelled.
        self.answer: CachedAnswer | None = None


class ResponseCache:
    """Answers by cache key, bounded by ``max_entries`` and ``max_bytes``, each with a TTL.

    cachetools' ``maxsize`` bounds one sum (of ``getsizeof``), so it can hold only one of the two
    bounds: the ``TLRUCache`` enforces the byte bound, and ``put`` enforces the entry bound by
    evicting the least recently used entry before inserting a new key. Both evictions go through
    the same LRU order. Expired entries count against neither bound (they are dropped first).

    ``clock``: monotonic seconds, anyio's by default (the gateway passes its own; tests inject a
    fake one). It is read only inside the cache's methods, never while constructing. Raises
    ``ValueError`` on a non-positive bound or TTL.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        default_ttl_seconds: float,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        _check_ttl(default_ttl_seconds)
        self._max_entries = max_entries
        self._default_ttl = default_ttl_seconds
        self._store = _Store(max_bytes, clock)
        # Bounded by construction: a key is present only while its computation runs.
        self._flights: dict[str, _Flight] = {}
        self._hits = 0
        self._misses = 0
        self._coalesced = 0

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            coalesced=self._coalesced,
            entries=len(self._store),
            bytes=int(self._store.currsize),
            evictions=self._store.evictions,
            expirations=self._store.expirations,
            in_flight=len(self._flights),
        )

    def get(self, key: str) -> CachedAnswer | None:
        """The live answer under ``key``, or None; counts a hit or a miss."""
        answer = self._lookup(key)
        if answer is None:
            self._misses += 1
        else:
            self._hits += 1
        return answer

    def put(self, key: str, answer: CachedAnswer, ttl_seconds: float | None = None) -> bool:
        """Store ``answer`` for ``ttl_seconds`` (default: the cache's), evicting as needed.

        Returns False, storing nothing, when the answer alone exceeds ``max_bytes``.
        """
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        _check_ttl(ttl)
        if answer.size_bytes > self._store.maxsize:
            self._store.pop(key, None)  # a stale value must not outlive its replacement
            return False
        if key not in self._store:
            while len(self._store) >= self._max_entries:
                self._store.popitem()
        self._store[key] = _Entry(answer, ttl)
        return True

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[tuple[CachedAnswer, bool]]],
        *,
        ttl_seconds: float | None = None,
    ) -> tuple[CachedAnswer, CacheOutcome]:
        """The answer under ``key``, computing it at most once among concurrent callers.

        ``compute`` returns ``(answer, cacheable)``; only cacheable answers are stored. The first
        caller to miss is the leader and runs its ``compute``; later callers for the same key
        wait for it and receive its answer, cacheable or not (it answers exactly their request,
        produced while they waited).

        When the leader fails or is cancelled its error stays its own: followers are woken, the
        first to run becomes the new leader with its own ``compute``, and the rest wait for it.
        This trades a second upstream call for not failing requests that might succeed, and
        keeps the one-computation-at-a-time promise. Errors from ``compute`` propagate to the
        caller that ran it.
        """
        if ttl_seconds is not None:
            _check_ttl(ttl_seconds)
        while True:
            answer = self._lookup(key)
            if answer is not None:
                self._hits += 1
                return answer, "hit"
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.answer is not None:
                self._coalesced += 1
                return flight.answer, "coalesced"

        self._misses += 1
        flight = self._flights[key] = _Flight()
        try:
            answer, cacheable = await compute()
            if cacheable:
                self.put(key, answer, ttl_seconds)
            flight.answer = answer
        finally:
            # Synchronous, so it cannot be interrupted: no shield needed even when the leader
            # is being cancelled. Followers must always be woken, or they would wait forever.
            del self._flights[key]
            flight.done.set()
        return answer, "miss"

    def _lookup(self, key: str) -> CachedAnswer | None:
        entry = self._store.get(key)
        return None if entry is None else entry.answer


def _check_ttl(seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"a time to live must be positive, got {seconds!r} seconds")


# -- replay ---------------------------------------------------------------------------------------

# A word and the whitespace after it, or a run of leading whitespace.
_WORD = re.compile(r"\S+\s*|\s+")


def replay_chunks(answer: CachedAnswer, *, chunk_chars: int = 64) -> list[str]:
    """Cut ``answer.content`` into stream chunks of at most ``chunk_chars`` characters.

    Chunks end after whitespace, so words stay whole; a word longer than ``chunk_chars`` (text
    without spaces, such as Chinese or a long URL) is cut at ``chunk_chars``. Joining the chunks
    gives the content back exactly; empty content gives no chunks. Raises ``ValueError`` when
    ``chunk_chars`` is less than 1.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    chunks: list[str] = []
    current = ""
    for match in _WORD.finditer(answer.content):
        word = match.group()
        if current and len(current) + len(word) > chunk_chars:
            chunks.append(current)
            current = ""
        while len(word) > chunk_chars:
            chunks.append(word[:chunk_chars])
            word = word[chunk_chars:]
        current += word
    if current:
        chunks.append(current)
    return chunks
