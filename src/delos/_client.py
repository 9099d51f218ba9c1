"""The Python SDK: ``async with RuntimeClient("localhost:9001") as client: ...``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub

__all__ = [
    "CompletionResult",
    "RuntimeClient",
    "RuntimeClientError",
    "StreamChunk",
]

_ROUTING = {
    "unspecified": pb.ROUTING_STRATEGY_UNSPECIFIED,
    "cost": pb.ROUTING_STRATEGY_COST_OPTIMIZED,
    "cost_optimized": pb.ROUTING_STRATEGY_COST_OPTIMIZED,
    "latency": pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED,
    "latency_optimized": pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED,
    "quality": pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED,
    "quality_optimized": pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED,
    "specific": pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER,
    "specific_provider": pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER,
}


class RuntimeClientError(Exception):
    """A call failed; ``status`` is the gRPC status and ``message`` says why."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CompletionResult:
    content: str
    provider: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool
    raw: pb.CompleteResponse


@dataclass(frozen=True, slots=True)
class StreamChunk:
    delta: str
    #: Set on the last chunk only, with usage and cost.
    finish_reason: str
    raw: pb.StreamChunk


def _routing(value: str | int | None) -> int:
    if value is None:
        return pb.ROUTING_STRATEGY_UNSPECIFIED
    if isinstance(value, int):
        return value
    key = value.lower().removeprefix("routing_strategy_")
    if key not in _ROUTING:
        raise ValueError(f"unknown routing {value!r}; use one of {', '.join(sorted(_ROUTING))}")
    return _ROUTING[key]


def _params(
    messages: Iterable[Mapping[str, str]] | None,
    *,
    routing: str | int | None,
    provider: str | None,
    model: str | None,
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    stop: Sequence[str] | None,
    output_schema: str | None,
    use_cache: bool,
    cache_ttl_seconds: int | None,
    prompt_ref: str | None,
    variables: Mapping[str, str] | None,
    metadata: Mapping[str, str] | None,
) -> pb.CompletionParams:
    params = pb.CompletionParams(
        messages=[pb.Message(role=m["role"], content=m["content"]) for m in messages or ()],
        routing=_routing(routing),  # type: ignore[arg-type]
        provider=provider or "",
        model=model or "",
        stop=list(stop or ()),
        output_schema=output_schema or "",
        use_cache=use_cache,
        cache_ttl_seconds=cache_ttl_seconds or 0,
        prompt_ref=prompt_ref or "",
        variables=dict(variables or {}),
        metadata=dict(metadata or {}),
    )
    if temperature is not None:
        params.temperature = temperature
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if top_p is not None:
        params.top_p = top_p
    return params


class RuntimeClient:
    """An async client of the Runtime service. ``target`` is ``"host:port"``."""

    def __init__(
        self,
        target: str = "localhost:9001",
        *,
        api_key: str | None = None,
        timeout: float | None = 120.0,
        ssl: Any = None,
    ) -> None:
        host, _, port = target.rpartition(":")
        self._channel = Channel(host or "localhost", int(port), ssl=ssl)
        self._stub = RuntimeServiceStub(self._channel)
        self._metadata = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._timeout = timeout

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    async def complete(
        self,
        messages: Iterable[Mapping[str, str]] | None = None,
        *,
        routing: str | int | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        output_schema: str | None = None,
        use_cache: bool = False,
        cache_ttl_seconds: int | None = None,
        prompt_ref: str | None = None,
        variables: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CompletionResult:
        """One completion. Raises :class:`RuntimeClientError` with the gRPC status on failure."""
        params = _params(
            messages,
            routing=routing,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            output_schema=output_schema,
            use_cache=use_cache,
            cache_ttl_seconds=cache_ttl_seconds,
            prompt_ref=prompt_ref,
            variables=variables,
            metadata=metadata,
        )
        try:
            response = await self._stub.Complete(
                pb.CompleteRequest(params=params),
                timeout=timeout or self._timeout,
                metadata=self._metadata,
            )
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from None
        return CompletionResult(
            content=response.content,
            provider=response.provider,
            model=response.model,
            finish_reason=response.finish_reason,
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost_usd=response.cost_usd,
            latency_ms=response.latency_ms,
            cached=response.cached,
            raw=response,
        )

    async def complete_stream(
        self,
        messages: Iterable[Mapping[str, str]] | None = None,
        *,
        routing: str | int | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        output_schema: str | None = None,
        use_cache: bool = False,
        cache_ttl_seconds: int | None = None,
        prompt_ref: str | None = None,
        variables: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream chunks; the last one carries finish reason, usage and cost."""
        params = _params(
            messages,
            routing=routing,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            output_schema=output_schema,
            use_cache=use_cache,
            cache_ttl_seconds=cache_ttl_seconds,
            prompt_ref=prompt_ref,
            variables=variables,
            metadata=metadata,
        )
        try:
            async with self._stub.CompleteStream.open(
                timeout=timeout or self._timeout, metadata=self._metadata
            ) as stream:
                await stream.send_message(pb.CompleteRequest(params=params), end=True)
                async for chunk in stream:
                    yield StreamChunk(chunk.delta, chunk.finish_reason, chunk)
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from None
        except StreamTerminatedError as error:
            raise RuntimeClientError(Status.UNAVAILABLE, str(error)) from None

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        provider: str | None = None,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        try:
            return await self._stub.Embed(
                pb.EmbedRequest(texts=list(texts), model=model or "", provider=provider or ""),
                timeout=timeout or self._timeout,
                metadata=self._metadata,
            )
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from None

    async def list_providers(self) -> pb.ListProvidersResponse:
        try:
            return await self._stub.ListProviders(
                pb.ListProvidersRequest(), timeout=self._timeout, metadata=self._metadata
            )
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from None

    async def health(self) -> pb.HealthResponse:
        try:
            return await self._stub.Health(
                pb.HealthRequest(), timeout=self._timeout, metadata=self._metadata
            )
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from None
