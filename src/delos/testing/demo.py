"""Demo mode: fake providers on loopback with realistic latencies, and settings pointing at them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import anyio

from delos.runtime.config import Settings
from delos.testing._behaviour import Behaviour, FakeControl, Latency
from delos.testing._server import open_fake_server
from delos.testing.fake_openai import OpenAIFlavour, fake_openai_handler

__all__ = ["DEMO_KEY", "demo_providers_in_thread", "open_demo_providers"]

DEMO_KEY = "demo-key-not-secret"


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
    """Start every demo fake; yield settings that point the gateway at them, and their controls."""
    controls: dict[str, FakeControl] = {}
    updates: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        for flavour, ttft, rate in (
            (OpenAIFlavour.OPENAI, 0.25, 80.0),
            (OpenAIFlavour.TOGETHER, 0.18, 120.0),
            (OpenAIFlavour.OPENROUTER, 0.35, 70.0),
        ):
            control = _realistic(ttft, rate, seed=len(controls))
            server = await stack.enter_async_context(
                open_fake_server(fake_openai_handler(control, flavour))
            )
            controls[flavour.value] = control
            updates[f"{flavour.value}_key"] = DEMO_KEY
            updates[f"{flavour.value}_base_url"] = server.url + flavour.prefix
        demo_settings = Settings.model_validate({**settings.model_dump(), **updates})
        yield demo_settings, controls


@contextmanager
def demo_providers_in_thread(settings: Settings) -> Iterator[Settings]:
    """The demo fakes served from a background event loop (for the multi-process supervisor)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(open_demo_providers(settings)) as (demo, _):
            yield demo
