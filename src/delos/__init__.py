"""Delos Runtime: an LLM gateway, and its Python SDK.

Layout:
    delos._client      RuntimeClient, the async SDK of the gRPC API
    delos._sdk_values  the SDK's typed values: messages, tools, tool calls, answers, usage
    delos._sdk_wire    those values to protobuf and back (the only place that converts)
    delos._sdk_errors  RuntimeClientError, and every failure of a call mapped to it
    delos._sdk_agent   the tool loop of RuntimeClient.run_tools
    delos.runtime      the gateway service
    delos.resilience   breakers, limiters, budgets, races and hedges (no provider knowledge)
    delos.testing      fake provider servers on loopback (tests, demo, benchmarks)
"""

from delos._client import RuntimeClient
from delos._sdk_errors import RuntimeClientError
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
