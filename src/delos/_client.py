"""The Python SDK: ``async with RuntimeClient("localhost:9001") as client: ...``.

Every failure of a call raises :class:`RuntimeClientError` with a gRPC status, its cause chained:
the server's own status for a gRPC error, and for failures below gRPC the one table
``_TRANSPORT_FAILURES`` (deadline → ``DEADLINE_EXCEEDED``, connection refused, reset, closed or
garbled → ``UNAVAILABLE``, an answer that does not parse → ``INTERNAL``, anything else →
``UNKNOWN``).

A stream is an async generator: closing it cancels its HTTP/2 stream, so the server stops the
work. Close it with ``contextlib.aclosing`` when leaving a loop early (asyncio closes it only once
nothing refers to it any more); the client also cancels the streams still open when it is closed,
so none outlives ``async with RuntimeClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import anyio
from google.protobuf.message import DecodeError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

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
    """A call failed; ``status`` is the gRPC status and ``message`` says why.

    ``__cause__`` is the error it stands for: the server's ``GRPCError``, or the transport's
    ``TimeoutError``, ``ConnectionError``, ``StreamTerminatedError``, …
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


#: How a failure below gRPC becomes a status: the first row whose types match wins (TimeoutError
#: is an OSError, so it comes first). grpclib reports its deadline as a TimeoutError; refused,
#: reset and broken connections (and DNS or TLS failures) are OSErrors; a connection closed under
#: a call is a StreamTerminatedError; a peer that does not speak HTTP/2 is an H2Error.
_TRANSPORT_FAILURES: Final[tuple[tuple[tuple[type[Exception], ...], Status, str], ...]] = (
    ((TimeoutError,), Status.DEADLINE_EXCEEDED, "no answer from {target} within the deadline"),
    ((StreamTerminatedError,), Status.UNAVAILABLE, "connection to {target} ended"),
    ((OSError, H2Error), Status.UNAVAILABLE, "connection to {target} failed"),
    ((ProtocolError, DecodeError), Status.INTERNAL, "malformed answer from {target}"),
)


def _transport_failure(error: Exception, target: str, timeout: float | None) -> RuntimeClientError:
    for types, status, template in _TRANSPORT_FAILURES:
        if isinstance(error, types):
            message = template.format(target=target)
            if status is Status.DEADLINE_EXCEEDED:
                return RuntimeClientError(
                    status, f"{message} ({timeout:g} s)" if timeout else message
                )
            return RuntimeClientError(status, f"{message}: {error or type(error).__name__}")
    return RuntimeClientError(Status.UNKNOWN, f"{type(error).__name__}: {error}")


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
    """An async client of the Runtime service (asyncio only: grpclib). ``target`` is
    ``"host:port"``; ``timeout`` is the default deadline of each call, in seconds, sent to the
    server (``None``: no deadline).

    Use it as ``async with RuntimeClient(...) as client``, or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        target: str = "localhost:9001",
        *,
        api_key: str | None = None,
        timeout: float | None = 120.0,
        ssl: Any = None,
    ) -> None:
        host, _, port = target.rpartition(":")
        self._target = target
        self._channel = Channel(host or "localhost", int(port), ssl=ssl)
        self._stub = RuntimeServiceStub(self._channel)
        self._metadata = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._timeout = timeout
        # grpclib streams of the complete_stream generators not finished yet, and those of them
        # that aclose() cancelled (their generator then raises CANCELLED rather than UNAVAILABLE).
        self._open_streams: set[Any] = set()
        self._cancelled_streams: set[Any] = set()

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every stream still open (an HTTP/2 RST_STREAM, so the server stops its work),
        then close the connection. A stream left open raises ``RuntimeClientError(CANCELLED)``
        if it is iterated again."""
        # Shielded: this cleanup must reach the server even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            for stream in list(self._open_streams):
                self._cancelled_streams.add(stream)
                # A stream that ended or lost its connection meanwhile has nothing to cancel.
                with (
                    contextlib.suppress(ProtocolError, StreamTerminatedError, H2Error, OSError),
                    _withdrawn_grpclib_cancellations(),
                ):
                    await stream.cancel()
        self._channel.close()

    def close(self) -> None:
        """Close the connection at once: every call still open ends (``UNAVAILABLE``) and the
        server cancels its work. Prefer :meth:`aclose`, which cancels each open stream first."""
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    @contextlib.contextmanager
    def _call_errors(self, timeout: float | None, stream: Any = None) -> Iterator[None]:
        """Turn every failure of a call into :class:`RuntimeClientError`, cause chained."""
        try:
            with _withdrawn_grpclib_cancellations():
                yield
        except RuntimeClientError:
            raise
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from error
        except Exception as error:
            if stream is not None and stream in self._cancelled_streams:
                raise RuntimeClientError(Status.CANCELLED, _CLOSED_UNDER_STREAM) from error
            raise _transport_failure(error, self._target, timeout) from error

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
        """One completion. ``timeout`` (seconds) overrides the client's deadline.

        Raises :class:`RuntimeClientError` with the gRPC status on any failure, and
        ``ValueError`` for an unknown ``routing`` name (before sending anything).
        """
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
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            response = await self._stub.Complete(
                pb.CompleteRequest(params=params), timeout=deadline, metadata=self._metadata
            )
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
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream chunks; the last one carries finish reason, usage and cost.

        An async generator: close it to cancel the call when leaving early, as in
        ``async with contextlib.aclosing(client.complete_stream(...)) as chunks``. A stream left
        open is cancelled when the client is closed. Raises :class:`RuntimeClientError` with the
        gRPC status on any failure, ``CANCELLED`` when the client was closed under it.
        """
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
        deadline = self._deadline(timeout)
        opened = self._stub.CompleteStream.open(timeout=deadline, metadata=self._metadata)
        self._open_streams.add(opened)
        try:
            # Leaving this ``async with`` before the end (GeneratorExit from aclose(), a
            # cancellation, an error) resets the HTTP/2 stream: grpclib's Stream.__aexit__ sends
            # RST_STREAM, which is what tells the server to stop. Each await is mapped on its own,
            # so that nothing the caller does between two chunks is taken for a failure of ours.
            async with opened as stream:
                with self._call_errors(deadline, opened):
                    await stream.send_message(pb.CompleteRequest(params=params), end=True)
                while True:
                    with self._call_errors(deadline, opened):
                        chunk = await stream.recv_message()
                        if chunk is None:
                            # The status: a stream that fails after its output ends in an error.
                            await stream.recv_trailing_metadata()
                            return
                    yield StreamChunk(chunk.delta, chunk.finish_reason, chunk)
                    if opened in self._cancelled_streams:
                        raise RuntimeClientError(Status.CANCELLED, _CLOSED_UNDER_STREAM)
        finally:
            self._open_streams.discard(opened)
            self._cancelled_streams.discard(opened)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        provider: str | None = None,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """Embed ``texts``. Raises :class:`RuntimeClientError` with the gRPC status on failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.Embed(
                pb.EmbedRequest(texts=list(texts), model=model or "", provider=provider or ""),
                timeout=deadline,
                metadata=self._metadata,
            )

    async def list_providers(self, *, timeout: float | None = None) -> pb.ListProvidersResponse:
        """The providers, their models, prices, breaker states and latencies.

        Raises :class:`RuntimeClientError` with the gRPC status on failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.ListProviders(
                pb.ListProvidersRequest(), timeout=deadline, metadata=self._metadata
            )

    async def health(self, *, timeout: float | None = None) -> pb.HealthResponse:
        """The gateway's health. Raises :class:`RuntimeClientError` with the gRPC status on
        failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.Health(
                pb.HealthRequest(), timeout=deadline, metadata=self._metadata
            )


_CLOSED_UNDER_STREAM: Final = "the client was closed while this stream was open"


@contextlib.contextmanager
def _withdrawn_grpclib_cancellations() -> Iterator[None]:
    """Withdraw the cancellation requests grpclib leaves on the calling task.

    grpclib delivers its deadline and a lost connection by cancelling the task waiting on the
    call (``Task.cancel()``), then raises its own error in place of the CancelledError, and never
    calls ``Task.uncancel()``. The request it leaves would make the caller's next cancel scope
    (anyio, ``asyncio.TaskGroup``) take it for an outside cancellation and re-raise it.
    """
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception:
        while task is not None and task.cancelling() > cancelling:
            task.uncancel()
        raise
