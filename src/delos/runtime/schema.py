"""JSON Schema checks for structured output: the schema itself, and answers against it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from delos.runtime.errors import InvalidRequest

__all__ = ["check_schema", "validation_error"]


def _location(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(root)"


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidRequest` saying where ``schema`` is not a valid JSON Schema."""
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(dict(schema))
    except jsonschema.exceptions.SchemaError as exc:
        raise InvalidRequest(
            f"output_schema: invalid JSON Schema at {_location(exc.absolute_path)}: {exc.message}"
        ) from None


def validation_error(schema: Mapping[str, Any], answer: str) -> str | None:
    """Why ``answer`` does not conform to ``schema``, or None when it does."""
    try:
        value = json.loads(answer)
    except ValueError as exc:
        return f"the answer is not valid JSON ({exc})"
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(value))
    if error is None:
        return None
    return f"at {_location(error.absolute_path)}: {error.message}"
