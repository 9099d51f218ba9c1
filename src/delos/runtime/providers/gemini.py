"""Google Gemini, through the Gemini API or through Vertex AI: one adapter, two surfaces.

The two surfaces share the ``generateContent`` format (bodies in :mod:`._gemini_request`, answers
and errors in :mod:`._gemini_answer`) and differ in data (:class:`_Surface`): the URL of a model,
the credentials header, and the embeddings method (``batchEmbedContents`` on the Gemini API,
``predict`` on Vertex AI, which alone reports tokens).

Streams use ``streamGenerateContent?alt=sse`` and have no terminator: the server closes the
connection after the chunk that carries ``finishReason``, so a stream that ends without one was
cut short. The last ``usageMetadata`` of a stream is the total; earlier ones are running counts.

Agent features, in Gemini's native forms:

- tools: ``functionDeclarations`` with ``parametersJsonSchema``; ``tool_choice`` auto/none/
  required as ``functionCallingConfig.mode`` AUTO/NONE/ANY, a tool's name as ANY with
  ``allowedFunctionNames``; calls come whole (also in streams), without ids: ours are made
  deterministically from the answer, and results are sent by function name;
- thinking: ``thinkingConfig.thinkingBudget`` (``budget_tokens``, or ``effort`` through
  :data:`~._gemini_request.EFFORT_BUDGETS`) and ``includeThoughts``; thought parts and
  ``thoughtSignature`` come back as :class:`~delos.runtime.values.Thinking` and
  ``ToolCall.signature`` named after this provider, and go back on the parts they came with;
- images (PNG, JPEG, WebP, HEIC, HEIF) and PDFs as ``inlineData``; text documents as text;
- ``cache_breakpoint`` is not sent, by design: Gemini's caching is implicit (2.5 models reuse a
  repeated prompt prefix on their own) and the tokens read come back as
  ``cachedContentTokenCount``, reported as ``Usage.cache_read_tokens``.

Refused before sending (:class:`~delos.runtime.errors.UnsupportedByProvider`), with no exact
native form: ``parallel_tool_calls=False`` with tools in play; an image given by an https URL
only (Gemini needs bytes: ``fileData`` names uploaded files); a GIF image; redacted thinking;
a tool result with non-text parts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from urllib.parse import quote

from delos.resilience import RateLimitHints
from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings, secret_value
from delos.runtime.errors import (
    ProviderError,
    UpstreamAuthenticationError,
    UpstreamProtocolError,
    UpstreamRateLimited,
)
from delos.runtime.providers._gemini_answer import (
    ACCOUNT_STATUS,
    AUTH_REASONS,
    AnswerBuilder,
    error_object,
    error_reason,
    error_status,
    message_of,
    retry_delay,
)
from delos.runtime.providers._gemini_request import generate_body
from delos.runtime.providers._http import clip_detail, feed_decoder, upstream_errors
from delos.runtime.providers._transport import UpstreamAnswer
from delos.runtime.providers._vertex_host import vertex_base_url
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
    Usage,
)
from delos.runtime.wire import SseDecoder, SseEvent, WireProtocolError

__all__ = ["GEMINI_API_BASE_URL", "GeminiProvider", "build_gemini"]

GEMINI_API_BASE_URL: Final = "https://generativelanguage.googleapis.com"
#: Texts per embeddings call: the documented maxima of ``batchEmbedContents`` and ``predict``.
_GEMINI_EMBED_BATCH: Final = 100
_VERTEX_EMBED_BATCH: Final = 250


@dataclass(frozen=True, slots=True)
class _Surface:
    name: str
    #: Path from the base URL to the model collection (no trailing slash).
    models_path: str
    headers: Mapping[str, str]
    vertex: bool


class GeminiProvider(HttpProvider):
    """Gemini chat and embeddings. Build the Vertex AI variant with :meth:`for_vertex`."""

    def __init__(
        self,
        *,
        api_key: str,
        client: HttpClient,
        catalog: Catalog,
        base_url: str | None = None,
        on_rate_limits: RateLimitListener | None = None,
        _surface: _Surface | None = None,
    ) -> None:
        # The key goes in a header, never in ``?key=``: URLs end up in logs.
        surface = _surface or _Surface(
            "gemini", "/v1beta/models", {"x-goog-api-key": api_key}, vertex=False
        )
        super().__init__(
            surface.name,
            client=client,
            catalog=catalog,
            base_url=base_url or GEMINI_API_BASE_URL,
            headers=surface.headers,
            message_of=message_of,
            on_rate_limits=on_rate_limits,
        )
        self._surface = surface

    @classmethod
    def for_vertex(
        cls,
        project: str,
        location: str,
        access_token: str,
        client: HttpClient,
        catalog: Catalog,
        base_url: str | None = None,
        *,
        on_rate_limits: RateLimitListener | None = None,
    ) -> GeminiProvider:
        """Gemini models published by Google on Vertex AI, named ``vertex``.

        ``access_token`` is an OAuth2 access token (``GOOGLE_CLOUD_ACCESS_TOKEN``); ``base_url``
        defaults to the host of ``location``.
        """
        path = (
            f"/v1/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}"
            "/publishers/google/models"
        )
        surface = _Surface("vertex", path, {"authorization": f"Bearer {access_token}"}, vertex=True)
        return cls(
            api_key="",
            client=client,
            catalog=catalog,
            base_url=base_url or vertex_base_url(location),
            on_rate_limits=on_rate_limits,
            _surface=surface,
        )

    def models(self) -> Sequence[str]:
        # Vertex's catalog also lists partner models (Claude) that this adapter does not speak.
        return tuple(m for m in super().models() if not self._surface.vertex or "gemini" in m)

    def _url(self, model: str, method: str) -> str:
        return f"{self.base_url}{self._surface.models_path}/{quote(model, safe='')}:{method}"

    # -- errors ---------------------------------------------------------------------------------

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        error = super()._status_error(status, headers, body)
        try:
            payload = json.loads(body)
        except ValueError:
            return error
        reason = error_reason(payload)
        detail = clip_detail(message_of(payload) or "")
        if status == 400 and reason in AUTH_REASONS:
            return UpstreamAuthenticationError(
                self.name,
                f"rejected the gateway's credentials (HTTP 400 {reason}: {detail})",
                http_status=400,
            )
        if status == 400 and error_status(payload) == ACCOUNT_STATUS:
            # Not the caller's fault, and another provider may well serve the request.
            return UpstreamAuthenticationError(
                self.name, f"refused the gateway's account (HTTP 400: {detail})", http_status=400
            )
        if isinstance(error, UpstreamRateLimited) and error.retry_after is None:
            error.retry_after = retry_delay(payload)
            if error.retry_after is not None and self.on_rate_limits is not None:
                self.on_rate_limits(RateLimitHints(retry_after=error.retry_after))
        return error

    # -- chat -----------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> Completion:
        """One ``generateContent`` call.

        Raises:
            UnsupportedByProvider: before sending, for a setting Gemini cannot express.
            UpstreamRejected: the request was refused, its prompt blocked included.
            UpstreamAuthenticationError: the key or token was refused (400 ``API_KEY_INVALID``
                too), or the account cannot use the API (400 ``FAILED_PRECONDITION``).
            UpstreamRateLimited: 429, with ``retry_after`` from ``RetryInfo`` when sent.
            UpstreamProtocolError: the answer is malformed or oversized.
            UpstreamUnavailable: 5xx or a transport failure.
        """
        url = self._url(request.model, "generateContent")
        payload = await self._post_json(url, generate_body(self.name, request))
        answer = AnswerBuilder(self.name, request.model)
        answer.feed(payload)
        if not answer.has_candidate:
            raise UpstreamProtocolError(self.name, "answer has no candidates")
        return Completion(
            content=answer.content,
            model=answer.model,
            # A whole answer is complete even when the candidate omits its finish reason.
            finish_reason=answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop"),
            usage=answer.usage,
            tool_calls=answer.tool_calls,
            thinking=answer.thinking,
        )

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """A ``streamGenerateContent?alt=sse`` call; leaving the block closes it.

        Raises the errors of :meth:`complete` (:class:`UnsupportedByProvider` right away), and
        :class:`UpstreamProtocolError` for an error event in the stream or a stream that ends
        without a ``finishReason``.
        """
        url = self._url(request.model, "streamGenerateContent") + "?alt=sse"
        body = generate_body(self.name, request)
        return self._open_stream(url, body, "text/event-stream", partial(self._events, request))

    async def _events(
        self, request: ChatRequest, response: UpstreamAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = SseDecoder()
        answer = AnswerBuilder(self.name, request.model)
        with upstream_errors(self.name):
            async for data in response.chunks():
                for event in self._decode(decoder, data):
                    for item in answer.feed(self._chunk(event.data)):
                        yield item
        try:
            decoder.close()
        except WireProtocolError:
            raise UpstreamProtocolError(
                self.name, "stream ended in the middle of an event: the answer is truncated"
            ) from None
        finish = answer.finish_reason
        if finish is None:
            raise UpstreamProtocolError(
                self.name, "stream ended without a finishReason: the answer is truncated"
            )
        yield StreamFinished(finish, answer.usage, answer.model, answer.tool_calls, answer.thinking)

    def _decode(self, decoder: SseDecoder, data: bytes) -> list[SseEvent]:
        events = feed_decoder(self.name, decoder, data)
        return [event for event in events if isinstance(event, SseEvent)]

    def _chunk(self, data: str) -> Any:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise UpstreamProtocolError(self.name, "stream event is not valid JSON") from None
        if error_object(chunk) is not None:
            detail = message_of(chunk) or "unknown error"
            raise UpstreamProtocolError(self.name, f"error in the stream: {detail}")
        return chunk

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> Embeddings:
        """Vectors in input order, split into as many calls as the upstream's batch limit needs.

        ``usage`` is None on the Gemini API, which reports no tokens for embeddings; Vertex AI's
        ``predict`` reports each text's ``token_count``, summed here.
        """
        texts = list(request.texts)
        size = _VERTEX_EMBED_BATCH if self._surface.vertex else _GEMINI_EMBED_BATCH
        vectors: list[list[float]] = []
        tokens: int | None = 0
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            if self._surface.vertex:
                batch_vectors, batch_tokens = await self._predict(request.model, batch)
            else:
                batch_vectors, batch_tokens = await self._batch_embed(request.model, batch), None
            if len(batch_vectors) != len(batch):
                raise UpstreamProtocolError(self.name, "embeddings answer has the wrong count")
            vectors += batch_vectors
            tokens = None if tokens is None or batch_tokens is None else tokens + batch_tokens
        usage = Usage(tokens, 0) if tokens is not None else None
        return Embeddings(vectors, request.model, usage)

    async def _batch_embed(self, model: str, texts: list[str]) -> list[list[float]]:
        body = {
            "requests": [
                {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
                for text in texts
            ]
        }
        payload = await self._post_json(self._url(model, "batchEmbedContents"), body)
        try:
            return [_floats(item["values"]) for item in payload["embeddings"]]
        except (KeyError, TypeError, ValueError):
            raise UpstreamProtocolError(
                self.name, "embeddings answer has an unexpected shape"
            ) from None

    async def _predict(self, model: str, texts: list[str]) -> tuple[list[list[float]], int | None]:
        body = {"instances": [{"content": text} for text in texts]}
        payload = await self._post_json(self._url(model, "predict"), body)
        try:
            embeddings = [item["embeddings"] for item in payload["predictions"]]
            vectors = [_floats(item["values"]) for item in embeddings]
            counts = [(item.get("statistics") or {}).get("token_count") for item in embeddings]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(
                self.name, "embeddings answer has an unexpected shape"
            ) from None
        # Exact usage only: one text without a count makes the whole batch's count unknown.
        tokens = [c for c in counts if isinstance(c, int) and not isinstance(c, bool)]
        return vectors, sum(tokens) if len(tokens) == len(counts) else None


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list):
        raise TypeError("embedding values are not a list")
    return [float(v) for v in values]


def build_gemini(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """The Gemini API provider from ``DELOS_RUNTIME_GEMINI_KEY`` (and its base-URL override)."""
    return GeminiProvider(
        api_key=secret_value(settings.gemini_key),
        client=client,
        catalog=catalog,
        base_url=settings.gemini_base_url,
    )
