"""One call at the edge: how it ends decides the status the client sees and the one log line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from delos.runtime.errors import InvalidRequest
from delos.runtime.grpc.call import Calls, CallScope
from tests.runtime.scripted import gateway_on, mock_clock_backend

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", [mock_clock_backend()]),
]

SECRET = "sk-live-0123456789abcdef0123"


@dataclass
class _Deadline:
    seconds: float

    def time_remaining(self) -> float:
        return self.seconds


@dataclass
class _Stream:
    """What a call scope reads of grpclib's stream."""

    deadline: _Deadline | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "rpc", None) == "Complete"]


async def test_an_answered_call_is_ok_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    caplog.set_level(logging.INFO)
    async with CallScope(calls, gateway_on(), _Stream(), "Complete") as context:  # type: ignore[arg-type]
        assert calls.in_flight == 1
    assert calls.in_flight == 0
    (line,) = _request_lines(caplog)
    assert line.status == "OK"  # type: ignore[attr-defined]
    assert line.request_id == context.request_id  # type: ignore[attr-defined]


async def test_an_unexpected_error_is_internal_naming_the_request_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(GRPCError) as raised:
        async with CallScope(Calls(), gateway_on(), _Stream(), "Complete") as context:  # type: ignore[arg-type]
            raise KeyError("a bug")
    assert raised.value.status is Status.INTERNAL
    assert raised.value.message == f"internal error; quote request id {context.request_id}"
    assert raised.value.__suppress_context__  # the bug stays out of what the client is told
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert context.request_id in logged.getMessage()
    assert logged.exc_info is not None and logged.exc_info[0] is KeyError
    (line,) = _request_lines(caplog)
    assert line.status == "INTERNAL"  # type: ignore[attr-defined]


async def test_our_errors_get_their_status_with_secrets_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = gateway_on(settings={"openai_key": SECRET})
    caplog.set_level(logging.INFO)
    with pytest.raises(GRPCError) as raised:
        async with CallScope(Calls(), gateway, _Stream(), "Complete"):  # type: ignore[arg-type]
            raise InvalidRequest(f"bad key {SECRET}")
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert SECRET not in str(raised.value.message)
    (line,) = _request_lines(caplog)
    assert line.status == "INVALID_ARGUMENT"  # type: ignore[attr-defined]


async def test_a_call_past_the_clients_deadline_ends_deadline_exceeded_just_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    started = anyio.current_time()
    stream = _Stream(deadline=_Deadline(2.0))
    with pytest.raises(GRPCError) as raised:
        async with CallScope(Calls(), gateway_on(), stream, "Complete"):  # type: ignore[arg-type]
            await anyio.sleep(60)
    assert raised.value.status is Status.DEADLINE_EXCEEDED
    assert anyio.current_time() - started == pytest.approx(1.95)  # 50 ms of margin
    (line,) = _request_lines(caplog)
    assert line.status == "DEADLINE_EXCEEDED"  # type: ignore[attr-defined]


async def test_a_call_cancelled_from_outside_is_logged_cancelled_and_stays_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls = Calls()
    with anyio.move_on_after(1.0) as outer:
        async with CallScope(calls, gateway_on(), _Stream(), "Complete"):  # type: ignore[arg-type]
            await anyio.sleep(60)
    assert outer.cancelled_caught
    assert calls.in_flight == 0
    (line,) = _request_lines(caplog)
    assert line.status == "CANCELLED"  # type: ignore[attr-defined]


async def test_a_draining_server_refuses_new_calls_unavailable() -> None:
    calls = Calls()
    calls.draining = True
    with pytest.raises(GRPCError) as raised:
        async with CallScope(calls, gateway_on(), _Stream(), "Complete"):  # type: ignore[arg-type]
            pytest.fail("a draining server ran a new call")
    assert raised.value.status is Status.UNAVAILABLE
    assert calls.in_flight == 0


async def test_waiting_for_idle_returns_once_the_last_call_ends() -> None:
    calls = Calls()
    ended_at: list[float] = []
    started = anyio.current_time()

    async def call(seconds: float) -> None:
        async with CallScope(calls, gateway_on(), _Stream(), "Complete"):  # type: ignore[arg-type]
            await anyio.sleep(seconds)

    async with anyio.create_task_group() as group:
        group.start_soon(call, 1.0)
        group.start_soon(call, 3.0)
        await anyio.sleep(0.5)
        await calls.wait_idle()
        ended_at.append(anyio.current_time() - started)
    assert ended_at == [pytest.approx(3.0)]  # the longer call's end, not the first one's
