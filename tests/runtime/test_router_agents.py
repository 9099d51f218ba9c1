"""The router with agent requests: tool calls relayed, unable candidates skipped, thinking that
another endpoint signed left out, a session kept on its provider while it is healthy."""

from __future__ import annotations

from typing import Any

import pytest

from delos.resilience import BreakerConfig
from delos.runtime.errors import InvalidRequest, UnsupportedByProvider
from delos.runtime.inputs import CompletionInput, Routing, completion_input
from delos.runtime.routing import AttemptKind, AttemptOutcome, ResiliencePolicy, StreamPiece
from delos.runtime.values import (
    ChatMessage,
    Reasoning,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
)
from tests.runtime.scripted import Reply, ScriptedProvider, gateway_on, mock_clock_backend

pytestmark = pytest.mark.anyio

WEATHER = ("get_weather", "", '{"type":"object","properties":{"city":{"type":"string"}}}')
CALLS = (
    ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
    ToolCall("call_b", "get_weather", '{"city":"Lyon"}'),
)
NO_RETRY = ResiliencePolicy(attempts_per_provider=1)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return mock_clock_backend()


def ask(*messages: ChatMessage | tuple[str, str], **fields: Any) -> CompletionInput:
    return completion_input(
        messages=list(messages) or [("user", "Weather in Paris and Lyon?")],
        model="gpt-4o",
        tools=[WEATHER],
        **fields,
    )


async def test_parallel_tool_calls_come_back_whole_and_the_finish_says_why() -> None:
    openai = ScriptedProvider("openai", then=Reply(text="", tool_calls=CALLS))
    answer = await gateway_on(openai).router.complete(ask())
    assert (answer.finish_reason, answer.tool_calls) == ("tool_calls", CALLS)
    assert openai.requests[0].tools[0].name == "get_weather"


async def test_a_stream_relays_each_tool_call_fragment_with_its_ordinal() -> None:
    openai = ScriptedProvider("openai", then=Reply(text="", tool_calls=CALLS))
    received: list[StreamPiece] = []

    async def sink(piece: StreamPiece) -> None:
        received.append(piece)

    answer = await gateway_on(openai).router.stream(ask(), sink)

    assert all(isinstance(p, ToolCallDelta) for p in received)
    for index, call in enumerate(CALLS):
        mine = [p for p in received if isinstance(p, ToolCallDelta) and p.index == index]
        assert (mine[0].id, mine[0].name) == (call.id, call.name)
        assert "".join(p.arguments_delta for p in mine) == call.arguments_json
    assert answer.tool_calls == CALLS


async def test_a_provider_without_a_native_form_is_skipped_for_the_next() -> None:
    unable = UnsupportedByProvider("openai", "tool_choice", "no exact native form")
    openai = ScriptedProvider("openai", Reply(error=unable))
    openrouter = ScriptedProvider("openrouter", then=Reply(text="fine"))
    answer = await gateway_on(openai, openrouter, policy=NO_RETRY).router.complete(
        ask(routing=Routing.QUALITY)
    )
    assert answer.provider == "openrouter"
    [skipped, won] = answer.attempts
    assert (skipped.provider, skipped.outcome) == ("openai", AttemptOutcome.SKIPPED)
    assert skipped.error == "openai: tool_choice: no exact native form"
    assert won.outcome is AttemptOutcome.WON


async def test_when_no_candidate_has_a_capability_the_error_names_it_and_who_has_it() -> None:
    gateway = gateway_on(ScriptedProvider("openai"), ScriptedProvider("openrouter"))
    with pytest.raises(InvalidRequest) as raised:
        await gateway.router.complete(ask(reasoning=Reasoning(effort="high")))
    message = raised.value.message
    assert message.startswith("reasoning: no candidate can honour it: gpt-4o has no reasoning")
    assert "models with reasoning: " in message


async def test_thinking_signed_by_another_endpoint_is_left_out_and_counted() -> None:
    openai = ScriptedProvider("openai", then=Reply(text="Sunny."))
    mine = Thinking("plan", "sig-openai", provider="openai")
    theirs = Thinking("plan", "sig-anthropic", provider="anthropic")
    history = (
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", "", parts=(theirs, mine), tool_calls=CALLS[:1]),
        ChatMessage("tool", "18°C", tool_call_id="call_a"),
    )
    answer = await gateway_on(openai).router.complete(ask(*history))
    sent = openai.requests[0].messages[1]
    assert sent.parts == (mine,)
    assert sent.tool_calls == CALLS[:1]
    assert answer.thinking_dropped == 1


async def test_a_stream_relays_thinking_before_the_answer() -> None:
    openai = ScriptedProvider(
        "openai", then=Reply(text="Sunny.", thinking=(Thinking("Let me see", "s", "", "openai"),))
    )
    received: list[StreamPiece] = []

    async def sink(piece: StreamPiece) -> None:
        received.append(piece)

    answer = await gateway_on(openai).router.stream(ask(), sink)
    assert received == [ThinkingDelta("Let me see"), TextDelta("Sunny.")]
    assert answer.thinking == (Thinking("Let me see", "s", "", "openai"),)


async def test_a_session_stays_on_the_provider_that_served_its_last_turn() -> None:
    openai = ScriptedProvider("openai", Reply(error=_unavailable("openai")), then=Reply())
    openrouter = ScriptedProvider("openrouter", then=Reply())
    router = gateway_on(openai, openrouter, policy=NO_RETRY).router

    first = await router.complete(ask(session_id="agent-7"))
    second = await router.complete(ask(session_id="agent-7"))
    other = await router.complete(ask(session_id="agent-8"))

    assert first.provider == "openrouter"  # openai failed once
    assert second.provider == "openrouter"  # cost order prefers openai; the session does not
    assert [a.kind for a in second.attempts] == [AttemptKind.PRIMARY]
    assert other.provider == "openai"


async def test_a_session_leaves_its_provider_once_the_breaker_opens() -> None:
    policy = ResiliencePolicy(
        attempts_per_provider=1,
        breaker=BreakerConfig(minimum_calls=2, failure_rate_threshold=0.5),
    )
    openai = ScriptedProvider("openai", then=Reply())
    openrouter = ScriptedProvider(
        "openrouter", Reply(), Reply(error=_unavailable("openrouter")), then=Reply()
    )
    gateway = gateway_on(
        openai, openrouter, policy=policy, settings={"quality_order": ("openrouter", "openai")}
    )
    router = gateway.router

    first = await router.complete(ask(session_id="s", routing=Routing.QUALITY))
    other = await router.complete(ask(routing=Routing.QUALITY))  # openrouter fails: open
    after = await router.complete(ask(session_id="s", routing=Routing.QUALITY))

    assert first.provider == "openrouter"
    assert other.provider == "openai"
    assert gateway.guards.breaker_state("openrouter", "openai/gpt-4o").value == "open"
    assert after.provider == "openai"


def _unavailable(provider: str) -> Exception:
    from delos.runtime.errors import UpstreamUnavailable

    return UpstreamUnavailable(provider, "503", http_status=503)


async def test_vertex_claude_and_vertex_gemini_are_two_endpoints_for_thinking() -> None:
    from delos.runtime.routing._conversation import endpoint_of, messages_for_endpoint

    claude = Thinking("plan", "sig", provider="vertex/anthropic")
    history = (
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "ok", parts=(claude,)),
        ChatMessage("user", "more"),
    )
    to_gemini, dropped = messages_for_endpoint(
        history, endpoint_of("vertex", "gemini-2.5-pro"), "vertex"
    )
    to_claude, kept = messages_for_endpoint(
        history, endpoint_of("vertex", "claude-sonnet-4-5@20250929"), "vertex"
    )
    assert (to_gemini[1].parts, dropped) == ((), 1)
    # The adapter sees its own provider name on the thinking it may send back.
    assert (to_claude[1].parts, kept) == ((Thinking("plan", "sig", provider="vertex"),), 0)
