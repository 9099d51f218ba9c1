"""The official google-genai SDK parses every answer of the Gemini and Vertex AI Gemini fake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import google.oauth2.credentials
import httpx
import pytest
from google import genai
from google.genai import errors, types

from delos.testing import FakeControl, FakeServer, Fault, serve_in_thread
from delos.testing.fake_gemini import THOUGHT_TOKENS, fake_gemini_handler
from delos.testing.fake_openai import embedding_of

KEY = "test-gemini-key"
TOKEN = "test-access-token"
VERTEX_PREFIX = "/v1/projects/p/locations/us-central1/publishers/google/models"


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def fake(control: FakeControl) -> Iterator[FakeServer]:
    with serve_in_thread(fake_gemini_handler(control, api_key=KEY, access_token=TOKEN)) as server:
        yield server


def gemini_client(fake: FakeServer, key: str = KEY) -> genai.Client:
    # python-genai does not retry unless told to: every error reaches the test as sent.
    options = types.HttpOptions(base_url=fake.url, api_version="v1beta")
    return genai.Client(api_key=key, http_options=options)


def vertex_client(fake: FakeServer, token: str = TOKEN) -> genai.Client:
    return genai.Client(
        vertexai=True,
        project="p",
        location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token=token),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=fake.url, api_version="v1"),
    )


# The SDK closes its HTTP client when the Client object is collected, so tests hold on to one.


@pytest.fixture
def gemini(fake: FakeServer) -> Iterator[genai.Client]:
    with gemini_client(fake) as client:
        yield client


@pytest.fixture
def vertex(fake: FakeServer) -> Iterator[genai.Client]:
    with vertex_client(fake) as client:
        yield client


# -- Gemini API -----------------------------------------------------------------------------------


def test_completion_parses_with_exact_usage_and_the_length_finish(gemini: genai.Client) -> None:
    answer = gemini.models.generate_content(
        model="gemini-1.5-flash",
        contents="say hello",
        config=types.GenerateContentConfig(system_instruction="be terse", max_output_tokens=4),
    )
    assert answer.text is not None and len(answer.text.split()) == 4
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    usage = answer.usage_metadata
    assert usage is not None
    # System instruction and prompt: two words each; one token per generated word.
    assert (usage.prompt_token_count, usage.candidates_token_count) == (4, 4)
    assert usage.total_token_count == 8
    assert answer.model_version == "gemini-1.5-flash-002"
    assert answer.response_id


def test_request_reaches_the_fake_with_the_key_header_and_camel_case_fields(
    fake: FakeServer, gemini: genai.Client
) -> None:
    gemini.models.generate_content(
        model="gemini-1.5-pro",
        contents="hi",
        config=types.GenerateContentConfig(temperature=0.5, stop_sequences=["END"]),
    )
    request = fake.stats.requests[-1]
    assert request.path == "/v1beta/models/gemini-1.5-pro:generateContent"
    assert request.header("x-goog-api-key") == KEY
    body = request.json()
    assert body["generationConfig"] == {"temperature": 0.5, "stopSequences": ["END"]}


def test_stream_parses_and_its_last_usage_is_the_total(gemini: genai.Client) -> None:
    chunks = list(gemini.models.generate_content_stream(model="gemini-pro", contents="hi"))
    text = "".join(c.text or "" for c in chunks)
    assert len(text.split()) == 12
    finishing = [c for c in chunks if c.candidates and c.candidates[0].finish_reason]
    assert finishing == [chunks[-1]]
    counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert counts == list(range(1, 13))  # running counts: summing them would be wrong


def test_thinking_models_report_thoughts_and_flag_thought_parts(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True)
    )
    answer = gemini.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
    assert answer.candidates and answer.candidates[0].content
    parts = answer.candidates[0].content.parts or []
    assert [bool(p.thought) for p in parts] == [True, False]
    assert answer.text is not None and len(answer.text.split()) == 12  # thoughts left out
    assert answer.usage_metadata is not None
    assert answer.usage_metadata.thoughts_token_count == THOUGHT_TOKENS


@pytest.mark.parametrize("field", ["response_json_schema", "response_schema"])
def test_structured_output_conforms_to_either_schema_form(field: str, gemini: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["name", "count"],
    }
    config = types.GenerateContentConfig.model_validate(
        {"response_mime_type": "application/json", field: schema}
    )
    answer = gemini.models.generate_content(
        model="gemini-2.0-flash", contents="describe", config=config
    )
    assert json.loads(answer.text or "") == {"name": "x", "count": 1}


def test_embeddings_use_batch_embed_contents(fake: FakeServer, gemini: genai.Client) -> None:
    answer = gemini.models.embed_content(model="text-embedding-004", contents=["a b", "c"])
    assert answer.embeddings is not None
    assert [e.values for e in answer.embeddings] == [embedding_of("a b", 8), embedding_of("c", 8)]
    assert fake.stats.requests[-1].path == "/v1beta/models/text-embedding-004:batchEmbedContents"


def test_model_list_names_every_model(gemini: genai.Client) -> None:
    names = {model.name for model in gemini.models.list()}
    assert {"models/gemini-1.5-flash", "models/text-embedding-004"} <= names


@pytest.mark.parametrize(
    ("status", "exception", "status_name"),
    [
        (400, errors.ClientError, "INVALID_ARGUMENT"),
        (403, errors.ClientError, "PERMISSION_DENIED"),
        (404, errors.ClientError, "NOT_FOUND"),
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
        (504, errors.ServerError, "DEADLINE_EXCEEDED"),
    ],
)
def test_errors_raise_the_sdk_exception_for_their_status(
    control: FakeControl,
    status: int,
    exception: type[errors.APIError],
    status_name: str,
    gemini: genai.Client,
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=37)
    with pytest.raises(exception) as raised:
        gemini.models.generate_content(model="gemini-1.5-flash", contents="hi")
    assert (raised.value.code, raised.value.status) == (status, status_name)
    assert raised.value.message
    if status == 429:
        details = raised.value.details["error"]["details"]
        assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"} in details


def test_a_wrong_key_is_a_400_with_reason_api_key_invalid(fake: FakeServer) -> None:
    with pytest.raises(errors.ClientError) as raised:
        with gemini_client(fake, key="wrong") as wrong:
            wrong.models.generate_content(model="gemini-1.5-flash", contents="hi")
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
    reasons = [d.get("reason") for d in raised.value.details["error"]["details"]]
    assert "API_KEY_INVALID" in reasons


def test_an_unknown_model_is_not_found(gemini: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as raised:
        gemini.models.generate_content(model="gemini-9", contents="hi")
    assert raised.value.code == 404
    assert "models/gemini-9 is not found" in (raised.value.message or "")


def test_a_streaming_error_arrives_as_a_list_and_the_sdk_unwraps_it(
    fake: FakeServer, control: FakeControl, gemini: genai.Client
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=429)
    with pytest.raises(errors.ClientError) as raised:
        list(gemini.models.generate_content_stream(model="gemini-1.5-flash", contents="hi"))
    assert (raised.value.code, raised.value.status) == (429, "RESOURCE_EXHAUSTED")
    raw = httpx.post(
        fake.url + "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": "wrong"},
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    assert isinstance(raw.json(), list) and raw.json()[0]["error"]["code"] == 400


def test_mid_stream_error_event_raises_in_the_sdk(
    fake: FakeServer, control: FakeControl, gemini: genai.Client
) -> None:
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, tokens_before_fault=2)
    received = []
    with pytest.raises(errors.ServerError) as raised:
        for chunk in gemini.models.generate_content_stream(model="gemini-1.5-flash", contents="hi"):
            received.append(chunk.text)
    assert raised.value.code == 500 and len(received) == 2


# -- the wire, byte for byte ----------------------------------------------------------------------


def post(fake: FakeServer, path: str, body: object) -> httpx.Response:
    return httpx.post(fake.url + path, headers={"x-goog-api-key": KEY}, json=body)


HI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_sse_events_end_in_crlf_and_the_stream_has_no_terminator(fake: FakeServer) -> None:
    response = post(fake, "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse", HI)
    assert response.headers["content-type"] == "text/event-stream"
    events = response.content.split(b"\r\n\r\n")
    assert events[-1] == b""  # the body ends right after the last event
    assert all(e.startswith(b"data: {") for e in events[:-1])
    assert b"[DONE]" not in response.content
    assert json.loads(events[-2][6:])["candidates"][0]["finishReason"] == "STOP"


def test_without_alt_sse_the_stream_is_one_json_array(fake: FakeServer) -> None:
    response = post(fake, "/v1beta/models/gemini-1.5-flash:streamGenerateContent", HI)
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 12
    assert b"\r\n,\r\n" in response.content


def test_unary_answers_are_indented_json(fake: FakeServer) -> None:
    response = post(fake, "/v1beta/models/gemini-1.5-flash:generateContent", HI)
    assert response.content.startswith(b'{\n  "candidates": [')
    assert response.headers["content-type"] == "application/json; charset=UTF-8"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**HI, "generationConfig": {"max_tokens": 5}}, 'Unknown name "max_tokens"'),
        ({**HI, "messages": []}, 'Unknown name "messages"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        (
            {
                **HI,
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseSchema": {"type": "OBJECT"},
                    "responseJsonSchema": {"type": "object"},
                },
            },
            "only one of",
        ),
        ({**HI, "generationConfig": {"responseJsonSchema": {}}}, "response_mime_type"),
    ],
)
def test_requests_are_checked_like_the_real_service(
    fake: FakeServer, body: dict[str, object], fragment: str
) -> None:
    response = post(fake, "/v1beta/models/gemini-1.5-flash:generateContent", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and fragment in error["message"]


def test_a_missing_key_is_permission_denied_and_an_unknown_path_an_html_page(
    fake: FakeServer,
) -> None:
    missing = httpx.post(fake.url + "/v1beta/models/gemini-1.5-flash:generateContent", json=HI)
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    unknown = post(fake, "/v1beta/chat/completions", HI)
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")


# -- Vertex AI ------------------------------------------------------------------------------------


def test_vertex_completion_parses_at_the_publisher_path(
    fake: FakeServer, vertex: genai.Client
) -> None:
    answer = vertex.models.generate_content(model="gemini-1.5-flash-002", contents="hi there")
    assert answer.text is not None and len(answer.text.split()) == 12
    assert answer.usage_metadata is not None
    assert answer.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND
    assert answer.create_time is not None
    request = fake.stats.requests[-1]
    assert request.path == f"{VERTEX_PREFIX}/gemini-1.5-flash-002:generateContent"
    assert request.header("authorization") == f"Bearer {TOKEN}"


def test_vertex_stream_parses(fake: FakeServer, vertex: genai.Client) -> None:
    chunks = list(vertex.models.generate_content_stream(model="gemini-1.5-pro-002", contents="hi"))
    assert len("".join(c.text or "" for c in chunks).split()) == 12
    assert (
        chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    )
    assert fake.stats.requests[-1].query == "alt=sse"


def test_vertex_text_embeddings_use_predict_and_report_tokens(
    fake: FakeServer, vertex: genai.Client
) -> None:
    answer = vertex.models.embed_content(model="text-embedding-005", contents=["a b", "c"])
    assert answer.embeddings is not None
    assert [e.values for e in answer.embeddings] == [embedding_of("a b", 8), embedding_of("c", 8)]
    assert [e.statistics.token_count for e in answer.embeddings if e.statistics] == [2, 1]
    assert fake.stats.requests[-1].path == f"{VERTEX_PREFIX}/text-embedding-005:predict"


def test_vertex_rejects_a_wrong_token_with_401(fake: FakeServer) -> None:
    with pytest.raises(errors.ClientError) as raised:
        with vertex_client(fake, token="expired") as expired:
            expired.models.generate_content(model="gemini-1.5-flash-002", contents="hi")
    assert (raised.value.code, raised.value.status) == (401, "UNAUTHENTICATED")


def test_vertex_requires_explicit_roles(fake: FakeServer) -> None:
    response = httpx.post(
        fake.url + f"{VERTEX_PREFIX}/gemini-1.5-flash-002:generateContent",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert response.status_code == 400 and "valid role" in response.json()["error"]["message"]
