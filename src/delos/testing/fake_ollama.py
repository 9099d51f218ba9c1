"""A fake of Ollama's native API: ``/api/chat``, ``/api/embed``, ``/api/tags``, ``/api/version``.

Byte-level fidelity with the Go server: bodies are encoded as Go's ``encoding/json`` does (no
spaces, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped), unary answers are
``application/json; charset=utf-8`` with a Content-Length, streams are ``application/x-ndjson``
sent chunked with one flushed write per line, and the last line carries ``"done":true``, the
``done_reason`` and the token counts. Zero counts and durations are left out, as Go's
``omitempty`` does. Errors are ``{"error":"<message>"}``, an unknown model is
``404 model 'x' not found``, and an error after streaming has begun is an ``{"error":...}`` line
under status 200.

A model name without a tag means ``:latest``, as in Ollama: with the default models,
``llama3.2`` and ``llama3.2:latest`` are both served, and answers echo the name as sent.

Agents, as :mod:`delos.testing._agent` describes, in Ollama's forms (those of
:data:`OLLAMA_VERSION`'s ``api`` package): declared ``tools`` and a user's last message give
``message.tool_calls`` (``{"id":"call_<8 of a-z0-9>","function":{"index":n,"name":…,
"arguments":{…}}}``, arguments an object in the order of the schema), each streamed whole on a
line of its own with an empty ``content``, and ``done_reason`` ``"stop"``; trailing ``"tool"``
messages give ``Tool said: …``. A thinking model (families ``qwen3``, ``deepseek-r1``,
``gpt-oss``) thinks unless ``think`` is false: ``message.thinking`` carries ``Thinking about:
<user text>``, streamed word by word before the answer, never signed, and counted in
``eval_count``; ``think`` asked of another model is ``400 "<model>" does not support
thinking``. As the Go decoder does, the fake refuses with 400 a ``think`` that is not a boolean
or a level, an image that is not base64, tool-call arguments that are not an object, and tools
or messages of the wrong shape. Ollama has no prompt-cache marker and reports no cache counts.

This module is the server and the model's answers; the request checks, worded as the Go server
words them, live in :mod:`delos.testing._ollama_checks`.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Final

import anyio

from delos.testing._agent import planned_tool_calls, thought_about, tool_reply
from delos.testing._behaviour import Behaviour, FakeControl, Fault, count_tokens, reply_words
from delos.testing._ollama_checks import decode_problem, options_problem
from delos.testing._schema import sample_instance
from delos.testing._server import HANG_UP, RESET, BodyItem, FakeRequest, FakeResponse, Handler

__all__ = ["OLLAMA_VERSION", "embedding_of", "fake_ollama_handler", "go_json"]

#: What ``GET /api/version`` answers.
OLLAMA_VERSION: Final = "0.32.15"

_JSON: Final = "application/json; charset=utf-8"
_NDJSON: Final = "application/x-ndjson"
#: What the Go server's runner reports when a model process dies mid-answer.
_RUNNER_ERROR: Final = "an error was encountered while running the model: unexpected EOF"
_UNKNOWN_ERROR: Final = "something went wrong, please see the ollama server logs for details"
_STATUS_MESSAGES: Final = {
    400: "invalid request",
    401: "unauthorized",
    403: "forbidden",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    502: "remote model is unavailable",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
#: Vector length of each known embedding model; others get 768.
_DIMENSIONS: Final = {"nomic-embed-text": 768, "mxbai-embed-large": 1024, "all-minilm": 384}
# Durations (nanoseconds) that make the reported rates plausible and the answers reproducible.
_LOAD_NS: Final = 1_250_000
_PROMPT_NS_PER_TOKEN: Final = 400_000
_EVAL_NS_PER_TOKEN: Final = 20_000_000
#: Model families with Ollama's "thinking" capability: they think unless ``think`` is false.
_THINKING_FAMILIES: Final = frozenset({"qwen3", "deepseek-r1", "gpt-oss"})
_CALL_ID_CHARACTERS: Final = string.ascii_lowercase + string.digits


def fake_ollama_handler(
    control: FakeControl,
    *,
    models: Sequence[str] = ("llama3.2:latest", "nomic-embed-text:latest"),
) -> Handler:
    """A handler for :func:`~delos.testing.open_fake_server`; the base URL is the server's root.

    ``models`` are the installed models ``/api/tags`` lists, most recently modified first. The
    sequence is read on every request: a list changed while the fake runs is a model pulled or
    removed.
    """
    return _FakeOllama(control, models).handle


def go_json(payload: Any) -> bytes:
    """``payload`` encoded as Go's ``json.Marshal`` writes it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # Characters that can only occur inside strings, so a plain replacement is exact.
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


def embedding_of(text: str, dimensions: int = 768) -> list[float]:
    """A deterministic unit vector for ``text``: four components of ±0.5, the rest zero.

    Exact in float32 (so the JSON round-trips) and of unit length, as Ollama's vectors are.
    """
    seed = sum(text.encode())
    if dimensions < 4:
        return [1.0] + [0.0] * (dimensions - 1)
    # Ints for the zeros: Go prints a float32 zero as ``0``.
    vector: list[float] = [0] * dimensions
    start = seed % (dimensions - 3)
    for k in range(4):
        vector[start + k] = -0.5 if (seed >> k) & 1 else 0.5
    return vector


class _FakeOllama:
    def __init__(self, control: FakeControl, models: Sequence[str]) -> None:
        self.control = control
        self.models = models

    async def handle(self, request: FakeRequest) -> FakeResponse:
        route = (request.method, request.path)
        if route == ("GET", "/"):
            return _text(200, "Ollama is running")
        if route == ("GET", "/api/version"):
            return _json({"version": OLLAMA_VERSION})
        if route not in (("GET", "/api/tags"), ("POST", "/api/chat"), ("POST", "/api/embed")):
            known = {"/", "/api/version", "/api/tags", "/api/chat", "/api/embed"}
            if request.path in known:
                return _text(405, "405 method not allowed")
            return _text(404, "404 page not found")
        behaviour = self.control.next_behaviour()
        await anyio.sleep(behaviour.latency.draw(self.control.rng))
        early = await _before_headers(behaviour)
        if early is not None:
            return early
        if request.path == "/api/tags":
            return _unary(self._tags(), behaviour)
        if not request.body.strip():
            return _error(400, "missing request body")
        try:
            body = request.json()
        except ValueError:
            return _error(400, "invalid character looking for beginning of value")
        if not isinstance(body, dict):
            kind = "EmbedRequest" if request.path == "/api/embed" else "ChatRequest"
            return _error(400, f"json: cannot unmarshal array into Go value of type api.{kind}")
        if request.path == "/api/embed":
            return self._embed(body, behaviour)
        return self._chat(body, behaviour)

    # -- /api/tags ------------------------------------------------------------------------------

    def _tags(self) -> FakeResponse:
        entries = []
        for age, name in enumerate(self.models):
            family = name.partition(":")[0]
            digest = hashlib.sha256(name.encode()).hexdigest()
            embedding = "embed" in family
            # The architecture, as GGUF files name it: "llama" for llama3.2, "qwen" for qwen2.5.
            architecture = "nomic-bert" if embedding else re.sub(r"[^a-z].*", "", family) or family
            entries.append(
                {
                    "name": name,
                    "model": name,
                    # Local time with nanoseconds, as the Go server writes a file's mtime.
                    "modified_at": f"2025-06-{20 - age % 19:02d}T14:38:13.416963443+02:00",
                    "size": 274302450 if embedding else 2019393189,
                    "digest": digest,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": architecture,
                        "families": [architecture],
                        "parameter_size": "137M" if embedding else "3.2B",
                        "quantization_level": "F16" if embedding else "Q4_K_M",
                    },
                }
            )
        return _json({"models": entries})

    def _installed(self, name: str) -> bool:
        wanted = name.lower()
        if ":" not in wanted.rpartition("/")[2]:
            wanted += ":latest"
        return any(m.lower() == wanted for m in self.models)

    # -- /api/chat ------------------------------------------------------------------------------

    def _chat(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        problem = decode_problem(body)  # what Go's decoder refuses comes first
        if problem is not None:
            return _error(400, problem)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if not self._installed(model):
            return _error(404, f"model '{model}' not found")
        if "embed" in model.lower():
            return _error(400, f'"{model}" does not support chat')
        think, thinking_model = body.get("think"), _thinking_model(model)
        if not thinking_model and think not in (None, False):
            return _error(400, f'"{model}" does not support thinking')
        thinks = thinking_model and think is not False  # a thinking model thinks by default
        problem = options_problem(body.get("options"))
        if problem is not None:
            return _error(500, problem)
        messages = body.get("messages") or []
        stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        if not messages:  # an empty chat only loads the model
            return _json(_line(model, _EMPTY, done="load", usage=None))
        answer = _Answer.of(body, behaviour, thinks=thinks, call_id=self._call_id)
        if stream:
            lines = self._lines(model, answer, behaviour)
            return FakeResponse(200, [("content-type", _NDJSON)], lines)
        return self._unary(model, answer, behaviour)

    def _call_id(self) -> str:
        """An id as the Go server's ``toolCallId`` makes one: ``call_`` and 8 of a-z0-9."""
        rng = self.control.rng
        return "call_" + "".join(rng.choice(_CALL_ID_CHARACTERS) for _ in range(8))

    def _unary(self, model: str, answer: _Answer, behaviour: Behaviour) -> FakeResponse:
        usage = None if behaviour.fault is Fault.NO_FINAL_USAGE else answer.usage
        line = _line(model, answer.message(), done=answer.done_reason, usage=usage)
        return _unary(_json(line), behaviour)

    async def _lines(
        self, model: str, answer: _Answer, behaviour: Behaviour
    ) -> AsyncGenerator[BodyItem, None]:
        rng = self.control.rng
        if behaviour.fault is Fault.HEADERS_THEN_SILENCE:
            await anyio.sleep_forever()
        await anyio.sleep(behaviour.time_to_first_token.draw(rng))
        interval = behaviour.token_interval
        chunks = answer.chunks()
        # A short answer still fails: at its end rather than after tokens_before_fault tokens.
        fault_at = min(behaviour.tokens_before_fault, len(chunks))
        if behaviour.fault is Fault.OVERSIZED_BODY:
            fault_at = 0  # an oversized answer is oversized from its first line
        for index in range(len(chunks) + 1):
            if index == fault_at and behaviour.fault in _MID_STREAM_FAULTS:
                async with aclosing(_mid_stream_fault(model, behaviour.fault)) as items:
                    async for item in items:
                        yield item
                return
            if index == len(chunks):
                break
            if index and interval:
                await anyio.sleep(interval)
            yield go_json(_line(model, chunks[index], done=None, usage=None)) + b"\n"
        usage = None if behaviour.fault is Fault.NO_FINAL_USAGE else answer.usage
        yield go_json(_line(model, _EMPTY, done=answer.done_reason, usage=usage)) + b"\n"

    # -- /api/embed -----------------------------------------------------------------------------

    def _embed(self, body: dict[str, Any], behaviour: Behaviour) -> FakeResponse:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(404, "model '' not found")
        raw = body.get("input")
        texts: list[str]
        if isinstance(raw, str):
            texts = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
            texts = list(raw)
        elif raw is None:
            texts = []
        else:
            return _error(400, "invalid input type")
        if not self._installed(model):
            return _error(404, f'model "{model}" not found, try pulling it first')
        if not texts:
            return _json({"model": model, "embeddings": []})
        dimensions = _DIMENSIONS.get(model.partition(":")[0], 768)
        wanted = body.get("dimensions")
        if isinstance(wanted, int) and 0 < wanted < dimensions:
            dimensions = wanted
        payload: dict[str, Any] = {
            "model": model,
            "embeddings": [embedding_of(text, dimensions) for text in texts],
            "total_duration": _LOAD_NS + 2_000_000 * len(texts),
            "load_duration": _LOAD_NS,
        }
        if behaviour.fault is not Fault.NO_FINAL_USAGE:
            payload["prompt_eval_count"] = count_tokens(texts)
        return _unary(_json(payload), behaviour)


class _Answer:
    """The generated answer of one chat request: its thinking and text pieces, its tool calls
    (in wire form), its finish and its usage."""

    def __init__(
        self,
        pieces: list[str],
        done_reason: str,
        prompt_tokens: int,
        *,
        thinking: Sequence[str] = (),
        calls: Sequence[Mapping[str, Any]] = (),
        call_tokens: int = 0,
    ) -> None:
        self.pieces = pieces
        self.thinking = list(thinking)
        self.calls = list(calls)
        self.done_reason = done_reason
        self.usage = (prompt_tokens, len(self.thinking) + len(pieces) + call_tokens)

    def chunks(self) -> list[dict[str, Any]]:
        """The streamed messages: thinking, then text, then each call whole on its own."""
        return [
            *({"role": "assistant", "content": "", "thinking": t} for t in self.thinking),
            *({"role": "assistant", "content": p} for p in self.pieces),
            *({"role": "assistant", "content": "", "tool_calls": [c]} for c in self.calls),
        ]

    def message(self) -> dict[str, Any]:
        """The whole message of a unary answer, its keys in the order of ``api.Message``."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.pieces)}
        if self.thinking:
            message["thinking"] = "".join(self.thinking)
        if self.calls:
            message["tool_calls"] = self.calls
        return message

    @classmethod
    def of(
        cls, body: dict[str, Any], behaviour: Behaviour, *, thinks: bool, call_id: Callable[[], str]
    ) -> _Answer:
        messages: list[dict[str, Any]] = body["messages"]
        texts = [str(m.get("content", "")) for m in messages]
        prompt_tokens = count_tokens(_prompt_texts(messages))
        user_text = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        thinking = _spaced(thought_about(user_text).split(" ")) if thinks else []
        tools = _declared_tools(body.get("tools"))
        last_role = messages[-1].get("role")
        if tools and last_role == "user":
            planned = planned_tool_calls(tools, user_text)
            calls = [
                {
                    "id": call_id(),
                    "function": {"index": i, "name": c.name, "arguments": c.arguments},
                }
                for i, c in enumerate(planned)
            ]
            call_tokens = count_tokens([c.arguments_json for c in planned])
            return cls(
                [], "stop", prompt_tokens, thinking=thinking, calls=calls, call_tokens=call_tokens
            )
        if last_role == "tool":
            results: list[str] = []
            for message in reversed(messages):
                if message.get("role") != "tool":
                    break
                results.insert(0, str(message.get("content", "")))
            words = tool_reply(results).split(" ")
            return cls(_spaced(words), "stop", prompt_tokens, thinking=thinking)
        schema = body.get("format")
        if isinstance(schema, dict) or schema == "json":
            if behaviour.fault is Fault.NONCONFORMING_JSON:
                value: Any = {"unexpected": True}
            else:
                value = sample_instance(schema) if isinstance(schema, dict) else {}
            text = go_json(value).decode()
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
            return cls(pieces, "stop", prompt_tokens, thinking=thinking)
        if behaviour.reply is not None:
            words = behaviour.reply.split(" ")
            return cls(_spaced(words), "stop", prompt_tokens, thinking=thinking)
        options = body.get("options") or {}
        limit = options.get("num_predict")
        # -1 is "no limit" and -2 "fill the context"; only a positive number caps the answer.
        count = behaviour.completion_tokens
        capped = False
        if isinstance(limit, int | float) and 0 < limit < count:
            count, capped = int(limit), True
        words = reply_words(texts[-1] if texts else "", count)
        return cls(_spaced(words), "length" if capped else "stop", prompt_tokens, thinking=thinking)


def _prompt_texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the fakes' tokenizer counts of a prompt: contents, thinking and call arguments."""
    texts: list[str] = []
    for message in messages:
        texts.append(str(message.get("content", "")))
        if message.get("thinking"):
            texts.append(str(message["thinking"]))
        for call in message.get("tool_calls") or ():
            texts.append(go_json(call["function"].get("arguments") or {}).decode())
    return texts


def _declared_tools(tools: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, parameters) of each declared tool (already checked by
    :func:`~delos.testing._ollama_checks.decode_problem`)."""
    return [(t["function"]["name"], t["function"].get("parameters") or {}) for t in tools or ()]


def _thinking_model(model: str) -> bool:
    return model.lower().rpartition("/")[2].partition(":")[0] in _THINKING_FAMILIES


def _spaced(words: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


#: The message of a line that carries nothing: the done line, or a model being loaded.
_EMPTY: Final[Mapping[str, Any]] = {"role": "assistant", "content": ""}


def _line(
    model: str, message: Mapping[str, Any], *, done: str | None, usage: tuple[int, int] | None
) -> dict[str, Any]:
    """One chat object, its keys in the order of the Go struct ``api.ChatResponse``.

    ``done`` is the done reason of the last object, None for the others; ``usage`` is
    (prompt tokens, completion tokens), None to report no counts.
    """
    line: dict[str, Any] = {"model": model, "created_at": _created_at(), "message": dict(message)}
    if done is None:
        line["done"] = False
        return line
    line["done"] = True
    line["done_reason"] = done
    if done == "load":
        return line
    prompt_tokens, completion_tokens = usage or (0, 0)
    prompt_ns = _PROMPT_NS_PER_TOKEN * prompt_tokens
    eval_ns = _EVAL_NS_PER_TOKEN * completion_tokens
    metrics = {
        "total_duration": _LOAD_NS + prompt_ns + eval_ns,
        "load_duration": _LOAD_NS,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": completion_tokens,
        "eval_duration": eval_ns,
    }
    # Go leaves zero counts and durations out (omitempty), which is also how "no usage" looks.
    line.update((key, value) for key, value in metrics.items() if value)
    return line


def _created_at() -> str:
    """Now, in UTC, as Go's RFC 3339 with nanoseconds (trailing zeros trimmed)."""
    nanoseconds = time.time_ns()
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def _json(payload: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> FakeResponse:
    return FakeResponse(status, [("content-type", _JSON), *headers], go_json(payload))


def _text(status: int, text: str) -> FakeResponse:
    return FakeResponse(status, [("content-type", "text/plain; charset=utf-8")], text.encode())


def _error(status: int, message: str, *, retry_after: float | str | None = None) -> FakeResponse:
    headers = [] if retry_after is None else [("retry-after", str(retry_after))]
    return _json({"error": message}, status, headers)


async def _before_headers(behaviour: Behaviour) -> FakeResponse | None:
    """The faults that strike before any header is sent, whatever the endpoint."""
    match behaviour.fault:
        case Fault.RESET_BEFORE_HEADERS:
            return FakeResponse.reset()
        case Fault.SILENCE_BEFORE_HEADERS:
            await anyio.sleep_forever()
        case Fault.HTTP_ERROR:
            status = behaviour.error_status
            message = _STATUS_MESSAGES.get(status, _UNKNOWN_ERROR)
            return _error(status, message, retry_after=behaviour.retry_after)
        case Fault.WRONG_CONTENT_TYPE:
            return FakeResponse(200, [("content-type", "text/html")], b"<html>Bad gateway</html>")
    return None


_MID_STREAM_FAULTS: Final = frozenset(
    {
        Fault.RESET_MID_BODY,
        Fault.TRUNCATED,
        Fault.STREAM_ERROR_EVENT,
        Fault.INVALID_JSON,
        Fault.OVERSIZED_BODY,
    }
)


async def _mid_stream_fault(model: str, fault: Fault) -> AsyncGenerator[BodyItem, None]:
    match fault:
        case Fault.RESET_MID_BODY:
            yield RESET
        case Fault.TRUNCATED:
            # A partial line with no LF, then the connection closes.
            yield b'{"model":"' + model.encode() + b'","created_at":"2025-'
            yield HANG_UP
        case Fault.STREAM_ERROR_EVENT:
            # Under status 200 the server can only report the failure as a line of its own.
            yield go_json({"error": _RUNNER_ERROR}) + b"\n"
        case Fault.INVALID_JSON:
            yield b'{"model":"' + model.encode() + b'","created_at":2025-\n'
        case Fault.OVERSIZED_BODY:
            async with aclosing(_oversized()) as items:
                async for item in items:
                    yield item


def _unary(response: FakeResponse, behaviour: Behaviour) -> FakeResponse:
    """``response`` (a whole JSON answer), spoiled by the body faults of ``behaviour``."""
    body = response.body
    assert isinstance(body, bytes)
    half = body[: len(body) // 2]
    match behaviour.fault:
        case Fault.TRUNCATED:
            response.body = _items(half, HANG_UP)
        case Fault.RESET_MID_BODY:
            response.body = _items(half, RESET)
        case Fault.HEADERS_THEN_SILENCE:
            response.body = _silence()
        case Fault.INVALID_JSON:
            response.body = half
        case Fault.OVERSIZED_BODY:
            response.body = _oversized()
    return response


async def _items(*items: BodyItem) -> AsyncGenerator[BodyItem, None]:
    for item in items:
        yield item


async def _silence() -> AsyncGenerator[BodyItem, None]:
    await anyio.sleep_forever()
    yield b""  # never reached: the client goes away first


async def _oversized() -> AsyncGenerator[BodyItem, None]:
    """One JSON value of 33 MiB: more than a unary answer or an NDJSON line may hold."""
    block = b" " * (1 << 20)
    yield b'{"padding":"'
    for _ in range(33):
        yield block
    yield b'"}\n'
