"""The SDK's values to protobuf and back: the ``*_pb`` functions send, the ``*_from_pb`` ones
(and :func:`completion_result`, :func:`stream_chunk`) read, and nothing else in the SDK does.

A message, tool or reasoning is taken as its value (``delos._sdk_values``), as its protobuf
message (sent as it is), or as a dict of the value's fields; a dict's keys are checked, so that a
misspelt one fails (``ValueError`` or ``TypeError``) before anything is sent.
:func:`completion_params` builds the parameters of a completion from the keyword arguments of
``RuntimeClient.complete``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from delos._sdk_values import (
    CompletionResult,
    Document,
    Image,
    Message,
    Part,
    Reasoning,
    StreamChunk,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = [
    "MessageInput",
    "ReasoningInput",
    "ToolInput",
    "compact_json",
    "completion_params",
    "completion_result",
    "message_from_pb",
    "message_pb",
    "stream_chunk",
    "tool_pb",
]

MessageInput = Mapping[str, Any] | Message | pb.Message
ToolInput = Mapping[str, Any] | Tool | pb.Tool
ReasoningInput = Mapping[str, Any] | Reasoning | pb.Reasoning

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


_MESSAGE_KEYS: Final = (
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_call_id",
    "cache_breakpoint",
)
_TOOL_CALL_KEYS: Final = ("id", "name", "arguments", "signature")
_PART_TYPES: Final[Mapping[str, type[Image | Document | Thinking]]] = {
    "image": Image,
    "document": Document,
    "thinking": Thinking,
}


def _check_keys(value: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    # A misspelt key ("tool_call", "cache_breakpoints") would otherwise be dropped unseen.
    unknown = [key for key in value if key not in known]
    if unknown:
        raise ValueError(f"{what} has no key {', '.join(map(repr, unknown))}; use {known}")


def compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def message_pb(value: MessageInput) -> pb.Message:
    if isinstance(value, pb.Message):
        return value
    message = value if isinstance(value, Message) else _message_of_dict(value)
    return pb.Message(
        role=message.role,
        content=message.content,
        parts=[_part_pb(part) for part in message.parts],
        tool_calls=[
            pb.ToolCall(
                id=c.id, name=c.name, arguments_json=c.arguments_json, signature=c.signature
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        cache_breakpoint=message.cache_breakpoint,
    )


def _message_of_dict(value: Mapping[str, Any]) -> Message:
    _check_keys(value, _MESSAGE_KEYS, "a message")
    if "role" not in value:
        raise ValueError("a message needs a role: system, user, assistant or tool")
    return Message(
        role=value["role"],
        content=value.get("content", ""),
        parts=tuple(_part_of_dict(part) for part in value.get("parts", ())),
        tool_calls=tuple(_tool_call_of_dict(call) for call in value.get("tool_calls", ())),
        tool_call_id=value.get("tool_call_id", ""),
        cache_breakpoint=value.get("cache_breakpoint", False),
    )


def _part_of_dict(value: Part | Mapping[str, Any]) -> Part:
    if not isinstance(value, Mapping):
        return value
    if len(value) != 1:
        raise ValueError(f"a part has one key (text, image, document or thinking): {list(value)}")
    ((kind, body),) = value.items()
    if kind == "text":
        if not isinstance(body, str):
            raise TypeError(f"a text part is a str, not {type(body).__name__}")
        return body
    part_type = _PART_TYPES.get(kind)
    if part_type is None:
        raise ValueError(f"a part is text, image, document or thinking, not {kind!r}")
    return body if isinstance(body, part_type) else part_type(**body)


def _tool_call_of_dict(value: ToolCall | Mapping[str, Any]) -> ToolCall:
    if isinstance(value, ToolCall):
        return value
    _check_keys(value, _TOOL_CALL_KEYS, "a tool call")
    arguments = value.get("arguments", "{}")
    return ToolCall(
        value["id"],
        value["name"],
        arguments if isinstance(arguments, str) else compact_json(arguments),
        value.get("signature", ""),
    )


def _part_pb(part: Part) -> pb.ContentPart:
    if isinstance(part, str):
        return pb.ContentPart(text=part)
    if isinstance(part, Image):
        return pb.ContentPart(
            image=pb.Image(url=part.url, data=part.data, media_type=part.media_type)
        )
    if isinstance(part, Document):
        return pb.ContentPart(
            document=pb.Document(data=part.data, media_type=part.media_type, name=part.name)
        )
    return pb.ContentPart(
        thinking=pb.Thinking(
            text=part.text,
            signature=part.signature,
            redacted_data=part.redacted_data,
            provider=part.provider,
        )
    )


def tool_pb(value: ToolInput) -> pb.Tool:
    if isinstance(value, pb.Tool):
        return value
    tool = value if isinstance(value, Tool) else Tool(**value)
    return pb.Tool(
        name=tool.name,
        description=tool.description,
        # "": no parameters; the gateway reads it as an object without properties.
        parameters_json="" if tool.parameters is None else compact_json(tool.parameters),
    )


def _reasoning_pb(value: ReasoningInput) -> pb.Reasoning:
    if isinstance(value, pb.Reasoning):
        return value
    reasoning = value if isinstance(value, Reasoning) else Reasoning(**value)
    return pb.Reasoning(
        effort=reasoning.effort,
        budget_tokens=reasoning.budget_tokens,
        include_thoughts=reasoning.include_thoughts,
    )


def _tool_call_from_pb(call: pb.ToolCall) -> ToolCall:
    return ToolCall(call.id, call.name, call.arguments_json, call.signature)


def _thinking_from_pb(thinking: pb.Thinking) -> Thinking:
    return Thinking(thinking.text, thinking.signature, thinking.redacted_data, thinking.provider)


def _usage_from_pb(usage: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
    )


def _part_from_pb(part: pb.ContentPart) -> Part:
    match part.WhichOneof("kind"):
        case "image":
            return Image(part.image.url, part.image.data, part.image.media_type)
        case "document":
            return Document(part.document.data, part.document.media_type, part.document.name)
        case "thinking":
            return _thinking_from_pb(part.thinking)
    return part.text


def message_from_pb(message: pb.Message) -> Message:
    return Message(
        role=message.role,
        content=message.content,
        parts=tuple(_part_from_pb(part) for part in message.parts),
        tool_calls=tuple(_tool_call_from_pb(call) for call in message.tool_calls),
        tool_call_id=message.tool_call_id,
        cache_breakpoint=message.cache_breakpoint,
    )


def completion_result(response: pb.CompleteResponse) -> CompletionResult:
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
        tool_calls=tuple(_tool_call_from_pb(call) for call in response.tool_calls),
        thinking=tuple(_thinking_from_pb(thinking) for thinking in response.thinking),
        usage=_usage_from_pb(response.usage),
    )


def stream_chunk(chunk: pb.StreamChunk) -> StreamChunk:
    tool_call = None
    if chunk.HasField("tool_call"):
        delta = chunk.tool_call
        tool_call = ToolCallDelta(delta.index, delta.id, delta.name, delta.arguments_delta)
    if not chunk.HasField("usage"):  # every chunk but the last: the common case, kept short
        return StreamChunk(chunk.delta, chunk.finish_reason, chunk, tool_call, chunk.thinking_delta)
    return StreamChunk(
        chunk.delta,
        chunk.finish_reason,
        chunk,
        tool_call,
        chunk.thinking_delta,
        tool_calls=tuple(_tool_call_from_pb(call) for call in chunk.tool_calls),
        thinking=tuple(_thinking_from_pb(thinking) for thinking in chunk.thinking),
        usage=_usage_from_pb(chunk.usage),
    )


def _routing(value: str | int | None) -> int:
    if value is None:
        return pb.ROUTING_STRATEGY_UNSPECIFIED
    if isinstance(value, int):
        return value
    key = value.lower().removeprefix("routing_strategy_")
    if key not in _ROUTING:
        raise ValueError(f"unknown routing {value!r}; use one of {', '.join(sorted(_ROUTING))}")
    return _ROUTING[key]


def completion_params(
    messages: Iterable[MessageInput] | None,
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
    tools: Iterable[ToolInput] | None,
    tool_choice: str | None,
    parallel_tool_calls: bool | None,
    reasoning: ReasoningInput | None,
    session_id: str | None,
) -> pb.CompletionParams:
    params = pb.CompletionParams(
        messages=[message_pb(m) for m in messages or ()],
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
        tools=[tool_pb(tool) for tool in tools or ()],
        tool_choice=tool_choice or "",
        session_id=session_id or "",
    )
    if temperature is not None:
        params.temperature = temperature
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if top_p is not None:
        params.top_p = top_p
    if parallel_tool_calls is not None:
        params.parallel_tool_calls = parallel_tool_calls
    if reasoning is not None:
        params.reasoning.CopyFrom(_reasoning_pb(reasoning))
    return params
