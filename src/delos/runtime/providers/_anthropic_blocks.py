"""The conversation as Anthropic Messages turns and content blocks, sans-IO.

:func:`encode_messages` turns the conversation into the ``messages`` field: consecutive messages
of one role merge into one turn (Anthropic requires user and assistant turns to alternate; tool
messages are user turns), each message into its text, image, document, thinking, ``tool_use``
and ``tool_result`` blocks, a cache breakpoint into ``cache_control`` on its last markable
block. :func:`encode_system` builds the top-level ``system`` field. How each setting is written
and what is refused is listed once, in :mod:`._anthropic_request`'s docstring.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider
from delos.runtime.providers._parts import image_bytes
from delos.runtime.values import (
    ChatMessage,
    DocumentPart,
    ImagePart,
    TextPart,
    Thinking,
    ToolCall,
)

__all__ = ["IMAGE_MEDIA_TYPES", "encode_messages", "encode_system"]

#: The image types the API reads.
IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_THINKING_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}


def encode_system(
    messages: Sequence[ChatMessage], provider: str
) -> str | list[dict[str, Any]] | None:
    """The ``system`` field: one text, or text blocks when a system message is a cache
    breakpoint (the marker goes on that message's block); None without system messages."""
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


def encode_messages(
    conversation: Sequence[ChatMessage], provider: str, *, image_urls: bool
) -> list[dict[str, Any]]:
    """The ``messages`` field: ``conversation`` (no system messages) as alternating turns."""
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
