"""In-process providers that follow a script: latencies on the event loop's clock, our errors.

Run under trio's ``MockClock(autojump_threshold=0)`` the latencies are virtual: a 30 s silence
costs no real time, and every duration a test reads is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import trio.testing

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import ProviderError
from delos.runtime.gateway import Gateway
from delos.runtime.providers import Provider
from delos.runtime.providers.base import RateLimitListener
from delos.runtime.routing import ResiliencePolicy
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["REPORTED_USAGE", "Reply", "ScriptedProvider", "gateway_on", "mock_clock_backend"]


def mock_clock_backend() -> tuple[str, dict[str, object]]:
    """The ``anyio_backend`` value for trio on a virtual clock that jumps whenever every task
    is blocked (anyio passes the options to ``trio.run``)."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


#: What a scripted answer reports it used, unless the reply says otherwise.
REPORTED_USAGE = Usage(10, 5)


@dataclass(frozen=True)
class Reply:
    """One scripted call: wait ``delay`` seconds, then raise ``error`` or answer ``text``.

    A stream sends ``chunks`` (default: ``text`` whole), ``chunk_delay`` seconds apart, then
    raises ``error_after_chunks`` or finishes.
    """

    delay: float = 0.0
    text: str = "hello"
    error: ProviderError | None = None
    chunks: tuple[str, ...] | None = None
    chunk_delay: float = 0.0
    error_after_chunks: ProviderError | None = None
    usage: Usage | None = REPORTED_USAGE
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


class ScriptedProvider:
    """A :class:`Provider` answering each call with the next :class:`Reply`, then ``then``.

    Counts what a test asserts on: calls made, calls that saw a cancellation, streams open.
    """

    supports_embeddings = True

    def __init__(self, name: str, *replies: Reply, then: Reply | None = None) -> None:
        self._name = name
        self.script = list(replies)
        self.then = then or Reply()
        self.calls = 0
        self.cancelled = 0
        self.open_streams = 0
        #: The requests received, in order.
        self.requests: list[ChatRequest] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def base_url(self) -> str:
        return f"scripted://{self._name}"

    def models(self) -> Sequence[str]:
        return ()

    def set_rate_limit_listener(self, listener: RateLimitListener | None) -> None:
        pass

    async def start(self) -> None:
        pass

    def discovered_catalog(self, base: Catalog) -> Catalog:
        return base

    async def available(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        reply = self._next()
        await self._wait(reply.delay)
        if reply.error is not None:
            raise reply.error
        return Completion(
            reply.text,
            request.model,
            reply.finish_reason,
            reply.usage,
            reply.tool_calls,
            reply.thinking,
        )

    @asynccontextmanager
    async def open_stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.requests.append(request)
        reply = self._next()
        self.open_streams += 1
        try:
            await self._wait(reply.delay)
            if reply.error is not None:
                raise reply.error
            with self._watching():
                yield _Events(self, reply, request.model)
        finally:
            self.open_streams -= 1

    async def embed(self, request: EmbedRequest) -> Embeddings:
        reply = self._next()
        await self._wait(reply.delay)
        if reply.error is not None:
            raise reply.error
        usage = reply.usage and Usage(reply.usage.prompt_tokens, 0)
        vectors = [[float(index), 1.0] for index in range(len(request.texts))]
        return Embeddings(vectors, request.model, usage)

    def _next(self) -> Reply:
        self.calls += 1
        return self.script.pop(0) if self.script else self.then

    async def _wait(self, seconds: float) -> None:
        with self._watching():
            await anyio.sleep(seconds)

    @contextmanager
    def _watching(self) -> Iterator[None]:
        try:
            yield
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise


class _Events:
    """The events of one scripted stream (a class, not an async generator: nothing is left
    for the garbage collector to finalise when the router stops reading early)."""

    def __init__(self, provider: ScriptedProvider, reply: Reply, model: str) -> None:
        self._provider = provider
        self._reply = reply
        self._model = model
        pieces: list[StreamEvent] = [ThinkingDelta(t.text) for t in reply.thinking if t.text]
        texts = reply.chunks if reply.chunks is not None else (reply.text,) if reply.text else ()
        pieces += [TextDelta(text) for text in texts]
        for index, call in enumerate(reply.tool_calls):
            half = len(call.arguments_json) // 2
            pieces.append(ToolCallDelta(index, call.id, call.name, call.arguments_json[:half]))
            pieces.append(ToolCallDelta(index, arguments_delta=call.arguments_json[half:]))
        self._pending = pieces
        self._sent = 0
        self._finished = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._pending:
            if self._sent:
                await self._provider._wait(self._reply.chunk_delay)
            self._sent += 1
            return self._pending.pop(0)
        if self._finished:
            raise StopAsyncIteration
        if self._reply.error_after_chunks is not None:
            raise self._reply.error_after_chunks
        self._finished = True
        reply = self._reply
        return StreamFinished(
            reply.finish_reason, reply.usage, self._model, reply.tool_calls, reply.thinking
        )


def gateway_on(
    *providers: ScriptedProvider,
    policy: ResiliencePolicy | None = None,
    settings: Mapping[str, object] | None = None,
    **time: Any,
) -> Gateway:
    """A gateway on ``providers`` with the shipped catalog; the clock and sleep are anyio's
    unless ``time`` passes others (``clock=``, ``sleep=``)."""
    chosen: dict[str, Provider] = {p.name: p for p in providers}
    return Gateway(
        Settings.model_validate(dict(settings or {})),
        Catalog.load(None),
        chosen,
        policy=policy,
        **time,
    )
