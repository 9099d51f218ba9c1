"""The gRPC service: wire messages in, domain calls, wire messages out (through :mod:`.convert`).

Every handler runs inside :meth:`RuntimeService._rpc`, the one place where our errors become gRPC
statuses (through :func:`~delos.runtime.grpc.convert.status_of`), messages are redacted, the
client's deadline becomes a cancel scope, and unexpected errors become INTERNAL without a traceback.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from delos.runtime import reports
from delos.runtime.embeddings import embed
from delos.runtime.errors import DelosError
from delos.runtime.gateway import Gateway
from delos.runtime.grpc import convert
from delos.runtime.grpc.auth import current_client
from delos.runtime.grpc.receive import receive_request
from delos.runtime.grpc.respond import Responder
from delos.runtime.observability import ANONYMOUS, SpanHandle, log_request
from delos.runtime.routing import CALL_DEADLINE, RoutedAnswer, StreamPiece
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceBase

__all__ = ["RuntimeService"]

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


T = TypeVar("T")


def _metadata(params: pb.CompletionParams) -> dict[str, str]:
    """The request's metadata for its log line, copied only when there is any (most have none)."""
    metadata = params.metadata
    return dict(metadata) if metadata else {}


@dataclass(slots=True)
class RpcContext:
    """What one RPC's handler tells the edge: the answer, for metrics, logs and traces."""

    request_id: str
    client: str
    metadata: dict[str, str] = field(default_factory=dict)
    answer: RoutedAnswer | None = None


class RuntimeService(RuntimeServiceBase):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.in_flight = 0
        self.draining = False
        self._idle = anyio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no RPC is in flight (for graceful shutdown)."""
        while self.in_flight:
            await self._idle.wait()

    @asynccontextmanager
    async def _rpc(self, stream: Stream[Any, Any], name: str) -> AsyncIterator[RpcContext]:
        if self.draining:
            raise GRPCError(Status.UNAVAILABLE, "the gateway is shutting down; retry elsewhere")
        gateway = self.gateway
        context = RpcContext(next_request_id(), current_client() or ANONYMOUS)
        self.in_flight += 1
        self._idle = anyio.Event() if self.in_flight == 1 else self._idle
        if stream.deadline is not None:
            # Answer DEADLINE_EXCEEDED a little before the client's own timer fires, so the
            # client reads our status instead of cutting the call itself.
            remaining = stream.deadline.time_remaining()
            remaining -= min(_DEADLINE_MARGIN_SECONDS, remaining * 0.1)
        else:
            remaining = gateway.settings.default_deadline_seconds
        status = Status.OK
        started = time.perf_counter()
        metrics = gateway.metrics
        metrics.in_flight_started()
        # One cancel scope per request: the client's deadline (or ours) for the whole call.
        deadline = anyio.CancelScope(deadline=gateway.guards.deadline_clock() + max(remaining, 0))
        deadline_known = CALL_DEADLINE.set(deadline.deadline)
        with gateway.tracing.rpc_span(_FULL_NAMES[name], stream.metadata or {}) as span:
            span.set_client(context.client)
            try:
                with deadline:
                    yield context
                if deadline.cancelled_caught:
                    status = Status.DEADLINE_EXCEEDED
                    span.set_error("deadline exceeded", error_type="DEADLINE_EXCEEDED")
                    raise GRPCError(status, f"deadline exceeded after {remaining:.3f} s")
            except DelosError as error:
                status = convert.status_of(error)
                message = gateway.redact(error.message)
                span.set_error(message, error_type=status.name)
                raise GRPCError(status, message) from None
            except GRPCError as error:
                status = error.status
                raise
            except Exception:
                status = Status.INTERNAL
                log.exception("unexpected error in %s (request %s)", name, context.request_id)
                raise GRPCError(
                    Status.INTERNAL, f"internal error; quote request id {context.request_id}"
                ) from None
            except BaseException:
                status = Status.CANCELLED  # the client went away (or the server is stopping)
                raise
            finally:
                CALL_DEADLINE.reset(deadline_known)
                metrics.in_flight_ended()
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()
                span.set_rpc_status_code(status.value)
                self._record(name, context, status, time.perf_counter() - started, span)

    def _record(
        self, rpc: str, context: RpcContext, status: Status, elapsed: float, span: SpanHandle
    ) -> None:
        """One metrics record and one log line per request, whatever its outcome."""
        answer = context.answer
        gateway = self.gateway
        if answer is None:
            gateway.metrics.record_request(
                rpc=rpc,
                provider="",
                model="",
                status=status.name,
                latency_s=elapsed,
                client=context.client,
            )
            log_request(
                log,
                request_id=context.request_id,
                rpc=rpc,
                provider="",
                model="",
                status=status.name,
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd=0.0,
                latency_ms=elapsed * 1000.0,
                ttft_ms=None,
                cached=False,
                client=context.client,
                metadata=context.metadata,
                attempts=(),
            )
            return
        span.set_cache_hit(answer.cached)
        if answer.thinking_dropped:
            gateway.metrics.record_thinking_dropped(answer.provider, answer.thinking_dropped)
        total_cost_usd = float(answer.total_cost_usd)  # a sum over the attempts: once
        gateway.metrics.record_request(
            rpc=rpc,
            provider=answer.provider,
            model=answer.model,
            status=status.name,
            latency_s=answer.latency_s,
            ttft_s=answer.time_to_first_token_s,
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            cost_usd=total_cost_usd,
            client=context.client,
            cached=answer.cached,
            attempts=answer.attempts,
        )
        log_request(
            log,
            request_id=context.request_id,
            rpc=rpc,
            provider=answer.provider,
            model=answer.model,
            status=status.name,
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            cost_usd=total_cost_usd,
            latency_ms=answer.latency_s * 1000.0,
            ttft_ms=answer.time_to_first_token_s * 1000.0,
            cached=answer.cached,
            client=context.client,
            metadata=context.metadata,
            attempts=answer.attempts,
        )

    async def _receive(self, stream: Stream[T, Any]) -> T:
        return await receive_request(stream, self.gateway.settings.max_message_bytes)

    # -- RPCs -----------------------------------------------------------------------------------

    async def Complete(self, stream: Stream[pb.CompleteRequest, pb.CompleteResponse]) -> None:
        async with self._rpc(stream, "Complete") as context:
            message = await self._receive(stream)
            respond = Responder(stream)
            context.metadata = _metadata(message.params)
            completions = self.gateway.completions
            request = convert.completion_input_from_proto(message.params)
            answer = context.answer = await completions.complete(await completions.prepare(request))
            await respond.answer(convert.complete_response(answer, context.request_id))

    async def CompleteStream(self, stream: Stream[pb.CompleteRequest, pb.StreamChunk]) -> None:
        async with self._rpc(stream, "CompleteStream") as context:
            message = await self._receive(stream)
            respond = Responder(stream)
            context.metadata = _metadata(message.params)
            completions = self.gateway.completions
            request = convert.completion_input_from_proto(message.params)
            request = await completions.prepare(request)
            index = 0

            async def send_delta(piece: StreamPiece) -> None:
                nonlocal index
                await respond.send(convert.delta_chunk(piece, index))
                index += 1

            answer = context.answer = await completions.stream(request, send_delta)
            await respond.send(convert.final_chunk(answer, index, context.request_id))

    async def Embed(self, stream: Stream[pb.EmbedRequest, pb.EmbedResponse]) -> None:
        async with self._rpc(stream, "Embed") as context:
            message = await self._receive(stream)
            respond = Responder(stream)
            answer = await embed(self.gateway, convert.embed_input_from_proto(message))
            await respond.answer(convert.embed_response(answer, context.request_id))

    async def ListProviders(
        self, stream: Stream[pb.ListProvidersRequest, pb.ListProvidersResponse]
    ) -> None:
        async with self._rpc(stream, "ListProviders"):
            await self._receive(stream)
            respond = Responder(stream)
            found = await reports.list_providers(self.gateway)
            await respond.answer(convert.list_providers_response(found))

    async def Health(self, stream: Stream[pb.HealthRequest, pb.HealthResponse]) -> None:
        async with self._rpc(stream, "Health"):
            await self._receive(stream)
            respond = Responder(stream)
            report = await reports.health(self.gateway)
            await respond.answer(convert.health_response(report))
