"""The Python SDK: ``async with RuntimeClient("localhost:9001") as client: ...``.

Every failure of a call raises :class:`RuntimeClientError` with a gRPC status, its cause chained:
the server's own status for a gRPC error, and for failures below gRPC the one table of
``delos._sdk_errors`` (deadline → ``DEADLINE_EXCEEDED``, connection refused, reset, closed or
garbled → ``UNAVAILABLE``, an answer that does not parse → ``INTERNAL``, anything else →
``UNKNOWN``).

A stream is an async generator: closing it cancels its HTTP/2 stream, so the server stops the
work. Close it with ``contextlib.aclosing`` when leaving a loop early (asyncio closes it only once
nothing refers to it any more); the client also cancels the streams still open when it is closed,
so none outlives ``async with RuntimeClient``.

Agents: calls take tools, reasoning and rich messages (parts, tool calls, tool results) as dicts
or as the frozen values of ``delos._sdk_values`` (:class:`Message`, :class:`Tool`, …), and answer
with typed tool calls, thinking and usage; :meth:`RuntimeClient.run_tools` runs the whole tool
loop (``delos._sdk_agent``). Values go to protobuf and come back in ``delos._sdk_wire``, nowhere
else. This module holds the client alone, and re-exports the SDK's public names.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import anyio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from delos._sdk_agent import CompletionOptions, ToolFunction, run_tool_loop
from delos._sdk_errors import (
    CLOSED_UNDER_STREAM,
    RuntimeClientError,
    call_errors,
    withdrawn_grpclib_cancellations,
)
from delos._sdk_values import (
    CompletionResult,
    Document,
    Image,
    Message,
    Reasoning,
    StreamChunk,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos._sdk_wire import (
    MessageInput,
    ReasoningInput,
    ToolInput,
    completion_params,
    completion_result,
    stream_chunk,
)
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub

__all__ = [
    "CompletionResult",
    "Document",
    "Image",
    "Message",
    "Reasoning",
    "RuntimeClient",
    "RuntimeClientError",
    "StreamChunk",
    "Thinking",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]


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
                    withdrawn_grpclib_cancellations(),
                ):
                    await stream.cancel()
        self._channel.close()

    def close(self) -> None:
        """Close the connection at once: every call still open ends (``UNAVAILABLE``) and the
        server cancels its work. Prefer :meth:`aclose`, which cancels each open stream first."""
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    def _call_errors(
        self, timeout: float | None, stream: Any = None
    ) -> contextlib.AbstractContextManager[None]:
        """Turn every failure of a call into :class:`RuntimeClientError`, cause chained."""
        return call_errors(self._target, timeout, stream, self._cancelled_streams)

    async def complete(
        self,
        messages: Iterable[MessageInput] | None = None,
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
        tools: Iterable[ToolInput] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        reasoning: ReasoningInput | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> CompletionResult:
        """One completion. ``timeout`` (seconds) overrides the client's deadline.

        ``messages`` are dicts, :class:`Message` values or protobuf ``Message``s (see
        :class:`Message`). ``tools`` are :class:`Tool` values or dicts ``{"name",
        "description", "parameters": <JSON Schema>}``; ``tool_choice`` is "auto", "none",
        "required" or a tool's name; ``parallel_tool_calls`` None leaves it to the provider.
        ``reasoning`` is a :class:`Reasoning` or a dict of its fields. ``session_id`` keeps an
        agent's turns on the provider and model of its last turn (and their prompt cache).

        Raises :class:`RuntimeClientError` with the gRPC status on any failure, and
        ``ValueError`` (or ``TypeError``) for an unknown ``routing`` name or a malformed message,
        tool or reasoning, before sending anything.
        """
        params = completion_params(
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
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            reasoning=reasoning,
            session_id=session_id,
        )
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            response = await self._stub.Complete(
                pb.CompleteRequest(params=params), timeout=deadline, metadata=self._metadata
            )
        return completion_result(response)

    async def complete_stream(
        self,
        messages: Iterable[MessageInput] | None = None,
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
        tools: Iterable[ToolInput] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        reasoning: ReasoningInput | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream chunks; the last one carries finish reason, usage and cost, and the answer's
        tool calls and thinking whole. Other chunks carry a text ``delta``, a ``thinking_delta``
        or a ``tool_call`` piece. Arguments as for :meth:`complete`.

        An async generator: close it to cancel the call when leaving early, as in
        ``async with contextlib.aclosing(client.complete_stream(...)) as chunks``. A stream left
        open is cancelled when the client is closed. Raises :class:`RuntimeClientError` with the
        gRPC status on any failure, ``CANCELLED`` when the client was closed under it.
        """
        params = completion_params(
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
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            reasoning=reasoning,
            session_id=session_id,
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
                    yield stream_chunk(chunk)
                    if opened in self._cancelled_streams:
                        raise RuntimeClientError(Status.CANCELLED, CLOSED_UNDER_STREAM)
        finally:
            self._open_streams.discard(opened)
            self._cancelled_streams.discard(opened)

    async def run_tools(
        self,
        messages: Iterable[MessageInput],
        tools: Mapping[str, tuple[ToolInput, ToolFunction]],
        *,
        max_turns: int = 8,
        **options: Unpack[CompletionOptions],
    ) -> CompletionResult:
        """Run a tool-using conversation to its answer: complete, run the tools the model
        called, send their results back, and again, until an answer calls no tool.

        ``tools`` maps each tool's name to ``(spec, function)``: the spec is what the model is
        told, a :class:`Tool` or a dict ``{"description": ..., "parameters": <JSON Schema>}``
        (a name in it must be the key); the function is async and is called with the call's
        arguments as keyword arguments, ``await function(**call.arguments)``. The calls of one
        answer run concurrently, in one task group. Each result goes back as the text of a
        ``tool`` message: a ``str`` as it is, anything else JSON-encoded. A function that raises
        an ``Exception``, a call to an unknown tool, or arguments that are not a JSON object give
        the model ``"error: <ExceptionType>: <message>"`` instead, and the loop goes on.

        ``options`` are those of :meth:`complete`, the same on every turn (``session_id`` keeps
        the turns on one provider and its prompt cache warm; ``timeout`` is per turn), except
        ``tool_choice``, which applies to the first turn only, so that ``"required"`` or a
        tool's name cannot force calls until ``max_turns``.

        Returns the last answer; its :attr:`~CompletionResult.messages` is the whole
        conversation (``messages``, then each assistant turn with its thinking and tool calls
        verbatim and one ``tool`` message per call), ready to go on with. Raises
        :class:`RuntimeClientError` as :meth:`complete` does, and with ``RESOURCE_EXHAUSTED``
        when answer number ``max_turns`` still calls tools (those calls are not run);
        ``ValueError`` or ``TypeError`` for a malformed spec, before sending anything.
        """
        return await run_tool_loop(self.complete, messages, tools, max_turns, options)

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
