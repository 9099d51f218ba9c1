"""The OpenAI chat-completions and embeddings wire format, sans-IO: bodies in, parsed answers out.

Shared by OpenAI, Together AI and OpenRouter; what differs between them is one
:class:`OpenAIDialect` row. Nothing here does I/O: :func:`chat_body` builds a request body (and
refuses, with :class:`~delos.runtime.errors.UnsupportedByProvider`, what the dialect cannot
express), :func:`parse_completion` reads a whole answer, :class:`ChatStreamReader` turns the SSE
events of a streamed answer into our stream events, and :func:`parse_embeddings` reads an
embeddings answer.

Native forms (Chat Completions):

- tools: ``{"type": "function", "function": {name, description, parameters}}``; ``tool_choice``
  "auto" / "none" / "required" or ``{"type": "function", "function": {"name": ...}}``;
  ``parallel_tool_calls`` (not on Together, whose API has no such field: asking for False there is
  refused; True is its behaviour anyway);
- history: assistant ``tool_calls`` ``[{id, type: "function", function: {name, arguments}}]``
  with ``content`` null when the turn has no text; ``role: "tool"`` messages with
  ``tool_call_id``;
- parts: ``{"type": "text"}``, ``{"type": "image_url", "image_url": {"url"}}`` (https, or a data
  URL made from bytes), PDFs as ``{"type": "file", "file": {filename, file_data: <data URL>}}``
  (OpenAI and OpenRouter; Together has no document part: refused); a text/plain document goes as a
  text part. Images and PDFs only in user messages (the API takes text alone elsewhere);
- reasoning: OpenAI and Together ``reasoning_effort`` (Together: low/medium/high, so "minimal" is
  refused); OpenRouter ``reasoning: {"effort"} | {"max_tokens"}``. A ``budget_tokens`` without an
  effort becomes, where only efforts exist, the effort whose anchor budget
  (:data:`EFFORT_BUDGETS`) is nearest on a log scale. ``include_thoughts`` alone asks Together and
  OpenRouter to reason (``reasoning: {"enabled": true}``); OpenAI's Chat Completions never returns
  thinking text, so there it asks nothing and the answer simply has no thinking;
- thinking returned: Together ``reasoning`` text; OpenRouter ``reasoning_details`` (signed
  ``reasoning.text``, ``reasoning.encrypted``, ``reasoning.summary``), sent back verbatim on the
  assistant turn. Together's input has no reasoning field: its thinking is not sent back;
- caching: OpenAI, Together and OpenRouter's non-Anthropic models cache prompt prefixes
  automatically, so ``cache_breakpoint`` has no native form there and is ignored by design (their
  behaviour already is "cache this prefix"). (OpenAI's gpt-5.6 and later also take an explicit
  ``prompt_cache_breakpoint`` on content parts, per openai-python 3.57; no catalog model is one,
  so none is sent.) OpenRouter's Anthropic models take Anthropic's
  ``cache_control: {"type": "ephemeral"}`` on the message's last content part. Reads and writes
  come back as ``usage.prompt_tokens_details.cached_tokens`` / ``cache_write_tokens``, inside
  ``prompt_tokens``; reasoning as ``completion_tokens_details.reasoning_tokens``, inside
  ``completion_tokens``.

Facts of the stream: it ends with the literal event ``data: [DONE]``; usage arrives in a last
chunk with no choices (OpenAI with ``stream_options.include_usage``, OpenRouter always) or on the
finishing chunk (Together); a tool call arrives as ``tool_calls[].index`` fragments, the first with
``id`` and ``function.name``; errors are ``{"error": {"message": ...}}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError
from delos.runtime.providers._http import decode_event_object
from delos.runtime.providers._parts import (
    ToolCallAssembler,
    data_url,
    deterministic_call_id,
    document_text,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    DocumentPart,
    Embeddings,
    EmbedRequest,
    ImagePart,
    Reasoning,
    StreamEvent,
    StreamFinished,
    TextDelta,
    TextPart,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from delos.runtime.wire import SseEvent

__all__ = [
    "EFFORT_BUDGETS",
    "ChatStreamReader",
    "OpenAIDialect",
    "chat_body",
    "effort_for_budget",
    "embeddings_body",
    "error_message",
    "parse_completion",
    "parse_embeddings",
]

#: How a dialect asks for reasoning: ``reasoning_effort`` alone (OpenAI), ``reasoning_effort`` or
#: ``reasoning.enabled`` (Together), the ``reasoning`` object (OpenRouter).
ReasoningForm = Literal["openai", "together", "openrouter"]

_ALL_EFFORTS: Final = frozenset({"minimal", "low", "medium", "high"})


@dataclass(frozen=True, slots=True)
class OpenAIDialect:
    """What one OpenAI-compatible API does differently (one row per provider)."""

    name: str
    default_base_url: str
    max_tokens_field: str = "max_tokens"
    #: Ask for usage in streams with ``stream_options.include_usage``.
    stream_usage_option: bool = True
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    reasoning_form: ReasoningForm = "openai"
    #: The ``reasoning_effort`` values the API takes.
    efforts: frozenset[str] = _ALL_EFFORTS
    #: PDFs as ``file`` content parts.
    documents: bool = True
    #: The ``parallel_tool_calls`` field exists.
    parallel_tool_calls: bool = True
    #: Roles whose ``content`` must be one string (several text parts are joined by a blank line).
    string_content_roles: frozenset[str] = frozenset()
    #: Model id prefixes served by Anthropic, which take ``cache_control`` on content parts.
    cache_control_models: tuple[str, ...] = ()


#: The thinking budget (tokens) each effort stands for, to map a budget to the nearest effort.
#: The common gateway convention (LiteLLM's defaults); OpenAI documents no token figure.
EFFORT_BUDGETS: Final = {"minimal": 512, "low": 1024, "medium": 2048, "high": 4096}

_FINISH_REASONS: Final = {
    "eos": "stop",
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
_CACHE_CONTROL: Final = {"type": "ephemeral"}


def error_message(payload: Any) -> str | None:
    """The message of an error envelope, ``{"error": {"message": ...}}`` or ``{"error": "..."}``."""
    error = payload.get("error")
    if isinstance(error, str):
        return error
    return str(error.get("message")) if isinstance(error, dict) else None


def effort_for_budget(budget_tokens: int, efforts: frozenset[str] = _ALL_EFFORTS) -> str:
    """The effort of ``efforts`` whose :data:`EFFORT_BUDGETS` anchor is nearest ``budget_tokens``
    on a log scale (a tie goes to the larger effort)."""
    target = math.log2(max(1, budget_tokens))
    ranked = sorted(
        efforts, key=lambda e: (abs(math.log2(EFFORT_BUDGETS[e]) - target), -EFFORT_BUDGETS[e])
    )
    return ranked[0]


# -- request --------------------------------------------------------------------------------------


def chat_body(request: ChatRequest, dialect: OpenAIDialect, *, stream: bool) -> dict[str, Any]:
    """The ``/chat/completions`` body for ``request`` in ``dialect``.

    Raises:
        UnsupportedByProvider: the request asks for something the dialect has no form for.
    """
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request, dialect)}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body[dialect.max_tokens_field] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body.update(_tool_fields(request, dialect))
    if request.reasoning is not None:
        body.update(_reasoning_fields(request.reasoning, dialect))
    if request.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "output",
                "schema": dict(request.output_schema),
                "strict": False,
            },
        }
    if stream:
        body["stream"] = True
        if dialect.stream_usage_option:
            body["stream_options"] = {"include_usage": True}
    return body


def _tool_fields(request: ChatRequest, dialect: OpenAIDialect) -> dict[str, Any]:
    fields: dict[str, Any] = {"tools": [_tool(tool) for tool in request.tools]}
    choice = request.tool_choice
    if choice in ("auto", "none", "required"):
        fields["tool_choice"] = choice
    elif choice:
        fields["tool_choice"] = {"type": "function", "function": {"name": choice}}
    parallel = request.parallel_tool_calls
    if parallel is not None:
        if dialect.parallel_tool_calls:
            fields["parallel_tool_calls"] = parallel
        elif not parallel:
            raise UnsupportedByProvider(
                dialect.name,
                "parallel_tool_calls",
                "the API has no parallel_tool_calls field; its models may always call in parallel",
            )
    return fields


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def _reasoning_fields(reasoning: Reasoning, dialect: OpenAIDialect) -> dict[str, Any]:
    effort, budget = reasoning.effort, reasoning.budget_tokens
    if effort and effort not in dialect.efforts:
        raise UnsupportedByProvider(
            dialect.name,
            "reasoning.effort",
            f"{effort!r} is not an effort the API takes ({', '.join(sorted(dialect.efforts))})",
        )
    if dialect.reasoning_form == "openrouter":
        # One of effort and max_tokens, not both: a budget is the exact (Anthropic-style) form.
        if budget:
            return {"reasoning": {"max_tokens": budget}}
        if effort:
            return {"reasoning": {"effort": effort}}
        return {"reasoning": {"enabled": True}} if reasoning.include_thoughts else {}
    if not effort and budget:
        effort = effort_for_budget(budget, dialect.efforts)
    if effort:
        return {"reasoning_effort": effort}
    if reasoning.include_thoughts and dialect.reasoning_form == "together":
        return {"reasoning": {"enabled": True}}
    return {}  # OpenAI: thinking text is never returned; include_thoughts asks nothing


def _messages(request: ChatRequest, dialect: OpenAIDialect) -> list[dict[str, Any]]:
    cache_control = bool(dialect.cache_control_models) and request.model.startswith(
        dialect.cache_control_models
    )
    return [_message(message, dialect, cache_control=cache_control) for message in request.messages]


def _message(
    message: ChatMessage, dialect: OpenAIDialect, *, cache_control: bool
) -> dict[str, Any]:
    role = message.role
    parts: list[dict[str, Any]] = []
    thinking: list[Thinking] = []
    for part in message.all_parts:
        if isinstance(part, Thinking):
            thinking.append(part)
        else:
            parts.append(_part(part, role, dialect))
    wire: dict[str, Any] = {"role": role}
    if cache_control and message.cache_breakpoint:
        if not parts:
            raise UnsupportedByProvider(
                dialect.name,
                "cache_breakpoint",
                f"a {role} message without text has no content part to carry cache_control",
            )
        parts[-1] = {**parts[-1], "cache_control": _CACHE_CONTROL}
        wire["content"] = parts
    else:
        wire["content"] = _content(parts, role, dialect)
    if message.tool_calls:
        if not parts:
            wire["content"] = None
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in message.tool_calls
        ]
    if role == "tool":
        wire["tool_call_id"] = message.tool_call_id
    details = _reasoning_details(thinking, dialect)
    if details:
        wire["reasoning_details"] = details
    return wire


def _part(
    part: TextPart | ImagePart | DocumentPart, role: str, dialect: OpenAIDialect
) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, DocumentPart) and part.media_type == "text/plain":
        return {"type": "text", "text": document_text(part)}
    what = "images" if isinstance(part, ImagePart) else "documents"
    if role != "user":
        raise UnsupportedByProvider(
            dialect.name, what, f"a {role} message takes text only in Chat Completions"
        )
    if isinstance(part, ImagePart):
        url = data_url(part.media_type, part.data) if part.data else part.url
        return {"type": "image_url", "image_url": {"url": url}}
    if not dialect.documents:
        raise UnsupportedByProvider(
            dialect.name, "documents", "the API has no document (PDF) content part"
        )
    return {
        "type": "file",
        "file": {
            "filename": part.name or "document.pdf",
            "file_data": data_url(part.media_type, part.data),
        },
    }


def _content(parts: list[dict[str, Any]], role: str, dialect: OpenAIDialect) -> Any:
    """A plain string where the parts are one text (the common case), else the part array."""
    if all(p["type"] == "text" for p in parts):
        if len(parts) <= 1:
            return parts[0]["text"] if parts else ""
        if role in dialect.string_content_roles:
            return "\n\n".join(p["text"] for p in parts)
    return parts


def _reasoning_details(
    thinking: Sequence[Thinking], dialect: OpenAIDialect
) -> list[dict[str, Any]]:
    """OpenRouter's ``reasoning_details`` for the thinking this endpoint made, verbatim; other
    dialects take no thinking back (OpenAI returns none, Together's input has no field for it)."""
    if dialect.reasoning_form != "openrouter":
        return []
    details: list[dict[str, Any]] = []
    for block in thinking:
        if block.provider != dialect.name:
            continue  # signed elsewhere: never valid here
        if block.redacted_data:
            details.append({"type": "reasoning.encrypted", "data": block.redacted_data})
            continue
        detail: dict[str, Any] = {"type": "reasoning.text", "text": block.text}
        if block.signature:
            detail["signature"] = block.signature
        details.append(detail)
    return details


# -- answers --------------------------------------------------------------------------------------


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _usage(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    prompt, completion = payload.get("prompt_tokens"), payload.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    prompt_details = payload.get("prompt_tokens_details")
    completion_details = payload.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return Usage(
        prompt,
        completion,
        cache_read_tokens=_count(prompt_details.get("cached_tokens")),
        cache_write_tokens=_count(prompt_details.get("cache_write_tokens")),
        reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
    )


def _finish_reason(reason: Any, *, called_tools: bool) -> str:
    finish = _FINISH_REASONS.get(reason, str(reason))
    # Some OpenAI-compatible servers say "stop" (or Together's "eos") after calling tools.
    return "tool_calls" if called_tools and finish == "stop" else finish


def _arguments_text(value: Any) -> str:
    """A call's arguments as sent: a JSON string, kept byte-exact (an object some servers send
    instead is written compactly)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_completion(provider: str, payload: Any, *, model: str) -> Completion:
    """A ``chat.completion`` object as a :class:`Completion`; ``model`` when it names none.

    Raises:
        UpstreamProtocolError: the answer is an error envelope or has an unexpected shape.
    """
    try:
        if payload.get("error"):
            raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
        choice = payload["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is None:
            content = message.get("refusal") or ""
        calls = []
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call["function"]
            name = str(function["name"])
            arguments = _arguments_text(function.get("arguments")) or "{}"
            call_id = call.get("id") or deterministic_call_id(
                str(payload.get("id", "")), index, name, arguments
            )
            calls.append(ToolCall(str(call_id), name, arguments))
        thinking = _ThinkingBuilder(provider)
        thinking.feed(message)
        reason = str(choice.get("finish_reason") or "stop")
        return Completion(
            content=str(content),
            model=str(payload.get("model") or model),
            finish_reason=_finish_reason(reason, called_tools=bool(calls)),
            usage=_usage(payload.get("usage")),
            tool_calls=tuple(calls),
            thinking=thinking.blocks(),
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "answer has an unexpected shape") from None


@dataclass
class _Block:
    text: list[str] = field(default_factory=list)
    signature: str = ""
    redacted_data: str = ""


class _ThinkingBuilder:
    """Thinking of one answer, from a message or from stream deltas: OpenRouter's
    ``reasoning_details`` (kept apart by their ``index``, a signature or encrypted data joining
    its block), else the plain ``reasoning`` text (Together, OpenRouter, DeepSeek-style
    ``reasoning_content``)."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._blocks: dict[object, _Block] = {}

    def feed(self, delta: Mapping[str, Any]) -> list[StreamEvent]:
        """Take the thinking of ``delta`` (a message, or a stream delta); the text it adds."""
        details = delta.get("reasoning_details")
        if isinstance(details, list) and details:
            events: list[StreamEvent] = []
            for position, detail in enumerate(details):
                if isinstance(detail, dict):
                    events += self._detail(position, detail)
            return events
        text = delta.get("reasoning") or delta.get("reasoning_content")
        if not isinstance(text, str) or not text:
            return []
        self._blocks.setdefault("reasoning", _Block()).text.append(text)
        return [ThinkingDelta(text)]

    def _detail(self, position: int, detail: Mapping[str, Any]) -> list[StreamEvent]:
        index = detail.get("index")
        block = self._blocks.setdefault(
            ("detail", index if index is not None else position), _Block()
        )
        kind = detail.get("type")
        if kind == "reasoning.encrypted":
            block.redacted_data += str(detail.get("data") or "")
            return []
        text = detail.get("summary") if kind == "reasoning.summary" else detail.get("text")
        signature = detail.get("signature")
        if isinstance(signature, str) and signature:
            block.signature = signature
        if isinstance(text, str) and text:
            block.text.append(text)
            return [ThinkingDelta(text)]
        return []

    def blocks(self) -> tuple[Thinking, ...]:
        return tuple(
            Thinking(
                text="".join(b.text),
                signature=b.signature,
                redacted_data=b.redacted_data,
                provider=self._provider,
            )
            for b in self._blocks.values()
            if b.text or b.signature or b.redacted_data
        )


class ChatStreamReader:
    """Interprets a streamed chat completion event by event; sans-IO.

    Feed each :class:`SseEvent` to :meth:`feed`. ``[DONE]`` ends the stream: :attr:`finished`
    is then True and the last event returned was the :class:`StreamFinished`, with the tool calls
    and thinking assembled; later events are ignored. Call :meth:`end` when the input ends.

    Tool calls arrive as ``delta.tool_calls[]`` fragments keyed by their ``index``; each becomes
    one :class:`ToolCallDelta` (a chunk that carries several calls gives several deltas).

    Raises (from :meth:`feed`):
        UpstreamProtocolError: an event that is not a JSON object, an error in the stream, a tool
            call fragment of an unexpected shape, or ``[DONE]`` before any finish reason.
    """

    def __init__(self, provider: str, *, model: str) -> None:
        self._provider = provider
        self.model = model
        self.finished = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._response_id = ""
        self._calls = ToolCallAssembler()
        self._call_count = 0
        self._thinking = _ThinkingBuilder(provider)

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        if self.finished:
            return []
        if event.data == "[DONE]":
            return [self._finished()]
        chunk = decode_event_object(self._provider, event.data)
        if chunk.get("error"):
            detail = error_message(chunk) or "unknown error"
            raise UpstreamProtocolError(self._provider, f"error in the stream: {detail}")
        self.model = str(chunk.get("model") or self.model)
        self._response_id = self._response_id or str(chunk.get("id") or "")
        self._usage = _usage(chunk.get("usage")) or self._usage
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            events += self._thinking.feed(delta)
            text = delta.get("content")
            if text:
                events.append(TextDelta(str(text)))
            for position, fragment in enumerate(delta.get("tool_calls") or ()):
                events += self._tool_fragment(choice.get("index", 0), position, fragment)
            reason = choice.get("finish_reason")
            if reason and reason != "error":
                self._finish = str(reason)
        return events

    def _tool_fragment(self, choice: Any, position: int, fragment: Any) -> list[ToolCallDelta]:
        if not isinstance(fragment, dict):
            raise UpstreamProtocolError(self._provider, "a tool call fragment is not an object")
        key = (choice, fragment.get("index", position))
        function = fragment.get("function") or {}
        arguments = _arguments_text(function.get("arguments"))
        deltas = []
        if not self._calls.known(key):
            name = str(function.get("name") or "")
            call_id = fragment.get("id") or deterministic_call_id(
                self._response_id, self._call_count, name, ""
            )
            self._call_count += 1
            deltas.append(self._calls.start(key, str(call_id), name))
        if arguments:
            deltas.append(self._calls.arguments(key, arguments))
        return deltas

    def _finished(self) -> StreamFinished:
        if self._finish is None:
            raise UpstreamProtocolError(self._provider, "stream ended without a finish")
        self.finished = True
        calls = self._calls.calls()
        return StreamFinished(
            _finish_reason(self._finish, called_tools=bool(calls)),
            self._usage,
            self.model,
            tool_calls=calls,
            thinking=self._thinking.blocks(),
        )

    def end(self) -> None:
        """The input ended.

        Raises:
            UpstreamProtocolError: before ``[DONE]``: the answer is truncated.
        """
        if not self.finished:
            raise UpstreamProtocolError(
                self._provider, "stream ended before [DONE]: the answer is truncated"
            )


# -- embeddings -----------------------------------------------------------------------------------


def embeddings_body(request: EmbedRequest) -> dict[str, Any]:
    """The ``/embeddings`` body; vectors are asked for in base64 (4× smaller than JSON floats)."""
    return {"model": request.model, "input": list(request.texts), "encoding_format": "base64"}


def parse_embeddings(provider: str, payload: Any, request: EmbedRequest) -> Embeddings:
    """An embeddings answer: vectors in input order (by ``index``), usage from ``prompt_tokens``.

    Raises:
        UpstreamProtocolError: the answer has an unexpected shape or the wrong number of vectors.
    """
    try:
        items = sorted(payload["data"], key=lambda item: item["index"])
        vectors = [_vector(item["embedding"]) for item in items]
        usage_payload = payload.get("usage") or {}
        tokens = usage_payload.get("prompt_tokens")
        usage = Usage(int(tokens), 0) if isinstance(tokens, int) else None
    except (KeyError, TypeError, ValueError, struct.error):
        raise UpstreamProtocolError(provider, "embeddings answer has an unexpected shape") from None
    if len(vectors) != len(request.texts):
        raise UpstreamProtocolError(provider, "embeddings answer has the wrong count")
    return Embeddings(vectors, str(payload.get("model") or request.model), usage)


def _vector(value: Any) -> list[float]:
    """A float list, or base64 little-endian float32."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in value]
