"""The response cache: canonical keys, bounds, TTLs, single flight and stream replay."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delos.runtime.cache import (
    ENTRY_OVERHEAD_BYTES,
    CachedAnswer,
    CacheOutcome,
    ResponseCache,
    cache_key,
    replay_chunks,
    request_cache_key,
)
from delos.runtime.catalog import ModelInfo
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.routing._outcome import RoutedAnswer
from delos.runtime.values import ChatMessage, Usage


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def answer(content: str = "Paris.", provider: str = "openai") -> CachedAnswer:
    return CachedAnswer(
        content=content,
        finish_reason="stop",
        provider=provider,
        model="gpt-4o-mini",
        prompt_tokens=12,
        completion_tokens=3,
        usage_estimated=False,
        cost_usd=Decimal("0.000021"),
    )


def make_cache(
    clock: FakeClock, *, max_entries: int = 100, max_bytes: int = 1 << 20, ttl: float = 60.0
) -> ResponseCache:
    return ResponseCache(
        max_entries=max_entries, max_bytes=max_bytes, default_ttl_seconds=ttl, clock=clock
    )


# -- keys ---------------------------------------------------------------------------------------

BASE_KEY_FIELDS: dict[str, Any] = {
    "family": "gpt-4o-mini",
    "messages": (ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?")),
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 100,
    "stop": ("\n\n", "END"),
    "output_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def key_with(**changes: Any) -> str:
    return cache_key(**{**BASE_KEY_FIELDS, **changes})


def test_the_same_request_always_gives_the_same_sha256_key() -> None:
    assert key_with() == key_with()
    assert len(key_with()) == 64
    assert int(key_with(), 16) >= 0


@pytest.mark.parametrize(
    "changes",
    [
        {"family": "claude-3-5-haiku"},
        {"messages": (ChatMessage("user", "Capital of France?"),)},
        {"messages": (ChatMessage("user", "Be brief."), ChatMessage("user", "Capital of France?"))},
        {
            "messages": (
                ChatMessage("system", "Be brief. "),
                ChatMessage("user", "Capital of France?"),
            )
        },
        {"messages": tuple(reversed(BASE_KEY_FIELDS["messages"]))},
        {"temperature": 0.3},
        {"temperature": None},
        {"top_p": 1.0},
        {"top_p": None},
        {"max_tokens": 101},
        {"max_tokens": None},
        {"stop": ("\n\n",)},
        {"stop": ()},
        {"output_schema": {"type": "object"}},
        {"output_schema": None},
        {"output_schema": {}},
    ],
    ids=lambda changes: "-".join(changes),
)
def test_every_field_that_decides_the_answer_changes_the_key(changes: dict[str, Any]) -> None:
    assert key_with(**changes) != key_with()


def test_message_boundaries_count_not_just_the_concatenated_text() -> None:
    one = key_with(messages=(ChatMessage("user", "ab"), ChatMessage("user", "c")))
    other = key_with(messages=(ChatMessage("user", "a"), ChatMessage("user", "bc")))
    assert one != other


def test_none_temperature_differs_from_zero() -> None:
    assert key_with(temperature=None) != key_with(temperature=0.0)


def test_integral_numbers_hash_alike_whether_int_or_float() -> None:
    assert key_with(temperature=1) == key_with(temperature=1.0)
    assert key_with(top_p=1) == key_with(top_p=1.0)
    assert key_with(temperature=0.0) == key_with(temperature=-0.0)


def test_the_schema_is_canonicalised_key_order_and_number_spelling() -> None:
    one = {"type": "object", "properties": {"n": {"type": "number", "minimum": 1}}}
    other = {"properties": {"n": {"minimum": 1.0, "type": "number"}}, "type": "object"}
    assert key_with(output_schema=one) == key_with(output_schema=other)
    assert key_with(output_schema={"enum": [1, 2]}) != key_with(output_schema={"enum": [2, 1]})


def test_a_boolean_in_the_schema_is_not_a_number() -> None:
    assert key_with(output_schema={"const": True}) != key_with(output_schema={"const": 1})


def test_stop_sequences_count_as_a_set() -> None:
    assert key_with(stop=("END", "\n\n")) == key_with(stop=("\n\n", "END", "END"))


def request(**changes: Any) -> CompletionInput:
    base = CompletionInput(
        messages=BASE_KEY_FIELDS["messages"],
        routing=Routing.COST,
        temperature=0.2,
        top_p=0.9,
        max_tokens=100,
        stop=("\n\n", "END"),
        output_schema=BASE_KEY_FIELDS["output_schema"],
    )
    return dataclasses.replace(base, **changes)


def test_a_request_key_equals_the_key_of_its_fields() -> None:
    assert request_cache_key(request(), family="gpt-4o-mini") == key_with()


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata": {"user": "alice", "trace": "abc"}},
        {"routing": Routing.LATENCY},
        {"provider": "openai", "routing": Routing.SPECIFIC},
        {"model": "gpt-4o-mini-2024-07-18"},
        {"use_cache": True, "cache_ttl_seconds": 30},
        {"prompt_ref": "summarizer:v2", "variables": {"tone": "dry"}},
    ],
    ids=lambda changes: "-".join(changes),
)
def test_metadata_routing_and_cache_flags_never_count(changes: dict[str, Any]) -> None:
    family = "gpt-4o-mini"
    assert request_cache_key(request(**changes), family=family) == request_cache_key(
        request(), family=family
    )


# -- the store ----------------------------------------------------------------------------------


def test_a_miss_then_a_hit_after_put_and_the_counters_follow() -> None:
    cache = make_cache(FakeClock())
    assert cache.get("k") is None
    assert cache.put("k", answer())
    assert cache.get("k") == answer()
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert stats.bytes == len(b"Paris.") + ENTRY_OVERHEAD_BYTES


def test_an_entry_lives_exactly_its_own_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60.0)
    cache.put("k", answer(), ttl_seconds=5.0)
    clock.advance(4.999)
    assert cache.get("k") == answer()
    clock.advance(0.001)
    assert cache.get("k") is None
    assert cache.stats.entries == 0
    assert cache.stats.expirations == 1
    assert cache.stats.evictions == 0


def test_without_a_ttl_the_default_ttl_applies() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60.0)
    cache.put("k", answer())
    clock.advance(59.0)
    assert cache.get("k") is not None
    clock.advance(1.0)
    assert cache.get("k") is None


def test_putting_again_replaces_the_answer_and_restarts_its_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=10.0)
    cache.put("k", answer("old"))
    clock.advance(8.0)
    cache.put("k", answer("new"))
    clock.advance(8.0)
    assert cache.get("k") == answer("new")
    assert cache.stats.entries == 1
    assert cache.stats.evictions == 0


def test_the_entry_bound_evicts_the_least_recently_used_entry() -> None:
    cache = make_cache(FakeClock(), max_entries=2)
    cache.put("a", answer("A"))
    cache.put("b", answer("B"))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", answer("C"))
    assert cache.get("b") is None
    assert cache.get("a") == answer("A")
    assert cache.get("c") == answer("C")
    assert (cache.stats.entries, cache.stats.evictions) == (2, 1)


def test_expired_entries_make_room_before_anything_is_evicted() -> None:
    clock = FakeClock()
    cache = make_cache(clock, max_entries=2)
    cache.put("short", answer(), ttl_seconds=1.0)
    cache.put("long", answer())
    clock.advance(1.0)
    cache.put("new", answer())
    assert cache.get("long") is not None
    assert (cache.stats.evictions, cache.stats.expirations) == (0, 1)


def test_the_byte_bound_counts_utf8_content_plus_a_fixed_overhead() -> None:
    entry_bytes = 100 + ENTRY_OVERHEAD_BYTES
    cache = make_cache(FakeClock(), max_bytes=2 * entry_bytes + 10)
    cache.put("a", answer("é" * 50))  # 50 characters, 100 bytes in UTF-8
    cache.put("b", answer("x" * 100))
    assert cache.stats.bytes == 2 * entry_bytes
    cache.put("c", answer("y" * 100))
    assert cache.get("a") is None
    assert cache.stats.entries == 2
    assert cache.stats.bytes == 2 * entry_bytes
    assert cache.stats.evictions == 1


def test_an_answer_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = make_cache(FakeClock(), max_bytes=1024)
    cache.put("k", answer("short"))
    assert not cache.put("k", answer("z" * 1024))
    assert cache.get("k") is None
    assert cache.stats.bytes == 0


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan")])
def test_a_non_positive_ttl_is_a_programming_error(ttl: float) -> None:
    cache = make_cache(FakeClock())
    with pytest.raises(ValueError, match="time to live"):
        cache.put("k", answer(), ttl_seconds=ttl)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ResponseCache(max_entries=0, max_bytes=1024, default_ttl_seconds=1)


def test_a_cached_answer_keeps_the_routed_answers_content_usage_and_cost() -> None:
    info = ModelInfo(
        "openai", "gpt-4o-mini", "gpt-4o-mini", "chat", 128_000, Decimal(1), Decimal(2), 100
    )
    routed = RoutedAnswer(
        content="Paris.",
        finish_reason="stop",
        provider="openai",
        model="gpt-4o-mini",
        model_info=info,
        usage=Usage(12, 3),
        cost_usd=Decimal("0.000021"),
        latency_s=0.4,
        time_to_first_token_s=0.1,
    )
    assert CachedAnswer.from_routed(routed) == answer()


# -- single flight ------------------------------------------------------------------------------

Compute = Callable[[], Awaitable[tuple[CachedAnswer, bool]]]


class Upstream:
    """Computations that block until the test releases them, counting how many ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()

    def answers(self, value: CachedAnswer, *, cacheable: bool = True) -> Compute:
        async def compute() -> tuple[CachedAnswer, bool]:
            self.calls += 1
            await self.release.wait()
            return value, cacheable

        return compute

    def fails(self) -> Compute:
        async def compute() -> tuple[CachedAnswer, bool]:
            self.calls += 1
            await self.release.wait()
            raise RuntimeError("upstream down")

        return compute

    def hangs(self) -> Compute:
        async def compute() -> tuple[CachedAnswer, bool]:
            self.calls += 1
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        return compute


async def ask(
    cache: ResponseCache,
    compute: Compute,
    results: list[tuple[CachedAnswer, CacheOutcome]],
) -> None:
    results.append(await cache.get_or_compute("k", compute))


@pytest.mark.anyio
async def test_a_hit_does_not_compute() -> None:
    cache = make_cache(FakeClock())
    cache.put("k", answer())
    upstream = Upstream()
    assert await cache.get_or_compute("k", upstream.answers(answer("other"))) == (answer(), "hit")
    assert upstream.calls == 0
    assert cache.stats.hits == 1


@pytest.mark.anyio
async def test_fifty_concurrent_identical_misses_compute_once() -> None:
    cache = make_cache(FakeClock())
    upstream = Upstream()
    results: list[tuple[CachedAnswer, CacheOutcome]] = []
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(ask, cache, upstream.answers(answer()), results)
        await anyio.wait_all_tasks_blocked()
        assert upstream.calls == 1
        assert cache.stats.in_flight == 1
        upstream.release.set()
    assert len(results) == 50
    assert all(value == answer() for value, _ in results)
    outcomes = sorted(outcome for _, outcome in results)
    assert outcomes == ["coalesced"] * 49 + ["miss"]
    stats = cache.stats
    assert (stats.misses, stats.coalesced, stats.in_flight, stats.entries) == (1, 49, 0, 1)
    assert await cache.get_or_compute("k", upstream.answers(answer("other"))) == (answer(), "hit")


@pytest.mark.anyio
async def test_the_ttl_given_to_get_or_compute_applies_to_the_stored_answer() -> None:
    clock = FakeClock()
    cache = make_cache(clock, ttl=60.0)
    upstream = Upstream()
    upstream.release.set()
    await cache.get_or_compute("k", upstream.answers(answer()), ttl_seconds=2.0)
    clock.advance(2.0)
    assert cache.get("k") is None


@pytest.mark.anyio
async def test_a_failing_leader_hands_over_to_one_follower_which_computes_for_the_rest() -> None:
    cache = make_cache(FakeClock())
    first, second = Upstream(), Upstream()
    results: list[tuple[CachedAnswer, CacheOutcome]] = []
    leader_errors: list[BaseException] = []

    async def leader() -> None:
        try:
            await cache.get_or_compute("k", first.fails())
        except RuntimeError as error:
            leader_errors.append(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.wait_all_tasks_blocked()
        for _ in range(10):
            tg.start_soon(ask, cache, second.answers(answer()), results)
        await anyio.wait_all_tasks_blocked()
        assert second.calls == 0
        first.release.set()
        await anyio.wait_all_tasks_blocked()
        assert second.calls == 1  # exactly one follower took over
        second.release.set()
    assert [str(e) for e in leader_errors] == ["upstream down"]
    assert len(results) == 10
    assert all(value == answer() for value, _ in results)
    assert sorted(outcome for _, outcome in results) == ["coalesced"] * 9 + ["miss"]
    assert cache.stats.in_flight == 0
    assert cache.get("k") == answer()


@pytest.mark.anyio
async def test_a_cancelled_leader_hands_over_and_leaves_no_flight_behind() -> None:
    cache = make_cache(FakeClock())
    first, second = Upstream(), Upstream()
    results: list[tuple[CachedAnswer, CacheOutcome]] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await cache.get_or_compute("k", first.hangs())

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            tg.start_soon(ask, cache, second.answers(answer()), results)
        await anyio.wait_all_tasks_blocked()
        leader_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert leader_scope.cancelled_caught
        assert (first.calls, second.calls) == (1, 1)
        second.release.set()
    assert sorted(outcome for _, outcome in results) == ["coalesced"] * 4 + ["miss"]
    assert cache.stats.in_flight == 0


@pytest.mark.anyio
async def test_a_cancelled_follower_does_not_disturb_the_leader() -> None:
    cache = make_cache(FakeClock())
    upstream = Upstream()
    results: list[tuple[CachedAnswer, CacheOutcome]] = []
    follower_scope = anyio.CancelScope()

    async def follower() -> None:
        with follower_scope:
            await cache.get_or_compute("k", upstream.answers(answer("follower")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, cache, upstream.answers(answer()), results)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(follower)
        await anyio.wait_all_tasks_blocked()
        follower_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert results == [(answer(), "miss")]
    assert upstream.calls == 1
    assert cache.stats.in_flight == 0


@pytest.mark.anyio
async def test_an_uncacheable_answer_is_shared_with_waiters_but_not_stored() -> None:
    cache = make_cache(FakeClock())
    upstream = Upstream()
    results: list[tuple[CachedAnswer, CacheOutcome]] = []
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(ask, cache, upstream.answers(answer(), cacheable=False), results)
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert sorted(outcome for _, outcome in results) == ["coalesced", "coalesced", "miss"]
    assert cache.stats.entries == 0
    assert cache.get("k") is None


@pytest.mark.anyio
async def test_different_keys_do_not_wait_for_each_other() -> None:
    cache = make_cache(FakeClock())
    slow, fast = Upstream(), Upstream()
    fast.release.set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_compute, "slow", slow.answers(answer()))
        await anyio.wait_all_tasks_blocked()
        assert await cache.get_or_compute("fast", fast.answers(answer())) == (answer(), "miss")
        slow.release.set()
    assert (slow.calls, fast.calls) == (1, 1)


# -- replay -------------------------------------------------------------------------------------


def test_replay_cuts_after_whitespace_and_joins_back_exactly() -> None:
    content = "The capital of France is Paris. It lies on the Seine."
    chunks = replay_chunks(answer(content), chunk_chars=16)
    assert "".join(chunks) == content
    assert chunks == ["The capital of ", "France is ", "Paris. It lies ", "on the Seine."]
    assert all(len(chunk) <= 16 for chunk in chunks)


def test_replay_cuts_a_word_longer_than_a_chunk() -> None:
    assert replay_chunks(answer("ab " + "x" * 10), chunk_chars=4) == ["ab ", "xxxx", "xxxx", "xx"]


def test_replay_keeps_leading_whitespace_and_line_separators() -> None:
    content = "  first\u2028second\r\nthird "
    assert "".join(replay_chunks(answer(content), chunk_chars=7)) == content


def test_replay_of_empty_content_is_no_chunks() -> None:
    assert replay_chunks(answer("")) == []


def test_replay_rejects_a_chunk_size_below_one() -> None:
    with pytest.raises(ValueError, match="chunk_chars"):
        replay_chunks(answer(), chunk_chars=0)


@given(st.text(), st.integers(min_value=1, max_value=40))
def test_replay_chunks_always_join_to_the_content(content: str, size: int) -> None:
    chunks = replay_chunks(answer(content), chunk_chars=size)
    assert "".join(chunks) == content
    assert all(0 < len(chunk) <= size for chunk in chunks)
