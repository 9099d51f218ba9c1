"""What the fake OpenAI-compatible model answers, and how each flavour writes it.

:func:`plan_turn` decides one answer as :mod:`delos.testing._agent` describes (tool calls,
thinking, structured output, plain text) with its token counts; :func:`completion` writes it as a
``chat.completion`` object and :func:`stream_events` as the chunks of a stream, in the flavour's
own shapes, with the behaviour's pacing and mid-stream faults.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from delos.runtime.wire import encode_sse, encode_sse_comment
from delos.testing._agent import FakeToolCall, planned_tool_calls, sign, thought_about, tool_reply
from delos.testing._behaviour import Behaviour, Fault, count_tokens, reply_words
from delos.testing._openai_flavour import OpenAIFlavour
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem

__all__ = ["Turn", "completion", "plan_turn", "stream_events"]

# The stream's last event: a literal data line, not JSON.
_DONE = encode_sse("[DONE]")
#: OpenAI: reasoning tokens per word of the fake's thought, by effort (the text is never sent).
_EFFORT_FACTOR: Final = {"none": 0, "minimal": 1, "low": 2, "medium": 4, "high": 8, "xhigh": 16}
_REASONING_FORMATS: Final = {
    "anthropic/": "anthropic-claude-v1",
    "google/": "google-gemini-v1",
    "openai/": "openai-responses-v1",
}


@dataclass
class Turn:
    """What the fake answers to one request."""

    pieces: list[str] = field(default_factory=list)
    calls: list[tuple[str, FakeToolCall]] = field(default_factory=list)
    thought: str = ""
    thought_signed: bool = False
    reasoning_tokens: int = 0
    prompt_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    finish: str = "stop"

    @property
    def completion_tokens(self) -> int:
        calls = sum(count_tokens([call.arguments_json]) for _, call in self.calls)
        return len(self.pieces) + calls + self.reasoning_tokens


# -- the agent turn -----------------------------------------------------------------------------


def plan_turn(
    body: dict[str, Any],
    behaviour: Behaviour,
    flavour: OpenAIFlavour,
    *,
    sequence: int,
    prompt_tokens: int,
    cache: tuple[int, int],
) -> Turn:
    """What the fake answers to ``body``: ``prompt_tokens`` are the prompt's tokens, ``cache`` the
    (read, written) cache tokens, ``sequence`` the request's number (tool call ids derive from
    it)."""
    messages: list[dict[str, Any]] = body["messages"]
    turn = Turn(prompt_tokens=prompt_tokens)
    turn.cache_read, turn.cache_write = cache
    user_text = _last_user_text(messages)
    _think(flavour, body, turn, user_text)
    tools = [
        (str(t["function"]["name"]), t["function"].get("parameters") or {})
        for t in body.get("tools") or ()
    ]
    if messages[-1].get("role") == "tool":
        results = [_text_of(m) for m in _trailing_tool_messages(messages)]
        turn.pieces = _spaced(tool_reply(results).split(" "))
    elif tools and messages[-1].get("role") == "user":
        choice = body.get("tool_choice") or ""
        if isinstance(choice, dict):
            choice = str(choice["function"]["name"])
        parallel = body.get("parallel_tool_calls") is not False
        calls = planned_tool_calls(tools, user_text, tool_choice=choice, parallel=parallel)
        turn.calls = [(_call_id(flavour, sequence, i), call) for i, call in enumerate(calls)]
    if turn.calls:
        turn.finish = "tool_calls"
    else:
        if not turn.pieces:
            turn.pieces = _answer(body, behaviour)
        turn.finish = _finish_reason(flavour, body, len(turn.pieces), behaviour)
    return turn


def _think(flavour: OpenAIFlavour, body: dict[str, Any], turn: Turn, user_text: str) -> None:
    thought = thought_about(user_text)
    words = len(thought.split())
    if flavour is OpenAIFlavour.OPENAI:
        effort = body.get("reasoning_effort")
        if effort:
            turn.reasoning_tokens = words * _EFFORT_FACTOR[effort]
        return
    reasoning = body.get("reasoning") or {}
    if flavour is OpenAIFlavour.TOGETHER:
        if body.get("reasoning_effort") or reasoning.get("enabled"):
            turn.thought, turn.reasoning_tokens = thought, words
        return
    if reasoning and reasoning.get("enabled") is not False and reasoning.get("effort") != "none":
        turn.reasoning_tokens = words
        if not reasoning.get("exclude"):
            turn.thought = thought
            turn.thought_signed = body["model"].startswith("anthropic/")


def _call_id(flavour: OpenAIFlavour, sequence: int, index: int) -> str:
    digest = hashlib.sha256(f"{flavour.value}:{sequence}:{index}".encode())
    return "call_" + digest.hexdigest()[:24]


def _answer(body: dict[str, Any], behaviour: Behaviour) -> list[str]:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema", {})
        value = (
            {"unexpected": True}
            if behaviour.fault is Fault.NONCONFORMING_JSON
            else sample_instance(schema)
        )
        text = json.dumps(value)
        return [text[i : i + 8] for i in range(0, len(text), 8)]
    if behaviour.reply is not None:
        return _spaced(behaviour.reply.split(" "))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    count = min(behaviour.completion_tokens, limit) if limit else behaviour.completion_tokens
    return _spaced(reply_words(_text_of(body["messages"][-1]), count))


def _finish_reason(
    flavour: OpenAIFlavour, body: dict[str, Any], produced: int, behaviour: Behaviour
) -> str:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit and behaviour.reply is None and behaviour.completion_tokens > limit:
        return "length"
    return "eos" if flavour is OpenAIFlavour.TOGETHER and produced % 2 else "stop"


# -- writing it ---------------------------------------------------------------------------------


def _usage(flavour: OpenAIFlavour, turn: Turn) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
    if flavour is OpenAIFlavour.TOGETHER:
        return usage  # Together's usage has these three fields only
    prompt_details: dict[str, Any] = {"cached_tokens": turn.cache_read}
    if flavour is OpenAIFlavour.OPENROUTER:
        prompt_details["cache_write_tokens"] = turn.cache_write
    else:
        prompt_details["audio_tokens"] = 0
    usage["prompt_tokens_details"] = prompt_details
    usage["completion_tokens_details"] = {"reasoning_tokens": turn.reasoning_tokens}
    return usage


def _reasoning_details(model: str, text: str, signature: str | None) -> dict[str, Any]:
    fmt = next((f for p, f in _REASONING_FORMATS.items() if model.startswith(p)), "unknown")
    detail: dict[str, Any] = {"type": "reasoning.text", "text": text}
    if signature is not None:
        detail["signature"] = signature
    return {**detail, "format": fmt, "index": 0}


def completion(
    body: dict[str, Any], turn: Turn, flavour: OpenAIFlavour, *, sequence: int
) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streamed answer."""
    text = "".join(turn.pieces)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if flavour is OpenAIFlavour.OPENAI:
        message |= {"refusal": None, "annotations": []}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call_id, call in turn.calls
        ]
    if turn.thought:
        message["reasoning"] = turn.thought
        if flavour is OpenAIFlavour.OPENROUTER:
            signature = sign(turn.thought) if turn.thought_signed else None
            detail = _reasoning_details(body["model"], turn.thought, signature)
            message["reasoning_details"] = [detail]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": turn.finish,
    }
    if flavour is OpenAIFlavour.OPENROUTER:
        choice["native_finish_reason"] = turn.finish
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{sequence:08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _served_model(body["model"]),
        "choices": [choice],
        "usage": _usage(flavour, turn),
        "service_tier": "default",
        "system_fingerprint": "fp_delosfake",
    }
    return payload


def _deltas(
    flavour: OpenAIFlavour, model: str, turn: Turn
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The delta that opens the answer, and those that follow it, in order."""
    opening: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    steps: list[dict[str, Any]] = []
    for word in _spaced(turn.thought.split(" ")) if turn.thought else ():
        if flavour is OpenAIFlavour.TOGETHER:
            steps.append({"role": "assistant", "content": "", "reasoning": word})
        else:
            detail = _reasoning_details(model, word, None)
            steps.append({"content": "", "reasoning": word, "reasoning_details": [detail]})
    if turn.thought_signed:
        detail = _reasoning_details(model, "", sign(turn.thought))
        steps.append({"content": "", "reasoning_details": [detail]})
    steps += [{"content": piece} for piece in turn.pieces]
    if flavour is OpenAIFlavour.TOGETHER and turn.calls:
        whole = [
            {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for index, (call_id, call) in enumerate(turn.calls)
        ]
        steps.append({"role": "assistant", "content": None, "tool_calls": whole})
        return opening, steps
    for index, (call_id, call) in enumerate(turn.calls):
        start = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        if index == 0 and flavour is OpenAIFlavour.OPENAI:
            opening = {"role": "assistant", "content": None, "tool_calls": [start]}
            opening["refusal"] = None
        else:
            steps.append({"tool_calls": [start]})
        arguments = call.arguments_json
        for at in range(0, len(arguments), 8):
            fragment = {"index": index, "function": {"arguments": arguments[at : at + 8]}}
            steps.append({"tool_calls": [fragment]})
    return opening, steps


async def stream_events(
    body: dict[str, Any],
    behaviour: Behaviour,
    turn: Turn,
    flavour: OpenAIFlavour,
    *,
    sequence: int,
    rng: random.Random,
    include_usage: bool,
) -> AsyncIterator[BodyItem]:
    """The chunks of a streamed answer, paced and broken as ``behaviour`` asks."""
    base = {
        "id": f"chatcmpl-{sequence:08d}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _served_model(body["model"]),
        "system_fingerprint": "fp_delosfake",
    }
    openai_usage = flavour is OpenAIFlavour.OPENAI and include_usage

    def chunk(delta: dict[str, Any], finish_reason: str | None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if flavour is OpenAIFlavour.OPENROUTER:
            choice["native_finish_reason"] = finish_reason
        payload = {**base, "choices": [choice], **extra}
        if openai_usage:
            payload.setdefault("usage", None)
        return encode_sse(json.dumps(payload, separators=(",", ":")))

    if flavour is OpenAIFlavour.OPENROUTER:
        yield encode_sse_comment("OPENROUTER PROCESSING")
    if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
        await anyio.sleep_forever()
    await anyio.sleep(behaviour.time_to_first_token.draw(rng))
    opening, steps = _deltas(flavour, body["model"], turn)
    yield chunk(opening, None)
    interval = behaviour.token_interval
    mid_stream_faults = (
        Fault.RESET_MID_BODY,
        Fault.TRUNCATED,
        Fault.STREAM_ERROR_EVENT,
        Fault.INVALID_JSON,
    )
    for index, step in enumerate(steps):
        if behaviour.fault in mid_stream_faults and index == behaviour.tokens_before_fault:
            if behaviour.fault is Fault.RESET_MID_BODY:
                yield RESET
            elif behaviour.fault is Fault.TRUNCATED:
                yield b'data: {"id":"chatcmpl-trunc'
                yield HANG_UP
            elif behaviour.fault is Fault.INVALID_JSON:
                yield encode_sse('{"id":"chatcmpl-broken","choices":[{"delta":{"cont')
                yield _DONE
            else:
                yield _stream_error(flavour)
                yield _DONE
            return
        if index and interval:
            await anyio.sleep(interval)
        yield chunk(step, None)
    usage = _usage(flavour, turn)
    send_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
    if flavour is OpenAIFlavour.TOGETHER and send_usage:
        yield chunk({}, turn.finish, usage=usage)
    else:
        yield chunk({}, turn.finish)
    if send_usage and (openai_usage or flavour is OpenAIFlavour.OPENROUTER):
        payload = {**base, "choices": [], "usage": usage}
        yield encode_sse(json.dumps(payload, separators=(",", ":")))
    yield _DONE


def _stream_error(flavour: OpenAIFlavour) -> bytes:
    if flavour is OpenAIFlavour.OPENROUTER:
        payload: dict[str, Any] = {
            "error": {"code": 502, "message": "Provider returned error"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    else:
        payload = {
            "error": {
                "message": "The server had an error while processing your "
                "request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    return encode_sse(json.dumps(payload))


def _text_of(message: Mapping[str, Any]) -> str:
    """The text of a message: its string content, or its text parts joined by spaces."""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return str(content or "")


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _trailing_tool_messages(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    trailing: list[Mapping[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, message)
    return trailing


def _spaced(words: Sequence[str]) -> list[str]:
    """Stream pieces of ``words``: each after the first keeps its leading space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _served_model(model: str) -> str:
    # OpenAI answers with a dated snapshot name; others echo the id.
    return {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(
        model, model
    )
