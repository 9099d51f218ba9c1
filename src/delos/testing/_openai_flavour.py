"""The flavours of the fake OpenAI API: OpenAI itself, and the OpenAI-compatible Together AI and
OpenRouter. The fake's server, request checks and answers all tell them apart.
"""

from __future__ import annotations

import enum

__all__ = ["OpenAIFlavour"]


class OpenAIFlavour(enum.Enum):
    OPENAI = "openai"
    TOGETHER = "together"
    OPENROUTER = "openrouter"

    @property
    def prefix(self) -> str:
        """The path of the base URL on the fake (the adapter's base URL ends with it)."""
        return "/api/v1" if self is OpenAIFlavour.OPENROUTER else "/v1"
