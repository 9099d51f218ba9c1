"""Every fake provider behind one table: how to start it and how to point the gateway at it.

Used by demo mode, the chaos suite and the benchmarks, so that "all providers" means the same
thing everywhere. What a provider is (its embeddings, its demo profile) is its row of the
provider table, :data:`delos.runtime.config.PROVIDERS`; this table adds only how to fake it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from delos.runtime.config import PROVIDERS
from delos.testing._behaviour import FakeControl
from delos.testing._server import FakeRequest, FakeResponse, FakeServer, Handler, open_fake_server
from delos.testing.fake_anthropic import fake_anthropic_handler
from delos.testing.fake_bedrock import fake_bedrock_handler
from delos.testing.fake_gemini import fake_gemini_handler
from delos.testing.fake_ollama import fake_ollama_handler
from delos.testing.fake_openai import OpenAIFlavour, fake_openai_handler

__all__ = ["FAKE_KEYS", "FAKE_PROVIDERS", "FakeProvider", "RunningFakes", "open_fakes"]

#: Credentials the fakes expect; sentinel-shaped so a leak is easy to spot in any output.
FAKE_KEYS: Final[Mapping[str, str]] = {
    "openai": "sk-sentinel-openai-0123456789abcdef",
    "anthropic": "sk-ant-sentinel-0123456789abcdef",
    "gemini": "AIzaSentinelGemini0123456789abcdefgh",
    "together": "sentinel-together-0123456789abcdef",
    "openrouter": "sk-or-sentinel-0123456789abcdef",
    "aws_access_key_id": "AKIASENTINEL0123456",
    "aws_secret_access_key": "sentinel-aws-secret-0123456789abcdef",
    "google_cloud_access_token": "ya29.sentinel-vertex-token-0123456789",
}


@dataclass(frozen=True, slots=True)
class FakeProvider:
    """How to run one provider's fake and configure the gateway for it."""

    name: str
    make_handler: Callable[[FakeControl], Handler]
    #: Settings values (field names) that point the gateway at a fake served at ``url``.
    settings_for: Callable[[str], dict[str, Any]]

    @property
    def supports_embeddings(self) -> bool:
        return PROVIDERS[self.name].embeddings


def _openai_like(flavour: OpenAIFlavour) -> FakeProvider:
    name = flavour.value
    return FakeProvider(
        name,
        lambda control: fake_openai_handler(control, flavour, api_key=FAKE_KEYS[name]),
        lambda url: {f"{name}_key": FAKE_KEYS[name], f"{name}_base_url": url + flavour.prefix},
    )


def _vertex_handler(control: FakeControl) -> Handler:
    """Vertex serves Claude under publishers/anthropic and Gemini under publishers/google."""
    token = FAKE_KEYS["google_cloud_access_token"]
    claude = fake_anthropic_handler(control, access_token=token)
    gemini = fake_gemini_handler(control, access_token=token)

    async def handle(request: FakeRequest) -> FakeResponse:
        if "/publishers/anthropic/" in request.path:
            return await claude(request)
        return await gemini(request)

    return handle


FAKE_PROVIDERS: Final[Mapping[str, FakeProvider]] = {
    "openai": _openai_like(OpenAIFlavour.OPENAI),
    "anthropic": FakeProvider(
        "anthropic",
        lambda control: fake_anthropic_handler(control, api_key=FAKE_KEYS["anthropic"]),
        lambda url: {"anthropic_key": FAKE_KEYS["anthropic"], "anthropic_base_url": url},
    ),
    "gemini": FakeProvider(
        "gemini",
        lambda control: fake_gemini_handler(control, api_key=FAKE_KEYS["gemini"]),
        lambda url: {"gemini_key": FAKE_KEYS["gemini"], "gemini_base_url": url},
    ),
    "bedrock": FakeProvider(
        "bedrock",
        lambda control: fake_bedrock_handler(
            control,
            region="us-east-1",
            access_key_id=FAKE_KEYS["aws_access_key_id"],
            secret_access_key=FAKE_KEYS["aws_secret_access_key"],
        ),
        lambda url: {
            "aws_access_key_id": FAKE_KEYS["aws_access_key_id"],
            "aws_secret_access_key": FAKE_KEYS["aws_secret_access_key"],
            "aws_region": "us-east-1",
            "bedrock_base_url": url,
        },
    ),
    "vertex": FakeProvider(
        "vertex",
        _vertex_handler,
        lambda url: {
            "google_cloud_project": "delos-demo",
            "google_cloud_location": "us-central1",
            "google_cloud_access_token": FAKE_KEYS["google_cloud_access_token"],
            "vertex_base_url": url,
        },
    ),
    "together": _openai_like(OpenAIFlavour.TOGETHER),
    "openrouter": _openai_like(OpenAIFlavour.OPENROUTER),
    "ollama": FakeProvider(
        "ollama",
        fake_ollama_handler,
        lambda url: {"ollama_enabled": True, "ollama_url": url},
    ),
}


@dataclass
class RunningFakes:
    servers: dict[str, FakeServer]
    controls: dict[str, FakeControl]
    #: Settings values pointing a gateway at every running fake.
    settings: dict[str, Any]


@asynccontextmanager
async def open_fakes(
    names: Iterable[str],
    controls: Mapping[str, FakeControl] | None = None,
) -> AsyncIterator[RunningFakes]:
    """Serve the named fakes on ephemeral loopback ports for the block's duration."""
    async with AsyncExitStack() as stack:
        running = RunningFakes({}, {}, {})
        for name in names:
            spec = FAKE_PROVIDERS[name]
            control = (controls or {}).get(name) or FakeControl(seed=len(running.servers))
            server = await stack.enter_async_context(open_fake_server(spec.make_handler(control)))
            running.servers[name], running.controls[name] = server, control
            running.settings.update(spec.settings_for(server.url))
        yield running
