"""Provider adapters and the registry that enables those whose credentials are configured.

Layout:
    base.py               the Provider protocol, and the HTTP steps every adapter shares
    _http.py              transport errors, upstream statuses and rate-limit headers → ours;
                          the error-body and detail limits
    _client.py            one pooled HTTP client per provider (aiohttp, or httpx on trio)
    _transport.py         the exchange adapters need, over aiohttp or httpx
    openai_compatible.py  OpenAI, Together AI, OpenRouter (one adapter, three dialects)
    anthropic.py          Anthropic Messages (direct, and Claude on Vertex AI)
    gemini.py             Gemini (API, and Gemini on Vertex AI)
    bedrock.py            AWS Bedrock Converse / ConverseStream / InvokeModel, SigV4
    vertex.py             Vertex AI: dispatches Claude and Gemini models to the adapters above
    ollama.py             Ollama's native API, with model discovery
    _openai_request.py, _anthropic_request.py, _anthropic_blocks.py
                          sans-IO request bodies (Anthropic's turns and content blocks apart)
    _openai_answer.py, _anthropic_answer.py
                          sans-IO answer parsers and stream readers
    _gemini_request.py, _gemini_answer.py, _bedrock_request.py, _bedrock_answer.py
                          the same for Gemini and Bedrock (request bodies; answers, stream
                          readers and upstream errors)
    _*_wire.py            the other formats' sans-IO bodies, parsers and stream readers
    _parts.py             content parts and tool calls: stream assembly, ids, data URLs
    registry.py           builds the enabled providers, following the provider table
                          (delos.runtime.config.PROVIDERS)
"""

from delos.runtime.providers.base import HttpProvider, Provider
from delos.runtime.providers.registry import build_providers

__all__ = ["HttpProvider", "Provider", "build_providers"]
