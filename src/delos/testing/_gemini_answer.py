"""What the fake Gemini model answers, and how it writes it: whole and streamed.

:class:`Answerer` plans an answer as :mod:`delos.testing._agent` describes, in Gemini's forms
(``functionCall`` parts, thought summaries and signatures, structured output, plain text cut at
a stop sequence), with its usage and implicit-cache reads; it writes it as one indented
``GenerateContentResponse`` or as stream chunks (SSE events, or one JSON array without
``alt=sse``) with running usage counts, the behaviour's pacing and mid-stream faults.
:func:`content_texts` is the text of contents as the fake tokenizer reads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio

from delos.runtime.wire import encode_sse
from delos.testing._agent import FakeToolCall, planned_tool_calls, sign, thought_about, tool_reply
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._gemini_checks import (
    Call,
    generation_25,
    last_user_text,
    model_thinks,
    proto_field,
)
from delos.testing._gemini_errors import (
    JSON_TYPE,
    pretty_json,
    response_headers,
    silent_body,
    stream_error,
)
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeResponse, ScriptedBody

__all__ = ["IMPLICIT_CACHE_MIN_TOKENS", "THOUGHT_TOKENS", "Answerer", "content_texts"]

#: Thinking tokens a ``gemini-2.5-*`` model reports (``thoughtsTokenCount``) unless its
#: ``thinkingBudget`` is 0.
THOUGHT_TOKENS: Final = 5
#: The shortest repeated prompt prefix (tokens) a ``gemini-2.5-*`` model reads from its implicit
#: cache: Google's documented minimum for 2.5 Flash.
IMPLICIT_CACHE_MIN_TOKENS: Final = 1024
#: Prompts remembered per model for the implicit cache.
_CACHED_PROMPTS = 32
_SERVED_AS = {"gemini-1.5-flash": "gemini-1.5-flash-002", "gemini-1.5-pro": "gemini-1.5-pro-002"}


@dataclass(frozen=True, slots=True)
class _Answer:
    """One planned answer: its text pieces or calls, thinking and token counts."""

    #: Text pieces, one stream chunk each (none when the answer is calls).
    pieces: list[str]
    prompt_tokens: int
    finish: str
    #: ``thoughtsTokenCount``.
    thoughts: int
    #: The thought summary, when asked for (``includeThoughts``) and the model thinks.
    thought: str | None = None
    #: The ``thoughtSignature`` of the answer, when the model thinks.
    signature: str | None = None
    calls: list[FakeToolCall] = field(default_factory=list)
    #: ``cachedContentTokenCount``.
    cached: int = 0

    @property
    def output_tokens(self) -> int:
        """``candidatesTokenCount`` of the whole answer (one token per word, per call)."""
        if self.calls:
            return count_tokens([call.arguments_json for call in self.calls])
        return len(self.pieces)


class Answerer:
    """The fake model of one server: plans each answer and writes it, whole or streamed.

    It holds what answers remember across requests: the prompts each model has seen (its
    implicit cache) and a response counter (for ``responseId``).
    """

    def __init__(self, control: FakeControl) -> None:
        self.control = control
        self.sequence = 0
        # Implicit cache: recent prompts (as tokens) per (surface, model).
        self.prompts: dict[tuple[bool, str], deque[tuple[str, ...]]] = {}

    def _answer(self, call: Call, body: dict[str, Any], behaviour: Behaviour) -> _Answer:
        """What the model says to ``body``, as :mod:`delos.testing._agent` plans it."""
        system = content_texts(
            [body.get("systemInstruction") or body.get("system_instruction") or {}]
        )
        contents = body.get("contents") or []
        turns = content_texts(contents)
        words = _words([*system, *turns])
        prompt_tokens = len(words)
        cached = self._cached_tokens(call, words)
        config = proto_field(body, "generationConfig") or {}
        thinking = proto_field(config, "thinkingConfig") or {}
        thinks = model_thinks(call.model, proto_field(thinking, "thinkingBudget"))
        user_text = last_user_text(contents)
        thought = thought_about(user_text)
        base = _Answer(
            [],
            prompt_tokens,
            "STOP",
            THOUGHT_TOKENS if thinks else 0,
            thought=thought if thinks and proto_field(thinking, "includeThoughts") else None,
            signature=sign(thought) if thinks else None,
            cached=cached,
        )
        last = contents[-1] if contents else {}
        results = _function_results(last)
        asked = last.get("role", "user") == "user" and not results
        calls = _planned_calls(body, user_text) if asked else []
        if calls:
            return replace(base, calls=calls)
        if proto_field(config, "responseMimeType") == "application/json":
            schema = (
                proto_field(config, "responseJsonSchema")
                or proto_field(config, "responseSchema")
                or {}
            )
            value = (
                {"unexpected": True}
                if behaviour.fault is Fault.NONCONFORMING_JSON
                else sample_instance(_json_schema(schema))
            )
            text = json.dumps(value)
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
            return replace(base, pieces=pieces)
        limit = proto_field(config, "maxOutputTokens")
        if results:
            words_out = tool_reply(results).split(" ")
            finish = "STOP"
        elif behaviour.reply is not None:
            words_out = behaviour.reply.split(" ")
            finish = "STOP"
        else:
            count = (
                min(behaviour.completion_tokens, limit) if limit else behaviour.completion_tokens
            )
            words_out = reply_words(turns[-1] if turns else "", count)
            finish = "MAX_TOKENS" if limit and behaviour.completion_tokens > limit else "STOP"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words_out)]
        stops = proto_field(config, "stopSequences") or []
        pieces, stopped = _cut_at_stop(pieces, [str(s) for s in stops])
        return replace(base, pieces=pieces, finish="STOP" if stopped else finish)

    def _cached_tokens(self, call: Call, words: list[str]) -> int:
        """Tokens of ``words`` an earlier prompt to the same model began with, when enough."""
        if not generation_25(call.model):  # implicit caching came with the 2.5 models
            return 0
        seen = self.prompts.setdefault((call.vertex, call.model), deque(maxlen=_CACHED_PROMPTS))
        best = max((_common_prefix(words, earlier) for earlier in seen), default=0)
        seen.append(tuple(words))
        return best if best >= IMPLICIT_CACHE_MIN_TOKENS else 0

    def _base(self, call: Call) -> dict[str, Any]:
        self.sequence += 1
        digest = hashlib.sha256(f"{call.model}/{self.sequence}".encode()).digest()
        base: dict[str, Any] = {
            "modelVersion": _SERVED_AS.get(call.model, call.model),
            "responseId": base64.urlsafe_b64encode(digest).decode()[:23],
        }
        if call.vertex:
            base["createTime"] = "2026-01-01T00:00:00.000000Z"
        return base

    def completion(self, call: Call, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        """The whole answer to a ``generateContent`` call, broken as ``behaviour`` asks."""
        answer = self._answer(call, body, behaviour)
        parts: list[dict[str, Any]] = []
        if answer.thought is not None:
            parts.append({"text": answer.thought, "thought": True})
        if answer.calls:
            parts += _call_parts(answer)
        else:
            # Without calls, the signature rides on the answer's last part.
            parts.append(_signed({"text": "".join(answer.pieces)}, answer.signature))
        payload: dict[str, Any] = {
            "candidates": [_candidate(call, parts, answer.finish)],
            "usageMetadata": _usage(call, answer, answer.output_tokens),
            **self._base(call),
        }
        if behaviour.fault is Fault.NO_FINAL_USAGE:
            del payload["usageMetadata"]
        encoded = pretty_json(payload)
        mid_body: dict[Fault, BodyItem] = {Fault.TRUNCATED: HANG_UP, Fault.RESET_MID_BODY: RESET}
        if behaviour.fault in mid_body:
            return FakeResponse(
                200,
                response_headers(JSON_TYPE),
                ScriptedBody([encoded[: len(encoded) // 2], mid_body[behaviour.fault]]),
            )
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            return FakeResponse(200, response_headers(JSON_TYPE), silent_body())
        return FakeResponse(200, response_headers(JSON_TYPE), encoded)

    def stream(
        self, call: Call, body: dict[str, Any], behaviour: Behaviour, sse: bool
    ) -> FakeResponse:
        """The streamed answer to a ``streamGenerateContent`` call: SSE events when ``sse``,
        else one JSON array. The answer is planned when the body starts."""
        content_type = "text/event-stream" if sse else JSON_TYPE
        headers = [*response_headers(content_type), ("content-disposition", "attachment")]
        return FakeResponse(200, headers, self._events(call, body, behaviour, sse))

    async def _events(
        self, call: Call, body: dict[str, Any], behaviour: Behaviour, sse: bool
    ) -> AsyncIterator[BodyItem]:
        answer = self._answer(call, body, behaviour)
        base = self._base(call)
        send_usage = behaviour.fault is not Fault.NO_FINAL_USAGE
        first = True

        def frame(payload: dict[str, Any]) -> bytes:
            nonlocal first
            text = json.dumps(payload, ensure_ascii=False)
            if sse:
                return encode_sse(text, line_ending="\r\n")
            # Without alt=sse the stream is one JSON array, elements separated by ",\r\n".
            prefix = b"[" if first else b"\r\n,\r\n"
            first = False
            return prefix + text.encode()

        def chunk(parts: list[dict[str, Any]], produced: int, finish: str | None) -> bytes:
            payload: dict[str, Any] = {"candidates": [_candidate(call, parts, finish)]}
            if send_usage:
                # Running counts on every chunk; only the last one is the total.
                payload["usageMetadata"] = _usage(call, answer, produced)
            return frame({**payload, **base})

        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            await anyio.sleep_forever()
        await anyio.sleep(behaviour.time_to_first_token.draw(self.control.rng))
        if answer.thought is not None:
            yield chunk([{"text": answer.thought, "thought": True}], 0, None)
        interval = behaviour.token_interval
        mid_stream = (
            Fault.RESET_MID_BODY,
            Fault.TRUNCATED,
            Fault.STREAM_ERROR_EVENT,
            Fault.INVALID_JSON,
        )
        for index, (parts, produced, finish) in enumerate(_stream_steps(answer)):
            if behaviour.fault in mid_stream and index == behaviour.tokens_before_fault:
                if behaviour.fault is Fault.RESET_MID_BODY:
                    yield RESET
                elif behaviour.fault is Fault.STREAM_ERROR_EVENT:
                    yield frame(stream_error())
                elif behaviour.fault is Fault.INVALID_JSON:
                    broken = '{"candidates": [{"content": {"parts": [{"text": "tru'
                    if sse:
                        yield encode_sse(broken, line_ending="\r\n")
                    else:
                        yield b"\r\n,\r\n" + broken.encode()
                # TRUNCATED: the body ends cleanly without the finishing chunk, which is all a
                # cut-short Gemini stream looks like (there is no terminator to miss).
                return
            if index and interval:
                await anyio.sleep(interval)
            yield chunk(parts, produced, finish)
        if not sse:
            yield b"]"


def content_texts(contents: Sequence[Any]) -> list[str]:
    """The text of each content: its text parts joined, calls and results as compact JSON, a
    media part as one token; thoughts sent back are left out, as Gemini leaves them out."""
    texts = []
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            continue
        text = ""
        for part in parts:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            if "text" in part:
                text += str(part["text"])
            for name in ("functionCall", "functionResponse"):
                value = proto_field(part, name)
                if value is not None:
                    text += " " + json.dumps(value, separators=(",", ":")) + " "
            if proto_field(part, "inlineData") is not None:
                text += " [media] "
        texts.append(text)
    return texts


def _words(texts: Sequence[str]) -> list[str]:
    """A prompt as the fake tokenizer sees it: its count is :func:`count_tokens` of ``texts``."""
    words: list[str] = []
    for text in texts:
        words += text.split() or [""]
    return words


def _common_prefix(words: Sequence[str], earlier: Sequence[str]) -> int:
    length = 0
    for mine, theirs in zip(words, earlier, strict=False):
        if mine != theirs:
            break
        length += 1
    return length


def _json_schema(schema: Any) -> Any:
    """An OpenAPI-subset schema (``parameters``, ``responseSchema``: upper-case type names) as
    JSON Schema; a JSON Schema passes unchanged."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _json_schema(value) for key, value in schema.items()}
    if isinstance(converted.get("type"), str):
        converted["type"] = converted["type"].lower()
    return converted


def _function_results(content: Any) -> list[str]:
    """The results of a function response turn, as text (none for any other turn)."""
    if not isinstance(content, dict) or content.get("role", "user") != "user":
        return []
    results = []
    for part in content.get("parts") or []:
        response = proto_field(part, "functionResponse")
        if response is None:
            continue
        value = proto_field(response, "response")
        if (
            isinstance(value, dict)
            and set(value) == {"result"}
            and isinstance(value["result"], str)
        ):
            results.append(value["result"])
        else:
            results.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return results


def _declarations(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, JSON Schema) of every declared function."""
    declared = []
    for tool in body.get("tools") or []:
        for declaration in proto_field(tool, "functionDeclarations") or []:
            schema = proto_field(declaration, "parametersJsonSchema")
            if schema is None:
                schema = _json_schema(proto_field(declaration, "parameters") or {})
            declared.append((str(declaration.get("name")), schema))
    return declared


def _planned_calls(body: Mapping[str, Any], user_text: str) -> list[FakeToolCall]:
    """The calls of :func:`~delos.testing._agent.planned_tool_calls` under ``toolConfig``.

    Gemini cannot forbid parallel calls; ANY with one allowed name is that tool's choice, with
    several it narrows the tools, without names it is "required".
    """
    tools = _declarations(body)
    config = proto_field(proto_field(body, "toolConfig"), "functionCallingConfig") or {}
    mode = str(config.get("mode") or "AUTO")
    allowed = proto_field(config, "allowedFunctionNames") or []
    choice = {"NONE": "none", "ANY": "required"}.get(mode, "")
    if mode == "ANY" and len(allowed) == 1:
        choice = allowed[0]
    elif mode == "ANY" and allowed:
        tools = [tool for tool in tools if tool[0] in allowed]
    return planned_tool_calls(tools, user_text, tool_choice=choice)


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """The pieces up to the first stop sequence (excluded), and whether one was met."""
    text = ""
    for index, piece in enumerate(pieces):
        combined = text + piece
        hits = [combined.find(s) for s in stops if s and s in combined]
        if hits:
            kept = combined[: min(hits)][len(text) :]
            return [*pieces[:index], *([kept] if kept else [])], True
        text = combined
    return pieces, False


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    return {**part, "thoughtSignature": signature} if signature else part


def _call_parts(answer: _Answer) -> list[dict[str, Any]]:
    """The answer's calls; only the first carries the signature, as Gemini sends parallel calls."""
    return [
        _signed(
            {"functionCall": {"name": call.name, "args": dict(call.arguments)}},
            answer.signature if index == 0 else None,
        )
        for index, call in enumerate(answer.calls)
    ]


def _stream_steps(answer: _Answer) -> list[tuple[list[dict[str, Any]], int, str | None]]:
    """The chunks of a streamed answer after its thought: (parts, tokens so far, finish).

    Calls come whole, all in one chunk. Text comes a piece a chunk; a signed answer ends with a
    chunk whose only part is an empty text carrying the signature, as Gemini streams it.
    """
    if answer.calls:
        return [(_call_parts(answer), answer.output_tokens, answer.finish)]
    pieces = answer.pieces or [""]
    steps: list[tuple[list[dict[str, Any]], int, str | None]] = [
        ([{"text": piece}], index + 1, None) for index, piece in enumerate(pieces)
    ]
    if answer.signature:
        steps.append(([_signed({"text": ""}, answer.signature)], len(pieces), answer.finish))
    else:
        parts, produced, _ = steps[-1]
        steps[-1] = (parts, produced, answer.finish)
    return steps


def _candidate(call: Call, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
        if call.vertex:
            candidate["avgLogprobs"] = -0.0625
    if not call.vertex:
        candidate["index"] = 0
    return candidate


def _usage(call: Call, answer: _Answer, produced: int) -> dict[str, Any]:
    """usageMetadata after ``produced`` pieces; zero counts are left out, as proto3 JSON does."""
    prompt = answer.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if produced:
        usage["candidatesTokenCount"] = produced
    usage["totalTokenCount"] = prompt + produced + answer.thoughts
    if answer.cached:
        # Implicit cache reads are part of promptTokenCount, reported again apart.
        usage["cachedContentTokenCount"] = answer.cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if answer.cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.cached}]
    if answer.thoughts:
        usage["thoughtsTokenCount"] = answer.thoughts
    if call.vertex:
        if produced:
            usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": produced}]
        usage["trafficType"] = "ON_DEMAND"
    return usage
