"""A request has one meaning whichever provider the router picks: the rules every input obeys."""

from __future__ import annotations

import pytest

from delos.runtime.errors import InvalidRequest, UnknownProvider
from delos.runtime.inputs import LIMITS, Routing, completion_input, embed_input
from delos.runtime.values import (
    ChatMessage,
    DocumentPart,
    ImagePart,
    Reasoning,
    Thinking,
    ToolCall,
)


def test_a_plain_request_is_cost_routed() -> None:
    request = completion_input(messages=[("user", "hi")])
    assert request.routing is Routing.COST
    assert request.messages == (ChatMessage("user", "hi"),)


@pytest.mark.parametrize("role", ["user", "assistant"])
@pytest.mark.parametrize("content", ["", "   \n"])
def test_an_empty_user_or_assistant_message_is_refused(role: str, content: str) -> None:
    messages = [("user", "first"), (role, content), ("user", "last")]
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.content: a .* must not be empty"):
        completion_input(messages=messages)


def test_system_messages_are_merged_into_one_leading_message() -> None:
    request = completion_input(
        messages=[
            ("system", "Be brief."),
            ("user", "one"),
            ("assistant", "two"),
            ("system", "Answer in French."),
            ("user", "three"),
        ]
    )
    assert request.messages == (
        ChatMessage("system", "Be brief.\n\nAnswer in French."),
        ChatMessage("user", "one"),
        ChatMessage("assistant", "two"),
        ChatMessage("user", "three"),
    )


def test_an_assistant_message_last_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="last message must be the user's"):
        completion_input(messages=[("user", "hi"), ("assistant", "Sure, here is")])


def test_a_conversation_without_a_user_message_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least one user message"):
        completion_input(messages=[("system", "Be brief.")])


def test_more_stop_sequences_than_every_provider_accepts_are_refused() -> None:
    stop = [f"<{i}>" for i in range(LIMITS.stop_sequences)]
    assert completion_input(messages=[("user", "hi")], stop=stop).stop == tuple(stop)
    with pytest.raises(InvalidRequest, match="stop: at most 4 sequences"):
        completion_input(messages=[("user", "hi")], stop=[*stop, "<extra>"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 2.5, "temperature: must be between 0 and 2"),
        ("top_p", 0.0, "top_p: must be greater than 0"),
        ("max_tokens", 0, "max_tokens: must be between 1"),
        ("cache_ttl_seconds", -1, "cache_ttl_seconds"),
    ],
)
def test_out_of_range_parameters_name_the_field(field: str, value: float, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        completion_input(messages=[("user", "hi")], **{field: value})  # type: ignore[arg-type]


def test_a_specific_routing_needs_a_known_provider() -> None:
    with pytest.raises(InvalidRequest, match="provider: required"):
        completion_input(messages=[("user", "hi")], routing=Routing.SPECIFIC)
    with pytest.raises(UnknownProvider, match="unknown provider 'nope'"):
        completion_input(messages=[("user", "hi")], provider="nope")


def test_embeddings_need_non_empty_texts() -> None:
    assert embed_input(texts=["a", "b"]).texts == ("a", "b")
    with pytest.raises(InvalidRequest, match=r"texts\[1\]: must not be empty"):
        embed_input(texts=["a", " "])


# -- agent conversations ---------------------------------------------------------------------

WEATHER = (
    "get_weather",
    "The weather in a city",
    '{"type":"object","properties":{"city":{"type":"string"}}}',
)
CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')


def agent_turns(*extra: ChatMessage) -> list[ChatMessage]:
    return [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(CALL,)),
        ChatMessage("tool", "18°C, sunny", tool_call_id="call_1"),
        *extra,
    ]


def test_a_tool_result_may_end_the_conversation() -> None:
    request = completion_input(messages=agent_turns(), tools=[WEATHER], tool_choice="auto")
    assert request.messages[-1].role == "tool"
    assert request.tools[0].parameters["properties"] == {"city": {"type": "string"}}


def test_an_assistant_turn_with_only_tool_calls_is_not_empty() -> None:
    completion_input(messages=agent_turns(), tools=[WEATHER])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (
            [ChatMessage("user", "hi"), ChatMessage("tool", "x", tool_call_id="nope")],
            r"messages\[1\]\.tool_call_id: no earlier assistant tool call has id 'nope'",
        ),
        (
            [ChatMessage("user", "hi"), ChatMessage("tool", "x")],
            r"messages\[1\]\.tool_call_id: required",
        ),
        (
            [ChatMessage("user", "hi", tool_calls=(CALL,))],
            r"messages\[0\]\.tool_calls: only an assistant message calls tools",
        ),
        (
            [
                ChatMessage("user", "hi"),
                ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "[1]"),)),
                ChatMessage("tool", "x", tool_call_id="c"),
            ],
            r"arguments_json: must be a JSON object",
        ),
        (
            [ChatMessage("user", "", parts=(ImagePart(url="http://example.com/a.png"),))],
            r"image\.url: must be an https:// or data: URL",
        ),
        (
            [ChatMessage("user", "", parts=(ImagePart(data=b"x", media_type="image/tiff"),))],
            r"image\.media_type: 'image/tiff' is not supported",
        ),
        (
            [ChatMessage("user", "", parts=(DocumentPart(b"x", "application/msword"),))],
            r"document\.media_type",
        ),
        (
            [ChatMessage("user", "hi", parts=(Thinking("t", "sig"),))],
            r"only an assistant message carries thinking",
        ),
        (
            [
                ChatMessage("system", "s", parts=(ImagePart(url="https://x/a.png"),)),
                ChatMessage("user", "hi"),
            ],
            r"a system message takes text only",
        ),
    ],
)
def test_agent_messages_are_checked(messages: list[ChatMessage], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        completion_input(messages=messages, tools=[WEATHER])


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([("bad name", "", "{}")], "", r"tools\[0\]\.name"),
        ([WEATHER, WEATHER], "", "declared twice"),
        ([("f", "", "[]")], "", "must be a JSON Schema of an object"),
        ([("f", "", '{"type": "object", "properties": 3}')], "", r"tools\[0\]\.parameters_json"),
        ([], "required", "needs tools"),
        ([WEATHER], "other_tool", "neither auto, none, required nor a declared tool"),
    ],
)
def test_tools_and_tool_choice_are_checked(
    tools: list[tuple[str, str, str]], choice: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        completion_input(messages=[("user", "hi")], tools=tools, tool_choice=choice)


def test_reasoning_is_checked_and_an_empty_one_is_none() -> None:
    assert completion_input(messages=[("user", "hi")], reasoning=Reasoning()).reasoning is None
    with pytest.raises(InvalidRequest, match=r"reasoning\.effort"):
        completion_input(messages=[("user", "hi")], reasoning=Reasoning(effort="max"))


def test_a_system_cache_breakpoint_survives_the_merge() -> None:
    request = completion_input(
        messages=[ChatMessage("system", "long rules", cache_breakpoint=True), ("user", "hi")]
    )
    assert request.messages[0] == ChatMessage("system", "long rules", cache_breakpoint=True)
