"""Request checks of the fake Ollama API, worded as the Go server words them.

:func:`decode_problem` is what Go's ``encoding/json`` decoder refuses in a chat request (a
``think`` that is not a boolean or a level, an image that is not base64, tool-call arguments that
are not an object, tools or messages of the wrong shape); :func:`options_problem` is what the
server refuses in ``options`` (an option of the wrong JSON type).
"""

from __future__ import annotations

import base64
import binascii
import string
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["decode_problem", "options_problem"]

_THINK_LEVELS: Final = frozenset({"high", "medium", "low", "max"})
_THINK_CHOICES: Final = '"high", "medium", "low", "max", true, or false'
_BASE64: Final = frozenset(string.ascii_letters + string.digits + "+/")


def _cannot_unmarshal(value: Any, field: str, go_type: str) -> str:
    """Go's decoder error for ``value`` in the struct field ``field`` of type ``go_type``."""
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int | float):
        kind = "number"
    elif isinstance(value, str | list | dict):
        kind = {str: "string", list: "array"}.get(type(value), "object")
    else:
        kind = "null"
    return f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"


def decode_problem(body: Mapping[str, Any]) -> str | None:
    """The Go decoder's message for a chat request of the wrong shape, or None."""
    think = body.get("think")
    if think is not None and not isinstance(think, bool):
        if not isinstance(think, str):
            return f"think must be a boolean or string ({_THINK_CHOICES})"
        if think not in _THINK_LEVELS:
            return f'invalid think value: "{think}" (must be {_THINK_CHOICES})'
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "json: cannot unmarshal messages into Go struct field"
    for message in messages:
        problem = _message_problem(message)
        if problem is not None:
            return problem
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return _cannot_unmarshal(tools, "ChatRequest.tools", "api.Tools")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            return _cannot_unmarshal(function, "Tool.tools.function", "api.ToolFunction")
        if not isinstance(function.get("name"), str):
            return _cannot_unmarshal(
                function.get("name"), "ToolFunction.tools.function.name", "string"
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            return _cannot_unmarshal(
                parameters, "ToolFunction.tools.function.parameters", "api.ToolFunctionParameters"
            )
    return None


def _message_problem(message: Mapping[str, Any]) -> str | None:
    images = message.get("images") or []
    if not isinstance(images, list):
        return _cannot_unmarshal(images, "Message.messages.images", "[]api.ImageData")
    for image in images:
        if not isinstance(image, str):
            return _cannot_unmarshal(image, "Message.messages.images", "api.ImageData")
        at = _base64_error_at(image)
        if at is not None:
            return f"illegal base64 data at input byte {at}"
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        return _cannot_unmarshal(calls, "Message.messages.tool_calls", "[]api.ToolCall")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return _cannot_unmarshal(
                function, "ToolCall.messages.tool_calls.function", "api.ToolCallFunction"
            )
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return _cannot_unmarshal(
                arguments,
                "ToolCallFunction.messages.tool_calls.function.arguments",
                "api.ToolCallFunctionArguments",
            )
    return None


def _base64_error_at(text: str) -> int | None:
    """None for standard, padded base64 (Go skips CR and LF in it); else the offset Go's
    ``CorruptInputError`` reports: the first illegal character, or where the short last quantum
    starts."""
    try:
        base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        pass
    else:
        return None
    for offset, character in enumerate(text):
        if character not in _BASE64 and character not in "=\r\n":
            return offset
    return len(text) - (len(text) % 4 or 4)


def options_problem(options: Any) -> str | None:
    """The Go server's message for an option of the wrong JSON type, or None."""
    if options is None:
        return None
    if not isinstance(options, dict):
        return "json: cannot unmarshal options into Go struct field"
    for key in ("temperature", "top_p"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f'option "{key}" must be of type float32'
    value = options.get("num_predict")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        return 'option "num_predict" must be of type integer'
    stop = options.get("stop")
    if stop is not None and not isinstance(stop, list):
        return 'option "stop" must be of type array'
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        return 'option "stop" must be of an array of strings'
    return None
