"""Ollama's native API, sans-IO: request bodies in, parsed answers and stream events out.

Nothing here does I/O; :mod:`delos.runtime.providers.ollama` does the HTTP. Facts of the format
this module encodes:

- chat is ``/api/chat``: ``"stream": false`` gives one JSON object, ``"stream": true`` NDJSON
  whose last line has ``"done": true``, the ``done_reason`` and the token counts;
- sampling goes inside ``options`` (``num_predict`` is the max-tokens limit); structured output
  is the native ``"format": <JSON schema>``;
- tools are ``[{"type": "function", "function": {name, description, parameters}}]``; the model
  answers with ``message.tool_calls: [{"id", "function": {"index", "name", "arguments": {…}}}]``
  (``id`` since Ollama 0.12.10), whole calls, never fragments, also when streaming, and a
  ``done_reason`` of ``"stop"``. ``arguments`` is a JSON *object*: our ``arguments_json`` is its
  compact text, ``json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)``, keys in the
  order Ollama sent them; a call without an ``id`` gets a :func:`deterministic_call_id`;
- a tool result is a ``"tool"`` message naming the tool (``tool_name``) and, since 0.12.10, the
  call (``tool_call_id``);
- ``think``: ``true`` or a level (``"low"``, ``"medium"``, ``"high"``); the answer's
  ``message.thinking`` is the thinking text (streamed piece by piece, never signed), and goes
  back as the assistant message's ``thinking``;
- images are base64 strings in a message's ``images``;
- the server omits a zero count (Go's ``omitempty``): a count missing beside a present one is 0;
- errors are ``{"error": "..."}``: with an HTTP status before the answer starts, as a line of the
  stream after it has.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from delos.runtime.errors import UnsupportedByProvider, UpstreamProtocolError
from delos.runtime.providers._parts import (
    SamplingNames,
    call_arguments,
    deterministic_call_id,
    document_text,
    image_bytes,
    sampling_fields,
    tool_name_for,
)
from delos.runtime.values import (
    ChatMessage,
    ChatRequest,
    Completion,
    DocumentPart,
    Embeddings,
    EmbedRequest,
    ImagePart,
    Reasoning,
    StreamEvent,
    StreamFinished,
    TextDelta,
    TextPart,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "ChatStreamReader",
    "arguments_text",
    "chat_body",
    "embed_body",
    "error_message",
    "parse_chat",
    "parse_embeddings",
    "parse_tags",
]

#: The ``think`` levels Ollama takes besides ``true``/``false`` (``"max"`` is Ollama's own).
_THINK_LEVELS: Final = frozenset({"low", "medium", "high"})
_SAMPLING: Final = SamplingNames(top_p="top_p", stop="stop", max_tokens="num_predict")


def error_message(payload: Any) -> str | None:
    """The message of ``{"error": "..."}``."""
    error = payload.get("error")
    return error if isinstance(error, str) else None


def arguments_text(arguments: Mapping[str, Any]) -> str:
    """A tool call's arguments object as our ``arguments_json``: compact, UTF-8, keys in order."""
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


# -- request bodies -----------------------------------------------------------------------------


def chat_body(provider: str, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request``; the system messages are joined into the first.

    Raises:
        UnsupportedByProvider: a setting Ollama has no exact form for (see the adapter).
    """
    tools = _tools(provider, request)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": _messages(provider, request),
        "stream": stream,
    }
    if tools:
        body["tools"] = tools
    think = _think(provider, request.reasoning)
    if think is not None:
        body["think"] = think
    options = sampling_fields(request, _SAMPLING)
    if options:
        body["options"] = options
    if request.output_schema is not None:
        body["format"] = dict(request.output_schema)
    return body


def _tools(provider: str, request: ChatRequest) -> list[dict[str, Any]]:
    """The ``tools`` to send. Ollama has no ``tool_choice`` and no way to limit parallel calls:
    the model may always call any declared tool, any number of times."""
    choice = request.tool_choice
    declared: Sequence[Tool] = request.tools
    if choice == "none" and declared:
        # Without tools Ollama does not parse tool calls at all: "none" holds exactly. A
        # history that holds calls needs its tools declared to be rendered as calls.
        if any(m.tool_calls or m.role == "tool" for m in request.messages):
            raise UnsupportedByProvider(
                provider,
                "tool_choice",
                "Ollama cannot forbid tool calls; 'none' is sent as no tools, which a "
                "history holding tool calls does not allow",
            )
        declared = ()
    elif choice not in ("", "auto", "none"):
        raise UnsupportedByProvider(
            provider,
            "tool_choice",
            f"Ollama cannot force a tool call ({choice!r}); the model always chooses",
        )
    if declared and request.parallel_tool_calls is False:
        raise UnsupportedByProvider(
            provider, "parallel_tool_calls", "Ollama cannot limit an answer to one tool call"
        )
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in declared
    ]


def _think(provider: str, reasoning: Reasoning | None) -> bool | str | None:
    """The ``think`` value: a level for an effort, else ``true``; None leaves the model's default
    (a thinking model thinks)."""
    if reasoning is None:
        return None
    if reasoning.budget_tokens:
        raise UnsupportedByProvider(
            provider,
            "reasoning.budget_tokens",
            "Ollama has no thinking budget; it takes the levels low, medium and high",
        )
    if reasoning.effort in _THINK_LEVELS:
        return reasoning.effort
    if reasoning.effort:
        raise UnsupportedByProvider(
            provider,
            "reasoning.effort",
            f"Ollama has no {reasoning.effort!r} thinking level, only low, medium and high",
        )
    return True


def _messages(provider: str, request: ChatRequest) -> list[dict[str, Any]]:
    system = [
        _message(provider, request.messages, m) for m in request.messages if m.role == "system"
    ]
    messages = [_message(provider, request.messages, m) for m in request.conversation]
    if system:
        joined: dict[str, Any] = {
            "role": "system",
            "content": "\n\n".join(m["content"] for m in system if m["content"]),
        }
        images = [image for m in system for image in m.get("images", ())]
        if images:
            joined["images"] = images
        messages.insert(0, joined)
    return messages


def _message(provider: str, history: Sequence[ChatMessage], message: ChatMessage) -> dict[str, Any]:
    """One message, its keys in the order of Ollama's ``api.Message``.

    Texts and ``text/plain`` documents join into ``content``; images go apart, in ``images``,
    which is where Ollama places them whatever their position among the texts.
    """
    texts: list[str] = []
    images: list[str] = []
    thinking: list[str] = []
    for part in message.all_parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            images.append(_image(provider, part))
        elif isinstance(part, DocumentPart):
            texts.append(_document(provider, part))
        elif part.provider == provider and part.text:
            # Ollama's thinking carries no signature: only its text goes back.
            thinking.append(part.text)
    wire: dict[str, Any] = {"role": message.role, "content": "\n\n".join(texts)}
    if thinking:
        wire["thinking"] = "".join(thinking)
    if images:
        wire["images"] = images
    if message.tool_calls:
        wire["tool_calls"] = [
            _call(provider, index, call) for index, call in enumerate(message.tool_calls)
        ]
    if message.role == "tool":
        name = tool_name_for(history, message.tool_call_id)
        if name is not None:
            wire["tool_name"] = name
        if message.tool_call_id:
            wire["tool_call_id"] = message.tool_call_id
    return wire


def _image(provider: str, part: ImagePart) -> str:
    found = image_bytes(part)
    if found is None:
        raise UnsupportedByProvider(
            provider,
            "image url",
            "Ollama needs image bytes, not a URL; set DELOS_RUNTIME_FETCH_IMAGE_URLS=true to "
            "let the gateway fetch them",
        )
    return base64.b64encode(found[1]).decode("ascii")


def _document(provider: str, part: DocumentPart) -> str:
    if part.media_type == "text/plain":
        return document_text(part)
    raise UnsupportedByProvider(
        provider, "documents", f"Ollama has no document form for {part.media_type}"
    )


def _call(provider: str, index: int, call: ToolCall) -> dict[str, Any]:
    arguments = call_arguments(provider, call)
    function = {"index": index, "name": call.name, "arguments": arguments}
    return {"id": call.id, "function": function} if call.id else {"function": function}


# -- answers ------------------------------------------------------------------------------------


def _finish_reason(value: Any, *, called: bool) -> str:
    # Servers older than done_reason end every answer with a bare "done": true. Ollama says
    # "stop" when the model stopped to call tools.
    reason = str(value).lower() if value else "stop"
    return "tool_calls" if called and reason == "stop" else reason


def _usage(provider: str, payload: Mapping[str, Any]) -> Usage | None:
    """The counts of a final object; None when it reports none.

    A count missing beside a present one is zero, e.g. ``prompt_eval_count`` when the whole
    prompt came from the cache. ``eval_count`` includes the thinking tokens, which Ollama does
    not count apart.
    """
    prompt, completion = payload.get("prompt_eval_count"), payload.get("eval_count")
    if prompt is None and completion is None:
        return None
    counts = (prompt or 0, completion or 0)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise UpstreamProtocolError(provider, "token counts are not counts")
    return Usage(counts[0], counts[1])


def _message_of(provider: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    message = payload.get("message")
    if message is None:
        return {}
    if not isinstance(message, dict):
        raise UpstreamProtocolError(provider, "message is not a JSON object")
    return message


def _raw_calls(provider: str, message: Mapping[str, Any]) -> list[Any]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UpstreamProtocolError(provider, "tool_calls is not a list")
    return calls


def _tool_call(provider: str, value: Any, *, ordinal: int, answer_key: str) -> ToolCall:
    """One ``tool_calls`` entry; ``ordinal`` is its place in the answer, ``answer_key`` names
    the answer for the ids of servers older than 0.12.10, which give none."""
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict):
        raise UpstreamProtocolError(provider, "tool call has no function")
    name = function.get("name")
    arguments = function.get("arguments")
    if not isinstance(name, str) or not name:
        raise UpstreamProtocolError(provider, "tool call has no name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise UpstreamProtocolError(provider, "tool call arguments are not a JSON object")
    text = arguments_text(arguments)
    call_id = value.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = deterministic_call_id(answer_key, ordinal, name, text)
    return ToolCall(call_id, name, text)


def _answer_key(payload: Mapping[str, Any], model: str) -> str:
    return f"{payload.get('model') or model}\0{payload.get('created_at') or ''}"


def _text(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    return value if isinstance(value, str) else ""


def parse_chat(provider: str, payload: Any, *, model: str) -> Completion:
    """A whole ``/api/chat`` answer as a :class:`Completion`; ``model`` when it names none.

    Raises:
        UpstreamProtocolError: an error object, an answer not marked done, or another shape.
    """
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(provider, "answer is not a JSON object")
    if payload.get("error"):
        raise UpstreamProtocolError(provider, f"error in answer: {error_message(payload)}")
    if payload.get("done") is not True:
        raise UpstreamProtocolError(provider, "answer is not marked done")
    message = payload.get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError(provider, "answer has no message")
    key = _answer_key(payload, model)
    calls = tuple(
        _tool_call(provider, raw, ordinal=ordinal, answer_key=key)
        for ordinal, raw in enumerate(_raw_calls(provider, message))
    )
    thinking = _text(message, "thinking")
    return Completion(
        content=_text(message, "content"),
        model=str(payload.get("model") or model),
        finish_reason=_finish_reason(payload.get("done_reason"), called=bool(calls)),
        usage=_usage(provider, payload),
        tool_calls=calls,
        thinking=(Thinking(thinking, provider=provider),) if thinking else (),
    )


class ChatStreamReader:
    """Interprets a streamed ``/api/chat`` answer line by line; sans-IO.

    Feed each decoded NDJSON value to :meth:`feed`. A line gives its thinking text
    (:class:`ThinkingDelta`), then its text (:class:`TextDelta`), then one
    :class:`ToolCallDelta` per tool call, each whole (id, name and all its arguments). The
    ``"done": true`` line ends the stream: :attr:`finished` is then True and the last event
    returned was the :class:`StreamFinished`, with the calls and the thinking of the whole
    answer; later lines are ignored. Call :meth:`end` when the input ends.

    Raises (from :meth:`feed`):
        UpstreamProtocolError: a line that is not a JSON object, an error line, a malformed
            tool call, or token counts that are not counts.
    """

    def __init__(self, provider: str, *, model: str) -> None:
        self._provider = provider
        self.model = model
        self.finished = False
        self._calls: list[ToolCall] = []
        self._thinking: list[str] = []

    def feed(self, value: Any) -> list[StreamEvent]:
        if self.finished:
            return []
        if not isinstance(value, dict):
            raise UpstreamProtocolError(self._provider, "stream line is not a JSON object")
        if value.get("error"):
            detail = error_message(value) or "unknown error"
            raise UpstreamProtocolError(self._provider, f"error in the stream: {detail}")
        self.model = str(value.get("model") or self.model)
        events: list[StreamEvent] = []
        message = _message_of(self._provider, value)
        thinking = _text(message, "thinking")
        if thinking:
            self._thinking.append(thinking)
            events.append(ThinkingDelta(thinking))
        text = _text(message, "content")
        if text:
            events.append(TextDelta(text))
        key = _answer_key(value, self.model)
        for raw in _raw_calls(self._provider, message):
            ordinal = len(self._calls)
            call = _tool_call(self._provider, raw, ordinal=ordinal, answer_key=key)
            self._calls.append(call)
            events.append(ToolCallDelta(ordinal, call.id, call.name, call.arguments_json))
        if value.get("done") is True:
            events.append(self._finished(value))
            self.finished = True
        return events

    def _finished(self, value: Mapping[str, Any]) -> StreamFinished:
        thinking = "".join(self._thinking)
        return StreamFinished(
            _finish_reason(value.get("done_reason"), called=bool(self._calls)),
            _usage(self._provider, value),
            self.model,
            tool_calls=tuple(self._calls),
            thinking=(Thinking(thinking, provider=self._provider),) if thinking else (),
        )

    def end(self) -> None:
        """The input ended.

        Raises:
            UpstreamProtocolError: before the done line: the answer is truncated.
        """
        if not self.finished:
            raise UpstreamProtocolError(
                self._provider, "stream ended without its done line: the answer is truncated"
            )


# -- embeddings and models ----------------------------------------------------------------------


def embed_body(request: EmbedRequest) -> dict[str, Any]:
    """The ``/api/embed`` body: every text in one call."""
    return {"model": request.model, "input": list(request.texts)}


def parse_embeddings(provider: str, payload: Any, request: EmbedRequest) -> Embeddings:
    """An ``/api/embed`` answer; usage from ``prompt_eval_count`` when it is a count.

    Raises:
        UpstreamProtocolError: the answer has an unexpected shape or the wrong number of vectors.
    """
    try:
        vectors = [[float(v) for v in vector] for vector in payload["embeddings"]]
        tokens = payload.get("prompt_eval_count")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamProtocolError(provider, "embeddings answer has an unexpected shape") from None
    if len(vectors) != len(request.texts):
        raise UpstreamProtocolError(provider, "embeddings answer has the wrong count")
    usage = Usage(tokens, 0) if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    return Embeddings(vectors, str(payload.get("model") or request.model), usage)


def parse_tags(provider: str, payload: Any) -> tuple[str, ...]:
    """The model names of a ``/api/tags`` answer, in its order.

    Raises:
        UpstreamProtocolError: the list has an unexpected shape.
    """
    try:
        return tuple(str(entry.get("name") or entry["model"]) for entry in payload["models"])
    except (KeyError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "model list has an unexpected shape") from None
