"""Keep secrets out of everything that leaves the process: messages, logs, attributes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["Redactor"]

#: Shapes of provider credentials, caught even when they are not ours (an upstream echoing one).
_KEY_SHAPES: Final = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{8,}|sk-or-[A-Za-z0-9_\-]{8,}|sk-[A-Za-z0-9_\-]{16,}"
    r"|AKIA[0-9A-Z]{12,}|AIza[0-9A-Za-z_\-]{20,}|ya29\.[0-9A-Za-z_\-.]{10,})"
)
#: The fewest characters any of those shapes matches (``sk-or-`` and eight more).
_SHORTEST_KEY_SHAPE: Final = 14
MASK: Final = "[REDACTED]"


class Redactor:
    """Replaces every configured secret, and anything shaped like a provider key, by a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        #: Texts shorter than this hold no secret and no key shape (most log fields).
        self._shortest = min([_SHORTEST_KEY_SHAPE, *map(len, self._secrets)])

    def __call__(self, text: str) -> str:
        if len(text) < self._shortest:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _KEY_SHAPES.sub(MASK, text)
