"""Demo mode: every fake provider on loopback with realistic latencies, and settings for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Final

import anyio.from_thread

from delos.runtime.config import Settings
from delos.testing._behaviour import Behaviour, FakeControl, Latency
from delos.testing.fakes import FAKE_PROVIDERS, open_fakes

__all__ = ["DEMO_PROFILES", "demo_providers_in_thread", "open_demo_providers"]

#: provider → (median time to first token in seconds, tokens per second).
DEMO_PROFILES: Final[Mapping[str, tuple[float, float]]] = {
    "openai": (0.25, 80.0),
    "anthropic": (0.40, 60.0),
    "gemini": (0.30, 120.0),
    "bedrock": (0.45, 55.0),
    "vertex": (0.35, 90.0),
    "together": (0.18, 120.0),
    "openrouter": (0.35, 70.0),
    "ollama": (0.08, 40.0),
}


def _realistic(ttft: float, tokens_per_second: float, seed: int) -> FakeControl:
    behaviour = Behaviour(
        latency=Latency(base=0.02, jitter=0.3),
        time_to_first_token=Latency(base=ttft, jitter=0.35, tail_probability=0.03, tail_factor=6.0),
        tokens_per_second=tokens_per_second,
        completion_tokens=40,
    )
    return FakeControl(behaviour=behaviour, seed=seed)


@asynccontextmanager
async def open_demo_providers(
    settings: Settings,
) -> AsyncIterator[tuple[Settings, dict[str, FakeControl]]]:
    """Start every demo fake; yield settings pointing the gateway at them, and their controls."""
    controls = {
        name: _realistic(*DEMO_PROFILES[name], seed=index)
        for index, name in enumerate(FAKE_PROVIDERS)
    }
    async with open_fakes(FAKE_PROVIDERS, controls) as fakes:
        demo = Settings.model_validate({**settings.model_dump(), **fakes.settings})
        yield demo, fakes.controls


@contextmanager
def demo_providers_in_thread(settings: Settings) -> Iterator[Settings]:
    """The demo fakes served from a background event loop (for the multi-process supervisor)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(open_demo_providers(settings)) as (demo, _):
            yield demo
