"""Fake provider servers on loopback that speak each provider's real wire format.

Used by the test suite, by ``delos-runtime serve --demo`` and by the benchmarks.

Layout:
    _server.py      a small HTTP/1.1 server (anyio + h11) with byte-level fault injection
    _behaviour.py   the shared knobs: latency, token rate, faults, scripted failures
    _schema.py      minimal instances of JSON Schemas, for structured-output answers
    _agent.py       how every fake behaves in an agent conversation: tool calls, thinking
    fake_openai.py  OpenAI, and the OpenAI-compatible Together AI and OpenRouter
    fake_anthropic.py, fake_gemini.py, fake_bedrock.py, fake_ollama.py
                    the other native wire formats (Vertex AI is served by the Anthropic and
                    Gemini fakes' publisher paths)
    _openai_flavour.py, _openai_checks.py, _openai_answer.py
                    the OpenAI fake's flavours; its request checks and prompt cache; its answers
    _anthropic_checks.py, _anthropic_answer.py
                    the Anthropic fake's request checks and prompt cache; its answers
    _gemini_checks.py, _gemini_answer.py, _gemini_errors.py
                    the Gemini fake's request checks; its answers; its error bodies and headers
    _bedrock_checks.py, _bedrock_answer.py
                    the Bedrock fake's request checks and prompt cache; its answers and
                    event-stream frames
    _ollama_checks.py
                    the Ollama fake's request checks
    fakes.py        every fake behind one table: how to start it and configure the gateway
    demo.py         every fake started together for demo mode
"""

from delos.testing._behaviour import Behaviour, FakeControl, Fault, Latency
from delos.testing._server import (
    HANG_UP,
    RESET,
    FakeRequest,
    FakeResponse,
    FakeServer,
    ServerStats,
    open_fake_server,
    serve_in_thread,
)

__all__ = [
    "HANG_UP",
    "RESET",
    "Behaviour",
    "FakeControl",
    "FakeRequest",
    "FakeResponse",
    "FakeServer",
    "Fault",
    "Latency",
    "ServerStats",
    "open_fake_server",
    "serve_in_thread",
]
