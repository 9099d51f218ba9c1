"""What the fake Bedrock model answers, and how it writes it: whole and as an event-stream.

:func:`plan_answer` decides the answer as :mod:`delos.testing._agent` describes (``toolUse``
calls, Claude's signed or redacted thinking, ``Tool said: …`` after tool results, plain text cut
at a stop sequence or ``maxTokens``) with its usage and cache reads and writes;
:func:`whole_answer` writes it as a Converse answer and :func:`stream_events` as the frames of a
ConverseStream (each payload padded with ``p``), with the behaviour's pacing and mid-stream faults
(exceptions, bad CRCs, oversized frames). :data:`HTTP_ERRORS` names Bedrock's exception for each
status.
"""

from __future__ import annotations

import json
import math
import random
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from delos.runtime.wire import encode_event, encode_event_stream_message
from delos.testing._agent import planned_tool_calls, sign, thought_about, tool_reply
from delos.testing._bedrock_checks import (
    has_cache_points,
    prompt_tokens,
    seal,
    thinking_budget,
    tool_choice,
)
from delos.testing._behaviour import Behaviour, Fault, count_tokens, reply_words
from delos.testing._server import RESET, BodyItem, Pause

__all__ = [
    "HTTP_ERRORS",
    "REDACTED_THINKING_TRIGGER",
    "Answer",
    "plan_answer",
    "stream_events",
    "whole_answer",
]

#: Status → (exception name, message) for HTTP errors; in-stream exceptions by status.
HTTP_ERRORS: Final = {
    400: (
        "ValidationException",
        "Malformed input request, please reformat your input and try again.",
    ),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "Received an error from the model. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_STREAM_EXCEPTIONS: Final = {
    400: "validationException",
    408: "modelTimeoutException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    500: "internalServerException",
    503: "serviceUnavailableException",
}


#: Anthropic's test string: a prompt holding it gets its thinking redacted.
REDACTED_THINKING_TRIGGER: Final = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class Answer:
    """One answer: thinking, text pieces (one token each), tool calls, stop reason, usage."""

    thought: str | None = None
    redacted: bool = False
    pieces: list[str] = field(default_factory=list)
    #: (toolUseId, name, input as JSON text), in order.
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=dict)


def plan_answer(
    model: str,
    body: dict[str, Any],
    behaviour: Behaviour,
    *,
    sequence: int,
    cache: set[str],
) -> Answer:
    """What the model says to ``body``, as :mod:`delos.testing._agent` plans it.

    ``sequence`` (the request's number) makes the tool call ids; the prompt's cache reads and
    writes are counted against ``cache``, the server's prompt cache, which is updated.
    """
    last = body["messages"][-1]["content"]
    user_text = " ".join(str(block["text"]) for block in last if "text" in block)
    results = [block["toolResult"] for block in last if "toolResult" in block]
    answer = Answer()
    if thinking_budget(body) is not None and not results:
        answer.thought = thought_about(user_text)
        answer.redacted = REDACTED_THINKING_TRIGGER in user_text
    tools = _declared_tools(body)
    if results:
        reply = tool_reply([_result_text(result) for result in results])
        answer.pieces = _spaced(reply.split(" "))
    elif tools:
        choice = tool_choice(body)
        for index, call in enumerate(planned_tool_calls(tools, user_text, tool_choice=choice)):
            arguments = call.arguments_json
            if behaviour.fault is Fault.NONCONFORMING_JSON and choice == call.name:
                arguments = '{"unexpected":true}'
            answer.calls.append((_tool_id(sequence, index), call.name, arguments))
        answer.stop_reason = "tool_use"
    else:
        answer.pieces, answer.stop_reason = _reply(body, behaviour, user_text)
    prompt, read, written = prompt_tokens(cache, model, body)
    completion = len(answer.pieces) + sum(len(_fragments(a)) for _, _, a in answer.calls)
    if answer.thought is not None:
        completion += count_tokens([answer.thought])
    answer.usage = {
        "inputTokens": prompt - read - written,
        "outputTokens": completion,
        "totalTokens": prompt + completion,
    }
    if has_cache_points(body):
        answer.usage.update(cacheReadInputTokens=read, cacheWriteInputTokens=written)
    return answer


def _reply(body: dict[str, Any], behaviour: Behaviour, user_text: str) -> tuple[list[str], str]:
    """A text answer's pieces (one token each) and its stop reason."""
    config = body.get("inferenceConfig") or {}
    limit = config.get("maxTokens")
    stop_reason = "end_turn"
    if behaviour.reply is not None:
        words = behaviour.reply.split(" ")
    else:
        count = behaviour.completion_tokens
        if limit is not None and count > limit:
            count, stop_reason = limit, "max_tokens"
        words = reply_words(user_text, count)
    for index, word in enumerate(words):
        if any(stop in word for stop in config.get("stopSequences") or ()):
            words, stop_reason = words[:index], "stop_sequence"
            break
    return _spaced(words), stop_reason


def _tool_id(sequence: int, index: int) -> str:
    return f"tooluse_{sequence:016d}{index:06d}"


def _declared_tools(body: dict[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    tools = (body.get("toolConfig") or {}).get("tools") or ()
    specs = [tool["toolSpec"] for tool in tools if "toolSpec" in tool]
    return [(spec["name"], spec["inputSchema"]["json"]) for spec in specs]


def _result_text(result: dict[str, Any]) -> str:
    texts = []
    for item in result.get("content") or ():
        if "text" in item:
            texts.append(str(item["text"]))
        elif "json" in item:
            texts.append(json.dumps(item["json"], ensure_ascii=False, separators=(",", ":")))
    return "".join(texts)


def _spaced(words: Sequence[str]) -> list[str]:
    """Words as streamed pieces: each but the first after its space."""
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


def _fragments(arguments: str) -> list[str]:
    """A tool call's input as ConverseStream sends it: pieces of 8 characters."""
    return [arguments[i : i + 8] for i in range(0, len(arguments), 8)] or [""]


def _reasoning(thought: str, redacted: bool) -> dict[str, Any]:
    if redacted:
        return {"redactedContent": seal(thought)}
    return {"reasoningText": {"signature": sign(thought), "text": thought}}


def whole_answer(answer: Answer, latency_ms: int) -> dict[str, Any]:
    """The Converse answer of ``answer``, reporting ``latency_ms`` (milliseconds)."""
    content: list[dict[str, Any]] = []
    if answer.thought is not None:
        content.append({"reasoningContent": _reasoning(answer.thought, answer.redacted)})
    if answer.pieces or not answer.calls:
        content.append({"text": "".join(answer.pieces)})
    for call_id, name, arguments in answer.calls:
        tool = {"input": json.loads(arguments), "name": name, "toolUseId": call_id}
        content.append({"toolUse": tool})
    return {
        "metrics": {"latencyMs": latency_ms},
        "output": {"message": {"content": content, "role": "assistant"}},
        "stopReason": answer.stop_reason,
        "usage": answer.usage,
    }


def stream_events(
    answer: Answer,
    behaviour: Behaviour,
    rng: random.Random,
    latency_ms: Callable[[], int],
) -> Iterator[BodyItem | Pause]:
    """The event-stream frames of ``answer``, paced and broken as ``behaviour`` asks.

    ``latency_ms`` gives the ``latencyMs`` of the last event, asked when that event is written.
    """
    if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
        yield Pause(math.inf)
    yield Pause(behaviour.time_to_first_token.draw(rng))
    frames = _Frames()
    yield frames.event("messageStart", {"role": "assistant"})
    interval = behaviour.token_interval
    fault_at = 0 if behaviour.fault is Fault.OVERSIZED_BODY else behaviour.tokens_before_fault
    deltas = 0
    for event_type, payload in _block_events(answer):
        if event_type != "contentBlockDelta":
            yield frames.event(event_type, payload)
            continue
        deltas += 1
        if deltas > 1 and interval:
            yield Pause(interval)
        frame = frames.event(event_type, payload)
        if deltas - 1 == fault_at:
            match behaviour.fault:
                case Fault.RESET_MID_BODY:
                    yield RESET
                    return
                case Fault.TRUNCATED:
                    yield frame[: len(frame) // 2]  # then a clean end of the body
                    return
                case Fault.STREAM_ERROR_EVENT:
                    yield _stream_exception(behaviour.error_status)
                    return
                case Fault.BAD_CRC:
                    frame = frame[:-4] + struct.pack(">I", ~zlib.crc32(frame[:-4]) & 0xFFFFFFFF)
                case Fault.INVALID_JSON:
                    frame = encode_event("contentBlockDelta", b'{"contentBlockIndex":0,"del')
                case Fault.OVERSIZED_BODY:
                    yield from _oversized_frame()
                    return
        yield frame
    yield frames.event("messageStop", {"stopReason": answer.stop_reason})
    if behaviour.fault is not Fault.NO_FINAL_USAGE:
        metadata = {"metrics": {"latencyMs": latency_ms()}, "usage": answer.usage}
        yield frames.event("metadata", metadata)


def _block_events(answer: Answer) -> Iterator[tuple[str, dict[str, Any]]]:
    """The content-block events of ``answer``: thinking, text, then each tool call."""
    index = 0

    def delta(value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "contentBlockDelta", {"contentBlockIndex": index, "delta": value}

    if answer.thought is not None:
        if answer.redacted:
            yield delta({"reasoningContent": {"redactedContent": seal(answer.thought)}})
        else:
            for piece in _spaced(answer.thought.split(" ")):
                yield delta({"reasoningContent": {"text": piece}})
            yield delta({"reasoningContent": {"signature": sign(answer.thought)}})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1
    if answer.pieces or not answer.calls:
        for piece in answer.pieces:
            yield delta({"text": piece})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1
    for call_id, name, arguments in answer.calls:
        start = {"toolUse": {"name": name, "toolUseId": call_id}}
        yield "contentBlockStart", {"contentBlockIndex": index, "start": start}
        for fragment in _fragments(arguments):
            yield delta({"toolUse": {"input": fragment}})
        yield "contentBlockStop", {"contentBlockIndex": index}
        index += 1


class _Frames:
    """Event frames of one stream, each with a ``p`` padding field of varying length."""

    def __init__(self) -> None:
        self.count = 0

    def event(self, event_type: str, payload: dict[str, Any]) -> bytes:
        self.count += 1
        padded = {**payload, "p": _PADDING[: 1 + (self.count * 7) % len(_PADDING)]}
        return encode_event(event_type, json.dumps(padded, separators=(",", ":")).encode())


def _stream_exception(status: int) -> bytes:
    name = _STREAM_EXCEPTIONS.get(status, "modelStreamErrorException")
    payload: dict[str, Any] = {"message": HTTP_ERRORS.get(status, ("", "Model stream error."))[1]}
    if name == "modelStreamErrorException":
        payload.update(originalStatusCode=500, originalMessage="The model stopped unexpectedly.")
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event_stream_message(headers, json.dumps(payload, separators=(",", ":")).encode())


def _oversized_frame() -> Iterator[BodyItem]:
    """A well-formed 25 MiB event: larger than botocore (24 MiB) or our decoder accept."""
    headers = encode_event("contentBlockDelta", b"")[12:-4]  # the encoded headers alone
    block = b"x" * (1 << 20)
    total = 16 + len(headers) + 25 * len(block)
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    crc = zlib.crc32(prelude + headers)
    yield prelude + headers
    for _ in range(25):
        crc = zlib.crc32(block, crc)
        yield block
    yield struct.pack(">I", crc)
