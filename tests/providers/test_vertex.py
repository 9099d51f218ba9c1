"""Vertex AI as the router sees it: one ``vertex`` provider handing Gemini models to the Gemini
adapter (``publishers/google``) and Claude to the Anthropic one, against the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import DelosError
from delos.runtime.providers.vertex import VertexProvider, build_vertex
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Reasoning,
    StreamFinished,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCallDelta,
)
from delos.testing import FakeRequest, FakeResponse, FakeServer, open_fake_server
from delos.testing._agent import sign, thought_about
from delos.testing.fakes import open_fakes

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
TOOL = Tool(
    "lookup",
    "Looks a word up.",
    {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
)


@asynccontextmanager
async def open_vertex() -> AsyncIterator[tuple[VertexProvider, FakeServer]]:
    async with open_fakes(["vertex"]) as fakes, httpx.AsyncClient() as client:
        provider = build_vertex(Settings.model_validate(fakes.settings), CATALOG, client)
        assert isinstance(provider, VertexProvider)
        yield provider, fakes.servers["vertex"]


async def test_a_gemini_agent_loop_goes_to_publishers_google() -> None:
    text = "define serendipity"
    signature = sign(thought_about(text))
    question = ChatMessage("user", text)
    async with open_vertex() as (vertex, server):
        first = await vertex.complete(ChatRequest("gemini-2.5-flash", (question,), tools=(TOOL,)))
        path = server.stats.requests[-1].path
        (call,) = first.tool_calls
        assert (call.name, call.signature, first.finish_reason) == (
            "lookup",
            signature,
            "tool_calls",
        )
        follow_up = ChatRequest(
            "gemini-2.5-flash",
            (
                question,
                ChatMessage("assistant", "", tool_calls=first.tool_calls),
                ChatMessage("tool", "a happy accident", tool_call_id=call.id),
            ),
            tools=(TOOL,),
            reasoning=Reasoning(include_thoughts=True),
        )
        async with vertex.open_stream(follow_up) as stream:
            events = [event async for event in stream]
    assert path == (
        "/v1/projects/delos-demo/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert events[0] == ThinkingDelta(thought_about(text))
    text_out = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text_out == "Tool said: a happy accident"
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == "stop"
    # Thinking names the endpoint that made it: a signature is valid only there.
    assert finished.thinking == (
        Thinking(thought_about(text), provider="vertex"),
        Thinking("", signature, provider="vertex"),
    )


async def test_a_streamed_gemini_call_on_vertex() -> None:
    request = ChatRequest(
        "gemini-2.5-pro", (ChatMessage("user", "look up both in parallel"),), tools=(TOOL,)
    )
    async with open_vertex() as (vertex, server):
        async with vertex.open_stream(request) as stream:
            events = [event async for event in stream]
        query = server.stats.requests[-1].query
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.name) for d in deltas] == [(0, "lookup"), (1, "lookup")]
    assert query == "alt=sse"


async def test_claude_models_go_to_publishers_anthropic() -> None:
    """Only the dispatch: what Claude answers is the Anthropic adapter's subject."""
    paths: list[str] = []

    async def handler(request: FakeRequest) -> FakeResponse:
        paths.append(request.path)
        return FakeResponse.json({"error": {"code": 404, "status": "NOT_FOUND"}}, 404)

    async with open_fake_server(handler) as server, httpx.AsyncClient() as client:
        vertex = VertexProvider(
            project="p",
            location="us-central1",
            access_token="token",
            client=client,
            catalog=CATALOG,
            base_url=server.url,
        )
        model = next(m for m in vertex.models() if m.startswith("claude"))
        with pytest.raises(DelosError):
            await vertex.complete(ChatRequest(model, (ChatMessage("user", "hi"),)))
        with pytest.raises(DelosError):
            await vertex.complete(ChatRequest("gemini-2.5-flash", (ChatMessage("user", "hi"),)))
    assert paths[0].endswith(f"/publishers/anthropic/models/{model}:rawPredict")
    assert paths[1].endswith("/publishers/google/models/gemini-2.5-flash:generateContent")
