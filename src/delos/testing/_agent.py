"""How every fake behaves in an agent conversation, the same for every wire format.

- Tools declared, ``tool_choice`` not "none", and the last message the user's: the fake calls
  tools instead of answering. One call to the first tool (or to the tool ``tool_choice`` names);
  two parallel calls (the first tool, then the second or the first again) when the user's text
  contains the word "parallel" and parallel calls are allowed. Arguments are the simplest
  instance of the tool's schema, with every string property set to the user's text.
- The last message a tool result: the fake answers ``Tool said: <result>`` (every result of the
  turn, in order, joined by ``; ``) and stops.
- Reasoning asked for: the fake thinks first (``Thinking about: <user text>``) and signs the
  thought with :func:`sign`; thinking sent back must carry a valid signature, or the fake answers
  400 as the providers do.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from delos.testing._schema import sample_instance

__all__ = [
    "FakeToolCall",
    "planned_tool_calls",
    "sign",
    "signature_valid",
    "thought_about",
    "tool_reply",
]

_SECRET = b"delos-fake-thinking"


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    name: str
    arguments: Mapping[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


def planned_tool_calls(
    tools: Sequence[tuple[str, Mapping[str, Any]]],
    user_text: str,
    *,
    tool_choice: str = "",
    parallel: bool = True,
) -> list[FakeToolCall]:
    """The calls the fake makes for the declared ``tools`` ((name, JSON Schema) pairs)."""
    if not tools or tool_choice == "none":
        return []
    names = [name for name, _ in tools]
    schemas = dict(tools)
    first = tool_choice if tool_choice in schemas else names[0]
    chosen = [first]
    if parallel and "parallel" in user_text.split() and tool_choice not in schemas:
        chosen.append(names[1] if len(names) > 1 else names[0])
    return [FakeToolCall(name, _arguments(schemas[name], user_text)) for name in chosen]


def _arguments(schema: Mapping[str, Any], user_text: str) -> dict[str, Any]:
    value = sample_instance(schema)
    if not isinstance(value, dict):
        return {}
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name, spec in properties.items():
        if name in value and isinstance(spec, Mapping) and spec.get("type") == "string":
            value[name] = user_text
    return value


def tool_reply(results: Sequence[str]) -> str:
    return "Tool said: " + "; ".join(results)


def thought_about(user_text: str) -> str:
    return f"Thinking about: {user_text}"


def sign(text: str) -> str:
    """A deterministic signature of ``text`` (base64, like the providers' opaque ones)."""
    digest = hashlib.sha256(_SECRET + text.encode()).digest()
    return base64.b64encode(digest).decode()


def signature_valid(text: str, signature: str) -> bool:
    return signature == sign(text)
