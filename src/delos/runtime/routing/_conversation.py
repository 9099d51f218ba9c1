"""The conversation as one endpoint may receive it: thinking signed elsewhere left out.

A thinking signature is valid only on the endpoint that made it (Claude on Anthropic, on Vertex
and on Bedrock are three endpoints; Vertex's Claude and Gemini models are two), so when an
agent's conversation moves to another provider, for a fallback or a new turn, the thinking
blocks another endpoint signed are dropped and counted, never sent where they would be refused.
Answers mark their thinking with the endpoint (``vertex/anthropic``, ``vertex/google`` on
Vertex AI, the provider's name elsewhere). Tool calls and results need no conversion here:
every adapter writes them in its own format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from delos.runtime.values import ChatMessage, Thinking

__all__ = ["endpoint_of", "messages_for_endpoint", "stamped"]


def endpoint_of(provider: str, model: str) -> str:
    """The endpoint a signature is valid on: the provider, except on Vertex AI, whose Claude
    (Anthropic's publisher path) and Gemini (Google's) models sign thinking each their own way."""
    if provider != "vertex":
        return provider
    return "vertex/anthropic" if model.startswith("claude") else "vertex/google"


def stamped(thinking: Sequence[Thinking], endpoint: str) -> tuple[Thinking, ...]:
    """``thinking`` as the client receives it: marked with the endpoint that made it."""
    return tuple(replace(t, provider=endpoint) for t in thinking)


def messages_for_endpoint(
    messages: Sequence[ChatMessage], endpoint: str, provider: str
) -> tuple[tuple[ChatMessage, ...], int]:
    """``messages`` as ``provider``'s adapter receives them for ``endpoint``: the thinking
    parts another endpoint made left out (the count is returned), those of this endpoint
    marked with the adapter's provider name, which is what adapters check. Thinking without a
    provider is kept only without a signature (plain text)."""
    kept: list[ChatMessage] = []
    dropped = 0
    for message in messages:
        if not any(isinstance(p, Thinking) for p in message.parts):
            kept.append(message)
            continue
        parts = []
        for part in message.parts:
            if isinstance(part, Thinking):
                if not _valid_at(part, endpoint):
                    dropped += 1
                    continue
                if part.provider:
                    part = replace(part, provider=provider)
            parts.append(part)
        kept.append(replace(message, parts=tuple(parts)))
    return tuple(kept), dropped


def _valid_at(thinking: Thinking, endpoint: str) -> bool:
    if thinking.provider:
        return thinking.provider == endpoint
    return not (thinking.signature or thinking.redacted_data)
