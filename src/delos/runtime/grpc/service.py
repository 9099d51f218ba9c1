"""The gRPC service: wire messages in, domain calls, wire messages out (through :mod:`.convert`).

Every handler runs inside a :class:`~delos.runtime.grpc.call.CallScope` (``self._rpc``), the
one place where our errors become gRPC statuses, the client's deadline becomes a cancel scope,
and each call is measured and logged.
"""

from __future__ import annotations

from typing import Any, TypeVar

from grpclib.server import Stream

from delos.runtime import reports
from delos.runtime.embeddings import embed
from delos.runtime.gateway import Gateway
from delos.runtime.grpc import convert
from delos.runtime.grpc.call import Calls, CallScope
from delos.runtime.grpc.receive import receive_request
from delos.runtime.grpc.respond import Responder
from delos.runtime.routing import StreamPiece
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceBase

__all__ = ["RuntimeService"]

T = TypeVar("T")


def _metadata(params: pb.CompletionParams) -> dict[str, str]:
    """The request's metadata for its log line, copied only when there is any (most have none)."""
    metadata = params.metadata
    return dict(metadata) if metadata else {}


class RuntimeService(RuntimeServiceBase):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        #: The calls in flight, counted for a graceful drain.
        self.calls = Calls()

    def _rpc(self, stream: Stream[Any, Any], name: str) -> CallScope:
        return CallScope(self.calls, self.gateway, stream, name)

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
