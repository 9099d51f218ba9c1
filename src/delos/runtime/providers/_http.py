"""HTTP plumbing every adapter shares: where transport errors and upstream statuses become ours.

- :func:`upstream_errors` converts transport failures (connect, read, protocol) raised inside it;
- :func:`error_from_status` turns a non-2xx answer into the right :class:`ProviderError`;
- :func:`rate_limit_hints` reads every provider's rate-limit and Retry-After headers into the
  provider-neutral :class:`~delos.resilience.RateLimitHints` the limiter consumes;
- :func:`read_bounded`, :func:`decode_json` and :func:`decode_event_object` read bodies and
  stream events without trusting their size or shape;
- :func:`feed_decoder` turns a stream decoder's :class:`~delos.runtime.wire.WireProtocolError`
  into ours;
- :func:`clip_detail` shortens upstream text carried into a client-visible message.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

from delos.resilience._limiter import RateLimitHints
from delos.runtime.errors import (
    ProviderError,
    UpstreamAuthenticationError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from delos.runtime.providers._transport import (
    AnswerTooLarge,
    ConnectFailed,
    ConnectionLost,
    TransportError,
    TransportTimeout,
    UpstreamAnswer,
)
from delos.runtime.wire import WireProtocolError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DETAIL_CHARS",
    "MAX_ERROR_BODY_BYTES",
    "StreamDecoder",
    "clip_detail",
    "decode_event_object",
    "decode_json",
    "encode_json",
    "error_from_status",
    "feed_decoder",
    "parse_duration",
    "parse_retry_after",
    "rate_limit_hints",
    "read_bounded",
    "require_media_type",
    "upstream_errors",
]

#: Largest unary upstream body we read (bytes); beyond it the answer is treated as malformed.
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
#: Largest error body we read (bytes): error bodies are a short JSON object.
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
#: Longest upstream error text carried into a client-visible message (characters).
MAX_DETAIL_CHARS: Final = 300

_Frame = TypeVar("_Frame")


def clip_detail(text: str) -> str:
    """``text`` on one line (white space folded), at most :data:`MAX_DETAIL_CHARS` characters
    and an ellipsis."""
    text = " ".join(text.split())
    return text[:MAX_DETAIL_CHARS] + ("…" if len(text) > MAX_DETAIL_CHARS else "")


#: Built once: ``json.dumps`` with these options would build a new encoder on every call.
_BODY_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_json(value: Any) -> bytes:
    """A request body as JSON (compact, UTF-8, no NaN), as bytes known before sending:
    Bedrock signs them."""
    return _BODY_ENCODER.encode(value).encode()


class StreamDecoder(Protocol[_Frame]):
    """The shape of the sans-IO decoders of :mod:`delos.runtime.wire`."""

    def feed(self, data: bytes) -> list[_Frame]: ...

    def close(self) -> list[_Frame]: ...


def feed_decoder(
    provider: str,
    decoder: StreamDecoder[_Frame],
    data: bytes | None,
    *,
    what: str = "stream",
) -> list[_Frame]:
    """The frames ``data`` completes (None: end of input, the decoder's ``close()``).

    Raises:
        UpstreamProtocolError: ``malformed {what}: …``, for whatever the decoder refuses.
    """
    try:
        return decoder.close() if data is None else decoder.feed(data)
    except WireProtocolError as exc:
        raise UpstreamProtocolError(provider, f"malformed {what}: {exc}") from None


def upstream_errors(provider: str) -> AbstractContextManager[None]:
    """Convert the transport's errors raised in the block into our hierarchy."""
    return _UpstreamErrors(provider)


class _UpstreamErrors:
    """:func:`upstream_errors`: a class, not a generator, as it runs once per upstream call."""

    __slots__ = ("_provider",)

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(error, TransportError):
            return  # no error, or not the transport's: it goes on as it is
        provider = self._provider
        if isinstance(error, TransportTimeout):
            raise UpstreamTimeout(provider, f"timed out ({error})") from error
        if isinstance(error, ConnectFailed):
            raise UpstreamUnavailable(provider, "connection failed") from error
        if isinstance(error, ConnectionLost):
            raise UpstreamUnavailable(
                provider, "connection lost before the answer was complete"
            ) from error
        raise UpstreamUnavailable(provider, f"transport error ({error})") from error


async def read_bounded(provider: str, answer: UpstreamAnswer, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, or :class:`UpstreamProtocolError` past ``limit`` bytes."""
    try:
        return await answer.read(limit)
    except AnswerTooLarge:
        raise UpstreamProtocolError(provider, f"answer larger than {limit} bytes") from None


def decode_json(provider: str, body: bytes, content_type: str | None = "application/json") -> Any:
    """Parse a JSON body; a wrong content type or invalid JSON is an upstream protocol error."""
    if content_type is not None and "json" not in content_type.lower():
        raise UpstreamProtocolError(provider, f"unexpected content type {content_type!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise UpstreamProtocolError(provider, "answer is not valid JSON") from None


def decode_event_object(provider: str, data: str) -> dict[str, Any]:
    """The JSON object a stream event carries; anything else is an upstream protocol error."""
    try:
        value = json.loads(data)
    except ValueError:
        raise UpstreamProtocolError(provider, "stream event is not valid JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(provider, "stream event is not a JSON object")
    return value


def require_media_type(provider: str, answer: UpstreamAnswer, media_type: str) -> None:
    """Raise :class:`UpstreamProtocolError` unless the answer is of ``media_type``
    (a 200 with an HTML error page, say, is not a stream)."""
    content_type = answer.headers.get("content-type", "")
    if media_type not in content_type.lower():
        raise UpstreamProtocolError(provider, f"expected {media_type}, got {content_type!r}")


def error_from_status(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    message_of: Callable[[Any], str | None],
) -> ProviderError:
    """The error for a non-2xx answer of ``status``; ``message_of`` extracts the provider's own
    message from the decoded ``body``. ``headers``: looked up by lower-case name
    (an answer's headers, or a dict of lower-case names)."""
    detail = _upstream_message(body, message_of)
    text = f"HTTP {status}" + (f": {detail}" if detail else "")
    retry_after = parse_retry_after(headers)
    if status in (401, 403):
        return UpstreamAuthenticationError(
            provider, f"rejected the gateway's credentials ({text})", http_status=status
        )
    if status == 429:
        return UpstreamRateLimited(
            provider, f"rate limited ({text})", http_status=status, retry_after=retry_after
        )
    if status == 404:
        return UpstreamModelNotFound(provider, f"not found ({text})", http_status=status)
    if status in (408, 409) or status >= 500:
        return UpstreamUnavailable(
            provider, f"unavailable ({text})", http_status=status, retry_after=retry_after
        )
    if 400 <= status < 500:
        return UpstreamRejected(provider, f"rejected the request ({text})", http_status=status)
    return UpstreamProtocolError(provider, f"unexpected answer ({text})", http_status=status)


def _upstream_message(body: bytes, message_of: Callable[[Any], str | None]) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, list) and payload:  # Gemini stream errors come wrapped in a list
        payload = payload[0]
    try:
        message = message_of(payload)
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
    if not message:
        return None
    return clip_detail(str(message))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or HTTP-date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str) -> float | None:
    """OpenAI's reset durations (``"6m0s"``, ``"12ms"``, ``"1.5s"``) or plain seconds."""
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    total, matched = 0.0, 0
    for number, unit in _DURATION_PART.findall(value):
        matched += len(number) + len(unit)
        total += float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    return total if matched == len(value) and matched else None


def _until(timestamp: str, now: float) -> float | None:
    """Seconds from ``now`` until an RFC 3339 timestamp (Anthropic's resets)."""
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


_RATE_LIMIT_HEADERS: Final = frozenset(
    (
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
    )
)


def rate_limit_hints(
    response_headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitHints | None:
    """Every provider's rate-limit headers in one shape; None when there are none.

    OpenAI: ``x-ratelimit-{remaining,reset}-{requests,tokens}`` (resets as durations).
    Together: ``x-ratelimit-{remaining,reset}`` (requests; reset in seconds).
    Anthropic: ``anthropic-ratelimit-{requests,tokens}-{remaining,reset}`` (RFC 3339 resets).
    All: ``retry-after`` / ``retry-after-ms``.
    """
    # One pass over the headers (this runs on every answer) rather than a lookup per name.
    headers: dict[str, str] = {}
    for name, value in response_headers.items():
        lowered = name.lower()
        if lowered in _RATE_LIMIT_HEADERS:
            headers[lowered] = value
    if not headers:
        return None
    current = time.time() if now is None else now
    retry_after = parse_retry_after(headers, now=current)
    remaining_requests = _int(headers.get("x-ratelimit-remaining-requests"))
    remaining_tokens = _int(headers.get("x-ratelimit-remaining-tokens"))
    requests_reset = _optional(parse_duration, headers.get("x-ratelimit-reset-requests"))
    tokens_reset = _optional(parse_duration, headers.get("x-ratelimit-reset-tokens"))
    if remaining_requests is None and "x-ratelimit-remaining" in headers:
        remaining_requests = _int(headers.get("x-ratelimit-remaining"))
        requests_reset = _optional(parse_duration, headers.get("x-ratelimit-reset"))
    if "anthropic-ratelimit-requests-remaining" in headers or (
        "anthropic-ratelimit-tokens-remaining" in headers
    ):
        remaining_requests = _int(headers.get("anthropic-ratelimit-requests-remaining"))
        remaining_tokens = _int(headers.get("anthropic-ratelimit-tokens-remaining"))
        reset = headers.get("anthropic-ratelimit-requests-reset")
        requests_reset = _until(reset, current) if reset else None
        reset = headers.get("anthropic-ratelimit-tokens-reset")
        tokens_reset = _until(reset, current) if reset else None
    if all(v is None for v in (retry_after, remaining_requests, remaining_tokens)):
        return None
    return RateLimitHints(
        retry_after=retry_after,
        remaining_requests=remaining_requests,
        remaining_tokens=remaining_tokens,
        requests_reset_after=requests_reset,
        tokens_reset_after=tokens_reset,
    )


def _optional(parse: Callable[[str], float | None], value: str | None) -> float | None:
    return parse(value) if value is not None else None
