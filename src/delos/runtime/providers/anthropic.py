"""The Anthropic Messages adapter: the direct API, and Claude models on Vertex AI.

The two differ only in transport (:class:`AnthropicEndpoint`): the direct API posts to
``/v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers; Vertex AI posts to the
model's ``:rawPredict`` / ``:streamRawPredict`` URL with an OAuth bearer token, names the model in
the URL rather than the body and puts ``anthropic_version`` in the body. Bodies, answers and
streams are the same: :mod:`._anthropic_request` builds the bodies (its docstring lists how each
setting is written: tools, tool choice, tool calls and results, images, documents, thinking,
cache breakpoints; and what is refused with :class:`~delos.runtime.errors.UnsupportedByProvider`)
and :mod:`._anthropic_answer` reads answers and streams. One difference is Vertex's: it takes no
image URL (``source.type: "url"``), so an image only a URL names is refused there ("image url")
and the router fetches it where allowed. ``cache_control`` markers go to Vertex as to the direct
API: Vertex serves Anthropic's prompt cache.

Every :class:`~delos.runtime.values.Thinking` returned names this adapter's ``name``
("anthropic" or "vertex"); only thinking with that name is sent back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import quote

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings, secret_value
from delos.runtime.errors import (
    EmbeddingsNotSupported,
    ProviderError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from delos.runtime.providers._anthropic_answer import (
    MessageStreamReader,
    error_message,
    parse_message,
)
from delos.runtime.providers._anthropic_request import OutputTool, messages_body
from delos.runtime.providers._http import feed_decoder, upstream_errors
from delos.runtime.providers._transport import BodyCutShort, UpstreamAnswer
from delos.runtime.providers._vertex_host import vertex_base_url
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
)
from delos.runtime.wire import SseDecoder, SseEvent

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "VERTEX_ANTHROPIC_VERSION",
    "AnthropicEndpoint",
    "AnthropicProvider",
    "build_anthropic",
]

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
#: The ``anthropic-version`` header of the direct API.
ANTHROPIC_VERSION: Final = "2023-06-01"
#: The ``anthropic_version`` body field Vertex AI requires instead of the header.
VERTEX_ANTHROPIC_VERSION: Final = "vertex-2023-10-16"
#: Bytes read after ``message_stop`` while waiting for the body to end.
_MAX_TRAILING_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class AnthropicEndpoint:
    """Where Messages requests go and how they are authenticated.

    Build one with :meth:`direct` or :meth:`vertex`. ``headers`` hold the credential and are
    kept out of ``repr``.
    """

    name: str
    base_url: str
    headers: Mapping[str, str] = field(repr=False)
    #: ``(project, location)`` for Claude on Vertex AI; None for the direct API.
    vertex: tuple[str, str] | None = None

    @classmethod
    def direct(cls, api_key: str, base_url: str | None = None) -> AnthropicEndpoint:
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        return cls("anthropic", (base_url or DEFAULT_BASE_URL).rstrip("/"), headers)

    @classmethod
    def for_vertex(
        cls, project: str, location: str, access_token: str, base_url: str | None = None
    ) -> AnthropicEndpoint:
        base = (base_url or vertex_base_url(location)).rstrip("/")
        headers = {"authorization": f"Bearer {access_token}"}
        return cls("vertex", base, headers, vertex=(project, location))

    def url(self, model: str, *, stream: bool) -> str:
        if self.vertex is None:
            return f"{self.base_url}/v1/messages"
        project, location = self.vertex
        method = "streamRawPredict" if stream else "rawPredict"
        # Vertex ids carry "@" (claude-3-5-haiku@20241022), which a path segment allows as is.
        return (
            f"{self.base_url}/v1/projects/{quote(project, safe='')}/locations/"
            f"{quote(location, safe='')}/publishers/anthropic/models/"
            f"{quote(model, safe='@')}:{method}"
        )

    def transport_fields(self, model: str) -> dict[str, Any]:
        """Body fields that depend on the endpoint: the model, or Vertex's API version."""
        if self.vertex is None:
            return {"model": model}
        return {"anthropic_version": VERTEX_ANTHROPIC_VERSION}


class AnthropicProvider(HttpProvider):
    """Chat completions through the Messages API. There are no embeddings.

    Errors: upstream statuses map through :func:`~delos.runtime.providers._http.error_from_status`,
    except 529 and any ``overloaded_error``, which are :class:`UpstreamUnavailable` saying
    "overloaded". In-stream ``error`` events, malformed answers and streams that end before
    ``message_stop`` raise :class:`UpstreamProtocolError`.
    """

    def __init__(
        self,
        endpoint: AnthropicEndpoint,
        *,
        client: HttpClient,
        catalog: Catalog,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        super().__init__(
            endpoint.name,
            client=client,
            catalog=catalog,
            base_url=endpoint.base_url,
            headers=endpoint.headers,
            message_of=error_message,
            on_rate_limits=on_rate_limits,
        )
        self.endpoint = endpoint

    @property
    def supports_embeddings(self) -> bool:
        # The Messages API has none, even under the name of Vertex AI (whose Gemini has).
        return False

    @classmethod
    def for_vertex(
        cls,
        *,
        project: str,
        location: str,
        access_token: str,
        client: HttpClient,
        catalog: Catalog,
        base_url: str | None = None,
        on_rate_limits: RateLimitListener | None = None,
    ) -> AnthropicProvider:
        """Claude on Vertex AI, named ``"vertex"``; serves the catalog's Vertex Claude models.

        ``base_url`` defaults to the location's Vertex AI host (see
        :func:`~delos.runtime.providers._vertex_host.vertex_base_url`); it has no ``/v1`` suffix.
        """
        endpoint = AnthropicEndpoint.for_vertex(project, location, access_token, base_url)
        return cls(endpoint, client=client, catalog=catalog, on_rate_limits=on_rate_limits)

    # -- catalog ----------------------------------------------------------------------------------

    def _serves(self, model_id: str) -> bool:
        # The Vertex catalog also lists Gemini models, which another adapter serves.
        return self.endpoint.vertex is None or model_id.startswith("claude")

    def models(self) -> Sequence[str]:
        return tuple(m for m in super().models() if self._serves(m))

    async def embed(self, request: EmbedRequest) -> Embeddings:
        if self.endpoint.vertex is not None:
            try:
                example = self._catalog.default_embedding_model(self.name) or "text-embedding-005"
            except KeyError:
                example = "text-embedding-005"
            raise EmbeddingsNotSupported(
                f"{self.name}: Claude models have no embeddings API; ask for a Vertex AI "
                f"embedding model such as {example}"
            )
        return await super().embed(request)

    # -- chat -------------------------------------------------------------------------------------

    def _body(
        self, request: ChatRequest, output_tool: OutputTool | None, *, stream: bool
    ) -> dict[str, Any]:
        body = messages_body(
            request,
            provider=self.name,
            output_tool=output_tool,
            stream=stream,
            image_urls=self.endpoint.vertex is None,
        )
        return {**self.endpoint.transport_fields(request.model), **body}

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        error = super()._status_error(status, headers, body)
        if status == 529 or (status >= 500 and b'"overloaded_error"' in body):
            # 529 is Anthropic's "no capacity right now": say so, not a generic "unavailable".
            _, _, detail = error.detail.partition(" (")
            return UpstreamUnavailable(
                self.name,
                f"overloaded ({detail}",
                http_status=status,
                retry_after=error.retry_after,
            )
        return error

    async def complete(self, request: ChatRequest) -> Completion:
        output_tool = _output_tool(request)
        url = self.endpoint.url(request.model, stream=False)
        payload = await self._post_json(url, self._body(request, output_tool, stream=False))
        return parse_message(self.name, payload, model=request.model, output_tool=output_tool)

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        output_tool = _output_tool(request)
        url = self.endpoint.url(request.model, stream=True)
        body = self._body(request, output_tool, stream=True)
        reader = MessageStreamReader(self.name, model=request.model, output_tool=output_tool)
        return self._open_stream(url, body, "text/event-stream", partial(self._events, reader))

    async def _events(
        self, reader: MessageStreamReader, response: UpstreamAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = SseDecoder()
        finish: list[StreamEvent] = []
        trailing = 0
        with upstream_errors(self.name):
            try:
                async for data in response.chunks():
                    if reader.finished:
                        # The server ends the body right after message_stop. Reading that end
                        # before the last event lets the connection go back to the pool, where
                        # a consumer stopping at the finish would have it dropped.
                        trailing += len(data)
                        if trailing > _MAX_TRAILING_BYTES:
                            break
                        continue
                    for item in self._parse(decoder, reader, data):
                        if isinstance(item, StreamFinished):
                            finish.append(item)
                        else:
                            yield item
            except BodyCutShort:
                # The connection closed inside the body (an unfinished chunk): a truncation,
                # like a clean end before message_stop.
                if not reader.finished:
                    raise UpstreamProtocolError(
                        self.name, "connection closed before message_stop: the answer is truncated"
                    ) from None
        if not reader.finished:
            raise UpstreamProtocolError(
                self.name, "stream ended before message_stop: the answer is truncated"
            )
        for item in finish:
            yield item

    def _parse(
        self, decoder: SseDecoder, reader: MessageStreamReader, data: bytes
    ) -> list[StreamEvent]:
        # Comments (keep-alives) are skipped; the reader ignores anything after message_stop.
        return [
            item
            for event in feed_decoder(self.name, decoder, data)
            if isinstance(event, SseEvent)
            for item in reader.feed(event)
        ]


def _output_tool(request: ChatRequest) -> OutputTool | None:
    if request.output_schema is None:
        return None
    return OutputTool.for_schema(request.output_schema)


def build_anthropic(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """The direct-API provider from ``DELOS_RUNTIME_ANTHROPIC_KEY`` (and its base URL)."""
    endpoint = AnthropicEndpoint.direct(
        secret_value(settings.anthropic_key), settings.anthropic_base_url
    )
    return AnthropicProvider(endpoint, client=client, catalog=catalog)
