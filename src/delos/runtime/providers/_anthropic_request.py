"""The Anthropic Messages request body, sans-IO: :func:`messages_body` and what it refuses.

Nothing here does I/O. :func:`messages_body` writes the body-level fields (``max_tokens``,
sampling, ``thinking``, ``tools`` and ``tool_choice``, with :class:`OutputTool` for structured
output); the conversation's turns and content blocks come from :mod:`._anthropic_blocks`, and
:mod:`._anthropic_answer` reads the answers. The same format serves the direct API and Claude on
Vertex AI; only the transport differs (and Vertex takes no image URLs).

How each setting is written (all checked against the Messages API reference and the official
SDK's types):

- tools: ``tools: [{name, description, input_schema}]`` (a schema without ``type`` gets
  ``"type": "object"``, which the API requires: tool arguments are always an object).
- tool_choice: "" nothing; auto ``{"type": "auto"}``; none ``{"type": "none"}``; required
  ``{"type": "any"}``; a name ``{"type": "tool", "name": …}``. ``parallel_tool_calls=False`` adds
  ``"disable_parallel_tool_use": true`` (to ``{"type": "auto"}`` when no choice is given).
- assistant tool calls: ``tool_use`` blocks ``{type, id, name, input}``, ``input`` the parsed
  ``arguments_json``; tool messages: ``tool_result`` blocks ``{type, tool_use_id, content}``, one
  user turn for consecutive ones, tool results first in the turn.
- images: ``image`` blocks with a ``base64`` source, or a ``url`` source (direct API only);
  documents: ``document`` blocks, PDF as a ``base64`` source, text as a ``text`` source, with the
  name as ``title``.
- reasoning: ``thinking: {"type": "enabled", "budget_tokens": N}``; ``budget_tokens`` as asked,
  else :data:`EFFORT_BUDGETS` for the effort (the one table of :mod:`._parts`;
  medium when only ``include_thoughts`` is set). Without ``max_tokens`` the request asks for the
  budget plus :data:`DEFAULT_MAX_TOKENS`. Anthropic returns thinking whenever it thinks, so
  ``include_thoughts`` needs nothing more.
- thinking sent back: ``thinking {type, thinking, signature}`` and ``redacted_thinking {type,
  data}`` blocks, verbatim, first in their assistant turn; only those this endpoint made (a
  signature is valid only where it was made) and only signed ones (the API refuses others).
- cache_breakpoint: ``cache_control: {"type": "ephemeral"}`` on the message's last block (not a
  thinking block, which cannot carry one); on a system message, the system prompt becomes text
  blocks, one per system message, and the marker goes on that message's block.

Refused with :class:`~delos.runtime.errors.UnsupportedByProvider` (the setting in brackets):
a thinking budget under 1024 tokens or an unknown effort [reasoning]; ``max_tokens`` not above
the budget [max_tokens]; a temperature other than 1 [temperature] or a top_p under 0.95 [top_p]
with thinking; a forced tool (required or a name) with thinking [tool_choice]; structured output
with thinking, or with tool_choice "required" [output_schema]; an assistant-last (pre-filled)
conversation with thinking [reasoning]; a tool choice naming no declared tool, or needing tools
when none are declared [tool_choice]; a tool named like the structured-output tool, or whose
schema is not an object [tools]; tool-call arguments that are not a JSON object [tool_calls]; a
tool message without ``tool_call_id`` [tool_call_id]; an image type Anthropic does not read
[images]; an image only a URL names on Vertex [image url]; an image [images] or a document
[documents] in an assistant turn; a document type other than PDF and text [documents]; parts
other than text in a system message [system]; thinking in a user or tool message [thinking];
more than four cache breakpoints [cache_breakpoint].
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.providers._anthropic_blocks import encode_messages, encode_system
from delos.runtime.providers._parts import EFFORT_BUDGETS, SamplingNames, sampling_fields
from delos.runtime.values import ChatRequest, Tool

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGETS",
    "MAX_CACHE_BREAKPOINTS",
    "MIN_THINKING_BUDGET",
    "OUTPUT_TOOL_NAME",
    "OutputTool",
    "messages_body",
]

#: ``max_tokens`` sent when a request sets none, tokens. The API requires the field; 4096 is the
#: largest value every catalog model accepts (Claude 3 Opus and Haiku cap their output there).
#: With thinking, the budget is added to it: thinking tokens count against ``max_tokens``.
DEFAULT_MAX_TOKENS: Final = 4096
#: The tool forced for structured output; its input is the answer.
OUTPUT_TOOL_NAME: Final = "output"
#: The smallest ``thinking.budget_tokens`` the API accepts, tokens.
MIN_THINKING_BUDGET: Final = 1024
#: Thinking budgets (tokens) for a reasoning effort given without a budget.
#: Blocks that may carry ``cache_control`` in one request.
MAX_CACHE_BREAKPOINTS: Final = 4
#: Smallest ``top_p`` the API accepts with thinking.
_THINKING_TOP_P_MIN: Final = 0.95
#: The output cap goes in separately: Anthropic requires one.
_SAMPLING: Final = SamplingNames(top_p="top_p", stop="stop_sequences", max_tokens=None)


@dataclass(frozen=True, slots=True)
class OutputTool:
    """Structured output as a forced tool call.

    A tool's ``input_schema`` must describe an object, so any other schema is wrapped as the
    ``value`` property of one (``wrapped``) and unwrapped from the answer.
    """

    schema: Mapping[str, Any]
    wrapped: bool

    @classmethod
    def for_schema(cls, schema: Mapping[str, Any]) -> OutputTool:
        if schema.get("type") == "object":
            return cls(schema, wrapped=False)
        inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}
        wrapper: dict[str, Any] = {
            "type": "object",
            "properties": {"value": inner},
            "required": ["value"],
        }
        # "#/$defs/..." references resolve against the root, so definitions move up with it.
        for key in ("$defs", "definitions"):
            if key in schema:
                wrapper[key] = schema[key]
        return cls(wrapper, wrapped=True)

    def answer(self, tool_input: Any) -> str:
        """The JSON text of the answer carried by the tool's input."""
        if self.wrapped:
            if not isinstance(tool_input, dict) or "value" not in tool_input:
                return json.dumps(tool_input, ensure_ascii=False)
            tool_input = tool_input["value"]
        return json.dumps(tool_input, ensure_ascii=False)


def messages_body(
    request: ChatRequest,
    *,
    provider: str,
    output_tool: OutputTool | None,
    stream: bool,
    image_urls: bool = True,
) -> dict[str, Any]:
    """The Messages API body for ``request``, without transport fields (``model`` and the like).

    ``provider`` is the endpoint's name (errors name it; only thinking it made is sent back);
    ``image_urls`` False for endpoints that take image bytes only (Claude on Vertex AI).

    System messages become the top-level ``system`` field. Anthropic requires user and assistant
    turns to alternate, so consecutive messages of one role are merged (plain texts blank-line
    separated, anything else as blocks in order); tool messages are user turns. Sampling
    parameters go as asked: the router never sends a Claude model a temperature above its
    catalog range (it skips the candidate instead), so nothing is clamped here.

    Raises:
        UnsupportedByProvider: the request asks for something without an exact native form
            (listed in the module docstring).
    """
    thinking = _thinking(request, provider)
    body: dict[str, Any] = {
        "max_tokens": _max_tokens(request, thinking, provider),
        "messages": encode_messages(request.conversation, provider, image_urls=image_urls),
    }
    system = encode_system(request.messages, provider)
    if system is not None:
        body["system"] = system
    body.update(sampling_fields(request, _SAMPLING))
    body.update(_tool_fields(request, output_tool, provider, thinking=thinking is not None))
    if thinking is not None:
        body["thinking"] = thinking
    markers = _count_cache_markers(body)
    if markers > MAX_CACHE_BREAKPOINTS:
        raise UnsupportedByProvider(
            provider,
            "cache_breakpoint",
            f"Anthropic takes at most {MAX_CACHE_BREAKPOINTS} cache breakpoints, got {markers}",
        )
    if stream:
        body["stream"] = True
    return body


def _thinking(request: ChatRequest, provider: str) -> dict[str, Any] | None:
    """The ``thinking`` field, after checking what thinking rules out."""
    reasoning = request.reasoning
    if reasoning is None:
        return None
    if reasoning.budget_tokens:
        budget = reasoning.budget_tokens
        if budget < MIN_THINKING_BUDGET:
            raise UnsupportedByProvider(
                provider,
                "reasoning",
                f"Anthropic's smallest thinking budget is {MIN_THINKING_BUDGET} tokens, "
                f"got {budget}",
            )
    elif reasoning.effort:
        if reasoning.effort not in EFFORT_BUDGETS:
            raise UnsupportedByProvider(
                provider, "reasoning", f"unknown effort {reasoning.effort!r}"
            )
        budget = EFFORT_BUDGETS[reasoning.effort]
    elif reasoning.include_thoughts:
        budget = EFFORT_BUDGETS["medium"]
    else:
        return None  # nothing asked: the model's default, no thinking
    if request.temperature is not None and request.temperature != 1:
        raise UnsupportedByProvider(
            provider, "temperature", "Anthropic takes no temperature but 1 with thinking"
        )
    if request.top_p is not None and not _THINKING_TOP_P_MIN <= request.top_p <= 1:
        raise UnsupportedByProvider(
            provider,
            "top_p",
            f"Anthropic takes top_p from {_THINKING_TOP_P_MIN} to 1 with thinking",
        )
    conversation = request.conversation
    if conversation and conversation[-1].role == "assistant":
        raise UnsupportedByProvider(
            provider,
            "reasoning",
            "Anthropic takes no pre-filled (assistant-last) answer with thinking",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _max_tokens(request: ChatRequest, thinking: dict[str, Any] | None, provider: str) -> int:
    if thinking is None:
        return request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
    budget: int = thinking["budget_tokens"]
    if request.max_tokens is None:
        return budget + DEFAULT_MAX_TOKENS
    if request.max_tokens <= budget:
        raise UnsupportedByProvider(
            provider,
            "max_tokens",
            f"Anthropic needs max_tokens above the thinking budget ({budget} tokens), "
            f"got {request.max_tokens}",
        )
    return request.max_tokens


def _tool_fields(
    request: ChatRequest, output_tool: OutputTool | None, provider: str, *, thinking: bool
) -> dict[str, Any]:
    """``tools`` and ``tool_choice``: the client's tools, plus the output tool for a schema."""
    tools = [_tool(tool, provider) for tool in request.tools]
    names = {tool.name for tool in request.tools}
    choice = request.tool_choice
    if choice not in ("", "auto", "none", "required") and choice not in names:
        raise UnsupportedByProvider(
            provider, "tool_choice", f"no declared tool is named {choice!r}"
        )
    native: dict[str, Any] | None
    if output_tool is not None:
        if OUTPUT_TOOL_NAME in names:
            raise UnsupportedByProvider(
                provider,
                "tools",
                f"a tool named {OUTPUT_TOOL_NAME!r} clashes with the structured-output tool",
            )
        if thinking:
            raise UnsupportedByProvider(
                provider,
                "output_schema",
                "structured output is a forced tool on Anthropic, which thinking rules out",
            )
        if choice == "required":
            raise UnsupportedByProvider(
                provider,
                "output_schema",
                "Anthropic cannot both force a tool call and force the structured-output tool",
            )
        tools.append(
            {
                "name": OUTPUT_TOOL_NAME,
                "description": "Give the answer as this tool's input, following its schema.",
                "input_schema": dict(output_tool.schema),
            }
        )
        if not request.tools or choice == "none":
            native = {"type": "tool", "name": OUTPUT_TOOL_NAME}
        elif choice in ("", "auto"):
            # A call to one of the client's tools, or the answer: one of the tools must be used.
            native = {"type": "any"}
        else:
            native = {"type": "tool", "name": choice}
    elif not tools:
        if choice in ("", "auto", "none"):
            return {}
        raise UnsupportedByProvider(provider, "tool_choice", f"{choice!r} but no tools declared")
    else:
        native = _native_choice(choice)
        if thinking and native is not None and native["type"] in ("any", "tool"):
            raise UnsupportedByProvider(
                provider,
                "tool_choice",
                "Anthropic does not let a request force a tool with thinking",
            )
    if request.tools and request.parallel_tool_calls is False:
        native = native or {"type": "auto"}
        if native["type"] != "none":  # no call at all: nothing to run in parallel
            native = {**native, "disable_parallel_tool_use": True}
    fields: dict[str, Any] = {"tools": tools}
    if native is not None:
        fields["tool_choice"] = native
    return fields


def _native_choice(choice: str) -> dict[str, Any] | None:
    match choice:
        case "":
            return None
        case "auto" | "none":
            return {"type": choice}
        case "required":
            return {"type": "any"}
        case _:
            return {"type": "tool", "name": choice}


def _tool(tool: Tool, provider: str) -> dict[str, Any]:
    # A schema without "type" describes an object here (tool arguments always are one), and
    # Anthropic wants the type spelt out.
    schema = {"type": "object", **tool.parameters}
    if schema["type"] != "object":
        raise UnsupportedByProvider(
            provider, "tools", f"tool {tool.name!r}: Anthropic takes only an object input_schema"
        )
    declared: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declared["description"] = tool.description
    declared["input_schema"] = schema
    return declared


def _count_cache_markers(body: Mapping[str, Any]) -> int:
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks.extend(message["content"])
    return sum(1 for block in blocks if "cache_control" in block)
