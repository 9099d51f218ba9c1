"""Demo mode: every fake provider on loopback with realistic latencies, and settings for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio.from_thread

from delos.runtime.config import PROVIDERS, DemoProfile, Settings
from delos.testing._behaviour import Behaviour, FakeControl, Latency
from delos.testing.fakes import FAKE_PROVIDERS, open_fakes

__all__ = ["demo_providers_in_thread", "open_demo_providers"]


def _realistic(profile: DemoProfile, seed: int) -> FakeControl:
    """A fake control with the row's median time to first token and token rate, and jitter."""
    time_to_first_token = Latency(
        base=profile.ttft_seconds, jitter=0.35, tail_probability=0.03, tail_factor=6.0
    )
    behaviour = Behaviour(
        latency=Latency(base=0.02, jitter=0.3),
        time_to_first_token=time_to_first_token,
        tokens_per_second=profile.tokens_per_second,
        completion_tokens=40,
    )
    return FakeControl(behaviour=behaviour, seed=seed)


@asynccontextmanager
async def open_demo_providers(
    settings: Settings,
) -> AsyncIterator[tuple[Settings, dict[str, FakeControl]]]:
    """Start every demo fake, each with its provider's demo profile (the provider table); yield
    settings pointing the gateway at them, and their controls."""
    controls = {
        name: _realistic(PROVIDERS[name].demo, seed=index)
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
