"""The Anthropic Messages wire format, sans-IO: request bodies, answers and stream events.

Nothing here does I/O. :func:`messages_body` builds a request body, :func:`parse_message` reads a
non-streamed answer and :class:`MessageStreamReader` turns the named events of a streamed answer
into our stream events. The same format serves the direct API and Claude on Vertex AI; only the
transport differs (and Vertex takes no image URLs). The module is longer than most because the
request and the answer of one format belong together; the three parts are marked below.

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
  else :data:`EFFORT_BUDGETS` for the effort (minimal 1024, low 4096, medium 8192, high 16384;
  medium when only ``include_thoughts`` is set). Without ``max_tokens`` the request asks for the
  budget plus :data:`DEFAULT_MAX_TOKENS`. Anthropic returns thinking whenever it thinks, so
  ``include_thoughts`` needs nothing more.
- thinking sent back: ``thinking {type, thinking, signature}`` and ``redacted_thinking {type,
  data}`` blocks, verbatim, first in their assistant turn; only those this endpoint made (a
  signature is valid only where it was made) and only signed ones (the API refuses others).
- cache_breakpoint: ``cache_control: {"type": "ephemeral"}`` on the message's last block (not a
  thinking block, which cannot carry one); on a system message, the system prompt becomes text
  blocks, one per system message, and the marker goes on that message's block.
- usage: prompt tokens are ``input_tokens`` plus ``cache_creation_input_tokens`` (the cache
  write) and ``cache_read_input_tokens``; ``output_tokens_details.thinking_tokens`` where sent.

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

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError
from delos.runtime.providers._http import decode_event_object
from delos.runtime.providers._parts import ToolCallAssembler, image_bytes
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    DocumentPart,
    ImagePart,
    StreamEvent,
    StreamFinished,
    TextDelta,
    TextPart,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGETS",
    "IMAGE_MEDIA_TYPES",
    "MAX_CACHE_BREAKPOINTS",
    "MIN_THINKING_BUDGET",
    "OUTPUT_TOOL_NAME",
    "MessageStreamReader",
    "OutputTool",
    "error_message",
    "messages_body",
    "parse_message",
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
EFFORT_BUDGETS: Final = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 16384}
#: Blocks that may carry ``cache_control`` in one request.
MAX_CACHE_BREAKPOINTS: Final = 4
#: The image types the API reads.
IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Smallest ``top_p`` the API accepts with thinking.
_THINKING_TOP_P_MIN: Final = 0.95

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}
_CACHE_WRITE: Final = "cache_creation_input_tokens"
_CACHE_READ: Final = "cache_read_input_tokens"
_INPUT_FIELDS: Final = ("input_tokens", _CACHE_WRITE, _CACHE_READ)
_THINKING_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}


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


# -- request bodies -------------------------------------------------------------------------------


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
        "messages": _messages(request.conversation, provider, image_urls=image_urls),
    }
    system = _system(request.messages, provider)
    if system is not None:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
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


def _system(messages: Sequence[ChatMessage], provider: str) -> str | list[dict[str, Any]] | None:
    system = [m for m in messages if m.role == "system"]
    if not system:
        return None
    for message in system:
        if any(not isinstance(part, TextPart) for part in message.parts):
            raise UnsupportedByProvider(
                provider, "system", "Anthropic's system prompt takes text only"
            )
    if not any(m.cache_breakpoint for m in system):
        return "\n\n".join(m.text for m in system)
    blocks: list[dict[str, Any]] = []
    for message in system:
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        if message.cache_breakpoint and blocks:
            blocks[-1]["cache_control"] = _ephemeral()
    return blocks


@dataclass
class _Turn:
    """One Anthropic message: consecutive messages of one role (tool messages are user turns)."""

    role: str
    messages: list[ChatMessage] = field(default_factory=list)

    def encode(self, provider: str, *, image_urls: bool) -> dict[str, Any]:
        if all(_plain(m) for m in self.messages):
            return {"role": self.role, "content": "\n\n".join(m.content for m in self.messages)}
        results: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for message in self.messages:
            blocks = _message_blocks(message, provider, image_urls=image_urls)
            (results if message.role == "tool" else others).extend(blocks)
        # The API wants a turn that answers tool calls to open with every tool_result.
        return {"role": self.role, "content": results + others}


def _plain(message: ChatMessage) -> bool:
    return (
        message.role != "tool"
        and not message.parts
        and not message.tool_calls
        and not message.cache_breakpoint
    )


def _messages(
    conversation: Sequence[ChatMessage], provider: str, *, image_urls: bool
) -> list[dict[str, Any]]:
    turns: list[_Turn] = []
    for message in conversation:
        role = "assistant" if message.role == "assistant" else "user"
        if not turns or turns[-1].role != role:
            turns.append(_Turn(role))
        turns[-1].messages.append(message)
    return [turn.encode(provider, image_urls=image_urls) for turn in turns]


def _message_blocks(
    message: ChatMessage, provider: str, *, image_urls: bool
) -> list[dict[str, Any]]:
    if message.role == "assistant":
        blocks = _assistant_blocks(message, provider)
    elif message.role == "tool":
        blocks = [_tool_result(message, provider, image_urls=image_urls)]
    else:
        blocks = _content_blocks(message.all_parts, provider, image_urls=image_urls)
    if message.cache_breakpoint:
        # Thinking blocks cannot carry cache_control; the marker goes on the last block that can.
        markable = [b for b in blocks if b["type"] not in _THINKING_BLOCKS]
        if not markable:
            raise UnsupportedByProvider(
                provider, "cache_breakpoint", "the message has no block that can carry the marker"
            )
        markable[-1]["cache_control"] = _ephemeral()
    return blocks


def _content_blocks(
    parts: Iterable[object], provider: str, *, image_urls: bool
) -> list[dict[str, Any]]:
    """User content: text, images and documents."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:  # the API refuses empty text blocks
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part, provider, image_urls=image_urls))
        elif isinstance(part, DocumentPart):
            blocks.append(_document(part, provider))
        else:
            raise UnsupportedByProvider(
                provider, "thinking", "thinking belongs to assistant messages only"
            )
    return blocks


def _assistant_blocks(message: ChatMessage, provider: str) -> list[dict[str, Any]]:
    """Thinking first (the API wants a tool-calling turn to open with it), text, tool calls."""
    thinking: list[dict[str, Any]] = []
    text: list[dict[str, Any]] = []
    for part in message.all_parts:
        if isinstance(part, Thinking):
            block = _thinking_block(part, provider)
            if block is not None:
                thinking.append(block)
        elif isinstance(part, TextPart):
            if part.text:
                text.append({"type": "text", "text": part.text})
        else:
            setting = "images" if isinstance(part, ImagePart) else "documents"
            raise UnsupportedByProvider(
                provider, setting, "Anthropic takes images and documents in user turns only"
            )
    calls = [_tool_use(call, provider) for call in message.tool_calls]
    return thinking + text + calls


def _thinking_block(part: Thinking, provider: str) -> dict[str, Any] | None:
    """The block that sends ``part`` back verbatim; None for thinking made elsewhere (its
    signature is valid only there) or never signed (the API refuses an unsigned block)."""
    if part.provider != provider:
        return None
    if part.redacted_data:
        return {"type": "redacted_thinking", "data": part.redacted_data}
    if not part.signature:
        return None
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _tool_use(call: ToolCall, provider: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments_json) if call.arguments_json else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise UnsupportedByProvider(
            provider, "tool_calls", f"arguments of call {call.id!r} are not a JSON object"
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool_result(message: ChatMessage, provider: str, *, image_urls: bool) -> dict[str, Any]:
    if not message.tool_call_id:
        raise UnsupportedByProvider(
            provider, "tool_call_id", "a tool message must name the call it answers"
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.parts:
        block["content"] = _content_blocks(message.all_parts, provider, image_urls=image_urls)
    elif message.content:
        block["content"] = message.content
    return block


def _image(part: ImagePart, provider: str, *, image_urls: bool) -> dict[str, Any]:
    found = image_bytes(part)
    if found is not None:
        media_type, data = found
        if media_type not in IMAGE_MEDIA_TYPES:
            raise UnsupportedByProvider(
                provider,
                "images",
                f"Anthropic reads {', '.join(sorted(IMAGE_MEDIA_TYPES))}, not {media_type!r}",
            )
        source = {
            "type": "base64",
            "media_type": media_type,
            "data": base64.b64encode(data).decode("ascii"),
        }
        return {"type": "image", "source": source}
    if part.url.startswith("data:"):
        raise UnsupportedByProvider(provider, "images", "a data: URL that is not base64")
    if not image_urls:
        raise UnsupportedByProvider(
            provider,
            "image url",
            "Claude on Vertex AI needs image bytes; set DELOS_RUNTIME_FETCH_IMAGE_URLS=true "
            "to have the gateway fetch image URLs",
        )
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _document(part: DocumentPart, provider: str) -> dict[str, Any]:
    if part.media_type == "application/pdf":
        source = {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(part.data).decode("ascii"),
        }
    elif part.media_type == "text/plain":
        text = part.data.decode("utf-8", errors="replace")
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        raise UnsupportedByProvider(
            provider,
            "documents",
            f"Anthropic reads PDF and plain-text documents, not {part.media_type!r}",
        )
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.name:
        block["title"] = part.name
    return block


def _count_cache_markers(body: Mapping[str, Any]) -> int:
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks.extend(message["content"])
    return sum(1 for block in blocks if "cache_control" in block)


# -- answers --------------------------------------------------------------------------------------


def error_message(payload: Any) -> str | None:
    """``type: message`` of an Anthropic error envelope, or of a Google one (Vertex platform)."""
    error = payload.get("error")
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return None
    kind = error.get("type") or error.get("status")
    message = error.get("message")
    if kind and message:
        return f"{kind}: {message}"
    return str(message or kind) if (message or kind) else None


def _finish_reason(stop_reason: str, *, forced_tool_used: bool) -> str:
    # The forced output tool is our mechanism, not a tool call the client asked for: its use is a
    # normal end of the answer.
    if stop_reason == "tool_use" and forced_tool_used:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, stop_reason.lower())


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


def _int(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) else None


def _reasoning_tokens(usage: Mapping[str, Any]) -> int | None:
    details = usage.get("output_tokens_details")
    return _int(details, "thinking_tokens") if isinstance(details, dict) else None


def _usage(
    counts: Mapping[str, int], completion: int | None, reasoning: int | None
) -> Usage | None:
    """Our usage from Anthropic's counts; None without input or output tokens."""
    base = counts.get("input_tokens")
    if base is None or completion is None:
        return None
    written = counts.get(_CACHE_WRITE, 0)
    read = counts.get(_CACHE_READ, 0)
    return Usage(
        base + written + read,
        completion,
        cache_read_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=reasoning or 0,
    )


def _arguments_json(tool_input: Any) -> str:
    """A non-streamed call's ``input`` object as compact JSON text (the answer carries it parsed;
    a stream carries the text itself)."""
    return json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))


def parse_message(
    provider: str, payload: Any, *, model: str, output_tool: OutputTool | None
) -> Completion:
    """A non-streamed Message as a :class:`Completion`, tool calls and thinking included.

    Raises:
        UpstreamProtocolError: the answer is an error envelope or has an unexpected shape.
    """
    try:
        if payload.get("type") == "error":
            raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
        texts: list[str] = []
        calls: list[ToolCall] = []
        thinking: list[Thinking] = []
        answer: str | None = None
        for block in payload["content"]:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block["text"]))
            elif kind == "thinking":
                thought = str(block.get("thinking") or "")
                signature = str(block.get("signature") or "")
                thinking.append(Thinking(thought, signature, provider=provider))
            elif kind == "redacted_thinking":
                thinking.append(Thinking(redacted_data=str(block["data"]), provider=provider))
            elif kind == "tool_use":
                if output_tool is not None and block.get("name") == OUTPUT_TOOL_NAME:
                    if answer is None:
                        answer = output_tool.answer(block.get("input"))
                    continue
                arguments = _arguments_json(block.get("input") or {})
                calls.append(ToolCall(str(block["id"]), str(block["name"]), arguments))
        usage = None
        usage_payload = payload.get("usage")
        if isinstance(usage_payload, dict):
            counts = {k: v for k in _INPUT_FIELDS if (v := _int(usage_payload, k)) is not None}
            completion = _int(usage_payload, "output_tokens")
            usage = _usage(counts, completion, _reasoning_tokens(usage_payload))
        stop_reason = str(payload.get("stop_reason") or "end_turn")
        forced_tool_used = answer is not None and not calls
        return Completion(
            content=answer if answer is not None else "".join(texts),
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(stop_reason, forced_tool_used=forced_tool_used),
            usage=usage,
            tool_calls=tuple(calls),
            thinking=tuple(thinking),
        )
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


# -- streams --------------------------------------------------------------------------------------


@dataclass
class _ThinkingBlock:
    texts: list[str] = field(default_factory=list)
    signature: str = ""
    redacted_data: str = ""


class MessageStreamReader:
    """Interprets a Messages stream event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. Events are told apart by their SSE ``event:``
    name, as the official SDKs do; unnamed and unknown events are ignored (the API documents that
    new event types may appear). ``message_stop`` ends the stream: after it, :attr:`finished` is
    True and the last event returned was the :class:`StreamFinished`.

    Content blocks are told apart by their ``content_block_start``: text gives
    :class:`TextDelta`, ``thinking`` gives :class:`ThinkingDelta` (its ``signature_delta`` and
    any ``redacted_thinking`` block go into the finish), ``tool_use`` gives one
    :class:`ToolCallDelta` with the id and name, then one per non-empty ``input_json_delta``
    fragment, byte for byte; calls are numbered 0, 1, … whatever their block index.

    Usage: input tokens (cache included) come with ``message_start``; output tokens only with
    ``message_delta``, whose counts are cumulative. ``message_start`` carries a placeholder
    output count, so a stream whose ``message_delta`` has no usage reports ``usage=None``.

    With an :class:`OutputTool`, the forced tool's ``input_json_delta`` fragments are the text.
    Text blocks are then held back and sent only if the model never called the tool (a refusal,
    say), as :func:`parse_message` does; a wrapped schema's JSON is sent whole at the end, once
    it can be unwrapped.

    Raises (from :meth:`feed`):
        UpstreamProtocolError: an ``error`` event, an event that is not JSON, or a
            ``message_stop`` before any stop reason.
    """

    def __init__(self, provider: str, *, model: str, output_tool: OutputTool | None) -> None:
        self._provider = provider
        self._output_tool = output_tool
        self.model = model
        self.finished = False
        self._stop_reason: str | None = None
        self._input_counts: dict[str, int] = {}
        self._completion_tokens: int | None = None
        self._reasoning_tokens: int | None = None
        self._output_blocks: set[int] = set()
        self._held_text: list[str] = []
        self._held_json: list[str] = []
        self._calls = ToolCallAssembler()
        self._thinking: dict[int, _ThinkingBlock] = {}  # in block order

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        if self.finished or event.event is None or event.event == "ping":
            return []
        name = event.event
        if name == "error":
            data = decode_event_object(self._provider, event.data)
            raise UpstreamProtocolError(self._provider, self._describe_error(data))
        handlers = {
            "message_start": self._on_message_start,
            "content_block_start": self._on_content_block_start,
            "content_block_delta": self._on_content_block_delta,
            "message_delta": self._on_message_delta,
            "message_stop": self._on_message_stop,
        }
        handler = handlers.get(name)
        if handler is None:
            return []  # content_block_stop, and event types newer than this reader
        return handler(decode_event_object(self._provider, event.data))

    # -- events -----------------------------------------------------------------------------------

    def _on_message_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        message = data.get("message")
        if isinstance(message, dict):
            self.model = str(message.get("model") or self.model)
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._absorb_input_counts(usage)
        return []

    def _on_content_block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return []
        index = _index(data)
        match block.get("type"):
            case "tool_use":
                name = str(block.get("name") or "")
                if self._output_tool is not None and name == OUTPUT_TOOL_NAME:
                    self._output_blocks.add(index)
                    return []
                return [self._calls.start(index, str(block.get("id") or ""), name)]
            case "text" if block.get("text"):
                return self._text(str(block["text"]))
            case "thinking":
                thought = self._thinking_at(index)
                thought.signature = str(block.get("signature") or "")
                return self._thought(thought, str(block.get("thinking") or ""))
            case "redacted_thinking":
                self._thinking_at(index).redacted_data = str(block.get("data") or "")
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return []
        index = _index(data)
        match delta.get("type"):
            case "text_delta":
                return self._text(str(delta.get("text") or ""))
            case "thinking_delta":
                return self._thought(self._thinking_at(index), str(delta.get("thinking") or ""))
            case "signature_delta":
                self._thinking_at(index).signature = str(delta.get("signature") or "")
            case "input_json_delta":
                return self._arguments(index, str(delta.get("partial_json") or ""))
        return []  # citations and newer delta types carry no answer text

    def _on_message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._stop_reason = str(delta["stop_reason"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            if (output := _int(usage, "output_tokens")) is not None:
                self._completion_tokens = output
            if (reasoning := _reasoning_tokens(usage)) is not None:
                self._reasoning_tokens = reasoning
            # Newer servers repeat the cumulative input counts here; they are the final word.
            self._absorb_input_counts(usage)
        return []

    def _on_message_stop(self, data: dict[str, Any]) -> list[StreamEvent]:
        if self._stop_reason is None:
            raise UpstreamProtocolError(self._provider, "stream ended without a stop reason")
        self.finished = True
        events: list[StreamEvent] = []
        calls = self._calls.calls()
        forced_tool_used = bool(self._output_blocks) and not calls
        if self._output_tool is not None:
            if self._held_json:
                events.append(TextDelta(self._unwrap("".join(self._held_json))))
            elif not self._output_blocks and self._held_text:
                events.append(TextDelta("".join(self._held_text)))
        usage = _usage(self._input_counts, self._completion_tokens, self._reasoning_tokens)
        finish = _finish_reason(self._stop_reason, forced_tool_used=forced_tool_used)
        thinking = tuple(
            Thinking("".join(t.texts), t.signature, t.redacted_data, provider=self._provider)
            for t in self._thinking.values()
        )
        events.append(StreamFinished(finish, usage, self.model, calls, thinking))
        return events

    # -- helpers ----------------------------------------------------------------------------------

    def _absorb_input_counts(self, usage: Mapping[str, Any]) -> None:
        for key in _INPUT_FIELDS:
            if (value := _int(usage, key)) is not None:
                self._input_counts[key] = value

    def _thinking_at(self, index: int) -> _ThinkingBlock:
        return self._thinking.setdefault(index, _ThinkingBlock())

    @staticmethod
    def _thought(block: _ThinkingBlock, text: str) -> list[StreamEvent]:
        if not text:
            return []
        block.texts.append(text)
        return [ThinkingDelta(text)]

    def _arguments(self, index: int, fragment: str) -> list[StreamEvent]:
        if index in self._output_blocks:
            assert self._output_tool is not None
            if self._output_tool.wrapped:
                self._held_json.append(fragment)
                return []
            return [TextDelta(fragment)] if fragment else []
        if not fragment or not self._calls.known(index):
            return []  # the empty first fragment adds nothing to the arguments
        return [self._calls.arguments(index, fragment)]

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        if self._output_tool is not None:
            self._held_text.append(text)
            return []
        return [TextDelta(text)]

    def _unwrap(self, text: str) -> str:
        assert self._output_tool is not None
        try:
            value = json.loads(text)
        except ValueError:
            return text  # left for schema validation to reject, like any malformed answer
        return self._output_tool.answer(value)

    @staticmethod
    def _describe_error(data: dict[str, Any]) -> str:
        error = data.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = f"{kind or 'unknown_error'}: {message or 'no message'}"
        if kind == "overloaded_error":
            return f"overloaded, error in the stream ({detail})"
        return f"error in the stream ({detail})"
