"""Bedrock's Converse request body, sans-IO: :func:`converse_body` and what it refuses.

Nothing here does I/O. :func:`converse_body` builds a Converse / ConverseStream request body and
:func:`document_name` the name a document is sent under; :mod:`._bedrock_answer` reads the
answers, stream events and errors.

Native forms: tools are ``toolConfig.tools[].toolSpec`` and ``toolChoice`` ``auto`` / ``any`` /
``tool``; calls are assistant ``toolUse`` blocks, results user ``toolResult`` blocks (text, or
images and documents); images and documents go as bytes (base64 in the JSON); thinking is a
``reasoningContent`` block (``reasoningText`` with its signature, or ``redactedContent``) sent
back verbatim; Claude's thinking budget goes in ``additionalModelRequestFields.thinking``; a
cache breakpoint is a ``cachePoint`` block after the message's blocks (in ``system`` for a system
message).

Structured output uses the forced-tool route: one tool named ``output`` whose input schema is the
requested schema, and ``toolChoice`` naming it. The answer is the tool's input, as JSON text.

Refused (:class:`UnsupportedByProvider`, before anything is sent), for want of an exact form:
``tool_choice`` "none" once the history holds tool calls (Converse has no "none", and such a
history needs the tools declared); a history with tool calls and no tools declared;
``parallel_tool_calls`` false; ``output_schema`` together with tools; an image given by URL only;
an image or document in an assistant turn; a document in a message without text; reasoning on a
model other than Claude 3.7 and later, below Claude's 1,024-token minimum, not below
``max_tokens``, with a forced tool, a temperature other than 1 or a top_p below 0.95; a cache
breakpoint on a model without Bedrock prompt caching (only Claude and Nova have it); an image
not png, jpeg, gif or webp; a document not PDF or plain text; a non-text system part; a tool call
whose id breaks Bedrock's pattern or whose arguments are not a JSON object.

A reasoning effort becomes a budget (:data:`EFFORT_BUDGETS`); ``include_thoughts`` needs no
setting, as Claude on Bedrock returns its thinking (needed back with its signature) either way.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.providers._parts import (
    EFFORT_BUDGETS,
    SamplingNames,
    call_arguments,
    image_bytes,
    sampling_fields,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    DocumentPart,
    ImagePart,
    TextPart,
    Thinking,
    ToolCall,
)

__all__ = ["EFFORT_BUDGETS", "OUTPUT_TOOL", "converse_body", "document_name"]

#: Name of the tool that carries a structured answer.
OUTPUT_TOOL: Final = "output"
#: Claude's smallest thinking budget (tokens).
_MIN_THINKING_BUDGET: Final = 1024
_SAMPLING: Final = SamplingNames(top_p="topP", stop="stopSequences", max_tokens="maxTokens")
_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOCUMENT_FORMATS: Final = {"application/pdf": "pdf", "text/plain": "txt"}
#: Bedrock's ToolUseId pattern (at most 64 characters).
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
#: What a document name may not hold: Bedrock allows alphanumerics, white space (one in a row),
#: hyphens, parentheses and square brackets.
_NAME_FORBIDDEN = re.compile(r"[^A-Za-z0-9\s()\[\]-]+")
_MAX_DOCUMENT_NAME: Final = 200
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
#: Claude generations with extended thinking: 3.7, and the 4 family on (named claude-<kind>-4…).
_THINKING_CLAUDE = re.compile(r"anthropic\.claude-(3-7-|(sonnet|opus|haiku)-[4-9])")


def converse_body(provider: str, request: ChatRequest) -> dict[str, Any]:
    """The Converse request body for ``request`` (the model id goes in the URL, not here).

    Consecutive messages of one role are merged into one message (tool results are the user's):
    Converse requires user and assistant turns to alternate.

    Raises:
        UnsupportedByProvider: the request asks for something Converse cannot express exactly
            (the module docstring lists what).
    """
    messages: list[dict[str, Any]] = []
    for message in request.conversation:
        role = "user" if message.role == "tool" else message.role
        blocks = _message_blocks(provider, message)
        if message.cache_breakpoint:
            blocks.append(_cache_point(provider, request.model))
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    for turn in messages:
        content = turn["content"]
        if any("document" in b for b in content) and not any("text" in b for b in content):
            raise UnsupportedByProvider(
                provider, "documents", "Converse needs a text block in a message with a document"
            )
    body: dict[str, Any] = {"messages": messages}
    system = _system_blocks(provider, request)
    if system:
        body["system"] = system
    config = sampling_fields(request, _SAMPLING)
    if config:
        body["inferenceConfig"] = config
    tool_config = _tool_config(provider, request)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    thinking = _thinking(provider, request)
    if thinking is not None:
        body["additionalModelRequestFields"] = {"thinking": thinking}
    return body


def document_name(part: DocumentPart) -> str:
    """The name Bedrock is told for ``part``: its own without a file extension (the format says
    it), every run of characters Bedrock refuses (and of white space) made one space; when
    nothing is left, one derived from the bytes, so the same document always gets the same name.
    """
    name = _EXTENSION.sub("", part.name)
    name = " ".join(_NAME_FORBIDDEN.sub(" ", name).split())[:_MAX_DOCUMENT_NAME].strip()
    return name or f"document-{hashlib.sha256(part.data).hexdigest()[:12]}"


def _cache_point(provider: str, model: str) -> dict[str, Any]:
    """A ``cachePoint`` block. Raises :class:`UnsupportedByProvider` for a model that has no
    prompt caching on Bedrock: it would refuse the block, and dropping it would be silent."""
    if "anthropic.claude" not in model and "amazon.nova" not in model:
        raise UnsupportedByProvider(
            provider, "cache_breakpoint", f"{model} has no prompt caching on Bedrock"
        )
    return {"cachePoint": {"type": "default"}}


def _system_blocks(provider: str, request: ChatRequest) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role != "system":
            continue
        if any(not isinstance(part, TextPart) for part in message.parts):
            raise UnsupportedByProvider(
                provider, "system parts", "Converse's system prompt takes text only"
            )
        # System blocks must not be blank; an empty system message says nothing anyway.
        if message.text:
            blocks.append({"text": message.text})
        if message.cache_breakpoint and blocks:
            blocks.append(_cache_point(provider, request.model))
    return blocks


def _message_blocks(provider: str, message: ChatMessage) -> list[dict[str, Any]]:
    """The content blocks of one message (cache point aside)."""
    if message.role == "tool":
        if not _TOOL_USE_ID.fullmatch(message.tool_call_id):
            raise UnsupportedByProvider(
                provider, "tool_call_id", "Bedrock's toolUseId allows [a-zA-Z0-9_.:-], 1 to 64"
            )
        content = [_part_block(provider, part) for part in _own_parts(provider, message)]
        return [{"toolResult": {"toolUseId": message.tool_call_id, "content": content}}]
    blocks: list[dict[str, Any]] = []
    if message.role == "assistant":
        # Claude wants the thinking first, as it produced it.
        blocks += [_reasoning_block(p) for p in message.parts if _ours(provider, p)]
    for part in _own_parts(provider, message):
        if message.role == "assistant" and isinstance(part, ImagePart | DocumentPart):
            raise UnsupportedByProvider(
                provider, "assistant parts", "Converse takes images and documents from the user"
            )
        blocks.append(_part_block(provider, part))
    for call in message.tool_calls:
        blocks.append({"toolUse": _tool_use(provider, call)})
    if not blocks:
        # Bedrock refuses a blank text block, and says so better than we could.
        blocks.append({"text": message.content})
    return blocks


def _own_parts(provider: str, message: ChatMessage) -> list[TextPart | ImagePart | DocumentPart]:
    """The message's parts but thinking (placed apart, and only where it belongs)."""
    parts: list[TextPart | ImagePart | DocumentPart] = []
    for part in message.all_parts:
        if not isinstance(part, Thinking):
            parts.append(part)
        elif _ours(provider, part) and message.role != "assistant":
            raise UnsupportedByProvider(provider, "thinking", "only an assistant turn thinks")
    return parts


def _ours(provider: str, part: object) -> bool:
    # Thinking is valid only on the endpoint that made it: others' is dropped (as the router does).
    return isinstance(part, Thinking) and part.provider == provider


def _reasoning_block(part: object) -> dict[str, Any]:
    assert isinstance(part, Thinking)
    if part.redacted_data:
        # The base64 text as Bedrock's JSON gave it: a blob goes back as the same text.
        return {"reasoningContent": {"redactedContent": part.redacted_data}}
    text: dict[str, str] = {"text": part.text}
    if part.signature:
        text["signature"] = part.signature
    return {"reasoningContent": {"reasoningText": text}}


def _part_block(provider: str, part: TextPart | ImagePart | DocumentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        found = image_bytes(part)
        if found is None:
            raise UnsupportedByProvider(
                provider,
                "image url",
                "Converse needs image bytes; set DELOS_RUNTIME_FETCH_IMAGE_URLS=true to let the "
                "gateway fetch image URLs",
            )
        media_type, data = found
        image_format = _IMAGE_FORMATS.get(media_type)
        if image_format is None:
            raise UnsupportedByProvider(
                provider, "images", f"Converse takes png, jpeg, gif or webp, not {media_type!r}"
            )
        return {"image": {"format": image_format, "source": {"bytes": _base64(data)}}}
    document_format = _DOCUMENT_FORMATS.get(part.media_type)
    if document_format is None:
        raise UnsupportedByProvider(
            provider, "documents", f"no Converse document format for {part.media_type!r}"
        )
    return {
        "document": {
            "format": document_format,
            "name": document_name(part),
            "source": {"bytes": _base64(part.data)},
        }
    }


def _tool_use(provider: str, call: ToolCall) -> dict[str, Any]:
    arguments = call_arguments(provider, call)
    if not _TOOL_USE_ID.fullmatch(call.id):
        raise UnsupportedByProvider(
            provider, "tool_calls", "Bedrock's toolUseId allows [a-zA-Z0-9_.:-], 1 to 64"
        )
    return {"toolUseId": call.id, "name": call.name, "input": arguments}


def _tool_config(provider: str, request: ChatRequest) -> dict[str, Any] | None:
    history_calls = any(m.tool_calls or m.role == "tool" for m in request.conversation)
    if request.output_schema is not None:
        if request.tools:
            raise UnsupportedByProvider(
                provider,
                "output_schema",
                "Bedrock's structured output is a forced tool: it cannot go with other tools",
            )
        output = {
            "name": OUTPUT_TOOL,
            "description": "Answer with a value that matches this schema.",
            "inputSchema": {"json": dict(request.output_schema)},
        }
        return {"tools": [{"toolSpec": output}], "toolChoice": {"tool": {"name": OUTPUT_TOOL}}}
    if not request.tools or request.tool_choice == "none":
        if history_calls and request.tools:
            raise UnsupportedByProvider(
                provider,
                "tool_choice",
                "Converse has no 'none' choice, and a history with tool calls needs the tools "
                "declared",
            )
        if history_calls:
            raise UnsupportedByProvider(
                provider, "tools", "Converse needs the tools declared when the history has calls"
            )
        return None  # "none" without tool calls in the history: no tools is exactly that
    if request.parallel_tool_calls is False:
        raise UnsupportedByProvider(
            provider, "parallel_tool_calls", "Converse cannot forbid parallel tool calls"
        )
    tools = []
    for tool in request.tools:
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:  # a NonEmptyString when present
            spec["description"] = tool.description
        spec["inputSchema"] = {"json": dict(tool.parameters)}
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice:
        config["toolChoice"] = {"tool": {"name": choice}}
    return config


def _thinking(provider: str, request: ChatRequest) -> dict[str, Any] | None:
    """Claude's ``thinking`` setting for ``request.reasoning``; None when it asks none."""
    reasoning = request.reasoning
    if reasoning is None:
        return None

    def refuse(setting: str, why: str) -> UnsupportedByProvider:
        return UnsupportedByProvider(provider, setting, why)

    if not _THINKING_CLAUDE.search(request.model):
        raise refuse(
            "reasoning",
            f"{request.model} takes no reasoning setting through Converse "
            "(Claude 3.7 and later take a thinking budget)",
        )
    budget = reasoning.budget_tokens or EFFORT_BUDGETS[reasoning.effort or "medium"]
    if budget < _MIN_THINKING_BUDGET:
        raise refuse("reasoning", f"Claude's thinking budget is at least {_MIN_THINKING_BUDGET}")
    if request.max_tokens is not None and budget >= request.max_tokens:
        raise refuse("reasoning", "Claude's thinking budget must be below max_tokens")
    if request.output_schema is not None or request.tool_choice not in ("", "auto", "none"):
        raise refuse("reasoning", "Claude cannot think when a tool call is forced")
    if request.temperature is not None and request.temperature != 1:
        raise refuse("temperature", "Claude takes no temperature but 1 while thinking")
    if request.top_p is not None and not 0.95 <= request.top_p <= 1:
        raise refuse("top_p", "Claude takes a top_p from 0.95 to 1 while thinking")
    return {"type": "enabled", "budget_tokens": budget}


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
