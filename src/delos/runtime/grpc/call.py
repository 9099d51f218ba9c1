"""One RPC at the edge, from its request to its log line.

Every handler runs inside a :class:`CallScope`: the one place where our errors become gRPC
statuses (through :func:`~delos.runtime.grpc.convert.status_of`), messages are redacted, the
client's deadline becomes a cancel scope, unexpected errors become INTERNAL without a
traceback, and each call is counted, measured and logged once, however it ends. It is a class
rather than a generator-based context manager: every call of every client enters one.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import anyio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from delos.runtime.errors import DelosError
from delos.runtime.gateway import Gateway
from delos.runtime.grpc import convert
from delos.runtime.grpc.auth import current_client
from delos.runtime.observability import ANONYMOUS, AttemptLike, log_request
from delos.runtime.routing import CALL_DEADLINE, RoutedAnswer

__all__ = ["CallScope", "Calls", "RpcContext", "next_request_id"]

#: The request log keeps the logger name it has always had: deployments filter on it.
log = logging.getLogger("delos.runtime.grpc.service")

_DEADLINE_MARGIN_SECONDS = 0.05
_FULL_NAMES: Final = {
    name: f"/delos.runtime.v1.RuntimeService/{name}"
    for name in ("Complete", "CompleteStream", "Embed", "ListProviders", "Health")
}
#: Request ids: this process's random prefix, then a counter (unique across replicas without
#: the cost of a UUID per request).
_REQUEST_ID_PREFIX: Final = os.urandom(3).hex()
_request_numbers = itertools.count(1)


def next_request_id() -> str:
    """16 hex digits: 6 of this process's prefix, 10 of a counter."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFFFF:010x}"


@dataclass(slots=True)
class RpcContext:
    """What one RPC's handler tells the edge: the answer, for metrics, logs and traces."""

    request_id: str
    client: str
    metadata: dict[str, str] = field(default_factory=dict)
    answer: RoutedAnswer | None = None


class Calls:
    """The calls in flight: counted for a graceful drain, refused once ``draining``."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._idle = anyio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        while self.in_flight:
            await self._idle.wait()

    def _started(self) -> None:
        self.in_flight += 1
        if self.in_flight == 1:
            self._idle = anyio.Event()

    def _ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()


class CallScope:
    """``async with CallScope(calls, gateway, stream, "Complete") as context``: one call."""

    __slots__ = (
        "_calls",
        "_context",
        "_deadline",
        "_deadline_known",
        "_gateway",
        "_name",
        "_remaining",
        "_span",
        "_span_block",
        "_started",
        "_stream",
    )

    def __init__(self, calls: Calls, gateway: Gateway, stream: Stream[Any, Any], name: str):
        self._calls = calls
        self._gateway = gateway
        self._stream = stream
        self._name = name

    async def __aenter__(self) -> RpcContext:
        if self._calls.draining:
            raise GRPCError(Status.UNAVAILABLE, "the gateway is shutting down; retry elsewhere")
        gateway, stream = self._gateway, self._stream
        context = self._context = RpcContext(next_request_id(), current_client() or ANONYMOUS)
        if stream.deadline is not None:
            # Answer DEADLINE_EXCEEDED a little before the client's own timer fires, so the
            # client reads our status instead of cutting the call itself.
            remaining = stream.deadline.time_remaining()
            remaining -= min(_DEADLINE_MARGIN_SECONDS, remaining * 0.1)
        else:
            remaining = gateway.settings.default_deadline_seconds
        self._remaining = remaining
        self._calls._started()
        self._started = time.perf_counter()
        gateway.metrics.in_flight_started()
        # One cancel scope per call: the client's deadline (or ours) for the whole call.
        deadline = self._deadline = anyio.CancelScope(
            deadline=gateway.guards.deadline_clock() + max(remaining, 0)
        )
        self._deadline_known = CALL_DEADLINE.set(deadline.deadline)
        span_block = self._span_block = gateway.tracing.rpc_span(
            _FULL_NAMES[self._name], stream.metadata or {}
        )
        span = self._span = span_block.__enter__()
        span.set_client(context.client)
        deadline.__enter__()
        return context

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        deadline, span = self._deadline, self._span
        raised = error
        status = Status.OK
        try:
            try:
                if deadline.__exit__(kind, error, traceback):
                    raised = None  # the deadline's own cancellation, caught
            except BaseException as unwinding:
                raised = unwinding
            if raised is None and deadline.cancelled_caught:
                status = Status.DEADLINE_EXCEEDED
                span.set_error("deadline exceeded", error_type="DEADLINE_EXCEEDED")
                raised = _without_context(
                    GRPCError(status, f"deadline exceeded after {self._remaining:.3f} s")
                )
            elif raised is not None:
                status, raised = self._status_of(raised)
        finally:
            CALL_DEADLINE.reset(self._deadline_known)
            self._gateway.metrics.in_flight_ended()
            self._calls._ended()
            span.set_rpc_status_code(status.value)
            self._record(status, time.perf_counter() - self._started)
        if raised is None:
            self._span_block.__exit__(None, None, None)
            return error is not None  # an error the deadline caught ends here
        self._span_block.__exit__(type(raised), raised, raised.__traceback__)
        if raised is not error:
            raise raised
        return False

    def _status_of(self, error: BaseException) -> tuple[Status, BaseException]:
        """The status the client sees for ``error``, and what to raise for it."""
        if isinstance(error, DelosError):
            status = convert.status_of(error)
            message = self._gateway.redact(error.message)
            self._span.set_error(message, error_type=status.name)
            return status, _without_context(GRPCError(status, message))
        if isinstance(error, GRPCError):
            return error.status, error
        if isinstance(error, Exception):
            log.exception(
                "unexpected error in %s (request %s)",
                self._name,
                self._context.request_id,
                exc_info=error,
            )
            internal = GRPCError(
                Status.INTERNAL, f"internal error; quote request id {self._context.request_id}"
            )
            return Status.INTERNAL, _without_context(internal)
        return Status.CANCELLED, error  # the client went away (or the server is stopping)

    def _record(self, status: Status, elapsed: float) -> None:
        """One metrics record and one log line per call, whatever its outcome."""
        context, gateway, rpc = self._context, self._gateway, self._name
        answer = context.answer
        if answer is None:  # refused or failed before any answer: no provider, no usage
            _record(gateway, rpc, context, status, latency_s=elapsed)
            return
        self._span.set_cache_hit(answer.cached)
        if answer.thinking_dropped:
            gateway.metrics.record_thinking_dropped(answer.provider, answer.thinking_dropped)
        _record(
            gateway,
            rpc,
            context,
            status,
            latency_s=answer.latency_s,
            ttft_s=answer.time_to_first_token_s,
            provider=answer.provider,
            model=answer.model,
            cost_usd=float(answer.total_cost_usd),  # a sum over the attempts: once
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            cached=answer.cached,
            attempts=answer.attempts,
        )


def _record(
    gateway: Gateway,
    rpc: str,
    context: RpcContext,
    status: Status,
    *,
    latency_s: float,
    ttft_s: float | None = None,
    provider: str = "",
    model: str = "",
    cost_usd: float = 0.0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached: bool = False,
    attempts: Sequence[AttemptLike] = (),
) -> None:
    """A call's metrics record and its log line, from the same figures."""
    gateway.metrics.record_request(
        rpc=rpc,
        provider=provider,
        model=model,
        status=status.name,
        latency_s=latency_s,
        ttft_s=ttft_s,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        client=context.client,
        cached=cached,
        attempts=attempts,
    )
    log_request(
        log,
        request_id=context.request_id,
        rpc=rpc,
        provider=provider,
        model=model,
        status=status.name,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        latency_ms=latency_s * 1000.0,
        ttft_ms=None if ttft_s is None else ttft_s * 1000.0,
        cached=cached,
        client=context.client,
        metadata=context.metadata,
        attempts=attempts,
    )


def _without_context(error: GRPCError) -> GRPCError:
    """``error`` raised as ``raise ... from None`` would: the error it replaces stays out of
    tracebacks (it may name upstream details the client must not see)."""
    error.__suppress_context__ = True
    return error
