"""A request has one meaning whichever provider the router picks: the rules every input obeys."""

from __future__ import annotations

import pytest

from delos.runtime.errors import InvalidRequest, UnknownProvider
from delos.runtime.inputs import LIMITS, Routing, completion_input, embed_input
from delos.runtime.values import ChatMessage


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
