"""The Gemini ``generateContent`` request body, sans-IO: :func:`generate_body` and what it refuses.

Shared by the Gemini API and by Gemini on Vertex AI, whose bodies are the same. Nothing here does
I/O: :func:`generate_body` turns a request into JSON values; :mod:`._gemini_answer` reads the
answers, stream chunks and errors, and :mod:`delos.runtime.providers.gemini` does the HTTP (its
docstring lists what is refused).

Facts of the format this module encodes:

- the system prompt travels apart, in ``systemInstruction``; turns have roles ``user``/``model``;
- tools are ``functionDeclarations``; a call is a ``functionCall {name, args}`` part of a model
  turn and its result a ``functionResponse {name, response}`` part of the next user turn. There
  are no call ids: results find their call by name and position;
- thinking is asked for with ``thinkingConfig`` (a budget from :data:`EFFORT_BUDGETS` for an
  effort); thought parts and ``thoughtSignature`` bytes go back on the same kind of part they
  came with, verbatim;
- images and PDFs go inline as ``inlineData`` (base64), text documents as text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.providers._parts import (
    EFFORT_BUDGETS,
    SamplingNames,
    call_arguments,
    document_text,
    image_bytes,
    sampling_fields,
    tool_name_for,
    tool_result_object,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Reasoning,
    TextPart,
    Thinking,
)

__all__ = ["EFFORT_BUDGETS", "IMAGE_TYPES", "generate_body"]

#: Image types Gemini reads inline (no GIF).
IMAGE_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)
_TOOL_CHOICE_MODES: Final[Mapping[str, str]] = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_SAMPLING: Final = SamplingNames(top_p="topP", stop="stopSequences", max_tokens="maxOutputTokens")


def generate_body(provider: str, request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` / ``streamGenerateContent`` body for ``request`` (camelCase).

    Structured output uses ``responseJsonSchema`` and tools ``parametersJsonSchema``: the
    caller's JSON Schema as parsed, sent unchanged. ``responseSchema`` and ``parameters`` would
    need a lossy translation to Google's OpenAPI subset (no ``const``, ``$ref``,
    ``additionalProperties`` or type lists); both JSON Schema fields exist on the Gemini API
    (``v1beta``) and on Vertex AI (``v1``). ``cache_breakpoint`` is not sent: Gemini caches
    prompt prefixes implicitly and reports the tokens read (``cachedContentTokenCount``).

    Raises:
        UnsupportedByProvider: the request asks for something Gemini cannot express exactly
            (see :mod:`delos.runtime.providers.gemini`).
    """
    system = request.system_prompt
    turns = request.conversation
    body: dict[str, Any] = {}
    if turns:
        body["contents"] = _contents(provider, request.messages)
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
    else:
        # ``contents`` may not be empty: a request made of system messages alone is sent as the
        # user's turn, which is what other providers do with it.
        body["contents"] = [{"role": "user", "parts": [{"text": system or ""}]}]
    if request.tools:
        declarations = []
        for tool in request.tools:
            declaration: dict[str, Any] = {"name": tool.name}
            if tool.description:
                declaration["description"] = tool.description
            declaration["parametersJsonSchema"] = dict(tool.parameters)
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = _function_calling_config(request.tool_choice)
        if choice is not None:
            body["toolConfig"] = {"functionCallingConfig": choice}
        if request.parallel_tool_calls is False and request.tool_choice != "none":
            raise UnsupportedByProvider(
                provider,
                "parallel_tool_calls",
                "Gemini has no switch to turn parallel function calls off",
            )
    config = sampling_fields(request, _SAMPLING)
    if request.output_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = dict(request.output_schema)
    thinking = _thinking_config(request.reasoning)
    if thinking:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


def _function_calling_config(choice: str) -> dict[str, Any] | None:
    if not choice:
        return None  # the default, AUTO
    mode = _TOOL_CHOICE_MODES.get(choice)
    if mode is not None:
        return {"mode": mode}
    # A tool's name: a call is required, and only that function may be called.
    return {"mode": "ANY", "allowedFunctionNames": [choice]}


def _thinking_config(reasoning: Reasoning | None) -> dict[str, Any]:
    if reasoning is None:
        return {}
    thinking: dict[str, Any] = {}
    budget = reasoning.budget_tokens or EFFORT_BUDGETS.get(reasoning.effort, 0)
    if budget:
        thinking["thinkingBudget"] = budget
    if reasoning.include_thoughts:
        thinking["includeThoughts"] = True
    return thinking


def _contents(provider: str, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The turns: system messages left out, consecutive tool results joined into one user turn
    (Gemini wants every result of a step in the content after the call)."""
    contents: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            results.append(_function_response(provider, messages, message))
            continue
        if results:
            contents.append({"role": "user", "parts": results})
            results = []
        if message.role == "assistant":
            contents.append({"role": "model", "parts": _model_parts(provider, message)})
        elif message.role == "user":
            contents.append({"role": "user", "parts": _user_parts(provider, message.all_parts)})
    if results:
        contents.append({"role": "user", "parts": results})
    return contents


def _function_response(
    provider: str, messages: Sequence[ChatMessage], message: ChatMessage
) -> dict[str, Any]:
    name = tool_name_for(messages, message.tool_call_id)
    if name is None:
        raise UnsupportedByProvider(
            provider,
            "tool results",
            "a result must answer a call of an earlier assistant turn: Gemini names the "
            "function it answers",
        )
    if any(not isinstance(part, TextPart) for part in message.parts):
        raise UnsupportedByProvider(
            provider, "tool results", "Gemini takes a tool result as text (a JSON object) only"
        )
    return {"functionResponse": {"name": name, "response": tool_result_object(message.text)}}


def _user_parts(provider: str, parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            converted.append({"text": part.text})
        elif isinstance(part, ImagePart):
            converted.append(_image(provider, part))
        elif isinstance(part, DocumentPart):
            converted.append(_document(provider, part))
        else:
            raise UnsupportedByProvider(
                provider, "thinking", "thinking parts belong to assistant turns"
            )
    return converted or [{"text": ""}]


def _model_parts(provider: str, message: ChatMessage) -> list[dict[str, Any]]:
    """A model turn as Gemini made it: thoughts first, then text and media, then calls.

    A signature that came on a text part (``Thinking`` with no text) goes back on the text part
    before it in the message (the answer's text, which Gemini sent it with), or on an empty text
    part of its own, as Gemini itself streams it when there is none.
    """
    thoughts: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for part in message.all_parts:
        if not isinstance(part, Thinking):
            parts.extend(_user_parts(provider, (part,)))
            continue
        if not _made_here(part, provider):
            continue  # made by another endpoint: its signature means nothing here
        if part.redacted_data:
            raise UnsupportedByProvider(provider, "thinking", "Gemini has no redacted thinking")
        if part.text:
            thought: dict[str, Any] = {"text": part.text, "thought": True}
            if part.signature:
                thought["thoughtSignature"] = part.signature
            thoughts.append(thought)
            continue
        carrier = parts[-1] if parts else None
        if carrier is not None and "text" in carrier and "thoughtSignature" not in carrier:
            carrier["thoughtSignature"] = part.signature
        else:
            parts.append({"text": "", "thoughtSignature": part.signature})
    for call in message.tool_calls:
        function_call: dict[str, Any] = {
            "functionCall": {"name": call.name, "args": call_arguments(provider, call)}
        }
        if call.signature:
            function_call["thoughtSignature"] = call.signature
        parts.append(function_call)
    # A message that is only a (dropped) foreign thought still needs a part.
    return [*thoughts, *parts] or [{"text": ""}]


def _made_here(thinking: Thinking, provider: str) -> bool:
    """Thinking this endpoint made, or plain thought text of no endpoint (the router's rule)."""
    if thinking.provider:
        return thinking.provider == provider
    return not (thinking.signature or thinking.redacted_data)


def _image(provider: str, part: ImagePart) -> dict[str, Any]:
    found = image_bytes(part)
    if found is None:
        raise UnsupportedByProvider(
            provider,
            "image url",
            "Gemini needs image bytes (fileData names uploaded files only); set "
            "DELOS_RUNTIME_FETCH_IMAGE_URLS=true to let the gateway fetch image URLs",
        )
    media_type, data = found
    if media_type not in IMAGE_TYPES:
        raise UnsupportedByProvider(
            provider, "image type", f"Gemini reads PNG, JPEG, WebP, HEIC and HEIF, not {media_type}"
        )
    return _inline(media_type, data)


def _document(provider: str, part: DocumentPart) -> dict[str, Any]:
    if part.media_type == "application/pdf":
        return _inline(part.media_type, part.data)
    if part.media_type == "text/plain":
        return {"text": document_text(part)}
    raise UnsupportedByProvider(provider, "documents", f"Gemini does not read {part.media_type}")


def _inline(media_type: str, data: bytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": media_type, "data": base64.b64encode(data).decode("ascii")}}
