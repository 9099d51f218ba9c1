"""Bedrock's Converse wire format, sans I/O: request bodies, answers, stream events and errors.

- :func:`converse_body` builds a Converse / ConverseStream request body;
- :func:`parse_converse` reads a Converse answer into a :class:`Completion`;
- :class:`ConverseStreamReader` turns decoded event-stream messages into stream events and
  decides when a stream is complete;
- :func:`error_from_response` maps an HTTP error (``x-amzn-ErrorType`` and the status) to ours.

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
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import (
    ProviderError,
    UnsupportedByProvider,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.providers._http import clip_detail, error_from_status, parse_retry_after
from delos.runtime.providers._parts import EFFORT_BUDGETS, ToolCallAssembler, image_bytes
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
    ToolCall,
    Usage,
)
from delos.runtime.wire import EventStreamMessage

__all__ = [
    "EFFORT_BUDGETS",
    "OUTPUT_TOOL",
    "ConverseStreamReader",
    "converse_body",
    "document_name",
    "error_from_response",
    "finish_reason",
    "parse_converse",
    "parse_usage",
]

#: Name of the tool that carries a structured answer.
OUTPUT_TOOL: Final = "output"
#: Claude's thinking budget (tokens) for each reasoning effort; "" (unset) thinks as "medium".
#: Claude's smallest thinking budget (tokens).
_MIN_THINKING_BUDGET: Final = 1024
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

_STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    # The answer was cut because prompt and answer filled the context window.
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}


# -- request ---------------------------------------------------------------------------------------


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
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
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
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise UnsupportedByProvider(
            provider, "tool_calls", f"the arguments of call {call.id!r} are not a JSON object"
        )
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


# -- answers ---------------------------------------------------------------------------------------


def finish_reason(stop_reason: str, *, structured: bool) -> str:
    """Our finish reason for a Converse ``stopReason``.

    With structured output the forced tool call *is* the answer, so ``tool_use`` means the
    answer is complete: ``stop``, as for every other provider's structured output.
    """
    if structured and stop_reason == "tool_use":
        return "stop"
    return _STOP_REASONS.get(stop_reason, stop_reason.lower())


def parse_usage(payload: Any) -> Usage | None:
    """``usage``: ``inputTokens`` (the uncached input), ``outputTokens``, and the cache reads and
    writes, which Bedrock counts apart and we count in the prompt. None when the input or output
    count is missing."""
    if not isinstance(payload, Mapping):
        return None
    uncached, completion = payload.get("inputTokens"), payload.get("outputTokens")
    if not isinstance(uncached, int) or not isinstance(completion, int):
        return None
    read = payload.get("cacheReadInputTokens")
    written = payload.get("cacheWriteInputTokens")
    read = read if isinstance(read, int) else 0
    written = written if isinstance(written, int) else 0
    return Usage(
        uncached + read + written, completion, cache_read_tokens=read, cache_write_tokens=written
    )


def _arguments_text(value: Any) -> str:
    # Converse gives a call's input as a JSON value: compact, as Bedrock writes it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_converse(provider: str, payload: Any, request: ChatRequest) -> Completion:
    """A Converse answer as a :class:`Completion`: text blocks joined, tool calls, thinking.

    For structured output the content is the ``output`` tool's input as JSON text.

    Raises:
        UpstreamProtocolError: the answer lacks ``output.message.content`` or ``stopReason``,
            or a block has an unexpected shape.
    """
    structured = request.output_schema is not None
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[Thinking] = []
    tool_input: Any = None
    try:
        blocks = payload["output"]["message"]["content"]
        stop_reason = payload["stopReason"]
        if not isinstance(blocks, list) or not isinstance(stop_reason, str):
            raise TypeError
        for block in blocks:
            if "text" in block:
                texts.append(str(block["text"]))
            elif "toolUse" in block:
                tool = block["toolUse"]
                if structured:
                    if tool_input is None and tool.get("name") == OUTPUT_TOOL:
                        tool_input = tool.get("input")
                    continue
                name, call_id = tool["name"], tool["toolUseId"]
                if not isinstance(name, str) or not isinstance(call_id, str):
                    raise TypeError
                calls.append(ToolCall(call_id, name, _arguments_text(tool.get("input", {}))))
            elif "reasoningContent" in block:
                thinking.append(_thinking_of(provider, block["reasoningContent"]))
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None
    content = _arguments_text(tool_input) if tool_input is not None else "".join(texts)
    return Completion(
        content=content,
        model=request.model,
        finish_reason=finish_reason(stop_reason, structured=structured),
        usage=parse_usage(payload.get("usage")),
        tool_calls=tuple(calls),
        thinking=tuple(thinking),
    )


def _thinking_of(provider: str, block: Any) -> Thinking:
    """A ``reasoningContent`` block. Raises TypeError or KeyError for a malformed one."""
    if "redactedContent" in block:
        data = block["redactedContent"]
        if not isinstance(data, str):
            raise TypeError
        return Thinking(redacted_data=data, provider=provider)
    reasoning = block["reasoningText"]
    text, signature = reasoning.get("text", ""), reasoning.get("signature", "")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise TypeError
    return Thinking(text, signature, provider=provider)


@dataclass
class _ThinkingBlock:
    texts: list[str] = field(default_factory=list)
    signature: str = ""
    redacted: list[str] = field(default_factory=list)

    def thinking(self, provider: str) -> Thinking:
        if self.redacted:
            return Thinking(redacted_data="".join(self.redacted), provider=provider)
        return Thinking("".join(self.texts), self.signature, provider=provider)


class ConverseStreamReader:
    """Decoded ConverseStream messages in, stream events out; knows when a stream is complete.

    Bedrock sends ``messageStart``, per content block an optional ``contentBlockStart`` (a tool
    call's id and name), ``contentBlockDelta``\\* and ``contentBlockStop``, then
    ``messageStop`` (the stop reason) and, last, ``metadata`` (usage). The stream is finished
    at ``metadata`` after ``messageStop``; a stream that ends after ``messageStop`` without
    ``metadata`` is complete with no usage; one that ends before ``messageStop`` is truncated.

    Text deltas become :class:`TextDelta`; a tool call's start and each fragment of its input
    a :class:`ToolCallDelta` (its ordinal among this answer's calls); reasoning text a
    :class:`ThinkingDelta`, its signature and redacted content kept for :class:`StreamFinished`.
    For structured output the ``output`` tool's input fragments are the answer's
    :class:`TextDelta` events. Events of unknown types are ignored, as are padding fields.
    """

    def __init__(self, provider: str, model: str, *, structured: bool) -> None:
        self._provider = provider
        self._model = model
        self._structured = structured
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._metadata_seen = False
        self._calls = ToolCallAssembler()
        #: Reasoning blocks by content-block index, in the order they began.
        self._thinking: dict[int, _ThinkingBlock] = {}
        #: True once :class:`StreamFinished` has been produced; later messages are ignored.
        self.finished = False

    def feed(self, message: EventStreamMessage) -> list[StreamEvent]:
        """The events ``message`` produces.

        Raises:
            UpstreamProtocolError: an exception or error message, an event whose payload is
                not a JSON object, a tool input fragment for a block that never started, or a
                ``messageStop`` without a stop reason.
        """
        if self.finished:
            return []
        kind = message.message_type
        if kind == "exception":
            raise UpstreamProtocolError(self._provider, self._exception_text(message))
        if kind == "error":
            raise UpstreamProtocolError(
                self._provider,
                f"stream failed with error {message.error_code or 'unknown'}: "
                f"{clip_detail(message.error_message or 'no message')}",
            )
        if kind != "event":
            raise UpstreamProtocolError(
                self._provider, f"stream carried a message of unknown type {kind!r}"
            )
        event_type = message.event_type
        if event_type not in ("contentBlockStart", "contentBlockDelta", "messageStop", "metadata"):
            return []  # messageStart, contentBlockStop and future event types
        payload = self._payload(message)
        if event_type == "contentBlockStart":
            return self._start(payload)
        if event_type == "contentBlockDelta":
            return self._delta(payload)
        if event_type == "messageStop":
            reason = payload.get("stopReason")
            if not isinstance(reason, str):
                raise UpstreamProtocolError(self._provider, "messageStop has no stopReason")
            self._stop_reason = reason
        else:
            self._usage = parse_usage(payload.get("usage"))
            self._metadata_seen = True
        if self._stop_reason is not None and self._metadata_seen:
            return [self._finish()]
        return []

    def end(self) -> list[StreamEvent]:
        """The events due at end of input.

        Raises:
            UpstreamProtocolError: the stream ended before ``messageStop``.
        """
        if self.finished:
            return []
        if self._stop_reason is None:
            raise UpstreamProtocolError(
                self._provider, "stream ended before messageStop: the answer is truncated"
            )
        return [self._finish()]

    def _finish(self) -> StreamFinished:
        self.finished = True
        assert self._stop_reason is not None
        reason = finish_reason(self._stop_reason, structured=self._structured)
        thinking = tuple(block.thinking(self._provider) for block in self._thinking.values())
        return StreamFinished(reason, self._usage, self._model, self._calls.calls(), thinking)

    def _payload(self, message: EventStreamMessage) -> dict[str, Any]:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            raise UpstreamProtocolError(
                self._provider, f"{message.event_type} event is not valid JSON"
            ) from None
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(
                self._provider, f"{message.event_type} event is not a JSON object"
            )
        return payload

    def _start(self, payload: dict[str, Any]) -> list[StreamEvent]:
        start = payload.get("start")
        tool = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool, dict) or self._structured:
            return []  # the output tool's start says nothing the answer needs
        call_id, name = tool.get("toolUseId"), tool.get("name")
        index = payload.get("contentBlockIndex")
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(index, int):
            raise UpstreamProtocolError(self._provider, "a toolUse start has no id, name or index")
        return [self._calls.start(index, call_id, name)]

    def _delta(self, payload: dict[str, Any]) -> list[StreamEvent]:
        delta = payload.get("delta")
        index = payload.get("contentBlockIndex")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError(self._provider, "contentBlockDelta has no delta")
        text = delta.get("text")
        if isinstance(text, str):
            return [TextDelta(text)] if text else []
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            partial = tool.get("input")
            if not isinstance(partial, str) or not partial:
                return []
            if self._structured:
                return [TextDelta(partial)]
            if not self._calls.known(index):
                raise UpstreamProtocolError(
                    self._provider, "a toolUse input fragment came for a block that never started"
                )
            return [self._calls.arguments(index, partial)]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(index, int):
            return self._reasoning(index, reasoning)
        return []  # citations and future delta kinds

    def _reasoning(self, index: int, reasoning: dict[str, Any]) -> list[StreamEvent]:
        block = self._thinking.setdefault(index, _ThinkingBlock())
        text, signature = reasoning.get("text"), reasoning.get("signature")
        redacted = reasoning.get("redactedContent")
        if isinstance(signature, str):
            block.signature += signature
        if isinstance(redacted, str):
            block.redacted.append(redacted)
        if isinstance(text, str) and text:
            block.texts.append(text)
            return [ThinkingDelta(text)]
        return []

    def _exception_text(self, message: EventStreamMessage) -> str:
        name = message.exception_type or "unknown exception"
        detail = "no message"
        try:
            payload = json.loads(message.payload)
            if isinstance(payload, dict) and payload.get("message"):
                detail = str(payload["message"])
        except ValueError:
            pass
        if name == "throttlingException":
            # Throttled after the answer began: not a rate limit to wait out, a failed stream.
            return f"stream failed: throttled mid-stream ({name}): {clip_detail(detail)}"
        return f"stream failed with {name}: {clip_detail(detail)}"


# -- HTTP errors ---------------------------------------------------------------------------------

_AUTH = (UpstreamAuthenticationError, "rejected the gateway's credentials")
_UNAVAILABLE = (UpstreamUnavailable, "unavailable")
_BY_ERROR_TYPE: Final[dict[str, tuple[type[ProviderError], str]]] = {
    "ValidationException": (UpstreamRejected, "rejected the request"),
    "ConflictException": (UpstreamRejected, "rejected the request"),
    "SerializationException": (UpstreamRejected, "rejected the request"),
    "AccessDeniedException": _AUTH,
    "UnrecognizedClientException": _AUTH,
    "InvalidSignatureException": _AUTH,
    "IncompleteSignatureException": _AUTH,
    "MissingAuthenticationTokenException": _AUTH,
    "ExpiredTokenException": _AUTH,
    "ResourceNotFoundException": (UpstreamModelNotFound, "not found"),
    "ModelTimeoutException": (UpstreamTimeout, "timed out"),
    "ModelErrorException": (UpstreamUnavailable, "model failed"),
    "ModelNotReadyException": (UpstreamUnavailable, "model not ready"),
    "ThrottlingException": (UpstreamRateLimited, "rate limited"),
    # An account quota (tokens or requests per minute): waiting helps, as for throttling.
    "ServiceQuotaExceededException": (UpstreamRateLimited, "over its service quota"),
    "InternalServerException": _UNAVAILABLE,
    "ServiceUnavailableException": _UNAVAILABLE,
}


def error_type_of(headers: Mapping[str, str], payload: Any) -> str | None:
    """The AWS error code: ``x-amzn-ErrorType`` before its ``:``, else the body's ``__type``.

    ``headers``: looked up by lower-case name (httpx's headers, or a dict of lower-case names).
    """
    raw = headers.get("x-amzn-errortype")
    if not raw and isinstance(payload, Mapping):
        raw = payload.get("__type") or payload.get("code")
    if not raw:
        return None
    name = str(raw).split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name or None


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> ProviderError:
    """The error for a non-2xx Bedrock answer of ``status``; the message names the AWS
    exception. ``headers``: as for :func:`error_type_of`."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    error_type = error_type_of(headers, payload)

    def message_of(value: Any) -> str | None:
        message = value.get("message") or value.get("Message")
        if not message:
            return error_type
        return f"{error_type}: {message}" if error_type else str(message)

    known = _BY_ERROR_TYPE.get(error_type or "")
    if known is None:
        return error_from_status(provider, status, headers, body, message_of=message_of)
    error_class, label = known
    detail = message_of(payload) if isinstance(payload, Mapping) else error_type
    text = f"HTTP {status}: {clip_detail(str(detail or error_type))}"
    retry_after = parse_retry_after(headers)
    return error_class(provider, f"{label} ({text})", http_status=status, retry_after=retry_after)
