"""The official openai SDK parses the fakes' agent answers: tool calls (unary, raw stream chunks and
the SDK's own stream accumulator), thinking fields and usage details; and gets the 400s the real
APIs give for malformed agent requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from delos.testing import FakeControl, FakeServer, serve_in_thread
from delos.testing._agent import sign
from delos.testing.fake_openai import OpenAIFlavour, fake_openai_handler
from tests.fakes.openai_clients import SdkClient

MODELS = {
    OpenAIFlavour.OPENAI: "gpt-5",
    OpenAIFlavour.TOGETHER: "openai/gpt-oss-120b",
    OpenAIFlavour.OPENROUTER: "anthropic/claude-sonnet-4.5",
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK: Any = [{"role": "user", "content": "weather in parallel"}]
ARGUMENTS = '{"city":"weather in parallel"}'
LONG_RULES = " ".join(f"rule{i}" for i in range(1300))


@pytest.fixture(params=list(OpenAIFlavour), ids=lambda f: f.value)
def flavour(request: pytest.FixtureRequest) -> OpenAIFlavour:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(flavour: OpenAIFlavour) -> Iterator[FakeServer]:
    with serve_in_thread(fake_openai_handler(FakeControl(), flavour)) as server:
        yield server


def test_unary_parallel_tool_calls_parse_strictly(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    answer = sdk_client(fake, flavour).chat.completions.create(
        model=MODELS[flavour], messages=ASK, tools=[WEATHER]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("function", "get_weather", ARGUMENTS)
    ] * 2
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_streamed_tool_calls_come_as_index_fragments(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    chunks = list(
        sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour], messages=ASK, tools=[WEATHER], stream=True
        )
    )
    fragments = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    starts = [f for f in fragments if f.id]
    assert [(f.index, f.type, f.function and f.function.name) for f in starts] == [
        (0, "function", "get_weather"),
        (1, "function", "get_weather"),
    ]
    joined = {0: "", 1: ""}
    for fragment in fragments:
        joined[fragment.index] += (fragment.function and fragment.function.arguments) or ""
    assert joined == {0: ARGUMENTS, 1: ARGUMENTS}
    if flavour is OpenAIFlavour.TOGETHER:  # every call whole, in one chunk
        assert len(fragments) == 2 and all(f.id for f in fragments)
    else:  # a start with empty arguments, then index and an arguments piece
        assert all(f.function and f.function.arguments == "" for f in starts)
        later = [f for f in fragments if not f.id]
        assert all(f.type is None and f.function and f.function.name is None for f in later)
    if flavour is OpenAIFlavour.OPENAI:  # the first call opens the answer
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[0].choices[0].delta.tool_calls
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["tool_calls"]


def test_the_sdk_stream_accumulator_assembles_the_calls(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    with sdk_client(fake, flavour).chat.completions.stream(
        model=MODELS[flavour],
        messages=ASK,
        tools=[WEATHER],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", ARGUMENTS)
    ] * 2
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 2 * 3


def test_a_tool_result_gets_the_agent_answer(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    sdk = sdk_client(fake, flavour)
    first = sdk.chat.completions.create(model=MODELS[flavour], messages=ASK, tools=[WEATHER])
    calls = first.choices[0].message.tool_calls or []
    history: Any = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True, exclude={"annotations"}),
        *(
            {"role": "tool", "tool_call_id": c.id, "content": f"sun {n}"}
            for n, c in enumerate(calls)
        ),
    ]
    answer = sdk.chat.completions.create(model=MODELS[flavour], messages=history, tools=[WEATHER])
    assert answer.choices[0].message.content == "Tool said: sun 0; sun 1"


def test_openai_reports_reasoning_tokens_unary_and_streamed(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is not OpenAIFlavour.OPENAI:
        pytest.skip("OpenAI's reasoning_effort")
    sdk = sdk_client(fake, flavour)
    answer = sdk.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low"
    )
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-5",
            messages=[{"role": "user", "content": "hi"}],
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = chunks[-1].usage
    for usage in (answer.usage, streamed):
        assert usage is not None and usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 3 * 2  # 3 words, low
        assert usage.completion_tokens == 12 + 6
    assert "reasoning" not in (answer.choices[0].message.model_extra or {})


def test_reasoning_text_rides_in_extra_fields(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is OpenAIFlavour.OPENAI:
        pytest.skip("OpenAI returns no thinking text")
    extra = {"reasoning": {"enabled": True}}
    answer = sdk_client(fake, flavour).chat.completions.create(
        model=MODELS[flavour], messages=[{"role": "user", "content": "hi"}], extra_body=extra
    )
    fields = answer.choices[0].message.model_extra or {}
    assert fields["reasoning"] == "Thinking about: hi"
    if flavour is OpenAIFlavour.OPENROUTER:
        assert fields["reasoning_details"] == [
            {
                "type": "reasoning.text",
                "text": "Thinking about: hi",
                "signature": sign("Thinking about: hi"),
                "format": "anthropic-claude-v1",
                "index": 0,
            }
        ]
        assert answer.usage and answer.usage.completion_tokens_details
        assert answer.usage.completion_tokens_details.reasoning_tokens == 3


def test_openai_caches_a_repeated_prefix_of_1024_tokens_or_more(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is not OpenAIFlavour.OPENAI:
        pytest.skip("OpenAI's automatic caching")
    sdk = sdk_client(fake, flavour)
    cached = []
    for question in ("one", "two"):
        answer = sdk.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": LONG_RULES},
                {"role": "user", "content": question},
            ],
        )
        assert answer.usage and answer.usage.prompt_tokens_details
        cached.append(answer.usage.prompt_tokens_details.cached_tokens)
    assert cached == [0, 1280]


def test_openrouter_anthropic_cache_control_writes_then_reads(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is not OpenAIFlavour.OPENROUTER:
        pytest.skip("OpenRouter's Anthropic cache_control")
    system: Any = {
        "role": "system",
        "content": [{"type": "text", "text": LONG_RULES, "cache_control": {"type": "ephemeral"}}],
    }
    details = []
    for question in ("one", "two"):
        answer = sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour], messages=[system, {"role": "user", "content": question}]
        )
        assert answer.usage and answer.usage.prompt_tokens_details
        usage = answer.usage.prompt_tokens_details
        details.append((usage.cache_write_tokens, usage.cached_tokens))
    assert details == [(1300, 0), (0, 1300)]


CALL: Any = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ],
}
BAD_REQUESTS: list[tuple[str, list[Any], dict[str, Any], str]] = [
    (
        "tool result answering nothing",
        [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"}],
        {},
        "must be a response to a preceeding message with 'tool_calls'",
    ),
    (
        "call left unanswered",
        [*ASK, CALL, {"role": "user", "content": "and?"}],
        {},
        "did not have response messages: call_1",
    ),
    (
        "unknown part type",
        [{"role": "user", "content": [{"type": "video", "video": "x"}]}],
        {},
        "Invalid value: 'video'",
    ),
    (
        "image url that is not one",
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}],
        {},
        "image_url.url",
    ),
    (
        "tool_choice naming no tool",
        ASK,
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "not among the tools",
    ),
]


@pytest.mark.parametrize(
    ("messages", "options", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_malformed_agent_requests_get_400(
    fake: FakeServer,
    flavour: OpenAIFlavour,
    messages: list[Any],
    options: dict[str, Any],
    fragment: str,
    sdk_client: SdkClient,
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour], messages=messages, **options
        )
    assert fragment in str(raised.value.body)


@pytest.mark.parametrize(
    ("flavour_name", "messages", "extra", "fragment"),
    [
        ("openai", ASK, {"reasoning": {"effort": "low"}}, "Unrecognized request argument"),
        (
            "openai",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                    ],
                }
            ],
            {},
            "Unknown parameter: 'messages[0].content[0].cache_control'",
        ),
        ("together", ASK, {"reasoning_effort": "minimal"}, "is not one of low, medium, high"),
        (
            "together",
            [{"role": "user", "content": [{"type": "file", "file": {"file_data": "x"}}]}],
            {},
            "Invalid value: 'file'",
        ),
        (
            "openrouter",
            [
                *ASK,
                {
                    **CALL,
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "t", "signature": "bad"}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "x"},
            ],
            {},
            "Invalid `signature`",
        ),
    ],
)
def test_each_flavour_refuses_what_its_api_refuses(
    flavour_name: str,
    messages: list[Any],
    extra: dict[str, Any],
    fragment: str,
    sdk_client: SdkClient,
) -> None:
    flavour = OpenAIFlavour(flavour_name)
    with serve_in_thread(fake_openai_handler(FakeControl(), flavour)) as server:
        with pytest.raises(openai.BadRequestError) as raised:
            sdk_client(server, flavour).chat.completions.create(
                model=MODELS[flavour], messages=messages, extra_body=extra
            )
    assert fragment in str(raised.value.body)
