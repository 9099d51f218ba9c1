"""What the fake Anthropic model answers, and how it writes it: whole Messages and SSE streams.

:func:`plan_answer` decides the answer block by block, as :mod:`delos.testing._agent` describes
(tool calls, thinking, structured output, plain text cut at a stop sequence), with its usage.
:func:`whole_message` writes it as a Message object and :func:`stream_events` as the named SSE
events of a stream, in the real order, with the behaviour's pacing and mid-stream faults.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from delos.runtime.wire import encode_sse
from delos.testing._agent import FakeToolCall, planned_tool_calls, sign, thought_about, tool_reply
from delos.testing._anthropic_checks import message_texts, redacted_data, tool_results
from delos.testing._behaviour import Behaviour, Fault, count_tokens, reply_words
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, Pause, ScriptedBody

__all__ = [
    "FOREVER",
    "REDACTION_TRIGGER",
    "Plan",
    "oversized",
    "plan_answer",
    "stream_events",
    "whole_message",
]

_JSON_PIECE = 8  # characters of structured output per stream delta (and per output token)
#: The API's documented test string that makes the model answer with redacted thinking.
REDACTION_TRIGGER: Final = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
#: A pause that never ends (a body that stops after its headers).
FOREVER: Final = Pause(math.inf)


# -- the answer ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    """One content block of the answer; ``pieces`` are its stream deltas (one token each)."""

    kind: str
    pieces: list[str]
    signature: str = ""
    data: str = ""
    id: str = ""
    name: str = ""
    input: Any = None

    def whole(self) -> dict[str, Any]:
        """The block of a non-streamed answer."""
        match self.kind:
            case "thinking":
                thought = "".join(self.pieces)
                return {"type": "thinking", "thinking": thought, "signature": self.signature}
            case "redacted_thinking":
                return {"type": "redacted_thinking", "data": self.data}
            case "tool_use":
                return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}
        return {"type": "text", "text": "".join(self.pieces)}

    def start(self) -> dict[str, Any]:
        """The block of its ``content_block_start`` event."""
        match self.kind:
            case "thinking":
                return {"type": "thinking", "thinking": "", "signature": ""}
            case "redacted_thinking":
                return {"type": "redacted_thinking", "data": self.data}
            case "tool_use":
                return {"type": "tool_use", "id": self.id, "name": self.name, "input": {}}
        return {"type": "text", "text": ""}

    def delta(self, piece: str) -> dict[str, Any]:
        match self.kind:
            case "thinking":
                return {"type": "thinking_delta", "thinking": piece}
            case "tool_use":
                return {"type": "input_json_delta", "partial_json": piece}
        return {"type": "text_delta", "text": piece}


@dataclass(frozen=True, slots=True)
class _Usage:
    """Token counts of one answer: input ones apart from the cache's, as the API reports them."""

    input: int
    cache_written: int
    cache_read: int
    output: int
    thinking: int

    def start(self, output: int | None = None) -> dict[str, Any]:
        """The usage of a Message; ``message_start`` carries a placeholder ``output`` count."""
        final = output is None
        usage: dict[str, Any] = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_written,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_written,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.output if output is None else output,
            "service_tier": "standard",
        }
        if self.thinking and final:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking}
        return usage

    def final(self) -> dict[str, Any]:
        """The cumulative usage of ``message_delta``."""
        usage: dict[str, Any] = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_written,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        }
        if self.thinking:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking}
        return usage


@dataclass(frozen=True, slots=True)
class Plan:
    """What the fake model answers, block by block."""

    blocks: list[_Block]
    usage: _Usage
    stop_reason: str
    stop_sequence: str | None = None


# -- what the model answers ---------------------------------------------------------------------


def plan_answer(
    body: dict[str, Any],
    behaviour: Behaviour,
    *,
    prompt_tokens: tuple[int, int, int],
    call_id_prefix: str,
) -> Plan:
    """What the model answers (see :mod:`delos.testing._agent`) and its usage.

    ``prompt_tokens`` are the prompt's (uncached, cache-written, cache-read) input tokens; tool
    call ids are ``call_id_prefix`` and a two-digit number.
    """
    uncached, written, read = prompt_tokens
    messages = body["messages"]
    results = tool_results(messages[-1])
    blocks: list[_Block] = []
    thinking_tokens = 0
    limit = int(body["max_tokens"])
    if (body.get("thinking") or {}).get("type") == "enabled":
        thought = thought_about(_last_user_text(messages))
        blocks.append(_Block("thinking", _words(thought), signature=sign(thought)))
        if REDACTION_TRIGGER in _last_user_text(messages):
            blocks.append(_Block("redacted_thinking", [], data=redacted_data(thought)))
        # A redacted block stands for more thinking, counted like the visible one.
        thinking_tokens = count_tokens([thought]) * len(blocks)
        limit -= thinking_tokens
    calls = [] if results else _planned_calls(body)
    if calls:
        for number, call in enumerate(calls):
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else call.arguments
            )
            call_id = f"{call_id_prefix}{number:02d}"
            blocks.append(_Block("tool_use", _json_pieces(value), id=call_id, name=call.name))
            blocks[-1].input = value
        return _finish(blocks, "tool_use", uncached, written, read, thinking_tokens)
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") == "json_schema" and not results:
        schema = output_format.get("schema") or {}
        value = (
            {"unexpected": True}
            if behaviour.fault is Fault.NONCONFORMING_JSON
            else sample_instance(schema)
        )
        blocks.append(_Block("text", _json_pieces(value)))
        return _finish(blocks, "end_turn", uncached, written, read, thinking_tokens)
    if results:
        words, stop_reason = tool_reply(results).split(" "), "end_turn"
    elif behaviour.reply is not None:
        words, stop_reason = behaviour.reply.split(" "), "end_turn"
    else:
        last = message_texts(messages[-1:])
        count = min(behaviour.completion_tokens, limit)
        words = reply_words(last[-1] if last else "", count)
        stop_reason = "max_tokens" if behaviour.completion_tokens > limit else "end_turn"
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    text = "".join(pieces)
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
    if not hits:
        blocks.append(_Block("text", pieces))
        return _finish(blocks, stop_reason, uncached, written, read, thinking_tokens)
    cut, sequence = min(hits)
    kept, used = [], 0
    for piece in pieces:
        if used + len(piece) > cut:
            if cut > used:
                kept.append(piece[: cut - used])
            break
        kept.append(piece)
        used += len(piece)
    blocks.append(_Block("text", kept))
    plan = _finish(blocks, "stop_sequence", uncached, written, read, thinking_tokens)
    return replace(plan, stop_sequence=sequence)


def _finish(
    blocks: list[_Block],
    stop_reason: str,
    uncached: int,
    written: int,
    read: int,
    thinking_tokens: int,
) -> Plan:
    output = thinking_tokens + sum(len(b.pieces) for b in blocks if b.kind != "thinking")
    usage = _Usage(uncached, written, read, output, thinking_tokens)
    return Plan(blocks, usage, stop_reason)


def _words(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


def _json_pieces(value: Any) -> list[str]:
    # Streams carry the model's JSON text as it writes it: spaced, in small fragments.
    text = json.dumps(value, ensure_ascii=False)
    return [text[i : i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE)]


def _planned_calls(body: dict[str, Any]) -> list[FakeToolCall]:
    messages = body["messages"]
    if messages[-1].get("role") != "user":
        return []
    tools = [
        (str(t["name"]), t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t
    ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type", "auto")
    return planned_tool_calls(
        tools,
        _last_user_text(messages),
        tool_choice="none"
        if kind == "none"
        else (choice.get("name", "") if kind == "tool" else ""),
        parallel=not choice.get("disable_parallel_tool_use", False),
    )


def _last_user_text(messages: Sequence[Any]) -> str:
    """The text of the latest user message that has some."""
    for message in reversed(messages):
        if message.get("role") == "user":
            texts = message_texts([message])
            if any(texts):
                return " ".join(t for t in texts if t)
    return ""


# -- writing it ---------------------------------------------------------------------------------


def whole_message(plan: Plan, message_id: str, model: str) -> dict[str, Any]:
    """The Message object of a non-streamed answer."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block.whole() for block in plan.blocks],
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
        "usage": plan.usage.start(),
    }


def stream_events(
    plan: Plan, behaviour: Behaviour, *, message_id: str, model: str, rng: random.Random
) -> Iterator[BodyItem | Pause]:
    """The named SSE events of a streamed answer, paced and broken as ``behaviour`` asks."""
    if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
        yield FOREVER
    with_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if with_usage:
        message["usage"] = plan.usage.start(1)
    yield _event("message_start", {"type": "message_start", "message": message})
    interval = behaviour.token_interval
    sent = 0  # content deltas so far, across blocks: faults come after tokens_before_fault
    for index, block in enumerate(plan.blocks):
        start = {"type": "content_block_start", "index": index, "content_block": block.start()}
        yield _event("content_block_start", start)
        if index == 0:
            # The real service's ping carries a space after the colon, unlike other events.
            yield encode_sse('{"type": "ping"}', event="ping")
            yield Pause(behaviour.time_to_first_token.draw(rng))
        if block.kind == "tool_use":  # the first fragment of a tool's input is empty
            yield _delta(index, {"type": "input_json_delta", "partial_json": ""})
        for piece in block.pieces:
            if sent == behaviour.tokens_before_fault:
                fault = _mid_stream_fault(behaviour.fault)
                if fault is not None:
                    yield from fault
                    return
            if sent and interval:
                yield Pause(interval)
            yield _delta(index, block.delta(piece))
            sent += 1
        if block.kind == "thinking":
            yield _delta(index, {"type": "signature_delta", "signature": block.signature})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
    message_delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
    }
    if with_usage:
        message_delta["usage"] = plan.usage.final()
    yield _event("message_delta", message_delta)
    yield _event("message_stop", {"type": "message_stop"})


def _mid_stream_fault(fault: Fault) -> list[BodyItem] | None:
    """The bytes that end a stream broken by ``fault``; None for a fault of another kind."""
    match fault:
        case Fault.RESET_MID_BODY:
            return [RESET]
        case Fault.TRUNCATED:
            return [
                b'event: content_block_delta\ndata: {"type":"content_block_delta","ind',
                HANG_UP,
            ]
        case Fault.STREAM_ERROR_EVENT:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            return [_event("error", {"type": "error", "error": error})]
        case Fault.INVALID_JSON:
            broken = '{"type":"content_block_delta","in'
            return [encode_sse(broken, event="content_block_delta")]
    return None


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_sse(json.dumps(payload, separators=(",", ":"), ensure_ascii=False), event=name)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def oversized(stream: bool) -> ScriptedBody:
    """80 MiB of padding in one JSON document or one stream event."""
    return ScriptedBody(_padding(stream))


def _padding(stream: bool) -> Iterator[BodyItem]:
    block = b" " * (1 << 20)
    if stream:
        yield b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"pad":"'
    else:
        yield b'{"padding": "'
    for _ in range(80):
        yield block
    yield b'"}\n\n' if stream else b'"}'
