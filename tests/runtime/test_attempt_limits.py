"""An attempt's own time limit: an upstream timeout when it runs over, no cancel scope at all
when the call's deadline ends first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import trio.testing

from delos.runtime.errors import UpstreamTimeout
from delos.runtime.routing import CALL_DEADLINE, AttemptTimeLimit

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
    ),
]

GUARDS: Any = SimpleNamespace(deadline_clock=anyio.current_time)
CANDIDATE: Any = SimpleNamespace(provider=SimpleNamespace(name="openai"))


async def test_running_over_the_limit_is_the_providers_timeout() -> None:
    started = anyio.current_time()
    with pytest.raises(UpstreamTimeout, match=r"no answer within 5\.0 s"):
        with AttemptTimeLimit(GUARDS, CANDIDATE, 5.0, "answer"):
            await anyio.sleep(60)
    assert anyio.current_time() - started == pytest.approx(5.0)


async def test_a_limit_ending_after_the_calls_deadline_sets_no_scope() -> None:
    token = CALL_DEADLINE.set(anyio.current_time() + 10.0)
    try:
        limit = AttemptTimeLimit(GUARDS, CANDIDATE, 20.0, "answer")
        with limit:
            await anyio.sleep(30)  # the call's own scope (absent here) would have ended it
    finally:
        CALL_DEADLINE.reset(token)
    assert limit._scope is None


async def test_a_limit_ending_before_the_calls_deadline_still_fires() -> None:
    token = CALL_DEADLINE.set(anyio.current_time() + 10.0)
    try:
        with pytest.raises(UpstreamTimeout):
            with AttemptTimeLimit(GUARDS, CANDIDATE, 2.0, "answer"):
                await anyio.sleep(30)
    finally:
        CALL_DEADLINE.reset(token)


async def test_without_a_known_call_deadline_the_enclosing_scopes_decide() -> None:
    with anyio.move_on_after(10.0):
        limit = AttemptTimeLimit(GUARDS, CANDIDATE, 20.0, "answer")
        with limit:
            await anyio.sleep(30)
    assert limit._scope is None
