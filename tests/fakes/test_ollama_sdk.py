"""The official ollama client parses every answer of the Ollama fake and raises its own errors."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import ollama
import pytest

from delos.testing import FakeControl, FakeServer, Fault, serve_in_thread
from delos.testing.fake_ollama import OLLAMA_VERSION, embedding_of, fake_ollama_handler

MODELS = ("llama3.2:latest", "qwen2.5:7b", "qwen3:latest", "nomic-embed-text:latest")


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def fake(control: FakeControl) -> Iterator[FakeServer]:
    with serve_in_thread(fake_ollama_handler(control, models=MODELS)) as server:
        yield server


@pytest.fixture
def sdk(fake: FakeServer) -> Iterator[ollama.Client]:
    """The client for the fake (it never retries); its connection pool is closed afterwards."""
    client = ollama.Client(host=fake.url)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def test_unary_chat_parses_with_usage_and_a_length_finish(sdk: ollama.Client) -> None:
    answer = sdk.chat(
        model="llama3.2",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        options={"num_predict": 4, "temperature": 0.2},
        stream=False,
    )
    assert answer.model == "llama3.2"  # echoed as sent, tag or not
    assert answer.done is True and answer.done_reason == "length"
    assert answer.message.role == "assistant"
    assert len((answer.message.content or "").split()) == 4
    assert (answer.prompt_eval_count, answer.eval_count) == (3, 4)
    assert answer.total_duration and answer.eval_duration and answer.created_at


def test_streamed_chat_ends_with_one_done_part_carrying_the_counts(sdk: ollama.Client) -> None:
    parts = list(
        sdk.chat(model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert [p.done for p in parts] == [False] * 12 + [True]
    text = "".join(p.message.content or "" for p in parts)
    assert len(text.split()) == 12
    last = parts[-1]
    assert last.done_reason == "stop" and (last.prompt_eval_count, last.eval_count) == (1, 12)
    assert all(p.eval_count is None for p in parts[:-1])


def test_structured_output_answers_json_of_the_schema(sdk: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    answer = sdk.chat(
        model="llama3.2", messages=[{"role": "user", "content": "where?"}], format=schema
    )
    assert set(json.loads(answer.message.content or "")) == {"city"}


def test_embed_returns_one_unit_vector_per_input_and_the_prompt_count(sdk: ollama.Client) -> None:
    answer = sdk.embed(model="nomic-embed-text", input=["a b", "c"])
    assert answer.model == "nomic-embed-text"
    assert [list(v) for v in answer.embeddings] == [embedding_of("a b"), embedding_of("c")]
    assert len(answer.embeddings[0]) == 768
    assert sum(x * x for x in answer.embeddings[0]) == 1.0
    assert answer.prompt_eval_count == 3


def test_list_names_every_installed_model_with_details(sdk: ollama.Client) -> None:
    listed = sdk.list()
    assert [m.model for m in listed.models] == list(MODELS)
    first = listed.models[0]
    assert first.details is not None and first.details.family == "llama"
    assert first.size and first.digest and first.modified_at is not None


def test_version_and_root_answer_like_the_server(fake: FakeServer) -> None:
    assert httpx.get(fake.url + "/api/version").json() == {"version": OLLAMA_VERSION}
    root = httpx.get(fake.url + "/")
    assert root.text == "Ollama is running"
    assert httpx.get(fake.url + "/api/nothing").status_code == 404
    assert httpx.get(fake.url + "/api/chat").status_code == 405


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502, 503])
def test_http_errors_raise_response_error_with_the_status(
    sdk: ollama.Client, control: FakeControl, status: int
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status)
    with pytest.raises(ollama.ResponseError) as raised:
        sdk.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == status
    assert raised.value.error and not raised.value.error.startswith("{")  # the message, unwrapped


def test_an_unknown_model_is_a_404_naming_it(sdk: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        sdk.chat(model="mistral", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404
    assert raised.value.error == "model 'mistral' not found"


def test_a_missing_model_field_is_a_400(fake: FakeServer) -> None:
    response = httpx.post(fake.url + "/api/chat", json={"messages": []})
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


def test_an_option_of_the_wrong_type_is_refused(sdk: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        sdk.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "hi"}],
            options={"num_predict": "many"},
        )
    assert 'option "num_predict" must be of type integer' in raised.value.error


def test_a_mid_stream_error_line_raises_response_error(
    sdk: ollama.Client, control: FakeControl
) -> None:
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=2)
    received: list[str] = []
    with pytest.raises(ollama.ResponseError) as raised:
        for part in sdk.chat(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.append(part.message.content or "")
    assert len(received) == 2
    assert "error was encountered while running the model" in raised.value.error


def test_stream_bytes_are_ndjson_lines_encoded_as_go_does(fake: FakeServer) -> None:
    with httpx.stream(
        "POST",
        fake.url + "/api/chat",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        body = response.read()
    lines = body.split(b"\n")
    assert lines[-1] == b""  # every line ends with LF, the last one included
    assert lines[0].startswith(b'{"model":"llama3.2","created_at":"')
    assert b": " not in lines[0] and b", " not in lines[0]
    # Keys in the order of the Go struct (done before done_reason since Ollama 0.12), counts and
    # durations last.
    assert list(json.loads(lines[-2])) == [
        "model",
        "created_at",
        "message",
        "done",
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]


def test_go_escapes_html_characters_and_line_separators(
    fake: FakeServer, control: FakeControl
) -> None:
    control.queue([control.behaviour.with_fault(Fault.NONE, reply="<a> & b\u2028c")])
    body = httpx.post(
        fake.url + "/api/chat",
        json={"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]},
    ).content
    assert b'"content":"\\u003ca\\u003e \\u0026 b\\u2028c"' in body


def test_no_final_usage_leaves_the_counts_out(sdk: ollama.Client, control: FakeControl) -> None:
    control.fail_next(1, Fault.NO_FINAL_USAGE)
    answer = sdk.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert answer.done is True
    assert answer.prompt_eval_count is None and answer.eval_count is None


# -- agents: tool calls, thinking and images, through the AsyncClient ---------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "utc": {"type": "boolean"}},
            "required": ["city", "utc"],
        },
    },
}
CALL_ID = re.compile(r"call_[a-z0-9]{8}")


@pytest.fixture
async def client(fake: FakeServer) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=fake.url) as opened:
        yield opened


@pytest.mark.anyio
async def test_sdk_parses_a_unary_tool_call_and_sends_its_result_back(
    client: ollama.AsyncClient, fake: FakeServer
) -> None:
    messages: list[object] = [{"role": "user", "content": "weather in Oslo"}]
    answer = await client.chat(model="llama3.2", messages=messages, tools=[WEATHER])  # type: ignore[arg-type]
    assert answer.done_reason == "stop" and answer.message.content == ""
    (call,) = answer.message.tool_calls or ()
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "weather in Oslo"}
    raw = fake.stats.requests[-1].json()
    assert raw["tools"][0]["function"]["name"] == "get_weather"

    messages += [answer.message, {"role": "tool", "tool_name": "get_weather", "content": "12 C"}]
    final = await client.chat(model="llama3.2", messages=messages, tools=[WEATHER])  # type: ignore[arg-type]
    assert final.message.content == "Tool said: 12 C" and not final.message.tool_calls
    sent = fake.stats.requests[-1].json()["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "weather in Oslo"}
    assert sent[2] == {"role": "tool", "content": "12 C", "tool_name": "get_weather"}


@pytest.mark.anyio
async def test_sdk_parses_parallel_tool_calls_streamed_one_line_each(
    client: ollama.AsyncClient,
) -> None:
    stream = await client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "Oslo in parallel"}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    parts = [part async for part in stream]
    calling = [p for p in parts if p.message.tool_calls]
    assert [len(p.message.tool_calls or ()) for p in calling] == [1, 1]
    calls = [c for p in calling for c in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo in parallel"}),
        ("get_time", {"city": "Oslo in parallel", "utc": True}),
    ]
    assert all(p.message.content == "" for p in calling)
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 6


@pytest.mark.anyio
async def test_sdk_parses_thinking_unary_and_streamed(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "why is the sky blue"}]
    answer = await client.chat(model="qwen3", messages=messages, think="high")
    assert answer.message.thinking == "Thinking about: why is the sky blue"
    assert answer.message.content and answer.eval_count == 7 + 12

    stream = await client.chat(model="qwen3", messages=messages, think=True, stream=True)
    parts = [part async for part in stream]
    thinking = [p.message.thinking for p in parts if p.message.thinking]
    assert "".join(thinking) == "Thinking about: why is the sky blue" and len(thinking) == 7
    first_text = next(i for i, p in enumerate(parts) if p.message.content)
    assert all(p.message.thinking for p in parts[:first_text])
    assert parts[-1].done and parts[-1].eval_count == 7 + 12

    quiet = await client.chat(model="qwen3", messages=messages, think=False)
    assert quiet.message.thinking is None


@pytest.mark.anyio
async def test_sdk_sees_thinking_refused_by_a_model_that_cannot_think(
    client: ollama.AsyncClient,
) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        await client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], think=True)
    assert raised.value.status_code == 400
    assert raised.value.error == '"llama3.2" does not support thinking'


@pytest.mark.anyio
async def test_sdk_sends_image_bytes_as_base64(
    client: ollama.AsyncClient, fake: FakeServer
) -> None:
    image = b"\x89PNG\r\n\x1a\n not really"
    answer = await client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "what?", "images": [image]}]
    )
    assert answer.done
    sent = fake.stats.requests[-1].json()["messages"][0]
    assert sent["images"] == [base64.b64encode(image).decode()]


def test_tool_call_lines_are_encoded_as_go_does(fake: FakeServer) -> None:
    body = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "a <b> & c"}],
        "tools": [WEATHER],
    }
    lines = httpx.post(fake.url + "/api/chat", json=body).content.split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""
    message = json.loads(lines[0])["message"]
    assert CALL_ID.fullmatch(message["tool_calls"][0]["id"])
    call_id = message["tool_calls"][0]["id"].encode()
    assert lines[0].endswith(
        b'"message":{"role":"assistant","content":"","tool_calls":[{"id":"'
        + call_id
        + b'","function":{"index":0,"name":"get_weather",'
        b'"arguments":{"city":"a \\u003cb\\u003e \\u0026 c"}}}]},"done":false}'
    )
    unary = httpx.post(fake.url + "/api/chat", json={**body, "stream": False}).json()
    assert list(unary["message"]) == ["role", "content", "tool_calls"]
    assert list(unary["message"]["tool_calls"][0]["function"]) == ["index", "name", "arguments"]
    assert unary["done_reason"] == "stop"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"think": "extreme"}, 'invalid think value: "extreme" (must be "high", "medium", "low",'),
        ({"think": 1}, "think must be a boolean or string"),
        (
            {"messages": [{"role": "user", "content": "x", "images": ["iVB*"]}]},
            "illegal base64 data at input byte 3",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "images": ["iVBOR"]}]},
            "illegal base64 data at input byte 4",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "cannot unmarshal string into Go struct field "
            "ToolCallFunction.messages.tool_calls.function.arguments",
        ),
        (
            {"tools": {"type": "function"}},
            "cannot unmarshal object into Go struct field ChatRequest.tools",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "cannot unmarshal array",
        ),
    ],
)
def test_requests_the_go_decoder_refuses_are_a_400(
    fake: FakeServer, changes: dict[str, object], error: str
) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], **changes}
    response = httpx.post(fake.url + "/api/chat", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error) or error in response.json()["error"]
