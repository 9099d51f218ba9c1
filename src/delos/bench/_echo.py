"""Reference gRPC servers: a bare grpclib echo (the framework's ceiling) and minimal forwarders.

Both speak ``delos.runtime.v1.RuntimeService/Complete`` so the same prebuilt request frame loads
them and the gateway alike. The echo does no work: it answers each request with its last message.
A forwarder does the least a gateway must: one HTTP request to the upstream per call, with aiohttp
or with httpx on its own transport (the gateway's fallback), which isolates the cost of the
client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import grpclib.const
from grpclib.server import Server, Stream

from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["ForwarderClient", "open_echo_server", "open_forwarder_server"]

ForwarderClient = Literal["aiohttp", "httpx"]

_COMPLETE = "/delos.runtime.v1.RuntimeService/Complete"
_STREAM = "/delos.runtime.v1.RuntimeService/CompleteStream"


class _Service:
    """A grpclib service built from plain handlers (grpclib only needs ``__mapping__``)."""

    def __init__(self, handlers: dict[str, grpclib.const.Handler]) -> None:
        self._handlers = handlers

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return self._handlers


async def _echo_complete(stream: Stream[pb.CompleteRequest, pb.CompleteResponse]) -> None:
    request = await stream.recv_message()
    assert request is not None
    messages = request.params.messages
    await stream.send_message(
        pb.CompleteResponse(content=messages[-1].content if messages else "", provider="echo")
    )


async def _echo_stream(stream: Stream[pb.CompleteRequest, pb.StreamChunk]) -> None:
    request = await stream.recv_message()
    assert request is not None
    for index in range(12):
        await stream.send_message(pb.StreamChunk(delta=" word", index=index))
    await stream.send_message(pb.StreamChunk(finish_reason="stop", index=12))


async def open_echo_server(port: int, *, reuse_port: bool = False) -> Server:
    """A started echo server on 127.0.0.1:``port``; the caller closes it."""
    service = _Service(
        {
            _COMPLETE: grpclib.const.Handler(
                _echo_complete,
                grpclib.const.Cardinality.UNARY_UNARY,
                pb.CompleteRequest,
                pb.CompleteResponse,
            ),
            _STREAM: grpclib.const.Handler(
                _echo_stream,
                grpclib.const.Cardinality.UNARY_STREAM,
                pb.CompleteRequest,
                pb.StreamChunk,
            ),
        }
    )
    server = Server([service])
    await server.start("127.0.0.1", port, reuse_port=reuse_port or None)
    return server


Post = Callable[[bytes], Awaitable[bytes]]


async def _open_post(
    client: ForwarderClient, url: str
) -> tuple[Post, Callable[[], Awaitable[Any]]]:
    """A function POSTing a JSON body to ``url`` and returning the response body, and a closer."""
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

        async def post_aiohttp(body: bytes) -> bytes:
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        return post_aiohttp, session.close
    import httpx

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    http = httpx.AsyncClient(limits=limits, trust_env=False)

    async def post_httpx(body: bytes) -> bytes:
        # Streamed like the adapters read bodies, so the comparison matches the gateway's path.
        async with http.stream("POST", url, content=body, headers=headers) as response:
            return await response.aread()

    return post_httpx, http.aclose


async def open_forwarder_server(
    port: int, upstream_url: str, client: ForwarderClient
) -> tuple[Server, Callable[[], Awaitable[Any]]]:
    """A started forwarder and the closer of its HTTP client."""
    post, close = await _open_post(client, upstream_url.rstrip("/") + "/chat/completions")

    async def forward(stream: Stream[pb.CompleteRequest, pb.CompleteResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        params = request.params
        body = {
            "model": params.model or "gpt-4o",
            "messages": [{"role": m.role, "content": m.content} for m in params.messages],
        }
        answer = json.loads(await post(json.dumps(body).encode()))
        choice = answer["choices"][0]
        await stream.send_message(
            pb.CompleteResponse(
                content=choice["message"]["content"],
                model=answer["model"],
                finish_reason=choice["finish_reason"],
                provider="forwarder",
            )
        )

    service = _Service(
        {
            _COMPLETE: grpclib.const.Handler(
                forward,
                grpclib.const.Cardinality.UNARY_UNARY,
                pb.CompleteRequest,
                pb.CompleteResponse,
            )
        }
    )
    server = Server([service])
    await server.start("127.0.0.1", port)
    return server, close
