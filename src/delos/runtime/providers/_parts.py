"""Pieces every adapter needs for content parts and tool calls, whatever its wire format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    DocumentPart,
    ImagePart,
    ToolCall,
    ToolCallDelta,
)

__all__ = [
    "EFFORT_BUDGETS",
    "SamplingNames",
    "ToolCallAssembler",
    "call_arguments",
    "data_url",
    "decode_data_url",
    "deterministic_call_id",
    "document_text",
    "image_bytes",
    "sampling_fields",
    "tool_name_for",
    "tool_result_object",
]


#: One meaning of a reasoning effort in thinking tokens, for every provider that takes a budget
#: (Anthropic, Bedrock, Gemini) and, the other way, for those that take an effort (OpenAI-style:
#: a budget maps to the effort nearest on a log scale). The figures follow Google's published
#: mapping of OpenAI efforts to Gemini budgets (medium 8192, high 24576); low and minimal are the
#: smallest budgets every provider accepts (Anthropic's and Bedrock's minimum is 1024).
EFFORT_BUDGETS: Final[Mapping[str, int]] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
}


@dataclass
class _Building:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    signature: str = ""


class ToolCallAssembler:
    """Tool calls of one streamed answer, from the provider's own keys (a content-block index,
    a tool-call index) to our 0-based ordinals; assembles each call's arguments byte-exact."""

    def __init__(self) -> None:
        self._ordinal_of: dict[object, int] = {}
        self._calls: list[_Building] = []

    def start(self, key: object, id: str, name: str) -> ToolCallDelta:
        """A new call under the provider's ``key``; the delta that announces it."""
        ordinal = len(self._calls)
        self._ordinal_of[key] = ordinal
        self._calls.append(_Building(id, name))
        return ToolCallDelta(ordinal, id=id, name=name)

    def known(self, key: object) -> bool:
        return key in self._ordinal_of

    def arguments(self, key: object, fragment: str) -> ToolCallDelta:
        """More of the arguments of the call under ``key``. Raises KeyError for an unknown key."""
        ordinal = self._ordinal_of[key]
        self._calls[ordinal].arguments.append(fragment)
        return ToolCallDelta(ordinal, arguments_delta=fragment)

    def sign(self, key: object, signature: str) -> None:
        self._calls[self._ordinal_of[key]].signature = signature

    def calls(self) -> tuple[ToolCall, ...]:
        """Every call so far; a call that received no argument text has ``{}``."""
        return tuple(
            ToolCall(c.id, c.name, "".join(c.arguments) or "{}", c.signature) for c in self._calls
        )


def deterministic_call_id(response_key: str, index: int, name: str, arguments_json: str) -> str:
    """An id for a provider that gives none (Gemini, older Ollama): the same answer always gets
    the same ids, distinct within the answer."""
    digest = hashlib.sha256(f"{response_key}\0{index}\0{name}\0{arguments_json}".encode())
    return f"call_{index}_{digest.hexdigest()[:16]}"


def tool_name_for(messages: Sequence[ChatMessage], tool_call_id: str) -> str | None:
    """The name of the tool whose call ``tool_call_id`` a ``tool`` message answers (for formats
    that name the function in the result rather than the call id)."""
    for message in reversed(messages):
        for call in message.tool_calls:
            if call.id == tool_call_id:
                return call.name
    return None


def tool_result_object(text: str) -> dict[str, Any]:
    """A tool result as the JSON object some formats require: the result itself when it is a
    JSON object, else ``{"result": text}``."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": text}


def document_text(part: DocumentPart) -> str:
    """A ``text/plain`` document as text, for providers without a document form."""
    title = f"{part.name}\n\n" if part.name else ""
    return title + part.data.decode("utf-8", errors="replace")


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of a base64 ``data:`` URL; None for any other URL or a bad one."""
    if not url.startswith("data:"):
        return None
    header, _, payload = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not media_type:
        return None
    try:
        return media_type, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def image_bytes(part: ImagePart) -> tuple[str, bytes] | None:
    """(media type, bytes) of an image given by bytes or by a ``data:`` URL; None for an image
    only a URL names (fetched by the router before the adapter sees it, where allowed)."""
    if part.data:
        return part.media_type, part.data
    return decode_data_url(part.url)


@dataclass(frozen=True, slots=True)
class SamplingNames:
    """A provider's field names for the sampling settings; ``max_tokens`` None where the
    adapter sends the output cap itself (Anthropic requires one)."""

    top_p: str
    stop: str
    max_tokens: str | None
    temperature: str = "temperature"


def sampling_fields(request: ChatRequest, names: SamplingNames) -> dict[str, Any]:
    """The sampling settings ``request`` sets, under ``names``, in one order for every provider;
    settings left unset are left out (the provider's defaults apply)."""
    fields: dict[str, Any] = {}
    if request.temperature is not None:
        fields[names.temperature] = request.temperature
    if request.top_p is not None:
        fields[names.top_p] = request.top_p
    if request.max_tokens is not None and names.max_tokens is not None:
        fields[names.max_tokens] = request.max_tokens
    if request.stop:
        fields[names.stop] = list(request.stop)
    return fields


def call_arguments(provider: str, call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the JSON object providers take back. Requests are refused
    with anything else already; this guards a conversation built in code.

    Raises:
        UnsupportedByProvider: the arguments are not a JSON object.
    """
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise UnsupportedByProvider(
            provider,
            "tool_calls",
            f"the arguments of call {call.id!r} ({call.name}) are not a JSON object",
        )
    return arguments
