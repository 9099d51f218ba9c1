"""boto3's bedrock-runtime client parses every answer of the Bedrock fake (tool use, reasoning
and cache usage included, unary and streamed), and is refused by it when its signature or its
conversation is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import botocore.config
import botocore.eventstream
import botocore.exceptions
import httpx
import pytest

from delos.testing import FakeControl, FakeServer, Fault, serve_in_thread
from delos.testing.fake_bedrock import REDACTED_THINKING_TRIGGER, fake_bedrock_handler
from delos.testing.fake_openai import embedding_of

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
HELLO = [{"role": "user", "content": [{"text": "say hello"}]}]


@pytest.fixture(autouse=True)
def _no_ambient_aws_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bearer token in the environment would replace SigV4; a profile could add settings.
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def fake(control: FakeControl) -> Iterator[FakeServer]:
    handler = fake_bedrock_handler(control, access_key_id="AKIATEST", secret_access_key="secret")
    with serve_in_thread(handler) as server:
        yield server


_open_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    # boto3 keeps pooled sockets open; close them so no ResourceWarning leaks into other tests.
    yield
    while _open_clients:
        _open_clients.pop().close()


def client(
    fake: FakeServer, *, secret: str = "secret", region: str = "us-east-1", **keys: Any
) -> Any:
    bedrock = boto3.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=fake.url,
        aws_access_key_id=keys.pop("access_key", "AKIATEST"),
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
        **keys,
    )
    _open_clients.append(bedrock)
    return bedrock


def drain(stream: Any) -> list[dict[str, Any]]:
    """Every event of a botocore event stream; the stream is closed even when it raises."""
    events: list[dict[str, Any]] = []
    try:
        for event in stream:
            events.append(event)
    finally:
        stream.close()
    return events


def test_converse_parses_with_exact_usage_and_stop_reason(fake: FakeServer) -> None:
    answer = client(fake).converse(
        modelId=MODEL,
        system=[{"text": "be terse"}],
        messages=HELLO,
        inferenceConfig={"maxTokens": 4},
    )
    assert answer["output"]["message"]["role"] == "assistant"
    assert len(answer["output"]["message"]["content"][0]["text"].split()) == 4
    assert answer["stopReason"] == "max_tokens"
    assert answer["usage"] == {"inputTokens": 4, "outputTokens": 4, "totalTokens": 8}
    assert answer["metrics"]["latencyMs"] > 0
    assert answer["ResponseMetadata"]["RequestId"]


def test_the_model_id_arrives_percent_encoded(fake: FakeServer) -> None:
    client(fake).converse(modelId=MODEL, messages=HELLO)
    assert fake.stats.requests[-1].path == f"/model/{MODEL.replace(':', '%3A')}/converse"


def test_converse_stream_sends_events_in_bedrock_order(fake: FakeServer) -> None:
    events = drain(client(fake).converse_stream(modelId=MODEL, messages=HELLO)["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and events[0]["messageStart"] == {"role": "assistant"}
    assert kinds[1:-3] == ["contentBlockDelta"] * 12
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:-3])
    assert len(text.split()) == 12
    assert events[-2]["messageStop"] == {"stopReason": "end_turn"}
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 2,
        "outputTokens": 12,
        "totalTokens": 14,
    }


def test_a_stream_without_final_usage_ends_at_message_stop(
    fake: FakeServer, control: FakeControl
) -> None:
    control.fail_next(1, Fault.NO_FINAL_USAGE)
    events = drain(client(fake).converse_stream(modelId=MODEL, messages=HELLO)["stream"])
    assert next(iter(events[-1])) == "messageStop"


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["city", "count"],
}
TOOL_CONFIG = {
    "tools": [{"toolSpec": {"name": "output", "inputSchema": {"json": SCHEMA}}}],
    "toolChoice": {"tool": {"name": "output"}},
}


def test_a_forced_tool_answers_with_a_conforming_tool_use(fake: FakeServer) -> None:
    answer = client(fake).converse(modelId=MODEL, messages=HELLO, toolConfig=TOOL_CONFIG)
    (block,) = answer["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "output"
    assert set(block["toolUse"]["input"]) == {"city", "count"}
    assert answer["stopReason"] == "tool_use"

    stream = client(fake).converse_stream(modelId=MODEL, messages=HELLO, toolConfig=TOOL_CONFIG)
    events = drain(stream["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "output"
    partial = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    )
    assert json.loads(partial) == block["toolUse"]["input"]


def test_titan_embeddings_through_invoke_model(fake: FakeServer) -> None:
    answer = client(fake).invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "a b", "dimensions": 256}),
        contentType="application/json",
        accept="application/json",
    )
    payload = json.loads(answer["body"].read())
    assert payload["embedding"] == embedding_of("a b", 256)
    assert payload["inputTextTokenCount"] == 2
    assert answer["contentType"] == "application/json"
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "2"


def test_cohere_embeddings_through_invoke_model(fake: FakeServer) -> None:
    answer = client(fake).invoke_model(
        modelId="cohere.embed-english-v3",
        body=json.dumps({"texts": ["a b", "c"], "input_type": "search_document"}),
    )
    payload = json.loads(answer["body"].read())
    assert payload["response_type"] == "embeddings_floats"
    assert payload["embeddings"] == [embedding_of("a b", 1024), embedding_of("c", 1024)]
    assert payload["texts"] == ["a b", "c"]
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "3"

    by_type = client(fake).invoke_model(
        modelId="cohere.embed-english-v3",
        body=json.dumps(
            {"texts": ["c"], "input_type": "search_query", "embedding_types": ["float"]}
        ),
    )
    payload = json.loads(by_type["body"].read())
    assert payload["response_type"] == "embeddings_by_type"
    assert payload["embeddings"]["float"] == [embedding_of("c", 1024)]


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_http_errors_raise_the_modelled_exception(
    fake: FakeServer, control: FakeControl, status: int, name: str
) -> None:
    bedrock = client(fake)
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status)
    with pytest.raises(getattr(bedrock.exceptions, name)) as raised:
        bedrock.converse(modelId=MODEL, messages=HELLO)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["Error"]["Code"] == name and response["Error"]["Message"]


def test_validation_errors_for_a_malformed_conversation_and_an_unknown_model(
    fake: FakeServer,
) -> None:
    bedrock = client(fake)
    with pytest.raises(bedrock.exceptions.ValidationException, match="must start with a user"):
        bedrock.converse(
            modelId=MODEL, messages=[{"role": "assistant", "content": [{"text": "hi"}]}]
        )
    with pytest.raises(bedrock.exceptions.ValidationException, match="must alternate"):
        bedrock.converse(modelId=MODEL, messages=HELLO + HELLO)
    with pytest.raises(bedrock.exceptions.ValidationException, match="identifier is invalid"):
        bedrock.converse(modelId="acme.nonexistent-v1:0", messages=HELLO)


def test_a_bad_crc_raises_in_botocore(fake: FakeServer, control: FakeControl) -> None:
    control.fail_next(1, Fault.BAD_CRC)
    stream = client(fake).converse_stream(modelId=MODEL, messages=HELLO)["stream"]
    with pytest.raises(botocore.eventstream.ChecksumMismatch):
        drain(stream)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "throttlingException"),
        (500, "internalServerException"),
        (424, "modelStreamErrorException"),
        (400, "validationException"),
        (503, "serviceUnavailableException"),
    ],
)
def test_an_in_stream_exception_raises_an_event_stream_error(
    fake: FakeServer, control: FakeControl, status: int, code: str
) -> None:
    control.fail_next(1, Fault.STREAM_ERROR_EVENT, error_status=status, tokens_before_fault=2)
    seen: list[dict[str, Any]] = []
    stream = client(fake).converse_stream(modelId=MODEL, messages=HELLO)["stream"]
    with pytest.raises(botocore.exceptions.EventStreamError) as raised:
        try:
            for event in stream:
                seen.append(event)
        finally:
            stream.close()
    assert raised.value.response["Error"]["Code"] == code
    assert [next(iter(e)) for e in seen] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
    ]


def test_an_unsigned_request_is_refused(fake: FakeServer) -> None:
    response = httpx.post(f"{fake.url}/model/{MODEL}/converse", json={"messages": HELLO})
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException:")
    assert response.json() == {"message": "Missing Authentication Token"}


def test_a_wrong_secret_fails_signature_verification(fake: FakeServer) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client(fake, secret="not-the-secret").converse(modelId=MODEL, messages=HELLO)
    error = raised.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    # Like AWS, the fake shows the canonical request it computed: the path is encoded twice.
    assert "/model/anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse" in error["Message"]


def test_a_signature_for_another_region_is_refused(fake: FakeServer) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client(fake, region="eu-west-1").converse(modelId=MODEL, messages=HELLO)
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "region" in raised.value.response["Error"]["Message"]


def test_an_unknown_key_id_is_unrecognized(fake: FakeServer) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client(fake, access_key="AKIAOTHER").converse(modelId=MODEL, messages=HELLO)
    assert raised.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_temporary_credentials_need_their_session_token(control: FakeControl) -> None:
    handler = fake_bedrock_handler(control, secret_access_key="secret", session_token="tok")
    with serve_in_thread(handler) as server:
        answer = client(server, access_key="ASIATEST", aws_session_token="tok").converse(
            modelId=MODEL, messages=HELLO
        )
        assert answer["stopReason"] == "end_turn"
        assert server.stats.requests[-1].header("x-amz-security-token") == "tok"
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            client(server, access_key="ASIATEST").converse(modelId=MODEL, messages=HELLO)
        assert raised.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_an_oversized_frame_is_refused_by_botocore(fake: FakeServer, control: FakeControl) -> None:
    control.fail_next(1, Fault.OVERSIZED_BODY)
    stream = client(fake).converse_stream(modelId=MODEL, messages=HELLO)["stream"]
    with pytest.raises(botocore.eventstream.InvalidPayloadLength):
        drain(stream)


# -- agents: tool use, reasoning, prompt caching ---------------------------------------------------

CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "The weather in a city",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        },
    }
}
CLOCK = {
    "toolSpec": {
        "name": "get_time",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"zone": {"type": "string"}},
                "required": ["zone"],
            }
        },
    }
}
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_parses_parallel_tool_use_and_answers_the_results(fake: FakeServer) -> None:
    bedrock = client(fake)
    question = said("weather and time in parallel")
    tools = {"tools": [WEATHER, CLOCK], "toolChoice": {"auto": {}}}
    answer = bedrock.converse(modelId=CLAUDE, messages=question, toolConfig=tools)
    assert answer["stopReason"] == "tool_use"
    message = answer["output"]["message"]
    uses = [block["toolUse"] for block in message["content"]]
    assert uses == [
        {
            "input": {"city": "weather and time in parallel"},
            "name": "get_weather",
            "toolUseId": uses[0]["toolUseId"],
        },
        {
            "input": {"zone": "weather and time in parallel"},
            "name": "get_time",
            "toolUseId": uses[1]["toolUseId"],
        },
    ]
    assert (
        uses[0]["toolUseId"].startswith("tooluse_") and uses[0]["toolUseId"] != uses[1]["toolUseId"]
    )
    results = [
        {"toolResult": {"toolUseId": uses[0]["toolUseId"], "content": [{"text": "sunny"}]}},
        {"toolResult": {"toolUseId": uses[1]["toolUseId"], "content": [{"json": {"t": "noon"}}]}},
    ]
    history = [*question, message, {"role": "user", "content": results}]
    final = bedrock.converse(modelId=CLAUDE, messages=history, toolConfig=tools)
    assert final["output"]["message"]["content"] == [{"text": 'Tool said: sunny; {"t":"noon"}'}]
    assert final["stopReason"] == "end_turn"

    wrong = [{"toolResult": {"toolUseId": "tooluse_nope", "content": [{"text": "x"}]}}]
    with pytest.raises(bedrock.exceptions.ValidationException, match="unexpected `tool_use_id`"):
        bedrock.converse(
            modelId=CLAUDE,
            messages=[*question, message, {"role": "user", "content": wrong}],
            toolConfig=tools,
        )
    with pytest.raises(bedrock.exceptions.ValidationException, match="toolConfig field must be"):
        bedrock.converse(modelId=CLAUDE, messages=history)


def test_converse_stream_carries_tool_use_starts_and_input_fragments(fake: FakeServer) -> None:
    tools = {"tools": [WEATHER]}
    stream = client(fake).converse_stream(
        modelId=CLAUDE, messages=said("weather in Rome"), toolConfig=tools
    )
    events = drain(stream["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds == [
        "messageStart",
        "contentBlockStart",
        *["contentBlockDelta"] * 4,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    start = events[1]["contentBlockStart"]
    assert start["contentBlockIndex"] == 0
    assert start["start"]["toolUse"]["name"] == "get_weather"
    fragments = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events[2:6]]
    assert "".join(fragments) == '{"city":"weather in Rome"}'
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_converse_parses_signed_reasoning_and_accepts_it_back(fake: FakeServer) -> None:
    bedrock = client(fake)
    answer = bedrock.converse(
        modelId=CLAUDE, messages=said("think hard"), additionalModelRequestFields=THINKING
    )
    message = answer["output"]["message"]
    reasoning, text = message["content"]
    assert reasoning["reasoningContent"]["reasoningText"]["text"] == "Thinking about: think hard"
    assert reasoning["reasoningContent"]["reasoningText"]["signature"]
    assert text["text"]
    history = [*said("think hard"), message, *said("and now?")]
    again = bedrock.converse(
        modelId=CLAUDE, messages=history, additionalModelRequestFields=THINKING
    )
    assert again["stopReason"] == "end_turn"

    forged = {
        "reasoningText": {
            "text": "changed",
            "signature": reasoning["reasoningContent"]["reasoningText"]["signature"],
        }
    }
    tampered = [
        *said("think hard"),
        {"role": "assistant", "content": [{"reasoningContent": forged}, text]},
        *said("x"),
    ]
    with pytest.raises(bedrock.exceptions.ValidationException, match="Invalid `signature`"):
        bedrock.converse(modelId=CLAUDE, messages=tampered)
    with pytest.raises(bedrock.exceptions.ValidationException, match="budget_tokens"):
        bedrock.converse(
            modelId=CLAUDE,
            messages=said("x"),
            additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 100}},
        )


def test_converse_stream_carries_reasoning_text_then_its_signature(fake: FakeServer) -> None:
    stream = client(fake).converse_stream(
        modelId=CLAUDE, messages=said("think"), additionalModelRequestFields=THINKING
    )
    events = drain(stream["stream"])
    reasoning = [
        e["contentBlockDelta"]["delta"]["reasoningContent"]
        for e in events
        if "reasoningContent" in e.get("contentBlockDelta", {}).get("delta", {})
    ]
    assert [r.get("text") for r in reasoning[:-1]] == ["Thinking", " about:", " think"]
    assert set(reasoning[-1]) == {"signature"} and reasoning[-1]["signature"]
    assert all(e["contentBlockDelta"]["contentBlockIndex"] == 0 for e in events[1:5])
    assert events[5] == {"contentBlockStop": {"contentBlockIndex": 0}}


def test_redacted_reasoning_parses_to_bytes_and_goes_back_as_bytes(fake: FakeServer) -> None:
    bedrock = client(fake)
    question = said(f"please {REDACTED_THINKING_TRIGGER}")
    answer = bedrock.converse(
        modelId=CLAUDE, messages=question, additionalModelRequestFields=THINKING
    )
    message = answer["output"]["message"]
    redacted = message["content"][0]["reasoningContent"]["redactedContent"]
    assert isinstance(redacted, bytes) and redacted.startswith(b"delos-redacted-thinking")
    again = bedrock.converse(modelId=CLAUDE, messages=[*question, message, *said("more")])
    assert again["stopReason"] == "end_turn"

    stream = bedrock.converse_stream(
        modelId=CLAUDE, messages=question, additionalModelRequestFields=THINKING
    )
    events = drain(stream["stream"])
    assert events[1]["contentBlockDelta"]["delta"]["reasoningContent"] == {
        "redactedContent": redacted
    }


def test_cache_points_report_a_write_then_a_read(fake: FakeServer) -> None:
    bedrock = client(fake)
    system = [{"text": "shared instructions for every call"}, {"cachePoint": {"type": "default"}}]
    first = bedrock.converse(modelId=CLAUDE, system=system, messages=said("one"))
    assert first["usage"] == {
        "inputTokens": 1,
        "outputTokens": 12,
        "totalTokens": 18,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 5,
    }
    stream = bedrock.converse_stream(modelId=CLAUDE, system=system, messages=said("two"))
    usage = drain(stream["stream"])[-1]["metadata"]["usage"]
    assert usage == {
        "inputTokens": 1,
        "outputTokens": 12,
        "totalTokens": 18,
        "cacheReadInputTokens": 5,
        "cacheWriteInputTokens": 0,
    }


def test_document_names_and_content_follow_bedrock_s_rules(fake: FakeServer) -> None:
    bedrock = client(fake)

    def with_document(name: str, *, text: bool = True) -> list[dict[str, Any]]:
        document = {"document": {"format": "txt", "name": name, "source": {"bytes": b"notes"}}}
        return [{"role": "user", "content": [document, *([{"text": "read"}] if text else [])]}]

    assert bedrock.converse(modelId=CLAUDE, messages=with_document("My notes (v2)"))
    for bad in ("notes.txt", "two  spaces", "tab\there"):
        with pytest.raises(bedrock.exceptions.ValidationException, match="document file name"):
            bedrock.converse(modelId=CLAUDE, messages=with_document(bad))
    with pytest.raises(bedrock.exceptions.ValidationException, match="no text"):
        bedrock.converse(modelId=CLAUDE, messages=with_document("notes", text=False))
