"""The official OpenAI client pointed at a fake, closed after each test (an unclosed one leaves
its socket to a later test's garbage collection, which warns there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Protocol

import openai
import pytest

from delos.testing import FakeServer
from delos.testing.fake_openai import OpenAIFlavour

__all__ = ["SdkClient", "sdk_client"]


class SdkClient(Protocol):
    def __call__(
        self, fake: FakeServer, flavour: OpenAIFlavour, *, strict: bool = True, key: str = ...
    ) -> openai.OpenAI: ...


@pytest.fixture
def sdk_client() -> Iterator[SdkClient]:
    """Makes the official client for a fake; every one made is closed after the test."""
    with ExitStack() as made:

        def make(
            fake: FakeServer, flavour: OpenAIFlavour, *, strict: bool = True, key: str = "test-key"
        ) -> openai.OpenAI:
            return made.enter_context(
                openai.OpenAI(
                    base_url=fake.url + flavour.prefix,
                    api_key=key,
                    max_retries=0,
                    _strict_response_validation=strict,
                )
            )

        yield make
