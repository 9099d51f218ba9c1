"""The Python SDK: the product spec's example, routing names, typed errors for every failure
(server statuses, deadlines, refused and dropped connections), and streams left early."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from delos import RuntimeClient, RuntimeClientError
from delos.testing import Fault
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio


async def test_the_spec_example_works() -> None:
    async with open_harness(("openai", "together")) as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            response = await client.complete(
                messages=[{"role": "user", "content": "Hello!"}],
                provider="openai",
                model="gpt-4o-mini",
            )
            assert response.content and response.provider == "openai"
            chunks = [
                c
                async for c in client.complete_stream(
                    messages=[{"role": "user", "content": "Tell me a story"}],
                    routing="cost_optimized",
                )
            ]
            assert "".join(c.delta for c in chunks).split()
            assert chunks[-1].finish_reason == "stop"
            assert chunks[-1].raw.usage.completion_tokens == 12
            embedded = await client.embed(["Hello world", "Goodbye world"], provider="openai")
            assert len(embedded.embeddings) == 2
            providers = await client.list_providers()
            assert {p.name for p in providers.providers if p.available} == {"openai", "together"}
            assert (await client.health()).status == 1


@pytest.mark.parametrize(
    "routing", ["cost_optimized", "COST", "ROUTING_STRATEGY_QUALITY_OPTIMIZED", "latency", 3]
)
async def test_routing_accepts_names_and_enum_numbers(routing: str | int) -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            response = await client.complete(
                messages=[{"role": "user", "content": "hi"}], routing=routing
            )
    assert response.provider == "openai"


async def test_an_unknown_routing_name_is_refused_before_sending() -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            with pytest.raises(ValueError, match="unknown routing"):
                await client.complete(
                    messages=[{"role": "user", "content": "hi"}], routing="fastest-please"
                )
        assert h.fakes["openai"].stats.request_count == 0


async def test_errors_are_typed_with_status_and_message() -> None:
    async with open_harness() as h:
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            with pytest.raises(RuntimeClientError) as raised:
                await client.complete(messages=[{"role": "user", "content": "hi"}], temperature=3.0)
            with pytest.raises(RuntimeClientError) as streamed:
                async for _ in client.complete_stream(messages=[], provider="openai"):
                    pass
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert "temperature" in raised.value.message
    assert streamed.value.status is Status.INVALID_ARGUMENT


HI = [{"role": "user", "content": "hi"}]

#: Each RPC of the SDK, called once; a stream is read to its end.
CALLS: dict[str, Callable[[RuntimeClient], Awaitable[object]]] = {
    "complete": lambda client: client.complete(messages=HI),
    "complete_stream": lambda client: _drain(client.complete_stream(messages=HI)),
    "embed": lambda client: client.embed(["Hello world"]),
    "list_providers": lambda client: client.list_providers(),
    "health": lambda client: client.health(),
}


def current_task_cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


async def _drain(chunks: AsyncIterator[object]) -> None:
    async for _ in chunks:
        pass


@asynccontextmanager
async def open_silent_listener() -> AsyncIterator[int]:
    """A TCP listener on loopback that accepts, reads and never answers; yields its port."""

    async def swallow(client: anyio.abc.SocketStream) -> None:
        async with client:
            with suppress(anyio.BrokenResourceError):
                async for _ in client:
                    pass

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, swallow)
            yield listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.cancel_scope.cancel()


@contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nothing else takes it) but not listening."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


@dataclass
class CuttingProxy:
    """A TCP relay to ``upstream_port``; :meth:`cut` drops every connection through it."""

    upstream_port: int
    port: int = 0
    _cut: anyio.Event = field(default_factory=anyio.Event)

    def cut(self) -> None:
        self._cut.set()

    async def relay(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_copy, client, upstream)
                tg.start_soon(_copy, upstream, client)
                await self._cut.wait()
                tg.cancel_scope.cancel()


async def _copy(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
    # A handler that raised would cancel the test through the listener's task group.
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for data in source:
            await sink.send(data)


@asynccontextmanager
async def open_cutting_proxy(upstream_port: int) -> AsyncIterator[CuttingProxy]:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        proxy = CuttingProxy(upstream_port, listener.extra(anyio.abc.SocketAttribute.local_port))
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, proxy.relay)
            yield proxy
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("call", CALLS)
async def test_a_server_that_never_answers_is_deadline_exceeded(call: str) -> None:
    # The deadline is the subject here, so it is real: grpclib times it with the event loop.
    async with open_silent_listener() as port:
        async with RuntimeClient(f"127.0.0.1:{port}", timeout=0.1) as client:
            with anyio.fail_after(10), pytest.raises(RuntimeClientError) as raised:
                await CALLS[call](client)
    assert raised.value.status is Status.DEADLINE_EXCEEDED
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert f"127.0.0.1:{port}" in raised.value.message
    # grpclib times out by cancelling the waiting task: the client withdraws that request, or
    # the caller's next cancel scope would take it for its own.
    assert current_task_cancelling() == 0


@pytest.mark.parametrize("call", CALLS)
async def test_a_refused_connection_is_unavailable(call: str) -> None:
    with closed_port() as port:
        async with RuntimeClient(f"127.0.0.1:{port}") as client:
            with anyio.fail_after(10), pytest.raises(RuntimeClientError) as raised:
                await CALLS[call](client)
    assert raised.value.status is Status.UNAVAILABLE
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("call", ["complete", "embed"])
async def test_a_connection_dropped_under_a_call_is_unavailable(call: str) -> None:
    async with open_harness() as h, open_cutting_proxy(h.running.port) as proxy:
        h.controls["openai"].fail_next(1, Fault.SILENCE_BEFORE_HEADERS)
        async with RuntimeClient(f"127.0.0.1:{proxy.port}") as client:

            async def cut_once_the_provider_was_asked() -> None:
                await h.fakes["openai"].wait_until(lambda s: s.request_count >= 1)
                proxy.cut()

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cut_once_the_provider_was_asked)
                    with pytest.raises(RuntimeClientError) as raised:
                        await CALLS[call](client)
        # The gateway saw its client go, and let go of the provider.
        with anyio.fail_after(5):
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
    assert raised.value.status is Status.UNAVAILABLE
    assert isinstance(raised.value.__cause__, StreamTerminatedError | ConnectionError)
    assert current_task_cancelling() == 0


async def test_a_connection_dropped_mid_stream_is_unavailable() -> None:
    async with open_harness() as h, open_cutting_proxy(h.running.port) as proxy:
        h.controls["openai"].fail_next(1, Fault.SLOW_DRIP)
        received = []
        async with RuntimeClient(f"127.0.0.1:{proxy.port}") as client:
            with anyio.fail_after(10), pytest.raises(RuntimeClientError) as raised:
                async with aclosing(client.complete_stream(messages=HI)) as chunks:
                    async for chunk in chunks:
                        received.append(chunk)
                        proxy.cut()
    assert len(received) == 1
    assert raised.value.status is Status.UNAVAILABLE
    assert isinstance(raised.value.__cause__, StreamTerminatedError | ConnectionError)
    assert current_task_cancelling() == 0


class LeftEarly(Exception):
    pass


@pytest.mark.parametrize("leave", ["break", "raise"])
async def test_leaving_a_stream_early_cancels_it_on_the_server(leave: str) -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.SLOW_DRIP)
        async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
            with anyio.fail_after(10):
                try:
                    async with aclosing(client.complete_stream(messages=HI)) as chunks:
                        async for _ in chunks:
                            if leave == "break":
                                break
                            raise LeftEarly
                except LeftEarly:
                    pass
                # The connection stays open: only the stream was cancelled, and the gateway
                # let go of the provider.
                await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
                assert (await client.complete(messages=HI)).content
        assert h.fakes["openai"].stats.completed_responses == 1


async def test_closing_the_client_cancels_a_stream_left_open() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.SLOW_DRIP)
        with anyio.fail_after(10):
            async with RuntimeClient(f"127.0.0.1:{h.running.port}") as client:
                chunks = client.complete_stream(messages=HI)
                async for _ in chunks:
                    break  # without aclosing: the generator stays open while referenced
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
            with pytest.raises(RuntimeClientError) as raised:
                await anext(chunks)
    assert raised.value.status is Status.CANCELLED
    assert h.fakes["openai"].stats.completed_responses == 0


async def test_closing_the_client_cancels_a_stream_read_by_another_task() -> None:
    async with open_harness() as h:
        h.controls["openai"].fail_next(1, Fault.SLOW_DRIP)
        first_chunk = anyio.Event()
        errors: list[RuntimeClientError] = []
        client = RuntimeClient(f"127.0.0.1:{h.running.port}")

        async def read() -> None:
            try:
                async with aclosing(client.complete_stream(messages=HI)) as chunks:
                    async for _ in chunks:
                        first_chunk.set()
            except RuntimeClientError as error:
                errors.append(error)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await first_chunk.wait()
                # The reader waits for the next (slow) chunk inside the call when this runs.
                await anyio.wait_all_tasks_blocked()
                await client.aclose()
            await h.fakes["openai"].wait_until(lambda s: s.client_disconnects >= 1)
    assert [error.status for error in errors] == [Status.CANCELLED]
