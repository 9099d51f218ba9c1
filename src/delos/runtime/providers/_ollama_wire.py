"""Ollama's native API, sans-IO: request bodies in, parsed answers and stream events out.

Nothing here does I/O; :mod:`delos.runtime.providers.ollama` does the HTTP. Facts of the format
this module encodes:

- chat is ``/api/chat``: ``"stream": false`` gives one JSON object, ``"stream": true`` NDJSON
  whose last line has ``"done": true``, the ``done_reason`` and the token counts;
- sampling goes inside ``options`` (``num_predict`` is the max-tokens limit); structured output
  is the native ``"format": <JSON schema>``;
- the server omits a zero count (Go's ``omitempty``): a count missing beside a present one is 0;
- errors are ``{"error": "..."}``: with an HTTP status before the answer starts, as a line of the
  stream after it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from delos.runtime.errors import UpstreamProtocolError
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    TextDelta,
    Usage,
)

__all__ = [
    "ChatStreamReader",
    "chat_body",
    "embed_body",
    "error_message",
    "parse_chat",
    "parse_embeddings",
    "parse_tags",
]


def error_message(payload: Any) -> str | None:
    """The message of ``{"error": "..."}``."""
    error = payload.get("error")
    return error if isinstance(error, str) else None


def _finish_reason(value: Any) -> str:
    # Servers older than done_reason end every answer with a bare "done": true.
    return str(value).lower() if value else "stop"


def _usage(provider: str, payload: Mapping[str, Any]) -> Usage | None:
    """The counts of a final object; None when it reports none.

    A count missing beside a present one is zero, e.g. ``prompt_eval_count`` when the whole
    prompt came from the cache.
    """
    prompt, completion = payload.get("prompt_eval_count"), payload.get("eval_count")
    if prompt is None and completion is None:
        return None
    counts = (prompt or 0, completion or 0)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise UpstreamProtocolError(provider, "token counts are not counts")
    return Usage(counts[0], counts[1])


def chat_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request``; the system prompt is the first message."""
    messages = [{"role": m.role, "content": m.content} for m in request.conversation]
    system = request.system_prompt
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": stream}
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.stop:
        options["stop"] = list(request.stop)
    if options:
        body["options"] = options
    if request.output_schema is not None:
        body["format"] = dict(request.output_schema)
    return body


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
    return Completion(
        content=str(message.get("content") or ""),
        model=str(payload.get("model") or model),
        finish_reason=_finish_reason(payload.get("done_reason")),
        usage=_usage(provider, payload),
    )


class ChatStreamReader:
    """Interprets a streamed ``/api/chat`` answer line by line; sans-IO.

    Feed each decoded NDJSON value to :meth:`feed`. The ``"done": true`` line ends the stream:
    :attr:`finished` is then True and the last event returned was the :class:`StreamFinished`;
    later lines are ignored. Call :meth:`end` when the input ends.

    Raises (from :meth:`feed`):
        UpstreamProtocolError: a line that is not a JSON object, an error line, or token counts
            that are not counts.
    """

    def __init__(self, provider: str, *, model: str) -> None:
        self._provider = provider
        self.model = model
        self.finished = False

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
        message = value.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if text:
            events.append(TextDelta(str(text)))
        if value.get("done") is True:
            finish = _finish_reason(value.get("done_reason"))
            events.append(StreamFinished(finish, _usage(self._provider, value), self.model))
            self.finished = True
        return events

    def end(self) -> None:
        """The input ended.

        Raises:
            UpstreamProtocolError: before the done line: the answer is truncated.
        """
        if not self.finished:
            raise UpstreamProtocolError(
                self._provider, "stream ended without its done line: the answer is truncated"
            )


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
