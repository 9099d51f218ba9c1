"""Delos Runtime: an LLM gateway, and its Python SDK.

Layout:
    delos._client     RuntimeClient, the async SDK of the gRPC API
    delos.runtime     the gateway service
    delos.resilience  breakers, limiters, budgets, races and hedges (no provider knowledge)
    delos.testing     fake provider servers on loopback (tests, demo, benchmarks)
"""

from delos._client import (
    CompletionResult,
    Document,
    Image,
    Message,
    Reasoning,
    RuntimeClient,
    RuntimeClientError,
    StreamChunk,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

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
