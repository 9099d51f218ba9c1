"""The tool loop of :meth:`RuntimeClient.run_tools` (documented there), as a function of the
client's ``complete``: complete, run the tools the model called, send their results back, and
again, until an answer calls no tool or ``max_turns`` answers have.

The calls of one answer run concurrently, in one task group. A tool that raises an
``Exception``, an unknown tool or arguments that are not a JSON object become an error text for
the model; a cancellation ends the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypedDict, Unpack

import anyio
from grpclib.const import Status

from delos._sdk_errors import RuntimeClientError
from delos._sdk_values import CompletionResult, Tool, ToolCall
from delos._sdk_wire import (
    MessageInput,
    ReasoningInput,
    ToolInput,
    compact_json,
    message_from_pb,
    message_pb,
    tool_pb,
)
from delos.runtime.v1 import runtime_pb2 as pb

__all__ = ["CompletionOptions", "ToolFunction", "run_tool_loop"]

#: A tool of :meth:`RuntimeClient.run_tools`: an async callable of the call's arguments.
ToolFunction = Callable[..., Awaitable[object]]


class CompletionOptions(TypedDict, total=False):
    """The keyword arguments :meth:`RuntimeClient.run_tools` passes on to each ``complete``."""

    routing: str | int | None
    provider: str | None
    model: str | None
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    stop: Sequence[str] | None
    output_schema: str | None
    use_cache: bool
    cache_ttl_seconds: int | None
    prompt_ref: str | None
    variables: Mapping[str, str] | None
    metadata: Mapping[str, str] | None
    tool_choice: str | None
    parallel_tool_calls: bool | None
    reasoning: ReasoningInput | None
    session_id: str | None
    timeout: float | None


class _Complete(Protocol):
    """:meth:`RuntimeClient.complete`, as the loop calls it."""

    def __call__(
        self,
        messages: Iterable[MessageInput],
        *,
        tools: Iterable[ToolInput],
        **options: Unpack[CompletionOptions],
    ) -> Awaitable[CompletionResult]: ...


async def run_tool_loop(
    complete: _Complete,
    messages: Iterable[MessageInput],
    tools: Mapping[str, tuple[ToolInput, ToolFunction]],
    max_turns: int,
    options: CompletionOptions,
) -> CompletionResult:
    """The last answer of the conversation ``messages`` with ``tools``, each turn a call of
    ``complete`` with ``options`` (``tool_choice`` on the first only). Raises as
    :meth:`RuntimeClient.run_tools` does."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    specs = [_tool_spec_pb(name, spec) for name, (spec, _) in tools.items()]
    functions = {name: function for name, (_, function) in tools.items()}
    options = options.copy()  # the caller's stays as it was when tool_choice is dropped
    # The conversation as protobuf from the start: each turn only appends to it.
    conversation = [message_pb(m) for m in messages]
    for turn in range(1, max_turns + 1):
        result = await complete(conversation, tools=specs, **options)
        conversation.append(message_pb(result.message))
        if not result.tool_calls:
            messages_out = tuple(message_from_pb(m) for m in conversation)
            return dataclasses.replace(result, messages=messages_out)
        if turn == max_turns:
            break
        replies = await _run_tool_calls(result.tool_calls, functions)
        conversation += [
            pb.Message(role="tool", content=reply, tool_call_id=call.id)
            for call, reply in zip(result.tool_calls, replies, strict=True)
        ]
        options.pop("tool_choice", None)
    raise RuntimeClientError(
        Status.RESOURCE_EXHAUSTED,
        f"max_turns reached: answer {max_turns} still calls tools "
        f"({', '.join(call.name for call in result.tool_calls)})",
    )


def _tool_spec_pb(name: str, spec: ToolInput) -> pb.Tool:
    """``spec`` of the tool ``name`` of :meth:`RuntimeClient.run_tools`, named by its key."""
    if isinstance(spec, Tool | pb.Tool):
        given = spec.name
    else:
        given = spec.get("name", name)
        spec = {**spec, "name": name}
    if given != name:
        raise ValueError(f"the spec of tool {name!r} names another tool, {given!r}")
    return tool_pb(spec)


async def _run_tool_calls(
    calls: Sequence[ToolCall], functions: Mapping[str, ToolFunction]
) -> list[str]:
    """The result texts of ``calls``, in their order; the calls run concurrently."""
    replies = [""] * len(calls)

    async def run(index: int, call: ToolCall) -> None:
        replies[index] = await _tool_reply(call, functions)

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(run, index, call)
    return replies


async def _tool_reply(call: ToolCall, functions: Mapping[str, ToolFunction]) -> str:
    function = functions.get(call.name)
    if function is None:
        return f"error: unknown tool {call.name!r}; the tools are: {', '.join(functions)}"
    # Only Exception: a cancellation (a BaseException) must end the loop, not reach the model.
    try:
        result = await function(**call.arguments)
        return result if isinstance(result, str) else compact_json(result)
    except Exception as error:
        return f"error: {type(error).__name__}: {error}"
