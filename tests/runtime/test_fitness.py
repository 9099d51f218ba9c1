"""A candidate that cannot honour a request as asked is skipped, never sent a clamped value."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from delos.runtime.catalog import ModelInfo, ParameterRules
from delos.runtime.errors import InvalidRequest
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.routing._fitness import Unable, none_able, unable
from delos.runtime.values import ChatMessage

MODEL = ModelInfo(
    provider="p",
    id="m-1",
    family="m",
    kind="chat",
    context_window=1000,
    input_per_1k=Decimal(0),
    output_per_1k=Decimal(0),
    typical_output_tokens=10,
)
CLAUDE_LIKE = replace(MODEL, id="claude-x", rules=ParameterRules(temperature_max=1.0))
NEWER_CLAUDE = replace(
    MODEL, id="claude-y", rules=ParameterRules(temperature_max=1.0, temperature_or_top_p=True)
)
REASONING = replace(MODEL, id="o-x", rules=ParameterRules(sampling=False))


def request(**changes: object) -> CompletionInput:
    base = CompletionInput(messages=(ChatMessage("user", "hi"),), routing=Routing.COST)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "incoming", "expected"),
    [
        (MODEL, request(temperature=2.0, top_p=0.5), None),
        (CLAUDE_LIKE, request(temperature=1.0), None),
        (
            CLAUDE_LIKE,
            request(temperature=1.5),
            Unable("temperature", "claude-x accepts temperature from 0 to 1, got 1.5"),
        ),
        (NEWER_CLAUDE, request(top_p=0.9), None),
        (
            NEWER_CLAUDE,
            request(temperature=0.2, top_p=0.9),
            Unable("temperature", "claude-y accepts temperature or top_p, not both"),
        ),
        (REASONING, request(), None),
        (
            REASONING,
            request(top_p=0.9),
            Unable("top_p", "o-x accepts no top_p (a reasoning model)"),
        ),
    ],
)
def test_what_a_model_accepts(
    model: ModelInfo, incoming: CompletionInput, expected: Unable | None
) -> None:
    assert unable(model, incoming) == expected


def test_when_no_candidate_can_the_error_names_the_setting_and_each_reason() -> None:
    error = none_able(
        [
            ("anthropic", Unable("temperature", "claude-x accepts temperature from 0 to 1")),
            ("bedrock", Unable("temperature", "claude-x accepts temperature from 0 to 1")),
        ]
    )
    assert isinstance(error, InvalidRequest)
    assert error.message == (
        "temperature: no candidate can honour it: claude-x accepts temperature from 0 to 1 "
        "(anthropic); claude-x accepts temperature from 0 to 1 (bedrock)"
    )


# -- with the shipped catalog, through the router ------------------------------------------


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    from tests.runtime.scripted import mock_clock_backend

    return mock_clock_backend()


@pytest.mark.anyio
async def test_a_claude_temperature_above_one_is_refused_on_every_provider_alike() -> None:
    from delos.runtime.inputs import completion_input
    from tests.runtime.scripted import ScriptedProvider, gateway_on

    providers = [ScriptedProvider(name) for name in ("anthropic", "bedrock", "openrouter")]
    router = gateway_on(*providers).router
    request = completion_input(
        messages=[("user", "hi")], model="claude-3-5-sonnet", temperature=1.5
    )
    with pytest.raises(InvalidRequest) as raised:
        await router.complete(request)
    assert raised.value.message.startswith("temperature: no candidate can honour it: ")
    assert "accepts temperature from 0 to 1, got 1.5" in raised.value.message
    assert all(p.calls == 0 for p in providers)  # never sent a clamped value


@pytest.mark.anyio
async def test_a_candidate_that_cannot_is_skipped_with_its_reason_in_the_attempts() -> None:
    from delos.runtime.inputs import Routing, completion_input
    from delos.runtime.routing import AttemptKind, AttemptOutcome
    from tests.runtime.scripted import ScriptedProvider, gateway_on

    # Mistral Large takes temperature up to 1 on Bedrock, up to 2 through OpenRouter.
    bedrock, openrouter = ScriptedProvider("bedrock"), ScriptedProvider("openrouter")
    router = gateway_on(bedrock, openrouter).router
    answer = await router.complete(
        completion_input(
            messages=[("user", "hi")],
            model="mistral-large",
            temperature=1.5,
            routing=Routing.QUALITY,  # bedrock ranks before openrouter
        )
    )
    assert answer.provider == "openrouter"
    assert bedrock.calls == 0
    [skipped, won] = answer.attempts
    assert (skipped.provider, skipped.kind, skipped.outcome) == (
        "bedrock",
        AttemptKind.SKIPPED,
        AttemptOutcome.SKIPPED,
    )
    assert skipped.error.endswith("accepts temperature from 0 to 1, got 1.5")
    assert (won.provider, won.outcome) == ("openrouter", AttemptOutcome.WON)
