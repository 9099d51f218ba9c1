"""Every conversion between the wire (protobuf) and the domain, and the one error → status table.

Requests come in as protobuf messages and leave as validated domain inputs; answers, stream
chunks, embeddings and provider reports come back as domain values and leave as protobuf. No
other module under ``delos.runtime`` outside this package sees protobuf or grpclib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from grpclib.const import Status

from delos.runtime.embeddings import EmbedAnswer
from delos.runtime.errors import DelosError, ErrorKind, InvalidRequest, kind_of
from delos.runtime.inputs import (
    CompletionInput,
    EmbedInput,
    Routing,
    completion_input,
    embed_input,
)
from delos.runtime.reports import HealthReport, ProviderReport
from delos.runtime.routing import AttemptRecord, RoutedAnswer, StreamPiece
from delos.runtime.v1 import runtime_pb2 as pb
from delos.runtime.values import (
    ChatMessage,
    ContentPart,
    DocumentPart,
    ImagePart,
    Reasoning,
    TextDelta,
    TextPart,
    Thinking,
    ThinkingDelta,
    ToolCall,
    Usage,
)

__all__ = [
    "STATUS_OF_KIND",
    "complete_response",
    "completion_input_from_proto",
    "delta_chunk",
    "embed_input_from_proto",
    "embed_response",
    "final_chunk",
    "health_response",
    "list_providers_response",
    "status_of",
]

#: The one table from an error's kind to the gRPC status the client sees.
STATUS_OF_KIND: Final = {
    ErrorKind.INVALID: Status.INVALID_ARGUMENT,
    ErrorKind.TOO_LARGE: Status.RESOURCE_EXHAUSTED,
    ErrorKind.NOT_FOUND: Status.NOT_FOUND,
    ErrorKind.NOT_CONFIGURED: Status.FAILED_PRECONDITION,
    ErrorKind.UNAUTHENTICATED: Status.UNAUTHENTICATED,
    ErrorKind.RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: Status.UNAVAILABLE,
    ErrorKind.INTERNAL: Status.INTERNAL,
}


def status_of(error: DelosError) -> Status:
    """The gRPC status a client sees for ``error``."""
    return STATUS_OF_KIND[kind_of(error)]


# -- requests in ------------------------------------------------------------------------------

_ROUTING_OF_PROTO: Final = {
    pb.ROUTING_STRATEGY_UNSPECIFIED: None,
    pb.ROUTING_STRATEGY_COST_OPTIMIZED: Routing.COST,
    pb.ROUTING_STRATEGY_LATENCY_OPTIMIZED: Routing.LATENCY,
    pb.ROUTING_STRATEGY_QUALITY_OPTIMIZED: Routing.QUALITY,
    pb.ROUTING_STRATEGY_SPECIFIC_PROVIDER: Routing.SPECIFIC,
}


def completion_input_from_proto(params: pb.CompletionParams) -> CompletionInput:
    """Validate ``params``. Raises :class:`InvalidRequest` or :class:`UnknownProvider`."""
    if params.routing not in _ROUTING_OF_PROTO:
        raise InvalidRequest(f"routing: unknown strategy number {params.routing}")
    return completion_input(
        messages=[_message(m) for m in params.messages],
        routing=_ROUTING_OF_PROTO[params.routing],
        provider=params.provider,
        model=params.model,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        stop=params.stop,
        output_schema=params.output_schema,
        use_cache=params.use_cache,
        cache_ttl_seconds=params.cache_ttl_seconds,
        metadata=params.metadata,
        prompt_ref=params.prompt_ref,
        variables=params.variables,
        tools=(
            [(t.name, t.description, t.parameters_json) for t in params.tools]
            if params.tools
            else ()
        ),
        tool_choice=params.tool_choice,
        parallel_tool_calls=(
            params.parallel_tool_calls if params.HasField("parallel_tool_calls") else None
        ),
        reasoning=(
            Reasoning(
                params.reasoning.effort,
                params.reasoning.budget_tokens,
                params.reasoning.include_thoughts,
            )
            if params.HasField("reasoning")
            else None
        ),
        session_id=params.session_id,
    )


def _message(message: pb.Message) -> ChatMessage:
    # Most messages are text alone: no generator for their empty parts and calls.
    parts, calls = message.parts, message.tool_calls
    return ChatMessage(
        role=message.role,
        content=message.content,
        parts=tuple(_part(p) for p in parts) if parts else (),
        tool_calls=tuple(_tool_call_in(c) for c in calls) if calls else (),
        tool_call_id=message.tool_call_id,
        cache_breakpoint=message.cache_breakpoint,
    )


def _part(part: pb.ContentPart) -> ContentPart:
    match part.WhichOneof("kind"):
        case "text":
            return TextPart(part.text)
        case "image":
            return ImagePart(part.image.url, part.image.data, part.image.media_type)
        case "document":
            document = part.document
            return DocumentPart(document.data, document.media_type, document.name)
        case "thinking":
            thinking = part.thinking
            return Thinking(
                thinking.text, thinking.signature, thinking.redacted_data, thinking.provider
            )
    raise InvalidRequest("messages: a content part must hold text, image, document or thinking")


def _tool_call_in(call: pb.ToolCall) -> ToolCall:
    return ToolCall(call.id, call.name, call.arguments_json, call.signature)


def embed_input_from_proto(request: pb.EmbedRequest) -> EmbedInput:
    """Validate ``request``. Raises :class:`InvalidRequest` or :class:`UnknownProvider`."""
    return embed_input(texts=request.texts, model=request.model, provider=request.provider)


# -- answers out ------------------------------------------------------------------------------


def _float(value: Decimal | float) -> float:
    result = float(value)
    return result if math.isfinite(result) else 0.0


def _usage(usage: Usage) -> pb.Usage:
    # Only the fields that are set: a default-valued one costs the constructor as much as any
    # other and is not sent anyway (proto3), and most answers have no cache or reasoning tokens.
    wire = pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.estimated:
        wire.estimated = True
    if usage.cache_read_tokens:
        wire.cache_read_tokens = usage.cache_read_tokens
    if usage.cache_write_tokens:
        wire.cache_write_tokens = usage.cache_write_tokens
    if usage.reasoning_tokens:
        wire.reasoning_tokens = usage.reasoning_tokens
    return wire


def _tool_calls(calls: Iterable[ToolCall]) -> list[pb.ToolCall]:
    return [
        pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json, signature=c.signature)
        for c in calls
    ]


def _thinking(blocks: Iterable[Thinking]) -> list[pb.Thinking]:
    return [
        pb.Thinking(
            text=t.text, signature=t.signature, redacted_data=t.redacted_data, provider=t.provider
        )
        for t in blocks
    ]


def _attempts(records: Iterable[AttemptRecord]) -> list[pb.Attempt]:
    return [_attempt(record) for record in records]


def _attempt(record: AttemptRecord) -> pb.Attempt:
    attempt = pb.Attempt(
        provider=record.provider,
        model=record.model,
        kind=record.kind.value,
        outcome=record.outcome.value,
        usage=_usage(record.usage) if record.usage else None,
        cost_usd=_float(record.cost_usd),
        latency_ms=record.latency_s * 1000.0,
    )
    if record.error:  # only failed attempts have one: see _usage
        attempt.error = record.error
    return attempt


def complete_response(answer: RoutedAnswer, request_id: str) -> pb.CompleteResponse:
    response = pb.CompleteResponse(
        content=answer.content,
        provider=answer.provider,
        model=answer.model,
        finish_reason=answer.finish_reason,
        usage=_usage(answer.usage),
        cost_usd=_float(answer.cost_usd),
        latency_ms=answer.latency_s * 1000.0,
        cost_saved_usd=_float(answer.cost_saved_usd),
        total_cost_usd=_float(answer.total_cost_usd),
        time_to_first_token_ms=answer.time_to_first_token_s * 1000.0,
        attempts=_attempts(answer.attempts),
        request_id=request_id,
    )
    _set_unusual(response, answer)
    return response


def delta_chunk(piece: StreamPiece, index: int) -> pb.StreamChunk:
    """One chunk per piece: text, thinking text, or one tool call's fragment."""
    if isinstance(piece, TextDelta):
        return pb.StreamChunk(delta=piece.text, index=index)
    if isinstance(piece, ThinkingDelta):
        return pb.StreamChunk(thinking_delta=piece.text, index=index)
    return pb.StreamChunk(
        tool_call=pb.ToolCallDelta(
            index=piece.index,
            id=piece.id,
            name=piece.name,
            arguments_delta=piece.arguments_delta,
        ),
        index=index,
    )


def final_chunk(answer: RoutedAnswer, index: int, request_id: str) -> pb.StreamChunk:
    """The last chunk of a stream: no delta, the answer's summary."""
    chunk = pb.StreamChunk(
        finish_reason=answer.finish_reason,
        usage=_usage(answer.usage),
        cost_usd=_float(answer.cost_usd),
        provider=answer.provider,
        model=answer.model,
        latency_ms=answer.latency_s * 1000.0,
        time_to_first_token_ms=answer.time_to_first_token_s * 1000.0,
        total_cost_usd=_float(answer.total_cost_usd),
        cost_saved_usd=_float(answer.cost_saved_usd),
        attempts=_attempts(answer.attempts),
        request_id=request_id,
        index=index,
    )
    _set_unusual(chunk, answer)
    return chunk


def _set_unusual(summary: pb.CompleteResponse | pb.StreamChunk, answer: RoutedAnswer) -> None:
    # Set only when not at their default (false, empty), as in most answers: see _usage.
    if answer.cached:
        summary.cached = True
    if answer.cost_estimated:
        summary.cost_estimated = True
    if answer.tool_calls:
        summary.tool_calls.extend(_tool_calls(answer.tool_calls))
    if answer.thinking:
        summary.thinking.extend(_thinking(answer.thinking))


def embed_response(answer: EmbedAnswer, request_id: str) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=v, index=i) for i, v in enumerate(answer.vectors)],
        provider=answer.provider,
        model=answer.model,
        usage=_usage(answer.usage),
        cost_usd=_float(answer.cost_usd),
        latency_ms=answer.latency_s * 1000.0,
        request_id=request_id,
    )


def _provider_info(report: ProviderReport) -> pb.ProviderInfo:
    return pb.ProviderInfo(
        name=report.name,
        available=report.available,
        models=report.models,
        default_model=report.default_model,
        supports_embeddings=report.supports_embeddings,
        embedding_models=report.embedding_models,
        prices=[
            pb.ModelPrice(
                model=m.id,
                family=m.family,
                input_per_1k_usd=float(m.input_per_1k),
                output_per_1k_usd=float(m.output_per_1k),
                context_window=m.context_window,
                kind=m.kind,
                cached_input_per_1k_usd=float(m.cached_input_per_1k or 0),
                cache_write_per_1k_usd=float(m.cache_write_per_1k or 0),
                capabilities=sorted(m.capabilities),
            )
            for m in report.prices
        ],
        breaker_state=report.breaker_state.value,
        latency=[
            pb.LatencyStats(
                model=model,
                ttft_ewma_ms=snapshot.ttft_ewma_ms or 0.0,
                tokens_per_second=snapshot.tokens_per_second or 0.0,
                in_flight=snapshot.in_flight,
                error_rate=snapshot.error_rate,
                samples=snapshot.samples,
                p95_ttft_ms=snapshot.p95_ttft_ms or 0.0,
            )
            for model, snapshot in report.latency.items()
        ],
        detail=report.detail,
        base_url=report.base_url,
    )


def list_providers_response(reports: Iterable[ProviderReport]) -> pb.ListProvidersResponse:
    return pb.ListProvidersResponse(providers=[_provider_info(r) for r in reports])


def health_response(report: HealthReport) -> pb.HealthResponse:
    return pb.HealthResponse(
        status=(
            pb.HealthResponse.STATUS_SERVING
            if report.serving
            else pb.HealthResponse.STATUS_NOT_SERVING
        ),
        providers=[
            pb.ProviderHealth(
                name=p.name,
                available=p.available,
                breaker_state=p.breaker_state.value,
                ttft_ewma_ms=p.ttft_ewma_ms or 0.0,
                error_rate=p.error_rate,
                detail=p.detail,
            )
            for p in report.providers
        ],
        version=report.version,
        uptime_seconds=report.uptime_seconds,
        detail=report.detail,
    )
