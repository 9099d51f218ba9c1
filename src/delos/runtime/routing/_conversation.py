"""The conversation as one endpoint may receive it: thinking signed elsewhere left out.

A thinking signature is valid only on the endpoint that made it (Claude on Anthropic, on Vertex
and on Bedrock are three endpoints), so when an agent's conversation moves to another provider,
for a fallback or a new turn, the thinking blocks another endpoint signed are dropped and
counted, never sent where they would be refused. Tool calls and results need no conversion here:
every adapter writes them in its own format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from delos.runtime.values import ChatMessage, Thinking

__all__ = ["messages_for_endpoint"]


def messages_for_endpoint(
    messages: Sequence[ChatMessage], endpoint: str
) -> tuple[tuple[ChatMessage, ...], int]:
    """``messages`` without the thinking parts another endpoint made, and how many were left
    out. Thinking without a provider is kept only without a signature (plain text)."""
    kept: list[ChatMessage] = []
    dropped = 0
    for message in messages:
        if not any(isinstance(p, Thinking) for p in message.parts):
            kept.append(message)
            continue
        parts = []
        for part in message.parts:
            if isinstance(part, Thinking) and not _valid_at(part, endpoint):
                dropped += 1
                continue
            parts.append(part)
        kept.append(replace(message, parts=tuple(parts)))
    return tuple(kept), dropped


def _valid_at(thinking: Thinking, endpoint: str) -> bool:
    if thinking.provider:
        return thinking.provider == endpoint
    return not (thinking.signature or thinking.redacted_data)
