"""The gRPC service: wire messages in, validated requests to the router, wire messages out.

Every handler runs inside :meth:`RuntimeService._rpc`, the one place where our errors become gRPC
statuses (through :func:`~delos.runtime.errors.grpc_status_of`), messages are redacted, the
client's deadline becomes a cancel scope, and unexpected errors become INTERNAL without a traceback.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import anyio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from delos.runtime.auth import ANONYMOUS, current_client
from delos.runtime.embeddings import embed
from delos.runtime.errors import DeadlineExceeded, DelosError, grpc_status_of
from delos.runtime.gateway import Gateway
from delos.runtime.observability import SpanHandle, log_request
from delos.runtime.receive import receive_request
from delos.runtime.requests import completion_input_from_proto
from delos.runtime.routing import AttemptRecord, RoutedAnswer
from delos.runtime.status import health, list_providers
from delos.runtime.types import Usage
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceBase

__all__ = ["RuntimeService"]

log = logging.getLogger("delos.runtime.service")

_DEADLINE_MARGIN_SECONDS = 0.05

T = TypeVar("T")


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
        context = RpcContext(uuid.uuid4().hex[:16], current_client() or ANONYMOUS)
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
        full_name = f"/delos.runtime.v1.RuntimeService/{name}"
        with (
            gateway.metrics.track_in_flight(),
            gateway.tracing.rpc_span(full_name, dict(stream.metadata or {})) as span,
        ):
            span.set_client(context.client)
            try:
                with anyio.fail_after(max(remaining, 0.0)):
                    yield context
            except TimeoutError:
                status = Status.DEADLINE_EXCEEDED
                span.set_error("deadline exceeded", error_type="DEADLINE_EXCEEDED")
                raise GRPCError(status, f"deadline exceeded after {remaining:.3f} s") from None
            except DelosError as error:
                status = (
                    Status.DEADLINE_EXCEEDED
                    if isinstance(error, DeadlineExceeded)
                    else grpc_status_of(error)
                )
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
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()
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
                status=status,
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
        gateway.metrics.record_request(
            rpc=rpc,
            provider=answer.provider,
            model=answer.model,
            status=status,
            latency_s=answer.latency_s,
            ttft_s=answer.time_to_first_token_s,
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            cost_usd=float(answer.total_cost_usd),
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
            cost_usd=float(answer.total_cost_usd),
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
            request_id = context.request_id
            context.metadata = dict(message.params.metadata)
            completions = self.gateway.completions
            request = await completions.prepare(completion_input_from_proto(message.params))
            answer = context.answer = await completions.complete(request)
            response = pb.CompleteResponse(
                content=answer.content,
                provider=answer.provider,
                model=answer.model,
                finish_reason=answer.finish_reason,
                usage=_usage(answer.usage),
                cost_usd=float(answer.cost_usd),
                latency_ms=answer.latency_s * 1000.0,
                cached=answer.cached,
                cost_saved_usd=float(answer.cost_saved_usd),
                total_cost_usd=float(answer.total_cost_usd),
                time_to_first_token_ms=answer.time_to_first_token_s * 1000.0,
                attempts=[_attempt(a) for a in answer.attempts],
                request_id=request_id,
                cost_estimated=answer.usage.estimated,
            )
            await stream.send_message(response)

    async def CompleteStream(self, stream: Stream[pb.CompleteRequest, pb.StreamChunk]) -> None:
        async with self._rpc(stream, "CompleteStream") as context:
            message = await self._receive(stream)
            request_id = context.request_id
            context.metadata = dict(message.params.metadata)
            completions = self.gateway.completions
            request = await completions.prepare(completion_input_from_proto(message.params))
            index = 0

            async def send_delta(delta: str) -> None:
                nonlocal index
                await stream.send_message(pb.StreamChunk(delta=delta, index=index))
                index += 1

            answer = context.answer = await completions.stream(request, send_delta)
            await stream.send_message(_final_chunk(answer, index, request_id))

    async def Embed(self, stream: Stream[pb.EmbedRequest, pb.EmbedResponse]) -> None:
        async with self._rpc(stream, "Embed") as context:
            message = await self._receive(stream)
            result = await embed(self.gateway, message)
            result.request_id = context.request_id
            await stream.send_message(result)

    async def ListProviders(
        self, stream: Stream[pb.ListProvidersRequest, pb.ListProvidersResponse]
    ) -> None:
        async with self._rpc(stream, "ListProviders"):
            await self._receive(stream)
            await stream.send_message(await list_providers(self.gateway))

    async def Health(self, stream: Stream[pb.HealthRequest, pb.HealthResponse]) -> None:
        async with self._rpc(stream, "Health"):
            await self._receive(stream)
            await stream.send_message(await health(self.gateway))


def _usage(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
    )


def _attempt(record: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        provider=record.provider,
        model=record.model,
        kind=record.kind,
        outcome=record.outcome,
        error=record.error,
        usage=_usage(record.usage) if record.usage else None,
        cost_usd=_float(record.cost_usd),
        latency_ms=record.latency_s * 1000.0,
    )


def _float(value: Decimal) -> float:
    result = float(value)
    return result if math.isfinite(result) else 0.0


def _final_chunk(answer: RoutedAnswer, index: int, request_id: str) -> pb.StreamChunk:
    return pb.StreamChunk(
        delta="",
        finish_reason=answer.finish_reason,
        usage=_usage(answer.usage),
        cost_usd=_float(answer.cost_usd),
        provider=answer.provider,
        model=answer.model,
        cached=answer.cached,
        latency_ms=answer.latency_s * 1000.0,
        time_to_first_token_ms=answer.time_to_first_token_s * 1000.0,
        total_cost_usd=_float(answer.total_cost_usd),
        cost_saved_usd=_float(answer.cost_saved_usd),
        attempts=[_attempt(a) for a in answer.attempts],
        request_id=request_id,
        cost_estimated=answer.usage.estimated,
        index=index,
    )
