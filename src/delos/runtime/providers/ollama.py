"""The Ollama adapter: the native API (``/api/chat``, ``/api/embed``) and model discovery.

Chat is ``POST /api/chat``: ``"stream": false`` gives one JSON object, ``"stream": true`` an
NDJSON stream (``application/x-ndjson``) whose last line has ``"done": true``, the
``done_reason`` and the token counts (``prompt_eval_count`` in, ``eval_count`` out, thinking
included; Ollama reports no cache or reasoning counts apart). Sampling goes inside ``options``
(``num_predict`` is the max-tokens limit); structured output is the native
``"format": <JSON schema>``. Errors are ``{"error": "..."}``: with an HTTP status before the
answer starts, as a line of the stream after it has.

Agent requests, in Ollama's own forms (:mod:`._ollama_wire` has the details):

- tools: ``tools: [{"type": "function", "function": {name, description, parameters}}]``; the
  calls come back whole in ``message.tool_calls`` (arguments as an object, whose compact JSON
  text becomes ``arguments_json``), also when streaming: one ``ToolCallDelta`` per call.
  ``done_reason`` "stop" with calls is finish reason "tool_calls". Calls without an ``id``
  (Ollama before 0.12.10) get a deterministic one;
- history: an assistant's calls as ``tool_calls``, a result as a ``"tool"`` message with
  ``tool_name`` and ``tool_call_id``; Ollama's own thinking goes back as the message's
  ``thinking`` (others' thinking is dropped: it is valid only where it was made);
- reasoning: ``think`` = the effort level (low, medium, high), or ``true``; ``message.thinking``
  becomes ``Thinking`` (provider "ollama", never signed) and ``ThinkingDelta``. Without
  ``reasoning`` no ``think`` is sent: a thinking model then thinks, Ollama's default;
- images: base64 bytes in the message's ``images``; ``text/plain`` documents: text in the
  content;
- ``cache_breakpoint`` is ignored by design: Ollama has no prompt-cache marker, it keeps the
  KV cache of a loaded model and reuses a matching prompt prefix by itself.

Raised as :class:`~delos.runtime.errors.UnsupportedByProvider` before anything is sent:
``tool_choice`` "required" or a tool's name (Ollama cannot force a call); ``tool_choice``
"none" with tools declared and a history holding tool calls (otherwise "none" is sent as no
tools, with which Ollama parses no call: the exact effect); ``parallel_tool_calls`` false;
``reasoning.budget_tokens`` (no budget, only levels) and the effort "minimal"; an image given
only by URL (fetched by the router where allowed); PDF documents (no document form); tool-call
arguments in the history that are not a JSON object.

Ollama serves whatever is installed locally, so the models are discovered with
``GET /api/tags``: ``models()`` lists them (a ``name:latest`` model also under its bare
``name``, which Ollama takes to mean the same), and :meth:`OllamaProvider.discovered_catalog`
gives the catalog that prices them (at zero) for the router. Ollama sends no rate-limit headers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Final

import anyio

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import ProviderError, UpstreamProtocolError
from delos.runtime.providers._http import feed_decoder, upstream_errors
from delos.runtime.providers._ollama_wire import (
    ChatStreamReader,
    chat_body,
    embed_body,
    error_message,
    parse_chat,
    parse_embeddings,
    parse_tags,
)
from delos.runtime.providers._transport import BodyCutShort, UpstreamAnswer
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    StreamFinished,
)
from delos.runtime.wire import NdjsonDecoder

__all__ = [
    "AVAILABILITY_TTL_SECONDS",
    "DEFAULT_BASE_URL",
    "DISCOVERY_INTERVAL_SECONDS",
    "OllamaProvider",
    "build_ollama",
]

DEFAULT_BASE_URL: Final = "http://localhost:11434"
#: Seconds a discovered model list is kept before an availability probe replaces it.
DISCOVERY_INTERVAL_SECONDS: Final = 30.0
#: Seconds an availability answer is reused, so that Health checks stay cheap.
AVAILABILITY_TTL_SECONDS: Final = 5.0
#: Seconds ``GET /api/tags`` may take before the server counts as unavailable.
_PROBE_TIMEOUT_SECONDS: Final = 1.0
_MAX_TAGS_BYTES: Final = 4 * 1024 * 1024


def _served_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with each ``name:latest`` also under its bare ``name``, in order."""
    served: list[str] = []
    for name in names:
        served.append(name)
        base, colon, tag = name.rpartition(":")
        if colon and base and tag == "latest":
            served.append(base)
    return tuple(dict.fromkeys(served))


def _family(name: str) -> str:
    base, colon, tag = name.rpartition(":")
    return base if colon and base and "/" not in tag else name


def _is_embedding(name: str) -> bool:
    return "embed" in name.lower()


class OllamaProvider(HttpProvider):
    """A local Ollama server. Free: every model is priced at zero.

    ``clock`` (seconds, monotonic) times the caches of the model list and of availability.
    """

    def __init__(
        self,
        *,
        client: HttpClient,
        catalog: Catalog,
        base_url: str = DEFAULT_BASE_URL,
        clock: Callable[[], float] = time.monotonic,
        probe_timeout: float = _PROBE_TIMEOUT_SECONDS,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        super().__init__(
            "ollama",
            client=client,
            catalog=catalog,
            base_url=base_url,
            message_of=error_message,
            on_rate_limits=on_rate_limits,
        )
        self._clock = clock
        self._probe_timeout = probe_timeout
        #: Names /api/tags listed, None before the first answer.
        self._installed: tuple[str, ...] | None = None
        self._discovered_at = 0.0
        self._available = False
        self._available_at: float | None = None
        self._view: tuple[Catalog, tuple[str, ...], Catalog] | None = None

    # -- discovery ------------------------------------------------------------------------------

    def models(self) -> Sequence[str]:
        """Discovered chat models; the catalog's until the first discovery."""
        if self._installed is None:
            return super().models()
        return tuple(n for n in _served_names(self._installed) if not _is_embedding(n))

    def embedding_models(self) -> Sequence[str]:
        """The catalog's embedding models, then the discovered ones (names containing "embed")."""
        discovered = _served_names(self._installed or ())
        return tuple(
            dict.fromkeys((*super().embedding_models(), *filter(_is_embedding, discovered)))
        )

    async def refresh_models(self) -> Sequence[str]:
        """Ask the server for its models now; returns :meth:`models`.

        Raises the :class:`~delos.runtime.errors.ProviderError` of a failed ``/api/tags``.
        """
        names = await self._fetch_tags()
        now = self._clock()
        self._installed, self._discovered_at = names, now
        self._available, self._available_at = True, now
        return self.models()

    async def available(self) -> bool:
        """Whether ``/api/tags`` answers within ``probe_timeout`` seconds.

        The answer is reused for :data:`AVAILABILITY_TTL_SECONDS`. A probe also replaces a model
        list older than :data:`DISCOVERY_INTERVAL_SECONDS`: keeping the list steady between
        those refreshes keeps the router's catalog from being rebuilt on every probe.
        """
        now = self._clock()
        if self._available_at is not None and now - self._available_at < AVAILABILITY_TTL_SECONDS:
            return self._available
        names: tuple[str, ...] | None = None
        with anyio.move_on_after(self._probe_timeout):
            try:
                names = await self._fetch_tags()
            except ProviderError:
                names = None
        now = self._clock()
        self._available, self._available_at = names is not None, now
        if names is not None and (
            self._installed is None or now - self._discovered_at >= DISCOVERY_INTERVAL_SECONDS
        ):
            self._installed, self._discovered_at = names, now
        return self._available

    def discovered_catalog(self, base: Catalog | None = None) -> Catalog:
        """``base`` (default: this provider's catalog) also listing the discovered models.

        Discovered chat models are added at zero price (``llama3.2:latest`` copies the
        catalog's ``llama3.2``); an embedding model is added only when the catalog already has
        an embedding model of its family, since any other would be taken for a chat model.
        Cached until the discovered list or ``base`` changes. Cheap: call it per request.
        """
        catalog = self._catalog if base is None else base
        if self._installed is None:
            return catalog
        embedding_families = {m.family for m in catalog.embedding_models(self.name)}
        ids = tuple(
            name
            for name in _served_names(self._installed)
            if not _is_embedding(name) or _family(name) in embedding_families
        )
        if self._view is not None and self._view[0] is catalog and self._view[1] == ids:
            return self._view[2]
        view = catalog.with_discovered_models(self.name, ids)
        self._view = (catalog, ids, view)
        return view

    async def start(self) -> None:
        """Discover the installed models before serving."""
        await self.refresh_models()

    async def _fetch_tags(self) -> tuple[str, ...]:
        payload, _ = await self._fetch_json(f"{self.base_url}/api/tags", limit=_MAX_TAGS_BYTES)
        return parse_tags(self.name, payload)

    async def _read_answer(self, response: UpstreamAnswer, limit: int) -> bytes:
        # Ollama's answers are chunked: a connection closed inside one cut the answer short.
        try:
            return await super()._read_answer(response, limit)
        except BodyCutShort:
            raise UpstreamProtocolError(
                self.name, "connection closed inside the answer: it is truncated"
            ) from None

    # -- chat -----------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer. Raises UnsupportedByProvider before sending (see the module)."""
        url = f"{self.base_url}/api/chat"
        payload = await self._post_json(url, chat_body(self.name, request, stream=False))
        return parse_chat(self.name, payload, model=request.model)

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        url = f"{self.base_url}/api/chat"
        body = chat_body(self.name, request, stream=True)
        reader = ChatStreamReader(self.name, model=request.model)
        return self._open_stream(url, body, "application/x-ndjson", partial(self._events, reader))

    async def _events(
        self, reader: ChatStreamReader, response: UpstreamAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = NdjsonDecoder()
        finished: list[StreamEvent] = []
        with upstream_errors(self.name):
            try:
                async for data in response.chunks():
                    # After the done line the body is read to its end, which Ollama sends right
                    # away: httpx's iterators left unexhausted are only finalised by the garbage
                    # collector, which trio reports as a ResourceWarning.
                    if reader.finished:
                        continue
                    for line in feed_decoder(self.name, decoder, data):
                        for item in reader.feed(line.value):
                            if isinstance(item, StreamFinished):
                                finished.append(item)
                            else:
                                yield item
            except BodyCutShort:
                # The server closed the connection inside the chunked body.
                raise UpstreamProtocolError(
                    self.name, "connection closed inside the stream: the answer is truncated"
                ) from None
            if not reader.finished:
                feed_decoder(self.name, decoder, None)
        reader.end()
        for item in finished:
            yield item

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> Embeddings:
        payload = await self._post_json(f"{self.base_url}/api/embed", embed_body(request))
        return parse_embeddings(self.name, payload, request)


def build_ollama(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """The Ollama provider at ``settings.ollama_url`` (``DELOS_RUNTIME_OLLAMA_URL``)."""
    return OllamaProvider(
        client=client, catalog=catalog, base_url=settings.ollama_url or DEFAULT_BASE_URL
    )
