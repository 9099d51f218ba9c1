"""The Python SDK: ``async with RuntimeClient("localhost:9001") as client: ...``.

Every failure of a call raises :class:`RuntimeClientError` with a gRPC status, its cause chained:
the server's own status for a gRPC error, and for failures below gRPC the one table
``_TRANSPORT_FAILURES`` (deadline → ``DEADLINE_EXCEEDED``, connection refused, reset, closed or
garbled → ``UNAVAILABLE``, an answer that does not parse → ``INTERNAL``, anything else →
``UNKNOWN``).

A stream is an async generator: closing it cancels its HTTP/2 stream, so the server stops the
work. Close it with ``contextlib.aclosing`` when leaving a loop early (asyncio closes it only once
nothing refers to it any more); the client also cancels the streams still open when it is closed,
so none outlives ``async with RuntimeClient``.

Agents: calls take tools, reasoning and rich messages (parts, tool calls, tool results) as dicts
or as the frozen values below (:class:`Message`, :class:`Tool`, …), and answer with typed tool
calls, thinking and usage; :meth:`RuntimeClient.run_tools` runs the whole tool loop. Values go to
protobuf in the ``_*_pb`` functions and come back in the ``_from_pb`` ones, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypedDict, Unpack

import anyio
from google.protobuf.message import DecodeError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.v1.runtime_grpc import RuntimeServiceStub

__all__ = [
    "CompletionResult",
    "Document",
    "Image",
    "Message",
    "Reasoning",
    "RuntimeClient",
    "RuntimeClientError",
    "StreamChunk",
    "Thinking",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

_ROUTING = {
    "unspecified": pb.ROUTING_STRATEGY_UNSPECIFIED,
    "cost": pb.ROUTING_STRATEGY_COST_OPTIMIZED,
    "cost_optimized": pb.ROUTING_STRATEGY_COST_OPTIMIZED,
    "latency": pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED,
    "latency_optimized": pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED,
    "quality": pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED,
    "quality_optimized": pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED,
    "specific": pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER,
    "specific_provider": pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER,
}


class RuntimeClientError(Exception):
    """A call failed; ``status`` is the gRPC status and ``message`` says why.

    ``__cause__`` is the error it stands for: the server's ``GRPCError``, or the transport's
    ``TimeoutError``, ``ConnectionError``, ``StreamTerminatedError``, …
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


#: How a failure below gRPC becomes a status: the first row whose types match wins (TimeoutError
#: is an OSError, so it comes first). grpclib reports its deadline as a TimeoutError; refused,
#: reset and broken connections (and DNS or TLS failures) are OSErrors; a connection closed under
#: a call is a StreamTerminatedError; a peer that does not speak HTTP/2 is an H2Error.
_TRANSPORT_FAILURES: Final[tuple[tuple[tuple[type[Exception], ...], Status, str], ...]] = (
    ((TimeoutError,), Status.DEADLINE_EXCEEDED, "no answer from {target} within the deadline"),
    ((StreamTerminatedError,), Status.UNAVAILABLE, "connection to {target} ended"),
    ((OSError, H2Error), Status.UNAVAILABLE, "connection to {target} failed"),
    ((ProtocolError, DecodeError), Status.INTERNAL, "malformed answer from {target}"),
)


def _transport_failure(error: Exception, target: str, timeout: float | None) -> RuntimeClientError:
    for types, status, template in _TRANSPORT_FAILURES:
        if isinstance(error, types):
            message = template.format(target=target)
            if status is Status.DEADLINE_EXCEEDED:
                return RuntimeClientError(
                    status, f"{message} ({timeout:g} s)" if timeout else message
                )
            return RuntimeClientError(status, f"{message}: {error or type(error).__name__}")
    return RuntimeClientError(Status.UNKNOWN, f"{type(error).__name__}: {error}")


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    """An image by ``url`` (https, or a ``data:`` URL) or by ``data`` (raw bytes, with their
    ``media_type``: image/png, image/jpeg, image/gif or image/webp)."""

    url: str = ""
    data: bytes = field(default=b"", repr=False)
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class Document:
    """A document's bytes, ``application/pdf`` or ``text/plain`` (UTF-8); ``name`` is what the
    model is told it is."""

    data: bytes = field(repr=False)
    media_type: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Thinking:
    """A model's thinking as its provider returned it, to be sent back verbatim in the assistant
    turn (:attr:`CompletionResult.message` does). ``signature`` and ``redacted_data`` are the
    provider's opaque values; ``provider`` the endpoint that made them, the only one to take them
    back."""

    text: str = ""
    signature: str = ""
    redacted_data: str = ""
    provider: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made. ``arguments_json`` is a JSON object as text, as the provider sent
    it; ``signature`` an opaque value (Gemini's) that goes back with the call."""

    id: str
    name: str
    arguments_json: str = "{}"
    signature: str = ""

    @property
    def arguments(self) -> dict[str, Any]:
        """``arguments_json`` parsed (a new dict each time; ``{}`` when empty). Raises
        ``ValueError`` when it is not a JSON object."""
        if not self.arguments_json.strip():
            return {}
        arguments = json.loads(self.arguments_json)
        if not isinstance(arguments, dict):
            raise ValueError(f"the arguments of tool call {self.id!r} are not a JSON object")
        return arguments


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call. ``index`` is the call's 0-based ordinal in the answer;
    its first delta carries ``id`` and ``name``, and its ``arguments_delta`` pieces concatenate to
    its ``arguments_json``."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. ``parameters`` is a JSON Schema of an object (``None``: the
    tool takes no arguments)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reasoning:
    """How much a reasoning model thinks: ``effort`` (minimal, low, medium, high; "" leaves it to
    the provider) or ``budget_tokens`` (tokens; 0: none given). ``include_thoughts`` asks for the
    thinking text where the provider returns it."""

    effort: str = ""
    budget_tokens: int = 0
    include_thoughts: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of an answer. ``cache_read_tokens`` and ``cache_write_tokens``: prompt tokens
    read from and written to the provider's prompt cache; ``reasoning_tokens``: completion tokens
    spent thinking; ``estimated``: the provider reported none, these are estimates."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False


#: A content part; a ``str`` is a text part.
Part = str | Image | Document | Thinking


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation. ``role``: system, user, assistant or tool. ``content`` is
    text; ``parts`` follow it. ``tool_calls``: an assistant turn that called tools;
    ``tool_call_id``: a tool message, the call it answers; ``cache_breakpoint``: cache the prompt
    up to and including this message.

    Calls take a message as this, as the protobuf ``Message``, or as a dict with these keys:
    ``{"role": "user", "content": "…", "parts": [{"image": {"url": "https://…"}}]}``. A dict's
    parts are ``str``, :class:`Image`, :class:`Document`, :class:`Thinking`, or one-key dicts
    ``{"text": "…"}``, ``{"image": {…}}``, ``{"document": {…}}``, ``{"thinking": {…}}``; its tool
    calls are :class:`ToolCall` or ``{"id", "name", "arguments"}``, the arguments a dict or a
    JSON string.
    """

    role: str
    content: str = ""
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    cache_breakpoint: bool = False


_MessageInput = Mapping[str, Any] | Message | pb.Message
_ToolInput = Mapping[str, Any] | Tool | pb.Tool
_ReasoningInput = Mapping[str, Any] | Reasoning | pb.Reasoning
#: A tool of :meth:`RuntimeClient.run_tools`: an async callable of the call's arguments.
_ToolFunction = Callable[..., Awaitable[object]]


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """One answer. ``prompt_tokens`` and ``completion_tokens`` repeat ``usage``'s; ``cost_usd``
    is in USD, ``latency_ms`` in milliseconds; ``raw`` is the protobuf answer (attempts, request
    id, …)."""

    content: str
    provider: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool
    raw: pb.CompleteResponse
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    usage: Usage = Usage()
    #: From :meth:`RuntimeClient.run_tools`: the whole conversation, its last message this
    #: answer's (:attr:`message`). Empty from :meth:`RuntimeClient.complete`.
    messages: tuple[Message, ...] = ()

    @property
    def message(self) -> Message:
        """This answer as the assistant turn to append to the conversation: its thinking first
        and verbatim (signed thinking must go back as it came, before the text), then its text,
        and its tool calls."""
        if not self.thinking:
            return Message("assistant", self.content, tool_calls=self.tool_calls)
        parts: tuple[Part, ...] = (*self.thinking, self.content) if self.content else self.thinking
        return Message("assistant", parts=parts, tool_calls=self.tool_calls)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    delta: str
    #: Set on the last chunk only, with usage and cost.
    finish_reason: str
    raw: pb.StreamChunk
    #: A piece of a tool call (one per chunk), or None.
    tool_call: ToolCallDelta | None = None
    thinking_delta: str = ""
    #: On the last chunk: the answer's tool calls and thinking, whole, and its usage.
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    usage: Usage | None = None


# -- values to protobuf and back ----------------------------------------------------------------

_MESSAGE_KEYS: Final = (
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_call_id",
    "cache_breakpoint",
)
_TOOL_CALL_KEYS: Final = ("id", "name", "arguments", "signature")
_PART_TYPES: Final[Mapping[str, type[Image | Document | Thinking]]] = {
    "image": Image,
    "document": Document,
    "thinking": Thinking,
}


def _check_keys(value: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    # A misspelt key ("tool_call", "cache_breakpoints") would otherwise be dropped unseen.
    unknown = [key for key in value if key not in known]
    if unknown:
        raise ValueError(f"{what} has no key {', '.join(map(repr, unknown))}; use {known}")


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _message_pb(value: _MessageInput) -> pb.Message:
    if isinstance(value, pb.Message):
        return value
    message = value if isinstance(value, Message) else _message_of_dict(value)
    return pb.Message(
        role=message.role,
        content=message.content,
        parts=[_part_pb(part) for part in message.parts],
        tool_calls=[
            pb.ToolCall(
                id=c.id, name=c.name, arguments_json=c.arguments_json, signature=c.signature
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        cache_breakpoint=message.cache_breakpoint,
    )


def _message_of_dict(value: Mapping[str, Any]) -> Message:
    _check_keys(value, _MESSAGE_KEYS, "a message")
    if "role" not in value:
        raise ValueError("a message needs a role: system, user, assistant or tool")
    return Message(
        role=value["role"],
        content=value.get("content", ""),
        parts=tuple(_part_of_dict(part) for part in value.get("parts", ())),
        tool_calls=tuple(_tool_call_of_dict(call) for call in value.get("tool_calls", ())),
        tool_call_id=value.get("tool_call_id", ""),
        cache_breakpoint=value.get("cache_breakpoint", False),
    )


def _part_of_dict(value: Part | Mapping[str, Any]) -> Part:
    if not isinstance(value, Mapping):
        return value
    if len(value) != 1:
        raise ValueError(f"a part has one key (text, image, document or thinking): {list(value)}")
    ((kind, body),) = value.items()
    if kind == "text":
        if not isinstance(body, str):
            raise TypeError(f"a text part is a str, not {type(body).__name__}")
        return body
    part_type = _PART_TYPES.get(kind)
    if part_type is None:
        raise ValueError(f"a part is text, image, document or thinking, not {kind!r}")
    return body if isinstance(body, part_type) else part_type(**body)


def _tool_call_of_dict(value: ToolCall | Mapping[str, Any]) -> ToolCall:
    if isinstance(value, ToolCall):
        return value
    _check_keys(value, _TOOL_CALL_KEYS, "a tool call")
    arguments = value.get("arguments", "{}")
    return ToolCall(
        value["id"],
        value["name"],
        arguments if isinstance(arguments, str) else _json(arguments),
        value.get("signature", ""),
    )


def _part_pb(part: Part) -> pb.ContentPart:
    if isinstance(part, str):
        return pb.ContentPart(text=part)
    if isinstance(part, Image):
        return pb.ContentPart(
            image=pb.Image(url=part.url, data=part.data, media_type=part.media_type)
        )
    if isinstance(part, Document):
        return pb.ContentPart(
            document=pb.Document(data=part.data, media_type=part.media_type, name=part.name)
        )
    return pb.ContentPart(
        thinking=pb.Thinking(
            text=part.text,
            signature=part.signature,
            redacted_data=part.redacted_data,
            provider=part.provider,
        )
    )


def _tool_pb(value: _ToolInput) -> pb.Tool:
    if isinstance(value, pb.Tool):
        return value
    tool = value if isinstance(value, Tool) else Tool(**value)
    return pb.Tool(
        name=tool.name,
        description=tool.description,
        # "": no parameters; the gateway reads it as an object without properties.
        parameters_json="" if tool.parameters is None else _json(tool.parameters),
    )


def _reasoning_pb(value: _ReasoningInput) -> pb.Reasoning:
    if isinstance(value, pb.Reasoning):
        return value
    reasoning = value if isinstance(value, Reasoning) else Reasoning(**value)
    return pb.Reasoning(
        effort=reasoning.effort,
        budget_tokens=reasoning.budget_tokens,
        include_thoughts=reasoning.include_thoughts,
    )


def _tool_call_from_pb(call: pb.ToolCall) -> ToolCall:
    return ToolCall(call.id, call.name, call.arguments_json, call.signature)


def _thinking_from_pb(thinking: pb.Thinking) -> Thinking:
    return Thinking(thinking.text, thinking.signature, thinking.redacted_data, thinking.provider)


def _usage_from_pb(usage: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
    )


def _part_from_pb(part: pb.ContentPart) -> Part:
    match part.WhichOneof("kind"):
        case "image":
            return Image(part.image.url, part.image.data, part.image.media_type)
        case "document":
            return Document(part.document.data, part.document.media_type, part.document.name)
        case "thinking":
            return _thinking_from_pb(part.thinking)
    return part.text


def _message_from_pb(message: pb.Message) -> Message:
    return Message(
        role=message.role,
        content=message.content,
        parts=tuple(_part_from_pb(part) for part in message.parts),
        tool_calls=tuple(_tool_call_from_pb(call) for call in message.tool_calls),
        tool_call_id=message.tool_call_id,
        cache_breakpoint=message.cache_breakpoint,
    )


def _completion_result(response: pb.CompleteResponse) -> CompletionResult:
    return CompletionResult(
        content=response.content,
        provider=response.provider,
        model=response.model,
        finish_reason=response.finish_reason,
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        cost_usd=response.cost_usd,
        latency_ms=response.latency_ms,
        cached=response.cached,
        raw=response,
        tool_calls=tuple(_tool_call_from_pb(call) for call in response.tool_calls),
        thinking=tuple(_thinking_from_pb(thinking) for thinking in response.thinking),
        usage=_usage_from_pb(response.usage),
    )


def _stream_chunk(chunk: pb.StreamChunk) -> StreamChunk:
    tool_call = None
    if chunk.HasField("tool_call"):
        delta = chunk.tool_call
        tool_call = ToolCallDelta(delta.index, delta.id, delta.name, delta.arguments_delta)
    if not chunk.HasField("usage"):  # every chunk but the last: the common case, kept short
        return StreamChunk(chunk.delta, chunk.finish_reason, chunk, tool_call, chunk.thinking_delta)
    return StreamChunk(
        chunk.delta,
        chunk.finish_reason,
        chunk,
        tool_call,
        chunk.thinking_delta,
        tool_calls=tuple(_tool_call_from_pb(call) for call in chunk.tool_calls),
        thinking=tuple(_thinking_from_pb(thinking) for thinking in chunk.thinking),
        usage=_usage_from_pb(chunk.usage),
    )


def _routing(value: str | int | None) -> int:
    if value is None:
        return pb.ROUTING_STRATEGY_UNSPECIFIED
    if isinstance(value, int):
        return value
    key = value.lower().removeprefix("routing_strategy_")
    if key not in _ROUTING:
        raise ValueError(f"unknown routing {value!r}; use one of {', '.join(sorted(_ROUTING))}")
    return _ROUTING[key]


def _params(
    messages: Iterable[_MessageInput] | None,
    *,
    routing: str | int | None,
    provider: str | None,
    model: str | None,
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    stop: Sequence[str] | None,
    output_schema: str | None,
    use_cache: bool,
    cache_ttl_seconds: int | None,
    prompt_ref: str | None,
    variables: Mapping[str, str] | None,
    metadata: Mapping[str, str] | None,
    tools: Iterable[_ToolInput] | None,
    tool_choice: str | None,
    parallel_tool_calls: bool | None,
    reasoning: _ReasoningInput | None,
    session_id: str | None,
) -> pb.CompletionParams:
    params = pb.CompletionParams(
        messages=[_message_pb(m) for m in messages or ()],
        routing=_routing(routing),  # type: ignore[arg-type]
        provider=provider or "",
        model=model or "",
        stop=list(stop or ()),
        output_schema=output_schema or "",
        use_cache=use_cache,
        cache_ttl_seconds=cache_ttl_seconds or 0,
        prompt_ref=prompt_ref or "",
        variables=dict(variables or {}),
        metadata=dict(metadata or {}),
        tools=[_tool_pb(tool) for tool in tools or ()],
        tool_choice=tool_choice or "",
        session_id=session_id or "",
    )
    if temperature is not None:
        params.temperature = temperature
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if top_p is not None:
        params.top_p = top_p
    if parallel_tool_calls is not None:
        params.parallel_tool_calls = parallel_tool_calls
    if reasoning is not None:
        params.reasoning.CopyFrom(_reasoning_pb(reasoning))
    return params


class _CompletionOptions(TypedDict, total=False):
    """The keyword arguments :meth:`RuntimeClient.run_tools` passes on to each ``complete``."""

    routing: str | int | None
    provider: str | None
    model: str | None
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    stop: Sequence[str] | None
    output_schema: str | None
    use_cache: bool
    cache_ttl_seconds: int | None
    prompt_ref: str | None
    variables: Mapping[str, str] | None
    metadata: Mapping[str, str] | None
    tool_choice: str | None
    parallel_tool_calls: bool | None
    reasoning: _ReasoningInput | None
    session_id: str | None
    timeout: float | None


class RuntimeClient:
    """An async client of the Runtime service (asyncio only: grpclib). ``target`` is
    ``"host:port"``; ``timeout`` is the default deadline of each call, in seconds, sent to the
    server (``None``: no deadline).

    Use it as ``async with RuntimeClient(...) as client``, or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        target: str = "localhost:9001",
        *,
        api_key: str | None = None,
        timeout: float | None = 120.0,
        ssl: Any = None,
    ) -> None:
        host, _, port = target.rpartition(":")
        self._target = target
        self._channel = Channel(host or "localhost", int(port), ssl=ssl)
        self._stub = RuntimeServiceStub(self._channel)
        self._metadata = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._timeout = timeout
        # grpclib streams of the complete_stream generators not finished yet, and those of them
        # that aclose() cancelled (their generator then raises CANCELLED rather than UNAVAILABLE).
        self._open_streams: set[Any] = set()
        self._cancelled_streams: set[Any] = set()

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every stream still open (an HTTP/2 RST_STREAM, so the server stops its work),
        then close the connection. A stream left open raises ``RuntimeClientError(CANCELLED)``
        if it is iterated again."""
        # Shielded: this cleanup must reach the server even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            for stream in list(self._open_streams):
                self._cancelled_streams.add(stream)
                # A stream that ended or lost its connection meanwhile has nothing to cancel.
                with (
                    contextlib.suppress(ProtocolError, StreamTerminatedError, H2Error, OSError),
                    _withdrawn_grpclib_cancellations(),
                ):
                    await stream.cancel()
        self._channel.close()

    def close(self) -> None:
        """Close the connection at once: every call still open ends (``UNAVAILABLE``) and the
        server cancels its work. Prefer :meth:`aclose`, which cancels each open stream first."""
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    @contextlib.contextmanager
    def _call_errors(self, timeout: float | None, stream: Any = None) -> Iterator[None]:
        """Turn every failure of a call into :class:`RuntimeClientError`, cause chained."""
        try:
            with _withdrawn_grpclib_cancellations():
                yield
        except RuntimeClientError:
            raise
        except GRPCError as error:
            raise RuntimeClientError(error.status, error.message or "") from error
        except Exception as error:
            if stream is not None and stream in self._cancelled_streams:
                raise RuntimeClientError(Status.CANCELLED, _CLOSED_UNDER_STREAM) from error
            raise _transport_failure(error, self._target, timeout) from error

    async def complete(
        self,
        messages: Iterable[_MessageInput] | None = None,
        *,
        routing: str | int | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        output_schema: str | None = None,
        use_cache: bool = False,
        cache_ttl_seconds: int | None = None,
        prompt_ref: str | None = None,
        variables: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        tools: Iterable[_ToolInput] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        reasoning: _ReasoningInput | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> CompletionResult:
        """One completion. ``timeout`` (seconds) overrides the client's deadline.

        ``messages`` are dicts, :class:`Message` values or protobuf ``Message``s (see
        :class:`Message`). ``tools`` are :class:`Tool` values or dicts ``{"name",
        "description", "parameters": <JSON Schema>}``; ``tool_choice`` is "auto", "none",
        "required" or a tool's name; ``parallel_tool_calls`` None leaves it to the provider.
        ``reasoning`` is a :class:`Reasoning` or a dict of its fields. ``session_id`` keeps an
        agent's turns on the provider and model of its last turn (and their prompt cache).

        Raises :class:`RuntimeClientError` with the gRPC status on any failure, and
        ``ValueError`` (or ``TypeError``) for an unknown ``routing`` name or a malformed message,
        tool or reasoning, before sending anything.
        """
        params = _params(
            messages,
            routing=routing,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            output_schema=output_schema,
            use_cache=use_cache,
            cache_ttl_seconds=cache_ttl_seconds,
            prompt_ref=prompt_ref,
            variables=variables,
            metadata=metadata,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            reasoning=reasoning,
            session_id=session_id,
        )
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            response = await self._stub.Complete(
                pb.CompleteRequest(params=params), timeout=deadline, metadata=self._metadata
            )
        return _completion_result(response)

    async def complete_stream(
        self,
        messages: Iterable[_MessageInput] | None = None,
        *,
        routing: str | int | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        output_schema: str | None = None,
        use_cache: bool = False,
        cache_ttl_seconds: int | None = None,
        prompt_ref: str | None = None,
        variables: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        tools: Iterable[_ToolInput] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        reasoning: _ReasoningInput | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream chunks; the last one carries finish reason, usage and cost, and the answer's
        tool calls and thinking whole. Other chunks carry a text ``delta``, a ``thinking_delta``
        or a ``tool_call`` piece. Arguments as for :meth:`complete`.

        An async generator: close it to cancel the call when leaving early, as in
        ``async with contextlib.aclosing(client.complete_stream(...)) as chunks``. A stream left
        open is cancelled when the client is closed. Raises :class:`RuntimeClientError` with the
        gRPC status on any failure, ``CANCELLED`` when the client was closed under it.
        """
        params = _params(
            messages,
            routing=routing,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            output_schema=output_schema,
            use_cache=use_cache,
            cache_ttl_seconds=cache_ttl_seconds,
            prompt_ref=prompt_ref,
            variables=variables,
            metadata=metadata,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            reasoning=reasoning,
            session_id=session_id,
        )
        deadline = self._deadline(timeout)
        opened = self._stub.CompleteStream.open(timeout=deadline, metadata=self._metadata)
        self._open_streams.add(opened)
        try:
            # Leaving this ``async with`` before the end (GeneratorExit from aclose(), a
            # cancellation, an error) resets the HTTP/2 stream: grpclib's Stream.__aexit__ sends
            # RST_STREAM, which is what tells the server to stop. Each await is mapped on its own,
            # so that nothing the caller does between two chunks is taken for a failure of ours.
            async with opened as stream:
                with self._call_errors(deadline, opened):
                    await stream.send_message(pb.CompleteRequest(params=params), end=True)
                while True:
                    with self._call_errors(deadline, opened):
                        chunk = await stream.recv_message()
                        if chunk is None:
                            # The status: a stream that fails after its output ends in an error.
                            await stream.recv_trailing_metadata()
                            return
                    yield _stream_chunk(chunk)
                    if opened in self._cancelled_streams:
                        raise RuntimeClientError(Status.CANCELLED, _CLOSED_UNDER_STREAM)
        finally:
            self._open_streams.discard(opened)
            self._cancelled_streams.discard(opened)

    async def run_tools(
        self,
        messages: Iterable[_MessageInput],
        tools: Mapping[str, tuple[_ToolInput, _ToolFunction]],
        *,
        max_turns: int = 8,
        **options: Unpack[_CompletionOptions],
    ) -> CompletionResult:
        """Run a tool-using conversation to its answer: complete, run the tools the model
        called, send their results back, and again, until an answer calls no tool.

        ``tools`` maps each tool's name to ``(spec, function)``: the spec is what the model is
        told, a :class:`Tool` or a dict ``{"description": ..., "parameters": <JSON Schema>}``
        (a name in it must be the key); the function is async and is called with the call's
        arguments as keyword arguments, ``await function(**call.arguments)``. The calls of one
        answer run concurrently, in one task group. Each result goes back as the text of a
        ``tool`` message: a ``str`` as it is, anything else JSON-encoded. A function that raises
        an ``Exception``, a call to an unknown tool, or arguments that are not a JSON object give
        the model ``"error: <ExceptionType>: <message>"`` instead, and the loop goes on.

        ``options`` are those of :meth:`complete`, the same on every turn (``session_id`` keeps
        the turns on one provider and its prompt cache warm; ``timeout`` is per turn), except
        ``tool_choice``, which applies to the first turn only, so that ``"required"`` or a
        tool's name cannot force calls until ``max_turns``.

        Returns the last answer; its :attr:`~CompletionResult.messages` is the whole
        conversation (``messages``, then each assistant turn with its thinking and tool calls
        verbatim and one ``tool`` message per call), ready to go on with. Raises
        :class:`RuntimeClientError` as :meth:`complete` does, and with ``RESOURCE_EXHAUSTED``
        when answer number ``max_turns`` still calls tools (those calls are not run);
        ``ValueError`` or ``TypeError`` for a malformed spec, before sending anything.
        """
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        specs = [_tool_spec_pb(name, spec) for name, (spec, _) in tools.items()]
        functions = {name: function for name, (_, function) in tools.items()}
        # The conversation as protobuf from the start: each turn only appends to it.
        conversation = [_message_pb(m) for m in messages]
        for turn in range(1, max_turns + 1):
            result = await self.complete(conversation, tools=specs, **options)
            conversation.append(_message_pb(result.message))
            if not result.tool_calls:
                messages_out = tuple(_message_from_pb(m) for m in conversation)
                return dataclasses.replace(result, messages=messages_out)
            if turn == max_turns:
                break
            replies = await _run_tool_calls(result.tool_calls, functions)
            conversation += [
                pb.Message(role="tool", content=reply, tool_call_id=call.id)
                for call, reply in zip(result.tool_calls, replies, strict=True)
            ]
            options.pop("tool_choice", None)
        raise RuntimeClientError(
            Status.RESOURCE_EXHAUSTED,
            f"max_turns reached: answer {max_turns} still calls tools "
            f"({', '.join(call.name for call in result.tool_calls)})",
        )

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        provider: str | None = None,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """Embed ``texts``. Raises :class:`RuntimeClientError` with the gRPC status on failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.Embed(
                pb.EmbedRequest(texts=list(texts), model=model or "", provider=provider or ""),
                timeout=deadline,
                metadata=self._metadata,
            )

    async def list_providers(self, *, timeout: float | None = None) -> pb.ListProvidersResponse:
        """The providers, their models, prices, breaker states and latencies.

        Raises :class:`RuntimeClientError` with the gRPC status on failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.ListProviders(
                pb.ListProvidersRequest(), timeout=deadline, metadata=self._metadata
            )

    async def health(self, *, timeout: float | None = None) -> pb.HealthResponse:
        """The gateway's health. Raises :class:`RuntimeClientError` with the gRPC status on
        failure."""
        deadline = self._deadline(timeout)
        with self._call_errors(deadline):
            return await self._stub.Health(
                pb.HealthRequest(), timeout=deadline, metadata=self._metadata
            )


_CLOSED_UNDER_STREAM: Final = "the client was closed while this stream was open"


@contextlib.contextmanager
def _withdrawn_grpclib_cancellations() -> Iterator[None]:
    """Withdraw the cancellation requests grpclib leaves on the calling task.

    grpclib delivers its deadline and a lost connection by cancelling the task waiting on the
    call (``Task.cancel()``), then raises its own error in place of the CancelledError, and never
    calls ``Task.uncancel()``. The request it leaves would make the caller's next cancel scope
    (anyio, ``asyncio.TaskGroup``) take it for an outside cancellation and re-raise it.
    """
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception:
        while task is not None and task.cancelling() > cancelling:
            task.uncancel()
        raise


# -- the tool loop ----------------------------------------------------------------------------


def _tool_spec_pb(name: str, spec: _ToolInput) -> pb.Tool:
    """``spec`` of the tool ``name`` of :meth:`RuntimeClient.run_tools`, named by its key."""
    if isinstance(spec, Tool | pb.Tool):
        given = spec.name
    else:
        given = spec.get("name", name)
        spec = {**spec, "name": name}
    if given != name:
        raise ValueError(f"the spec of tool {name!r} names another tool, {given!r}")
    return _tool_pb(spec)


async def _run_tool_calls(
    calls: Sequence[ToolCall], functions: Mapping[str, _ToolFunction]
) -> list[str]:
    """The result texts of ``calls``, in their order; the calls run concurrently."""
    replies = [""] * len(calls)

    async def run(index: int, call: ToolCall) -> None:
        replies[index] = await _tool_reply(call, functions)

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(run, index, call)
    return replies


async def _tool_reply(call: ToolCall, functions: Mapping[str, _ToolFunction]) -> str:
    function = functions.get(call.name)
    if function is None:
        return f"error: unknown tool {call.name!r}; the tools are: {', '.join(functions)}"
    # Only Exception: a cancellation (a BaseException) must end the loop, not reach the model.
    try:
        result = await function(**call.arguments)
        return result if isinstance(result, str) else _json(result)
    except Exception as error:
        return f"error: {type(error).__name__}: {error}"
