"""OpenAI chat-completions and embeddings request bodies, sans-IO, one dialect at a time.

Shared by OpenAI, Together AI and OpenRouter; what differs between them is one
:class:`OpenAIDialect` row. Nothing here does I/O: :func:`chat_body` builds a chat body (and
refuses, with :class:`~delos.runtime.errors.UnsupportedByProvider`, what the dialect cannot
express) and :func:`embeddings_body` an embeddings body; :mod:`._openai_answer` reads the answers
and streams.

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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.providers._parts import (
    EFFORT_BUDGETS,
    SamplingNames,
    data_url,
    document_text,
    sampling_fields,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    DocumentPart,
    EmbedRequest,
    ImagePart,
    Reasoning,
    TextPart,
    Thinking,
    Tool,
)

__all__ = [
    "EFFORT_BUDGETS",
    "OpenAIDialect",
    "chat_body",
    "effort_for_budget",
    "embeddings_body",
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

_CACHE_CONTROL: Final = {"type": "ephemeral"}


def effort_for_budget(budget_tokens: int, efforts: frozenset[str] = _ALL_EFFORTS) -> str:
    """The effort of ``efforts`` whose :data:`EFFORT_BUDGETS` anchor is nearest ``budget_tokens``
    on a log scale (a tie goes to the larger effort)."""
    target = math.log2(max(1, budget_tokens))
    ranked = sorted(
        efforts, key=lambda e: (abs(math.log2(EFFORT_BUDGETS[e]) - target), -EFFORT_BUDGETS[e])
    )
    return ranked[0]


@functools.cache
def _sampling_names(max_tokens_field: str) -> SamplingNames:
    """The dialect's names (only the output cap's differs), made once per dialect."""
    return SamplingNames(top_p="top_p", stop="stop", max_tokens=max_tokens_field)


def chat_body(request: ChatRequest, dialect: OpenAIDialect, *, stream: bool) -> dict[str, Any]:
    """The ``/chat/completions`` body for ``request`` in ``dialect``.

    Raises:
        UnsupportedByProvider: the request asks for something the dialect has no form for.
    """
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request, dialect)}
    body.update(sampling_fields(request, _sampling_names(dialect.max_tokens_field)))
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


def embeddings_body(request: EmbedRequest) -> dict[str, Any]:
    """The ``/embeddings`` body; vectors are asked for in base64 (4× smaller than JSON floats)."""
    return {"model": request.model, "input": list(request.texts), "encoding_format": "base64"}
