"""The official openai SDK parses every answer of the OpenAI, Together and OpenRouter fakes."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from delos.testing import FakeControl, FakeServer, Fault, serve_in_thread
from delos.testing.fake_openai import OpenAIFlavour, embedding_of, fake_openai_handler
from tests.fakes.openai_clients import SdkClient

MODELS = {
    OpenAIFlavour.OPENAI: "gpt-4o-mini",
    OpenAIFlavour.TOGETHER: "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    OpenAIFlavour.OPENROUTER: "openai/gpt-4o",
}


@pytest.fixture(params=list(OpenAIFlavour), ids=lambda f: f.value)
def flavour(request: pytest.FixtureRequest) -> OpenAIFlavour:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def fake(flavour: OpenAIFlavour, control: FakeControl) -> Iterator[FakeServer]:
    with serve_in_thread(fake_openai_handler(control, flavour, api_key="test-key")) as server:
        yield server


def test_completion_parses_strictly(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    answer = sdk_client(fake, flavour).chat.completions.create(
        model=MODELS[flavour], messages=[{"role": "user", "content": "say hello"}], max_tokens=4
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert len((answer.choices[0].message.content or "").split()) == 4
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 4)


def test_stream_with_usage_parses_strictly(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    chunks = list(
        sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour],
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0].usage is not None and usage_chunks[0].usage.completion_tokens == 12
    if flavour is OpenAIFlavour.TOGETHER:
        assert usage_chunks[0] is finishing[0]  # Together: usage rides on the finishing chunk
    else:
        assert usage_chunks[0].choices == [] and usage_chunks[0] is chunks[-1]


def test_openai_stream_without_the_option_has_no_usage(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is not OpenAIFlavour.OPENAI:
        pytest.skip("only OpenAI makes usage in streams optional")
    chunks = list(
        sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour], messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)


def test_embeddings_as_floats_and_as_base64(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    if flavour is OpenAIFlavour.OPENROUTER:
        pytest.skip("OpenRouter has no embeddings")
    model = (
        "text-embedding-3-small" if flavour is OpenAIFlavour.OPENAI else "BAAI/bge-large-en-v1.5"
    )
    as_floats = sdk_client(fake, flavour).embeddings.create(
        model=model, input=["a b", "c"], encoding_format="float"
    )
    # The SDK asks for base64 by default and decodes it (strict validation rejects the string
    # before decoding, so this one call is lenient).
    as_base64 = sdk_client(fake, flavour, strict=False).embeddings.create(
        model=model, input=["a b", "c"]
    )
    for answer in (as_floats, as_base64):
        assert [d.index for d in answer.data] == [0, 1]
        assert answer.data[0].embedding == embedding_of("a b", 8)
        assert answer.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_errors_raise_the_sdk_exception_for_their_status(
    fake: FakeServer,
    flavour: OpenAIFlavour,
    control: FakeControl,
    status: int,
    exception: type[openai.APIStatusError],
    sdk_client: SdkClient,
) -> None:
    control.fail_next(1, Fault.HTTP_ERROR, error_status=status, retry_after=7)
    with pytest.raises(exception) as raised:
        sdk_client(fake, flavour).chat.completions.create(
            model=MODELS[flavour], messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == status
    assert isinstance(raised.value.body, dict) and raised.value.body.get("message")
    if flavour is OpenAIFlavour.OPENROUTER:
        assert raised.value.body.get("code") == status  # OpenRouter's codes are numeric


def test_a_wrong_key_is_rejected_with_401(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    wrong = sdk_client(fake, flavour, strict=False, key="wrong")
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(
            model=MODELS[flavour], messages=[{"role": "user", "content": "hi"}]
        )


def test_mid_stream_error_event_raises_in_the_sdk(
    fake: FakeServer, flavour: OpenAIFlavour, control: FakeControl, sdk_client: SdkClient
) -> None:
    control.fail_next(1, Fault.STREAM_ERROR_EVENT)
    stream = sdk_client(fake, flavour).chat.completions.create(
        model=MODELS[flavour], messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


def test_model_list_has_each_flavours_shape(
    fake: FakeServer, flavour: OpenAIFlavour, sdk_client: SdkClient
) -> None:
    import httpx

    payload = httpx.get(
        fake.url + flavour.prefix + "/models", headers={"authorization": "Bearer test-key"}
    ).json()
    if flavour is OpenAIFlavour.TOGETHER:  # a bare array
        assert isinstance(payload, list) and MODELS[flavour] in {m["id"] for m in payload}
    elif flavour is OpenAIFlavour.OPENROUTER:  # {"data": [...]} with pricing, no "object"
        assert MODELS[flavour] in {m["id"] for m in payload["data"]}
        assert all("pricing" in m and "context_length" in m for m in payload["data"])
    else:
        ids = {m.id for m in sdk_client(fake, flavour).models.list()}
        assert MODELS[flavour] in ids


def test_openrouter_streams_carry_keep_alive_comments(control: FakeControl) -> None:
    import httpx

    handler = fake_openai_handler(control, OpenAIFlavour.OPENROUTER)
    with serve_in_thread(handler) as server:
        body = httpx.post(
            server.url + "/api/v1/chat/completions",
            headers={"authorization": "Bearer k"},
            json={
                "model": "openai/gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ).text
    assert body.startswith(": OPENROUTER PROCESSING\n\n")
    assert body.endswith("data: [DONE]\n\n")
