"""Request checks of the fake OpenAI-compatible APIs, and their prompt-cache accounting.

:func:`check_request` raises :class:`Invalid` with the message of the flavour's 400 answer for
the first thing wrong with a chat body (what is checked is listed in
:mod:`delos.testing.fake_openai`'s docstring). :func:`prompt_units` cuts a prompt into the
pieces the fake counts and caches, and :class:`PromptCache` tells how many of its tokens are read
from the cache or written to it, as each flavour's caching does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from delos.testing._agent import signature_valid
from delos.testing._openai_flavour import OpenAIFlavour

__all__ = ["Invalid", "PromptCache", "Unit", "check_request", "prompt_units"]

_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Tokens an image or a file counts for (OpenAI's base cost of an image).
_MEDIA_TOKENS: Final = 85
#: The shortest prefix a provider caches (tokens); cached counts grow in blocks of 128 beyond it.
_CACHE_MINIMUM: Final = 1024
_CACHE_BLOCK: Final = 128
_CACHE_ENTRIES: Final = 4096
_OPENAI_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh")
_OPENAI_REASONING_MODELS: Final = ("gpt-5", "o1", "o3", "o4")
#: OpenAI's request fields; any other is refused as OpenAI does.
_OPENAI_FIELDS: Final = frozenset(
    "model messages temperature top_p n stream stream_options stop max_tokens "
    "max_completion_tokens presence_penalty frequency_penalty logit_bias logprobs top_logprobs "
    "user response_format seed tools tool_choice parallel_tool_calls reasoning_effort store "
    "metadata modalities audio prediction service_tier verbosity web_search_options "
    "prompt_cache_key prompt_cache_retention prompt_cache_options safety_identifier "
    "function_call functions".split()
)
_PART_TYPES: Final = {
    OpenAIFlavour.OPENAI: ("text", "image_url", "input_audio", "file"),
    OpenAIFlavour.TOGETHER: ("text", "image_url", "video_url", "audio_url", "input_audio"),
    OpenAIFlavour.OPENROUTER: ("text", "image_url", "input_audio", "file"),
}


class Invalid(Exception):
    """A request the real API answers with 400 and this message."""


def check_request(flavour: OpenAIFlavour, body: dict[str, Any]) -> None:
    """Check a chat body as ``flavour``'s API does.

    Raises:
        Invalid: the body is one the real API answers with 400.
    """
    _Validator(flavour).check(body)


class _Validator:
    """Refuses (raises :class:`Invalid`) what the flavour's real API answers with 400."""

    def __init__(self, flavour: OpenAIFlavour) -> None:
        self.flavour = flavour

    def check(self, body: dict[str, Any]) -> None:
        if self.flavour is OpenAIFlavour.OPENAI:
            for name in body:
                if name not in _OPENAI_FIELDS:
                    raise Invalid(f"Unrecognized request argument supplied: {name}")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1."
            )
        self._tools(body)
        self._reasoning(body)
        model = str(body.get("model"))
        marks = 0
        pending: list[str] = []
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                raise Invalid(f"Invalid type for '{where}': expected an object.")
            role = message.get("role")
            if pending and role != "tool":
                raise Invalid(_unanswered(pending))
            marks += self._message(where, message, model)
            if role == "assistant" and message.get("tool_calls"):
                pending = self._calls(where, message["tool_calls"])
            elif role == "tool":
                call_id = message.get("tool_call_id")
                if call_id not in pending:
                    raise Invalid(
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'."
                    )
                pending.remove(call_id)
        if pending:
            raise Invalid(_unanswered(pending))
        if marks > 4:
            raise Invalid(
                f"A maximum of 4 blocks with cache_control may be provided. Found {marks}."
            )

    def _tools(self, body: dict[str, Any]) -> None:
        tools = body.get("tools")
        names: list[str] = []
        for index, tool in enumerate(tools or ()):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not function:
                raise Invalid(f"Invalid value for 'tools[{index}]': expected a function tool.")
            name = function.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                raise Invalid(
                    f"Invalid 'tools[{index}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
                )
            if not isinstance(function.get("parameters", {}), dict):
                raise Invalid(f"Invalid type for 'tools[{index}].function.parameters'.")
            names.append(name)
        for option in ("tool_choice", "parallel_tool_calls"):
            if option in body and not tools and self.flavour is OpenAIFlavour.OPENAI:
                raise Invalid(
                    f"Invalid value for '{option}': '{option}' is only allowed when 'tools' are "
                    "specified."
                )
        choice = body.get("tool_choice")
        if choice is None or choice in ("auto", "none", "required"):
            return
        if isinstance(choice, dict) and choice.get("type") == "function":
            if (choice.get("function") or {}).get("name") in names:
                return
            raise Invalid("Invalid 'tool_choice': the function named is not among the tools.")
        raise Invalid(
            "Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or a function."
        )

    def _reasoning(self, body: dict[str, Any]) -> None:
        effort = body.get("reasoning_effort")
        reasoning = body.get("reasoning")
        if self.flavour is OpenAIFlavour.OPENAI:
            if effort is None:
                return
            if effort not in _OPENAI_EFFORTS:
                raise Invalid(
                    f"Invalid value: '{effort}'. Supported values are: 'none', 'minimal', 'low', "
                    "'medium', 'high', and 'xhigh'."
                )
            if not str(body.get("model")).startswith(_OPENAI_REASONING_MODELS):
                raise Invalid(
                    "Unsupported parameter: 'reasoning_effort' is not supported with this model."
                )
            return
        if self.flavour is OpenAIFlavour.TOGETHER:
            if effort is not None and effort not in ("low", "medium", "high"):
                raise Invalid(f"reasoning_effort: '{effort}' is not one of low, medium, high")
            if reasoning is not None and (
                not isinstance(reasoning, dict) or set(reasoning) - {"enabled"}
            ):
                raise Invalid('reasoning: expected {"enabled": bool}')
            return
        if reasoning is None:
            return
        if not isinstance(reasoning, dict) or set(reasoning) - {
            "effort",
            "max_tokens",
            "exclude",
            "enabled",
        }:
            raise Invalid("reasoning: unknown field")
        if "effort" in reasoning and "max_tokens" in reasoning:
            raise Invalid("reasoning: give only one of effort and max_tokens")
        if reasoning.get("effort", "high") not in _OPENAI_EFFORTS:
            raise Invalid(f"reasoning.effort: invalid value '{reasoning['effort']}'")
        tokens = reasoning.get("max_tokens", 1)
        if not isinstance(tokens, int) or tokens < 1:
            raise Invalid("reasoning.max_tokens: expected a positive integer")

    def _message(self, where: str, message: dict[str, Any], model: str) -> int:
        """Check one message; the number of cache_control marks it carries."""
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise Invalid(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'tool', 'function', and 'developer'."
            )
        allowed = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio"}
        if self.flavour is OpenAIFlavour.OPENROUTER:
            allowed |= {"reasoning", "reasoning_details", "cache_control"}
        if self.flavour is not OpenAIFlavour.TOGETHER:
            for key in message:
                if key not in allowed:
                    raise Invalid(f"Unknown parameter: '{where}.{key}'.")
        content = message.get("content")
        marks = 0
        if isinstance(content, list):
            if self.flavour is OpenAIFlavour.TOGETHER and role != "user":
                raise Invalid(f"{where}.content: a {role} message's content must be a string")
            for number, part in enumerate(content):
                marks += self._part(f"{where}.content[{number}]", part, str(role))
        elif content is None:
            if role != "assistant" or not message.get("tool_calls"):
                raise Invalid(f"Invalid value for '{where}.content': expected a string, got null.")
        elif not isinstance(content, str):
            raise Invalid(f"Invalid type for '{where}.content': expected a string or an array.")
        if role == "assistant" and message.get("reasoning_details") is not None:
            self._thinking(where, message["reasoning_details"], model)
        return marks

    def _part(self, where: str, part: Any, role: str) -> int:
        if not isinstance(part, dict):
            raise Invalid(f"Invalid type for '{where}': expected an object.")
        kind = part.get("type")
        kinds = _PART_TYPES[self.flavour] if role == "user" else ("text",)
        if kind not in kinds:
            listed = ", ".join(f"'{k}'" for k in kinds)
            raise Invalid(f"Invalid value: '{kind}'. Supported values are: {listed}.")
        allowed = {"type", kind}
        if self.flavour is OpenAIFlavour.OPENROUTER:
            allowed.add("cache_control")
        for key in part:
            if key not in allowed:
                raise Invalid(f"Unknown parameter: '{where}.{key}'.")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise Invalid(f"Invalid type for '{where}.text': expected a string.")
        if kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str) or not _valid_image_url(url):
                raise Invalid(
                    f"Invalid '{where}.image_url.url': expected an https URL or a base64 data URL "
                    "of an image."
                )
        if kind == "file":
            file = part.get("file") or {}
            data = file.get("file_data")
            if not file.get("file_id") and not (
                isinstance(data, str) and _decoded(data, "application/pdf") is not None
            ):
                raise Invalid(
                    f"Invalid '{where}.file.file_data': expected a base64 data URL of a PDF."
                )
        control = part.get("cache_control")
        if control is None:
            return 0
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            raise Invalid(f'{where}.cache_control: expected {{"type": "ephemeral"}}')
        return 1

    def _calls(self, where: str, calls: Any) -> list[str]:
        ids: list[str] = []
        for number, call in enumerate(calls if isinstance(calls, list) else [None]):
            at = f"{where}.tool_calls[{number}]"
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or call.get("type") != "function"
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                raise Invalid(f"Invalid '{at}': expected {{id, type: function, function}}.")
            ids.append(call["id"])
        return ids

    def _thinking(self, where: str, details: Any, model: str) -> None:
        for number, detail in enumerate(details if isinstance(details, list) else [None]):
            at = f"{where}.reasoning_details[{number}]"
            kind = detail.get("type") if isinstance(detail, dict) else None
            if kind not in ("reasoning.text", "reasoning.encrypted", "reasoning.summary"):
                raise Invalid(f"Invalid '{at}.type': unknown reasoning detail type.")
            if kind != "reasoning.text" or not isinstance(detail, dict):
                continue
            signature = detail.get("signature")
            if signature or model.startswith("anthropic/"):
                if not signature_valid(str(detail.get("text", "")), str(signature or "")):
                    raise Invalid(f"{at}: Invalid `signature` in `thinking` block")


def _unanswered(ids: Sequence[str]) -> str:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(ids)
    )


def _decoded(url: str, media_type: str) -> bytes | None:
    """The bytes of a base64 data URL of ``media_type``; None for anything else."""
    head, _, payload = url.partition(",")
    if head != f"data:{media_type};base64":
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _valid_image_url(url: str) -> bool:
    if url.startswith(("https://", "http://")):
        return True
    media_type = url[5:].split(";", 1)[0] if url.startswith("data:") else ""
    return media_type.startswith("image/") and _decoded(url, media_type) is not None


# -- prompt accounting --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """A piece of a prompt for the fake cache: its identity, tokens, and a cache_control mark."""

    key: str
    tokens: int
    marked: bool = False


def prompt_units(messages: Sequence[Mapping[str, Any]]) -> list[Unit]:
    """A prompt as the fake cache sees it: one unit per text (words), image or file (85 tokens)
    and tool call, keyed by what it is and where."""
    units: list[Unit] = []
    for message in messages:
        head = [message.get("role"), message.get("tool_call_id")]
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                bare = {k: v for k, v in part.items() if k != "cache_control"}
                tokens = _words(part["text"]) if part.get("type") == "text" else _MEDIA_TOKENS
                key = json.dumps([*head, bare], sort_keys=True)
                units.append(Unit(key, tokens, "cache_control" in part))
        elif content is not None or not message.get("tool_calls"):
            text = str(content or "")
            units.append(Unit(json.dumps([*head, text]), _words(text)))
        for call in message.get("tool_calls") or ():
            arguments = str(call["function"]["arguments"])
            units.append(Unit(json.dumps([*head, call], sort_keys=True), _words(arguments)))
    return units


def _words(text: str) -> int:
    return max(1, len(text.split()))


class PromptCache:
    """The prompts one fake server has cached: automatic prefix caching (OpenAI, OpenRouter) and
    Anthropic-style ``cache_control`` marks (OpenRouter's Anthropic models); Together has none."""

    def __init__(self, flavour: OpenAIFlavour) -> None:
        self._flavour = flavour
        # Automatic caching: the prompts each model saw lately (their unit keys).
        self._seen: dict[str, deque[tuple[str, ...]]] = {}
        # Anthropic-style caching: the marked prefixes written so far, per model.
        self._written: set[tuple[str, ...]] = set()

    def usage(self, model: str, units: Sequence[Unit]) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for a prompt of ``units``."""
        if self._flavour is OpenAIFlavour.TOGETHER:
            return 0, 0
        keys = tuple(unit.key for unit in units)
        totals = []
        running = 0
        for unit in units:
            running += unit.tokens
            totals.append(running)
        if self._flavour is OpenAIFlavour.OPENROUTER and model.startswith("anthropic/"):
            marks = [i for i, unit in enumerate(units) if unit.marked]
            if not marks or totals[marks[-1]] < _CACHE_MINIMUM:
                return 0, 0
            read = next(
                (totals[i] for i in reversed(marks) if (model, *keys[: i + 1]) in self._written),
                0,
            )
            if len(self._written) >= _CACHE_ENTRIES:
                self._written.clear()  # a bounded cache: the fake may serve a long benchmark
            self._written.add((model, *keys[: marks[-1] + 1]))
            return read, totals[marks[-1]] - read
        seen = self._seen.setdefault(model, deque(maxlen=64))
        common = 0
        for earlier in seen:
            shared = 0
            for index, (key, previous) in enumerate(zip(keys, earlier, strict=False)):
                if key != previous:
                    break
                shared = totals[index]
            common = max(common, shared)
        seen.append(keys)
        if common < _CACHE_MINIMUM:
            return 0, 0
        return common - (common - _CACHE_MINIMUM) % _CACHE_BLOCK, 0
