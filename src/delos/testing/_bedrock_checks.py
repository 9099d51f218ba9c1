"""Request checks of the fake Bedrock Converse API, and its prompt-cache accounting.

:func:`converse_problem` finds the first thing wrong with a Converse body, worded as Bedrock's
400 ``ValidationException`` messages (or Claude's, passed on behind Bedrock's prefix); what is
checked is listed in :mod:`delos.testing.fake_bedrock`'s docstring. :func:`prompt_tokens` counts
a prompt's tokens and those read from and written to the fake's prompt cache, and updates it.
Also here, because checks and answers both need them: the body's settings as the fake reads them
(:func:`has_cache_points`, :func:`tool_choice`, :func:`thinking_budget`) and the opaque redacted
thinking the fake makes (:func:`seal`) and checks when it comes back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Final

from delos.testing._agent import sign, signature_valid
from delos.testing._behaviour import count_tokens

__all__ = [
    "converse_problem",
    "has_cache_points",
    "prompt_tokens",
    "seal",
    "thinking_budget",
    "tool_choice",
]

_NULL_MESSAGES = (
    "1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
    "Member must not be null"
)
_FIRST_NOT_USER = (
    "A conversation must start with a user message. Try again with a conversation that starts "
    "with a user message."
)
_NOT_ALTERNATING = (
    "A conversation must alternate between user and assistant roles. Make sure the conversation "
    "alternates between user and assistant roles and try again."
)
_NEEDS_TOOL_CONFIG = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)
_BAD_DOCUMENT_NAME = (
    "The document file name can only contain alphanumeric characters, whitespace characters, "
    "hyphens, parentheses, and square brackets. The name can't contain more than one "
    "consecutive whitespace character. Check that the file name conforms to these restrictions "
    "and retry your request."
)
#: Errors Claude itself raises, which Bedrock passes on behind this prefix.
_MODEL_SAYS = "The model returned the following errors: "
_THINKING_DOCS = (
    "Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "toolUse", "toolResult", "reasoningContent", "cachePoint"}
)
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_DOCUMENT_FORMATS = frozenset({"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"})
#: Bedrock's rule for document names; underscores pass too (observed, though not documented).
_DOCUMENT_NAME = re.compile(r"(?!.* {2})[A-Za-z0-9_ ()\[\]-]{1,200}")
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Claude generations with extended thinking.
_THINKING_MODEL = re.compile(r"anthropic\.claude-(3-7-|(sonnet|opus|haiku)-[4-9])")
_ANTHROPIC_TYPES = {"text": "text", "toolUse": "tool_use", "image": "image", "document": "document"}
_REDACTED_PREFIX: Final = b"delos-redacted-thinking\0"
#: What the fake tokenizer counts an image as.
_IMAGE_TOKENS: Final = 85


def converse_problem(model: str, body: dict[str, Any]) -> str | None:
    """The ValidationException message Bedrock gives for ``body``, or None when it is valid."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _NULL_MESSAGES
    expected = "user"
    uses: list[str] = []  # the toolUse ids of the previous (assistant) message
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return f"Malformed message at messages.{index}."
        if message.get("role") != expected:
            return _FIRST_NOT_USER if index == 0 else _NOT_ALTERNATING
        problem = _content_problem(model, index, message) or _pairing_problem(index, message, uses)
        if problem is not None:
            return problem
        uses = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        expected = "assistant" if expected == "user" else "user"
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return (
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' "
            "failed to satisfy constraint: Member must have value greater than or equal to 1"
        )
    if has_cache_points(body) and not _caches(model):
        return f"{_MODEL_SAYS}cachePoint: this model does not support prompt caching"
    return _tool_config_problem(body) or _thinking_problem(model, body)


def _content_problem(model: str, index: int, message: dict[str, Any]) -> str | None:
    role = message["role"]
    content = message["content"]
    for position, block in enumerate(content):
        at = f"messages.{index}.content.{position}"
        if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_TYPES:
            return f"The content block at {at} is not a supported content block."
        kind, value = next(iter(block.items()))
        if kind == "text" and not str(value).strip():
            return (
                f"The text field in the ContentBlock object at {at} is blank. Add text to the "
                "text field, and try again."
            )
        if kind in ("image", "document", "toolResult") and role != "user":
            return f"The {kind} block at {at} is only allowed in a user message."
        if kind in ("toolUse", "reasoningContent") and role != "assistant":
            return f"The {kind} block at {at} is only allowed in an assistant message."
        problem = _block_problem(kind, value, at)
        if problem is not None:
            return problem
    if any("document" in b for b in content) and not any("text" in b for b in content):
        return (
            f"The message at messages.{index} has a document but no text. Add a text block "
            "to a message with a document, and try again."
        )
    return None


def _block_problem(kind: str, value: Any, at: str) -> str | None:
    if kind == "image":
        if value.get("format") not in _IMAGE_FORMATS or not _bytes_valid(value):
            return f"The image at {at} is malformed: check its format and bytes."
    elif kind == "document":
        if not _DOCUMENT_NAME.fullmatch(str(value.get("name", ""))):
            return _BAD_DOCUMENT_NAME
        if value.get("format") not in _DOCUMENT_FORMATS or not _bytes_valid(value):
            return f"The document at {at} is malformed: check its format and bytes."
    elif kind == "toolUse":
        if not _TOOL_USE_ID.fullmatch(str(value.get("toolUseId", ""))):
            return f"The toolUseId at {at}.toolUse is malformed."
        if not isinstance(value.get("input"), dict):
            return f"The format of the value at {at}.toolUse.input is invalid."
    elif kind == "toolResult":
        for number, item in enumerate(value.get("content") or ()):
            if "json" in item and not isinstance(item["json"], dict):
                return (
                    f"The format of the value at {at}.toolResult.content.{number}.json is "
                    "invalid. Provide a json object for the field and try again."
                )
    elif kind == "reasoningContent":
        return _reasoning_problem(value, at)
    elif kind == "cachePoint" and value.get("type") != "default":
        return f"The value at {at}.cachePoint.type must be one of the following: default."
    return None


def _reasoning_problem(value: dict[str, Any], at: str) -> str | None:
    """Thinking sent back must be the fake's own, unchanged (its signature checks)."""
    if "redactedContent" in value:
        if not _sealed_valid(str(value["redactedContent"])):
            return f"{_MODEL_SAYS}{at}: Invalid `data` in `redacted_thinking` block"
        return None
    reasoning = value.get("reasoningText") or {}
    if "signature" not in reasoning:
        return f"{_MODEL_SAYS}{at}.thinking.signature: Field required"
    if not signature_valid(str(reasoning.get("text", "")), str(reasoning["signature"])):
        return f"{_MODEL_SAYS}{at}: Invalid `signature` in `thinking` block"
    return None


def _pairing_problem(index: int, message: dict[str, Any], uses: Sequence[str]) -> str | None:
    """Every toolUse of the previous message answered here, and nothing else."""
    results = [b["toolResult"].get("toolUseId") for b in message["content"] if "toolResult" in b]
    for position, result in enumerate(results):
        if result not in uses:
            return (
                f"{_MODEL_SAYS}messages.{index}.content.{position}: unexpected `tool_use_id` "
                f"found in `tool_result` blocks: {result}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
    if len(results) > len(uses):
        return (
            f"The number of toolResult blocks at messages.{index}.content exceeds the number of "
            "toolUse blocks of previous turn."
        )
    missing = [use for use in uses if use not in results]
    if missing:
        return (
            f"Expected toolResult blocks at messages.{index}.content for the following Ids: "
            + ", ".join(missing)
        )
    return None


def _tool_config_problem(body: dict[str, Any]) -> str | None:
    tool_config = body.get("toolConfig")
    if tool_config is None:
        blocks = (b for m in body["messages"] for b in m["content"])
        if any("toolUse" in b or "toolResult" in b for b in blocks):
            return _NEEDS_TOOL_CONFIG
        return None
    tools = tool_config.get("tools") or ()
    names = []
    for number, tool in enumerate(tools):
        spec = tool.get("toolSpec")
        if spec is None:
            continue
        names.append(spec.get("name"))
        if not _TOOL_NAME.fullmatch(str(spec.get("name", ""))):
            return f"The value at toolConfig.tools.{number}.toolSpec.name is malformed."
        schema = (spec.get("inputSchema") or {}).get("json")
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            return (
                f"The value at toolConfig.tools.{number}.toolSpec.inputSchema.json.type must be "
                "one of the following: object."
            )
    chosen = (tool_config.get("toolChoice") or {}).get("tool", {}).get("name")
    if not names or (chosen is not None and chosen not in names):
        return "toolConfig.toolChoice.tool.name must name a tool in toolConfig.tools."
    return None


def _thinking_problem(model: str, body: dict[str, Any]) -> str | None:
    """Claude's own checks of a request that thinks."""
    fields = body.get("additionalModelRequestFields") or {}
    if "thinking" not in fields:
        return None
    if not _THINKING_MODEL.search(model):
        return f"{_MODEL_SAYS}thinking: Extra inputs are not permitted"
    budget = thinking_budget(body)
    if budget is None:
        return None
    if budget < 1024:
        return (
            f"{_MODEL_SAYS}thinking.enabled.budget_tokens: Input should be greater than or "
            "equal to 1024"
        )
    config = body.get("inferenceConfig") or {}
    if config.get("maxTokens") is not None and config["maxTokens"] <= budget:
        return (
            f"{_MODEL_SAYS}`max_tokens` must be greater than `thinking.budget_tokens`. "
            + _THINKING_DOCS
        )
    if config.get("temperature") not in (None, 1):
        return f"{_MODEL_SAYS}`temperature` may only be set to 1 when thinking is enabled. " + (
            _THINKING_DOCS
        )
    if config.get("topP") is not None and config["topP"] < 0.95:
        return (
            f"{_MODEL_SAYS}`top_p` must be greater than or equal to 0.95 or unset when "
            "thinking is enabled. " + _THINKING_DOCS
        )
    if tool_choice(body) not in ("", "auto"):
        return f"{_MODEL_SAYS}Thinking may not be enabled when tool_choice forces tool use."
    messages = body["messages"]
    if len(messages) >= 2 and any("toolResult" in b for b in messages[-1]["content"]):
        first = next(iter(messages[-2]["content"][0]), "")
        if first != "reasoningContent":
            return (
                f"{_MODEL_SAYS}messages.{len(messages) - 2}.content.0.type: Expected `thinking` "
                f"or `redacted_thinking`, but found `{_ANTHROPIC_TYPES.get(first, first)}`. "
                "When `thinking` is enabled, a final `assistant` message must start with a "
                "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
                "blocks). We recommend you include thinking blocks from previous turns. To "
                "avoid this requirement, disable `thinking`. " + _THINKING_DOCS
            )
    return None


def _bytes_valid(value: dict[str, Any]) -> bool:
    data = (value.get("source") or {}).get("bytes")
    try:
        return isinstance(data, str) and len(base64.b64decode(data, validate=True)) > 0
    except ValueError:
        return False


def _caches(model: str) -> bool:
    return "anthropic.claude" in model or "amazon.nova" in model


def has_cache_points(body: dict[str, Any]) -> bool:
    """Whether any tool, system or message block of ``body`` is a ``cachePoint``."""
    tools = (body.get("toolConfig") or {}).get("tools") or ()
    blocks = [*tools, *(body.get("system") or ())]
    blocks += [b for m in body["messages"] for b in m["content"]]
    return any("cachePoint" in block for block in blocks)


def tool_choice(body: dict[str, Any]) -> str:
    """``toolChoice`` as :func:`~delos.testing._agent.planned_tool_calls` takes it ("" for
    auto)."""
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    if "any" in choice:
        return "required"
    return str(choice["tool"]["name"]) if "tool" in choice else ""


def thinking_budget(body: dict[str, Any]) -> int | None:
    """Claude's thinking budget (tokens) when ``body`` enables thinking (0 when it gives none
    that is an integer), else None."""
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    return budget if isinstance(budget, int) else 0


def seal(thought: str) -> str:
    """Redacted thinking as Bedrock's JSON carries a blob (base64): bytes only the fake reads."""
    raw = _REDACTED_PREFIX + sign(thought).encode() + b"\0" + thought.encode()
    return base64.b64encode(raw).decode()


def _sealed_valid(data: str) -> bool:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return False
    if not raw.startswith(_REDACTED_PREFIX):
        return False
    signature, _, thought = raw[len(_REDACTED_PREFIX) :].partition(b"\0")
    return signature_valid(thought.decode(errors="replace"), signature.decode(errors="replace"))


def prompt_tokens(cache: set[str], model: str, body: dict[str, Any]) -> tuple[int, int, int]:
    """The prompt's tokens, and those read from and written to the fake's prompt cache.

    ``cache`` holds the keys of the prompt prefixes cached so far, and is updated.
    The prompt is tools, then system, then messages. Each ``cachePoint`` marks a prefix;
    the longest prefix cached before is read, and the prefix up to the last point, when
    new, is written (the part of it not read). Every marked prefix is cached from then on.
    Unlike Bedrock, the fake caches prefixes of any length.
    """
    digest = hashlib.sha256(model.encode())
    total = 0
    points: list[tuple[str, int]] = []
    tools = (body.get("toolConfig") or {}).get("tools") or ()
    sections = [("tools", tools), ("system", body.get("system") or ())]
    sections += [(m["role"], m["content"]) for m in body["messages"]]
    for label, blocks in sections:
        digest.update(f"\0{label}\0".encode())
        for block in blocks:
            if "cachePoint" in block:
                points.append((digest.hexdigest(), total))
                continue
            digest.update(json.dumps(block, sort_keys=True).encode())
            total += _block_tokens(block)
    if not points:
        return total, 0, 0
    read = max((tokens for key, tokens in points if key in cache), default=0)
    last_key, last_tokens = points[-1]
    written = 0 if last_key in cache else last_tokens - read
    cache.update(key for key, _ in points)
    return total, read, written


def _block_tokens(block: dict[str, Any]) -> int:
    """The fake tokenizer's count for one content, system or tool block."""
    kind, value = next(iter(block.items()))
    if kind == "text":
        return count_tokens([str(value)])
    if kind == "toolSpec":
        schema = json.dumps(value.get("inputSchema", {}))
        return count_tokens([value.get("name", ""), value.get("description", ""), schema])
    if kind == "toolUse":
        return count_tokens([value.get("name", ""), json.dumps(value.get("input"))])
    if kind == "toolResult":
        return sum(_block_tokens(item) for item in value.get("content") or ()) or 1
    if kind == "json":
        return count_tokens([json.dumps(value)])
    if kind == "image":
        return _IMAGE_TOKENS
    if kind == "document":
        data = base64.b64decode((value.get("source") or {}).get("bytes") or "")
        words = data.decode(errors="replace") if value.get("format") == "txt" else ""
        return count_tokens([str(value.get("name", "")), words]) + len(data) // 64
    if kind == "reasoningContent":
        return count_tokens([str((value.get("reasoningText") or {}).get("text", ""))])
    return 0
