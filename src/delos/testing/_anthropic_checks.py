"""Request checks of the fake Anthropic Messages API, and its prompt-cache accounting.

:func:`request_problem` and :func:`thinking_model_problem` find the first thing wrong with a
Messages body, worded as the service's 400 ``invalid_request_error`` messages (what is checked is
listed in :mod:`delos.testing.fake_anthropic`'s docstring). :func:`cache_usage` splits a prompt's
input tokens into uncached, cache-written and cache-read ones, as the service's prompt cache
does, and updates the cache. Also here, because checks and answers both need them: the texts a
body carries (:func:`message_texts`, :func:`tool_results`) and the opaque ``redacted_thinking``
data the fake makes (:func:`redacted_data`) and checks when it comes back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

from delos.testing._agent import sign, signature_valid
from delos.testing._behaviour import count_tokens

__all__ = [
    "cache_usage",
    "json_object",
    "message_texts",
    "redacted_data",
    "request_problem",
    "thinking_model_problem",
    "tool_results",
]

_SYSTEM_ROLE: Final = (
    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
    'parameter, not "system" as an input message role.'
)
#: Which roles may carry each content block type.
_BLOCK_ROLES: Final = {
    "text": ("user", "assistant"),
    "image": ("user",),
    "document": ("user",),
    "tool_use": ("assistant",),
    "tool_result": ("user",),
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
}
_RESULT_BLOCKS: Final = ("text", "image", "document")
_TOOL_CHOICES: Final = ("auto", "any", "tool", "none")
_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_MIN_BUDGET: Final = 1024
_THINKING_TOP_P: Final = 0.95
_MAX_CACHE_BLOCKS: Final = 4
_THINKING_DOCS: Final = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
#: Model families with extended thinking (among the fake's models).
_THINKING_FAMILIES: Final = ("sonnet-4", "opus-4", "haiku-4", "3-7-sonnet")


def json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def request_problem(body: dict[str, Any], *, needs_model: bool, vertex: bool) -> str | None:
    """The service's message for the first thing wrong with ``body``, or None."""
    if needs_model and not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required"
    if not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return _SYSTEM_ROLE
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if message.get("content") in ("", []):
            return "messages: text content blocks must be non-empty"
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 1
    ):
        return "temperature: Input should be less than or equal to 1"
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        return "stop_sequences: Input should be a valid list of strings"
    return (
        _tools_problem(body)
        or _messages_problem(messages, vertex=vertex)
        or _thinking_problem(body)
        or _cache_problem(body)
    )


def _tools_problem(body: dict[str, Any]) -> str | None:
    names = []
    for index, tool in enumerate(body.get("tools") or []):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.custom.input_schema.type: Input should be 'object'"
        names.append(tool.get("name"))
    choice = body.get("tool_choice") or {}
    if not isinstance(choice, dict):
        return "tool_choice: Input should be a valid dictionary"
    kind = choice.get("type")
    if choice and kind not in _TOOL_CHOICES:
        return (
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if kind == "tool" and choice.get("name") not in names:
        return f"tool_choice: Tool '{choice.get('name')}' not found in 'tools'"
    if kind == "none" and "disable_parallel_tool_use" in choice:
        return "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"
    return None


def _messages_problem(messages: list[Any], *, vertex: bool) -> str | None:
    """Content blocks, and tool results against the tool calls they answer."""
    calls: list[str] = []  # tool_use ids of the previous (assistant) message
    for index, message in enumerate(messages):
        content = message["content"]
        if not isinstance(content, str | list):
            return f"messages.{index}.content: Input should be a valid string or list"
        blocks = content if isinstance(content, list) else []
        role = message["role"]
        for number, block in enumerate(blocks):
            problem = _block_problem(block, f"messages.{index}.content.{number}", role, vertex)
            if problem is not None:
                return problem
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        for number, block in enumerate(blocks):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in calls:
                return (
                    f"messages.{index}.content.{number}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message."
                )
        if calls:
            missing = [c for c in calls if c not in results]
            if missing:
                return (
                    f"messages.{index - 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(missing)}. Each `tool_use` block must "
                    "have a corresponding `tool_result` block in the next message."
                )
            leading = blocks[: len(calls)]
            if any(b.get("type") != "tool_result" for b in leading):
                return (
                    f"messages.{index}: Did not find {len(calls)} `tool_result` block(s) at the "
                    "beginning of this message. Messages following `tool_use` blocks must begin "
                    "with a matching number of `tool_result` blocks."
                )
        calls = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
    return None


def _block_problem(block: Any, at: str, role: str, vertex: bool) -> str | None:
    if not isinstance(block, dict):
        return f"{at}: Input should be a valid dictionary"
    kind = block.get("type")
    if kind not in _BLOCK_ROLES:
        expected = ", ".join(f"'{k}'" for k in _BLOCK_ROLES)
        return (
            f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected "
            f"tags: {expected}"
        )
    if role not in _BLOCK_ROLES[kind]:
        return f"{at}: `{kind}` blocks are not allowed in `{role}` messages"
    control = block.get("cache_control")
    if control is not None:
        if kind in ("thinking", "redacted_thinking"):
            return f"{at}.{kind}.cache_control: Extra inputs are not permitted"
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            return f"{at}.{kind}.cache_control.type: Input should be 'ephemeral'"
    match kind:
        case "text":
            if not isinstance(block.get("text"), str) or not block["text"]:
                return "messages: text content blocks must be non-empty"
        case "image":
            return _image_problem(block.get("source"), f"{at}.image.source", vertex)
        case "document":
            return _document_problem(block, f"{at}.document")
        case "tool_use":
            if not isinstance(block.get("input"), dict):
                return f"{at}.tool_use.input: Input should be a valid dictionary"
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                return f"{at}.tool_use.id: Field required"
        case "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                return f"{at}.tool_result.tool_use_id: Field required"
            inner = block.get("content", "")
            if isinstance(inner, list):
                for number, part in enumerate(inner):
                    if not isinstance(part, dict) or part.get("type") not in _RESULT_BLOCKS:
                        return f"{at}.tool_result.content.{number}: Input tag is not permitted"
                    problem = _block_problem(part, f"{at}.content.{number}", "user", vertex)
                    if problem is not None:
                        return problem
            elif not isinstance(inner, str):
                return f"{at}.tool_result.content: Input should be a valid string or list"
        case "thinking":
            thought, signature = block.get("thinking"), block.get("signature")
            if not isinstance(thought, str) or not isinstance(signature, str):
                return f"{at}.thinking.signature: Field required"
            if not signature_valid(thought, signature):
                return f"{at}: Invalid `signature` in `thinking` block"
        case "redacted_thinking":
            if not _redacted_valid(str(block.get("data"))):
                return f"{at}: Invalid `data` in `redacted_thinking` block"
    return None


def _image_problem(source: Any, at: str, vertex: bool) -> str | None:
    if not isinstance(source, dict):
        return f"{at}: Field required"
    match source.get("type"):
        case "base64":
            if source.get("media_type") not in _IMAGE_TYPES:
                return (
                    f"{at}.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                    "'image/gif' or 'image/webp'"
                )
            if not _is_base64(source.get("data")):
                return f"{at}.base64.data: The image data is not valid base64"
        case "url":
            if vertex:  # Claude on Vertex AI takes bytes only (its message names base64)
                return f"{at}.base64.data: URL sources are not supported"
            url = source.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                return f"{at}.url.url: Input should be a valid URL"
        case other:
            return f"{at}: Input tag '{other}' found using 'type' does not match 'base64' or 'url'"
    return None


def _document_problem(block: dict[str, Any], at: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{at}.source: Field required"
    if "title" in block and not isinstance(block["title"], str):
        return f"{at}.title: Input should be a valid string"
    match source.get("type"), source.get("media_type"):
        case "base64", "application/pdf":
            if not _is_base64(source.get("data")):
                return f"{at}.source.base64.data: The PDF data is not valid base64"
        case "text", "text/plain":
            if not isinstance(source.get("data"), str):
                return f"{at}.source.text.data: Input should be a valid string"
        case kind, media_type:
            return f"{at}.source: unsupported source {kind!r} of {media_type!r}"
    return None


def _is_base64(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _thinking_problem(body: dict[str, Any]) -> str | None:
    """What extended thinking rules out, as the service words it."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        return "thinking: Input tag found using 'type' does not match 'enabled' or 'disabled'"
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < _MIN_BUDGET:
        return (
            "thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{_MIN_BUDGET}"
        )
    if body["max_tokens"] <= budget:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            f"documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and temperature != 1:
        return (
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            f"documentation at {_THINKING_DOCS}#feature-compatibility"
        )
    if top_p is not None and top_p < _THINKING_TOP_P:
        return (
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. "
            f"Please consult our documentation at {_THINKING_DOCS}#feature-compatibility"
        )
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    messages = body["messages"]
    if len(messages) >= 2 and tool_results(messages[-1]):
        # The turn that called the tools answered now must open with its thinking.
        index = len(messages) - 2
        first = messages[index]["content"][0]
        if first.get("type") not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                f"but found `{first.get('type')}`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block (preceeding the lastmost "
                "set of `tool_use` and `tool_result` blocks). We recommend you include thinking "
                "blocks from previous turns. To avoid this requirement, disable `thinking`. "
                f"Please consult our documentation at {_THINKING_DOCS}"
            )
    return None


def thinking_model_problem(body: dict[str, Any], model: str) -> str | None:
    if (body.get("thinking") or {}).get("type") != "enabled":
        return None
    if any(family in model for family in _THINKING_FAMILIES):
        return None
    return f"thinking: '{model}' does not support thinking"


def _cache_problem(body: dict[str, Any]) -> str | None:
    marked = sum(1 for _, _, marked in _prompt_entries(body) if marked)
    if marked > _MAX_CACHE_BLOCKS:
        return (
            f"A maximum of {_MAX_CACHE_BLOCKS} blocks with cache_control may be provided. "
            f"Found {marked}."
        )
    return None


# -- prompt accounting --------------------------------------------------------------------------


def cache_usage(cache: dict[str, int], body: dict[str, Any]) -> tuple[int, int, int]:
    """(uncached, written, read) input tokens, and the prompt cache updated.

    Like the service: the prompt (tools, system, messages in that order) up to each block
    marked with ``cache_control`` is a prefix; the longest prefix already cached is read, and
    the prompt up to the last marker is written (less what was read). Entries never expire.
    """
    total = 0
    digest = hashlib.sha256(str(body.get("model") or "vertex").encode())
    marks: list[tuple[str, int]] = []
    for entry, tokens, marked in _prompt_entries(body):
        total += tokens
        digest.update(json.dumps(entry, sort_keys=True).encode())
        if marked:
            marks.append((digest.hexdigest(), total))
    read = next((tokens for key, tokens in reversed(marks) if key in cache), 0)
    written = 0
    if marks and marks[-1][0] not in cache:
        written = marks[-1][1] - read
    cache.update(marks)
    return total - written - read, written, read


def _prompt_entries(body: dict[str, Any]) -> Iterator[tuple[Any, int, bool]]:
    """The prompt in cache order (tools, system, messages) as (block without its marker,
    tokens, whether it carries ``cache_control``)."""
    for tool in body.get("tools") or []:
        yield _unmarked(tool), 0, isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    if isinstance(system, str):
        yield system, count_tokens([system]), False
    elif isinstance(system, list):
        for block in system:
            text = str(block.get("text", "")) if isinstance(block, dict) else ""
            yield _unmarked(block), count_tokens([text]), "cache_control" in block
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            yield [message.get("role"), content], count_tokens([content]), False
            continue
        for block in content or []:
            texts = _block_texts(block)
            tokens = count_tokens(texts) if texts else 0
            yield [message.get("role"), _unmarked(block)], tokens, "cache_control" in block


def _unmarked(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    return {k: v for k, v in block.items() if k != "cache_control"}


def _block_texts(block: dict[str, Any]) -> list[str]:
    """The texts of a block that count as prompt tokens (one per word)."""
    match block.get("type"):
        case "text":
            return [str(block.get("text", ""))]
        case "tool_use":
            return [json.dumps(block.get("input"), ensure_ascii=False)]
        case "tool_result":
            return [_result_text(block)]
        case "document" if (block.get("source") or {}).get("type") == "text":
            return [str(block["source"].get("data", ""))]
    return []


# -- texts of a body ----------------------------------------------------------------------------


def message_texts(messages: Sequence[Any]) -> list[str]:
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return texts


def tool_results(message: dict[str, Any]) -> list[str]:
    """The texts of the tool results ``message`` carries, in order."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return []
    return [_result_text(b) for b in content if b.get("type") == "tool_result"]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def redacted_data(thought: str) -> str:
    """Opaque ``redacted_thinking`` data the fake can check when it comes back."""
    return base64.b64encode(thought.encode()).decode() + "." + sign(thought)


def _redacted_valid(data: str) -> bool:
    encoded, _, signature = data.rpartition(".")
    try:
        thought = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        return False
    return signature_valid(thought, signature)
