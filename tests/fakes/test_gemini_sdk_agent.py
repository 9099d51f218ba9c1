"""The official google-genai SDK parses the Gemini fake's agent answers (function calls, thoughts,
thought signatures, cache and thinking usage), unary and streamed, on the Gemini API and on
Vertex AI, and the fake refuses what Gemini refuses."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import google.oauth2.credentials
import httpx
import pytest
from google import genai
from google.genai import errors, types

from delos.testing import FakeControl, FakeServer, open_fake_server, serve_in_thread
from delos.testing._agent import sign, thought_about
from delos.testing.fake_gemini import (
    IMPLICIT_CACHE_MIN_TOKENS,
    THOUGHT_TOKENS,
    fake_gemini_handler,
)

KEY = "test-gemini-key"
TOKEN = "test-access-token"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city.",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
# The OpenAPI-subset form, as older code declares functions.
TIME = types.FunctionDeclaration(
    name="get_time",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"zone": types.Schema(type=types.Type.STRING)},
        required=["zone"],
    ),
)


def config(**fields: Any) -> types.GenerateContentConfig:
    """Tools declared, the SDK's automatic function calling off: the test plays the client."""
    return types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER, TIME])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        **fields,
    )


def signature_of(user_text: str) -> bytes:
    return base64.b64decode(sign(thought_about(user_text)))


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    handler = fake_gemini_handler(FakeControl(), api_key=KEY, access_token=TOKEN)
    with serve_in_thread(handler) as server:
        yield server


@pytest.fixture(params=["gemini", "vertex"])
def client(request: pytest.FixtureRequest, fake: FakeServer) -> Iterator[genai.Client]:
    if request.param == "vertex":
        made = genai.Client(
            vertexai=True,
            project="p",
            location="us-central1",
            credentials=google.oauth2.credentials.Credentials(token=TOKEN),  # type: ignore[no-untyped-call]
            http_options=types.HttpOptions(base_url=fake.url, api_version="v1"),
        )
    else:
        options = types.HttpOptions(base_url=fake.url, api_version="v1beta")
        made = genai.Client(api_key=KEY, http_options=options)
    with made:
        yield made


def test_a_function_call_parses_with_its_signature_and_usage(client: genai.Client) -> None:
    text = "rain in Paris"
    answer = client.models.generate_content(
        model="gemini-2.5-flash", contents=text, config=config()
    )
    assert answer.function_calls == [types.FunctionCall(name="get_weather", args={"city": text})]
    assert answer.candidates and answer.candidates[0].content
    (part,) = answer.candidates[0].content.parts or []
    assert part.thought_signature == signature_of(text)
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    usage = answer.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (3, 3)
    assert usage.thoughts_token_count == THOUGHT_TOKENS
    assert usage.total_token_count == 3 + 3 + THOUGHT_TOKENS


def test_the_sdk_history_round_trips_signatures_and_results(client: genai.Client) -> None:
    text = "rain in Paris"
    first = client.models.generate_content(model="gemini-2.5-flash", contents=text, config=config())
    assert first.candidates and first.candidates[0].content
    history = [
        types.Content(role="user", parts=[types.Part(text=text)]),
        first.candidates[0].content,
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"result": "wet"})
            ],
        ),
    ]
    final = client.models.generate_content(
        model="gemini-2.5-flash", contents=history, config=config()
    )
    assert final.text == "Tool said: wet"
    assert final.candidates and final.candidates[0].content
    (part,) = final.candidates[0].content.parts or []
    assert part.thought_signature == signature_of(text)  # on the answer's (last) text part


def test_a_call_sent_back_without_its_signature_is_a_400(client: genai.Client) -> None:
    text = "rain in Paris"
    first = client.models.generate_content(model="gemini-2.5-flash", contents=text, config=config())
    assert first.candidates and first.candidates[0].content and first.function_calls
    unsigned = types.Content(
        role="model", parts=[types.Part(function_call=first.function_calls[0])]
    )
    history = [
        types.Content(role="user", parts=[types.Part(text=text)]),
        unsigned,
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"r": 1})],
        ),
    ]
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents=history, config=config())
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
    assert "thought_signature" in (raised.value.message or "")


def test_parallel_calls_stream_whole_in_one_chunk(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="weather and time in parallel", config=config()
        )
    )
    (chunk,) = chunks
    assert [call.name for call in chunk.function_calls or []] == ["get_weather", "get_time"]
    # The OpenAPI-declared tool's string property got the user's text too.
    assert (chunk.function_calls or [])[1].args == {"zone": "weather and time in parallel"}
    assert chunk.candidates and chunk.candidates[0].content
    parts = chunk.candidates[0].content.parts or []
    assert [p.thought_signature is not None for p in parts] == [True, False]
    assert chunk.candidates[0].finish_reason == types.FinishReason.STOP


def test_streamed_thoughts_then_text_then_the_signature(client: genai.Client) -> None:
    text = "why"
    thinking = types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.5-pro",
            contents=text,
            config=types.GenerateContentConfig(thinking_config=thinking),
        )
    )
    first = chunks[0].candidates[0].content.parts[0]  # type: ignore[index, union-attr]
    assert (first.thought, first.text) == (True, thought_about(text))
    last = chunks[-1].candidates[0]  # type: ignore[index]
    (signed,) = last.content.parts  # type: ignore[union-attr, misc]
    assert (signed.text or "", signed.thought_signature) == ("", signature_of(text))
    assert last.finish_reason == types.FinishReason.STOP
    answer = "".join(c.text or "" for c in chunks[1:])
    assert len(answer.split()) == 12
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage.thoughts_token_count == THOUGHT_TOKENS


@pytest.mark.parametrize(
    ("mode", "names", "called"),
    [
        ("ANY", ["get_time"], ["get_time"]),
        ("ANY", None, ["get_weather"]),
        ("NONE", None, []),
    ],
)
def test_function_calling_modes(
    client: genai.Client, mode: str, names: list[str] | None, called: list[str]
) -> None:
    calling = types.FunctionCallingConfig(
        mode=types.FunctionCallingConfigMode(mode), allowed_function_names=names
    )
    answer = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="what now",
        config=config(tool_config=types.ToolConfig(function_calling_config=calling)),
    )
    assert [call.name for call in answer.function_calls or []] == called


def test_a_repeated_long_prefix_reports_cached_tokens(client: genai.Client) -> None:
    words = IMPLICIT_CACHE_MIN_TOKENS + 6
    settings = types.GenerateContentConfig(
        system_instruction=" ".join(f"rule{i}" for i in range(words))
    )
    first = client.models.generate_content(
        model="gemini-2.5-flash", contents="one", config=settings
    )
    second = client.models.generate_content(
        model="gemini-2.5-flash", contents="two", config=settings
    )
    assert first.usage_metadata and first.usage_metadata.cached_content_token_count is None
    usage = second.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.cached_content_token_count) == (words + 1, words)
    assert usage.cache_tokens_details == [
        types.ModalityTokenCount(modality=types.MediaModality.TEXT, token_count=words)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_client_streams_a_call(anyio_backend: str) -> None:
    handler = fake_gemini_handler(FakeControl(), api_key=KEY)
    # An httpx client of our own: the SDK's aiohttp session class warns on creation.
    async with open_fake_server(handler) as server, httpx.AsyncClient() as http:
        options = types.HttpOptions(
            base_url=server.url, api_version="v1beta", httpx_async_client=http
        )
        async with genai.Client(api_key=KEY, http_options=options).aio as client:
            stream: AsyncIterator[types.GenerateContentResponse]
            stream = await client.models.generate_content_stream(
                model="gemini-2.5-flash", contents="sunny in Nice", config=config()
            )
            chunks = [chunk async for chunk in stream]
    calls = [call for chunk in chunks for call in chunk.function_calls or []]
    assert calls == [types.FunctionCall(name="get_weather", args={"city": "sunny in Nice"})]


# -- what the fake refuses, as Gemini does --------------------------------------------------------

HI: dict[str, Any] = {"role": "user", "parts": [{"text": "hi"}]}
CALL: dict[str, Any] = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
RESULT: dict[str, Any] = {
    "role": "user",
    "parts": [{"functionResponse": {"name": "f", "response": {}}}],
}
DECLARED: list[dict[str, Any]] = [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}]


@pytest.mark.parametrize(
    ("model", "body", "fragment"),
    [
        ("gemini-1.5-flash", {"contents": [HI, RESULT]}, "immediately after a function call"),
        (
            "gemini-1.5-flash",
            {"contents": [HI, CALL, {"role": "user", "parts": RESULT["parts"] * 2}]},
            "number of function response parts",
        ),
        (
            "gemini-1.5-flash",
            {
                "contents": [
                    HI,
                    CALL,
                    {"role": "user", "parts": [{"functionResponse": {"name": "g"}}]},
                ]
            },
            "name of each function response",
        ),
        ("gemini-1.5-flash", {"contents": [CALL]}, "immediately after a user turn"),
        (
            "gemini-1.5-flash",
            {
                "contents": [HI],
                "tools": [
                    {
                        "functionDeclarations": [
                            {"name": "f", "parameters": {}, "parametersJsonSchema": {}}
                        ]
                    }
                ],
            },
            "only one of parameters and parameters_json_schema",
        ),
        (
            "gemini-1.5-flash",
            {"contents": [HI], "tools": [{"functionDeclarations": [{"name": "9lives"}]}]},
            "Invalid function name",
        ),
        (
            "gemini-1.5-flash",
            {
                "contents": [HI],
                "tools": DECLARED,
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            },
            "only when mode is ANY",
        ),
        (
            "gemini-1.5-flash",
            {
                "contents": [HI],
                "tools": DECLARED,
                "toolConfig": {"functionCallingConfig": {"mode": "SOME"}},
            },
            "FunctionCallingConfig.Mode",
        ),
        (
            "gemini-1.5-flash",
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}],
                    }
                ]
            },
            "Unsupported MIME type: image/gif",
        ),
        (
            "gemini-1.5-flash",
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}],
                    }
                ]
            },
            "Base64 decoding failed",
        ),
        (
            "gemini-1.5-flash",
            {"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]},
            "oneof field 'data' is already set",
        ),
        (
            "gemini-1.5-flash",
            {"contents": [{"role": "user", "parts": [{"txt": "a"}]}]},
            'Unknown name "txt"',
        ),
        (
            "gemini-1.5-flash",
            {"contents": [HI], "generationConfig": {"thinkingConfig": {"thinkingBudget": 64}}},
            "thinking is not supported by this model",
        ),
        (
            "gemini-2.5-pro",
            {"contents": [HI], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
            "only works in thinking mode",
        ),
        (
            "gemini-2.5-flash",
            {
                "contents": [
                    HI,
                    {"role": "model", "parts": [{"text": "x", "thoughtSignature": "c2lnbmF0dXJl"}]},
                    HI,
                ]
            },
            "Corrupted thought signature",
        ),
    ],
)
def test_the_fake_refuses_what_gemini_refuses(
    fake: FakeServer, model: str, body: dict[str, Any], fragment: str
) -> None:
    response = httpx.post(
        f"{fake.url}/v1beta/models/{model}:generateContent",
        headers={"x-goog-api-key": KEY},
        json=body,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and fragment in error["message"]


def test_a_bad_signature_on_vertex_uses_vertexs_words(fake: FakeServer) -> None:
    body = {
        "contents": [
            HI,
            {"role": "model", "parts": [{"text": "x", "thoughtSignature": "c2lnbmF0dXJl"}]},
            HI,
        ]
    }
    response = httpx.post(
        f"{fake.url}/v1/projects/p/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:generateContent",
        headers={"authorization": f"Bearer {TOKEN}"},
        json=body,
    )
    assert response.status_code == 400
    assert "Thought signature is not valid" in response.json()["error"]["message"]
