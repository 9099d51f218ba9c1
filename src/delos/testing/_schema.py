"""A minimal JSON value that conforms to a JSON Schema, for fakes answering structured output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["sample_instance"]


def sample_instance(schema: Mapping[str, Any], _depth: int = 0) -> Any:
    """The simplest instance of ``schema``: required properties only, first enum value, etc."""
    if _depth > 20:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if options:
            return sample_instance(options[0], _depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(properties))
        return {name: sample_instance(properties.get(name, {}), _depth + 1) for name in required}
    if kind == "array":
        minimum = int(schema.get("minItems", 0))
        item = schema.get("items", {})
        return [sample_instance(item, _depth + 1) for _ in range(minimum)]
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return None
