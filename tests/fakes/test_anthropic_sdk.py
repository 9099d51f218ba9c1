"""The official anthropic SDK parses every answer of the Anthropic fake, direct and on Vertex AI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, ToolParam

from delos.testing import FakeControl, FakeServer, Fault, serve_in_thread
from delos.testing.fake_anthropic import ANTHROPIC_MODELS, fake_anthropic_handler

MODEL = "claude-3-5-haiku-20241022"
VERTEX_MODEL = "claude-3-5-haiku@20241022"
KEY = "test-key"
TOKEN = "fake-token"
SAY_HI: list[MessageParam] = [{"role": "user", "content": "say hi"}]
OUTPUT_TOOL: ToolParam = {
    "name": "output",
    "description": "The answer.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
        "required": ["city", "rank"],
    },
}


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def fake(control: FakeControl) -> Iterator[FakeServer]:
    handler = fake_anthropic_handler(control, api_key=KEY, access_token=TOKEN)
    with serve_in_thread(handler) as server:
        yield server


@pytest.fixture
def sdk(fake: FakeServer) -> Iterator[anthropic.Anthropic]:
    # Closed at teardown: a pooled socket left to the garbage collector is a ResourceWarning.
    with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def vertex(fake: FakeServer) -> Iterator[anthropic.AnthropicVertex]:
    with anthropic.AnthropicVertex(
        region="us-east5",
        project_id="p",
        access_token=TOKEN,
        base_url=fake.url + "/v1",
        max_retries=0,
    ) as client:
        yield client


def raw_post(fake: FakeServer, body: dict[str, object]) -> httpx.Response:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    return httpx.post(fake.url + "/v1/messages", headers=headers, json=body)


def test_create_parses_with_exact_usage_and_the_length_stop_reason(
    sdk: anthropic.Anthropic,
) -> None:
    message = sdk.messages.create(
        model=MODEL, max_tokens=4, system="be brief please", messages=SAY_HI
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert len(message.content[0].text.split()) == 4
    assert message.stop_reason == "max_tokens"
    # 3 system words + 2 prompt words; one token per generated word.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)


def test_a_stop_sequence_ends_the_answer_and_is_reported(
    sdk: anthropic.Anthropic, control: FakeControl
) -> None:
    control.fail_next(1, Fault.NONE, reply="one two STOP three")
    message = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=SAY_HI, stop_sequences=["STOP"]
    )
    assert message.content[0].type == "text" and message.content[0].text == "one two "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


def test_stream_helper_accumulates_a_coherent_final_message(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model=MODEL, max_tokens=100, messages=SAY_HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 12
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 12)


def test_raw_stream_events_come_in_the_documented_order(sdk: anthropic.Anthropic) -> None:
    events = list(sdk.messages.create(model=MODEL, max_tokens=3, messages=SAY_HI, stream=True))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 3


def test_every_stream_event_is_named_after_its_type_and_a_ping_is_sent(fake: FakeServer) -> None:
    body = raw_post(fake, {"model": MODEL, "max_tokens": 2, "stream": True, "messages": SAY_HI})
    assert body.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in body.text.split("\n\n") if f]
    names = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-1] == "message_stop"


def test_forced_tool_answers_with_a_tool_use_block(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=SAY_HI,
        tools=[OUTPUT_TOOL],
        tool_choice={"type": "tool", "name": "output"},
    )
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "output"
    assert block.input == {"city": "say hi", "rank": 1}  # strings are the user's text
    assert message.stop_reason == "tool_use"


def test_forced_tool_streams_input_json_deltas_the_helper_reassembles(
    sdk: anthropic.Anthropic,
) -> None:
    with sdk.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=SAY_HI,
        tools=[OUTPUT_TOOL],
        tool_choice={"type": "tool", "name": "output"},
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "say hi", "rank": 1}


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_errors_raise_the_sdk_exception_for_their_status(
    sdk: anthropic.Anthropic,
    control: FakeControl,
    status: int,
    exception: type[anthropic.APIStatusError],
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=7)
    with pytest.raises(exception) as raised:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=SAY_HI)
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["request_id"] == raised.value.response.headers["request-id"]
    assert raised.value.response.headers["retry-after"] == "7"


def test_a_529_is_an_overloaded_error(sdk: anthropic.Anthropic, control: FakeControl) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=529)
    with pytest.raises(anthropic.OverloadedError) as raised:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=SAY_HI)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


def test_a_wrong_key_is_an_authentication_error(fake: FakeServer) -> None:
    with (
        anthropic.Anthropic(base_url=fake.url, api_key="wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.messages.create(model=MODEL, max_tokens=10, messages=SAY_HI)


def test_a_429_says_which_limit_is_exhausted(
    sdk: anthropic.Anthropic, control: FakeControl
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429)
    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=SAY_HI)
    headers = raised.value.response.headers
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_a_system_role_inside_messages_is_rejected(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "system", "content": "x"}, *SAY_HI],
        )
    assert "top-level `system` parameter" in str(raised.value)


def test_a_request_without_max_tokens_is_rejected(fake: FakeServer) -> None:
    response = raw_post(fake, {"model": MODEL, "messages": SAY_HI})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_an_unknown_model_is_not_found(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        sdk.messages.create(model="claude-2", max_tokens=10, messages=SAY_HI)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["message"] == "model: claude-2"


def test_a_mid_stream_error_event_raises_in_the_sdk(
    sdk: anthropic.Anthropic, control: FakeControl
) -> None:
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=2)
    stream = sdk.messages.create(model=MODEL, max_tokens=10, messages=SAY_HI, stream=True)
    with pytest.raises(anthropic.APIStatusError) as raised:
        list(stream)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "overloaded_error"


def test_successful_answers_carry_request_id_and_rate_limit_headers(fake: FakeServer) -> None:
    response = raw_post(fake, {"model": MODEL, "max_tokens": 2, "messages": SAY_HI})
    assert response.headers["request-id"].startswith("req_")
    for limit in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert int(response.headers[f"anthropic-ratelimit-{limit}-remaining"]) > 0
        assert response.headers[f"anthropic-ratelimit-{limit}-reset"].endswith("Z")


def test_model_list_pages(sdk: anthropic.Anthropic) -> None:
    page = sdk.models.list(limit=2)
    assert [m.id for m in page.data] == list(ANTHROPIC_MODELS[:2])
    assert page.has_more and page.last_id == ANTHROPIC_MODELS[1]
    everything = [m.id for m in sdk.models.list(limit=2)]  # the SDK follows after_id
    assert everything == list(ANTHROPIC_MODELS)


# -- Claude on Vertex AI ------------------------------------------------------------------------


def test_vertex_create_posts_to_raw_predict_without_model_in_the_body(
    vertex: anthropic.AnthropicVertex, fake: FakeServer
) -> None:
    message = vertex.messages.create(model=VERTEX_MODEL, max_tokens=4, messages=SAY_HI)
    assert message.content[0].type == "text" and len(message.content[0].text.split()) == 4
    assert message.id.startswith("msg_vrtx_")
    request = fake.stats.requests[-1]
    assert request.path == (
        f"/v1/projects/p/locations/us-east5/publishers/anthropic/models/{VERTEX_MODEL}:rawPredict"
    )
    assert request.header("authorization") == f"Bearer {TOKEN}"
    body = request.json()
    assert "model" not in body and body["anthropic_version"]


def test_vertex_stream_posts_to_stream_raw_predict(
    vertex: anthropic.AnthropicVertex, fake: FakeServer
) -> None:
    with vertex.messages.stream(model=VERTEX_MODEL, max_tokens=100, messages=SAY_HI) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 12 and final.stop_reason == "end_turn"
    assert fake.stats.requests[-1].path.endswith(f"/models/{VERTEX_MODEL}:streamRawPredict")


def test_vertex_rejects_a_body_without_anthropic_version(fake: FakeServer) -> None:
    response = httpx.post(
        fake.url + f"/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
        f"{VERTEX_MODEL}:rawPredict",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"max_tokens": 5, "messages": SAY_HI},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "anthropic_version: Field required"


def test_vertex_quota_and_auth_errors_have_the_google_shape(
    vertex: anthropic.AnthropicVertex, fake: FakeServer, control: FakeControl
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429)
    with pytest.raises(anthropic.RateLimitError) as raised:
        vertex.messages.create(model=VERTEX_MODEL, max_tokens=4, messages=SAY_HI)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["status"] == "RESOURCE_EXHAUSTED"
    with (
        anthropic.AnthropicVertex(
            region="us-east5",
            project_id="p",
            access_token="nope",
            base_url=fake.url + "/v1",
            max_retries=0,
        ) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.messages.create(model=VERTEX_MODEL, max_tokens=4, messages=SAY_HI)
