"""The Ollama adapter: the native API (``/api/chat``, ``/api/embed``) and model discovery.

Chat is ``POST /api/chat``: ``"stream": false`` gives one JSON object, ``"stream": true`` an
NDJSON stream (``application/x-ndjson``) whose last line has ``"done": true``, the
``done_reason`` and the token counts (``prompt_eval_count`` in, ``eval_count`` out). Sampling
goes inside ``options`` (``num_predict`` is the max-tokens limit); structured output is the
native ``"format": <JSON schema>``. Errors are ``{"error": "..."}``: with an HTTP status before
the answer starts, as a line of the stream after it has.

Ollama serves whatever is installed locally, so the models are discovered with
``GET /api/tags``: ``models()`` lists them (a ``name:latest`` model also under its bare
``name``, which Ollama takes to mean the same), and :meth:`OllamaProvider.discovered_catalog`
gives the catalog that prices them (at zero) for the router. Ollama sends no rate-limit headers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from decimal import Decimal
from typing import Any, Final

import anyio
import httpx

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings
from delos.runtime.errors import ProviderError, UpstreamProtocolError
from delos.runtime.providers._http import (
    decode_json,
    error_from_status,
    read_bounded,
    require_media_type,
    upstream_errors,
)
from delos.runtime.providers.base import HttpProvider, Provider, RateLimitListener
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
from delos.runtime.wire import NdjsonDecoder, WireProtocolError

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
_NAME: Final = "ollama"
_MAX_TAGS_BYTES: Final = 4 * 1024 * 1024
_MAX_ERROR_BYTES: Final = 64 * 1024


def _error_message(payload: Any) -> str | None:
    error = payload.get("error")
    return error if isinstance(error, str) else None


def _finish_reason(value: Any) -> str:
    # Servers older than done_reason end every answer with a bare "done": true.
    return str(value).lower() if value else "stop"


def _usage(payload: Mapping[str, Any]) -> Usage | None:
    """The counts of a final object; None when it reports none.

    The server omits a zero count (Go's ``omitempty``): a count missing beside a present one is
    zero, e.g. ``prompt_eval_count`` when the whole prompt came from the cache.
    """
    prompt, completion = payload.get("prompt_eval_count"), payload.get("eval_count")
    if prompt is None and completion is None:
        return None
    counts = (prompt or 0, completion or 0)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise UpstreamProtocolError(_NAME, "token counts are not counts")
    return Usage(counts[0], counts[1])


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

    supports_embeddings = True

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        catalog: Catalog,
        base_url: str = DEFAULT_BASE_URL,
        clock: Callable[[], float] = time.monotonic,
        probe_timeout: float = _PROBE_TIMEOUT_SECONDS,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        super().__init__(
            _NAME, client=client, catalog=catalog, base_url=base_url, on_rate_limits=on_rate_limits
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

    def cost_per_1k_tokens(self) -> Mapping[str, tuple[Decimal, Decimal]]:
        catalog = self.discovered_catalog()
        models = (*catalog.chat_models(self.name), *catalog.embedding_models(self.name))
        return {m.id: (m.input_per_1k, m.output_per_1k) for m in models}

    async def _fetch_tags(self) -> tuple[str, ...]:
        with upstream_errors(self.name):
            async with self._client.stream("GET", f"{self.base_url}/api/tags") as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                body = await read_bounded(self.name, response, limit=_MAX_TAGS_BYTES)
        payload = decode_json(self.name, body, response.headers.get("content-type"))
        try:
            names = [str(entry.get("name") or entry["model"]) for entry in payload["models"]]
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(self.name, "model list has an unexpected shape") from None
        return tuple(names)

    # -- chat -----------------------------------------------------------------------------------

    def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
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

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 300:
            return
        body = await read_bounded(self.name, response, limit=_MAX_ERROR_BYTES)
        raise error_from_status(self.name, response, body, message_of=_error_message)

    async def _read_answer(self, response: httpx.Response) -> bytes:
        try:
            return await read_bounded(self.name, response)
        except httpx.RemoteProtocolError:
            raise UpstreamProtocolError(
                self.name, "connection closed inside the answer: it is truncated"
            ) from None

    async def complete(self, request: ChatRequest) -> Completion:
        body = self._chat_body(request, stream=False)
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST", f"{self.base_url}/api/chat", json=body
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                raw = await self._read_answer(response)
        payload = decode_json(self.name, raw, response.headers.get("content-type"))
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(self.name, "answer is not a JSON object")
        if payload.get("error"):
            raise UpstreamProtocolError(self.name, f"error in answer: {_error_message(payload)}")
        if payload.get("done") is not True:
            raise UpstreamProtocolError(self.name, "answer is not marked done")
        message = payload.get("message")
        if not isinstance(message, dict):
            raise UpstreamProtocolError(self.name, "answer has no message")
        return Completion(
            content=str(message.get("content") or ""),
            model=str(payload.get("model") or request.model),
            finish_reason=_finish_reason(payload.get("done_reason")),
            usage=_usage(payload),
        )

    @asynccontextmanager
    async def open_stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        body = self._chat_body(request, stream=True)
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST", f"{self.base_url}/api/chat", json=body
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                require_media_type(self.name, response, "application/x-ndjson")
                async with aclosing(self._events(response, request)) as events:
                    yield events

    async def _events(
        self, response: httpx.Response, request: ChatRequest
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = NdjsonDecoder()
        model = request.model
        finished: StreamFinished | None = None
        with upstream_errors(self.name):
            try:
                async for data in response.aiter_bytes():
                    # After the done line the body is read to its end, which Ollama sends right
                    # away: httpx's iterators left unexhausted are only finalised by the garbage
                    # collector, which trio reports as a ResourceWarning.
                    if finished is not None:
                        continue
                    for line in self._decode(decoder, data):
                        chunk = self._stream_object(line)
                        model = str(chunk.get("model") or model)
                        message = chunk.get("message")
                        text = message.get("content") if isinstance(message, dict) else None
                        if text:
                            yield TextDelta(str(text))
                        if chunk.get("done") is True:
                            finish = _finish_reason(chunk.get("done_reason"))
                            finished = StreamFinished(finish, _usage(chunk), model)
                            break
            except httpx.RemoteProtocolError:
                # The server closed the connection inside the chunked body.
                raise UpstreamProtocolError(
                    self.name, "connection closed inside the stream: the answer is truncated"
                ) from None
            if finished is not None:
                yield finished
                return
            self._decode(decoder, None)
        raise UpstreamProtocolError(
            self.name, "stream ended without its done line: the answer is truncated"
        )

    def _decode(self, decoder: NdjsonDecoder, data: bytes | None) -> list[Any]:
        """The JSON values ``data`` completes; None for end of input."""
        try:
            lines = decoder.close() if data is None else decoder.feed(data)
        except WireProtocolError as exc:
            raise UpstreamProtocolError(self.name, f"malformed stream: {exc}") from None
        return [line.value for line in lines]

    def _stream_object(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise UpstreamProtocolError(self.name, "stream line is not a JSON object")
        if value.get("error"):
            detail = _error_message(value) or "unknown error"
            raise UpstreamProtocolError(self.name, f"error in the stream: {detail}")
        return value

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> Embeddings:
        body = {"model": request.model, "input": list(request.texts)}
        with upstream_errors(self.name):
            async with self._client.stream(
                "POST", f"{self.base_url}/api/embed", json=body
            ) as response:
                self._observe_headers(response.headers)
                await self._raise_for_status(response)
                raw = await self._read_answer(response)
        payload = decode_json(self.name, raw, response.headers.get("content-type"))
        try:
            vectors = [[float(v) for v in vector] for vector in payload["embeddings"]]
            tokens = payload.get("prompt_eval_count")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(
                self.name, "embeddings answer has an unexpected shape"
            ) from None
        if len(vectors) != len(request.texts):
            raise UpstreamProtocolError(self.name, "embeddings answer has the wrong count")
        usage = (
            Usage(tokens, 0) if isinstance(tokens, int) and not isinstance(tokens, bool) else None
        )
        return Embeddings(vectors, str(payload.get("model") or request.model), usage)


def build_ollama(settings: Settings, catalog: Catalog, client: httpx.AsyncClient) -> Provider:
    """The Ollama provider at ``settings.ollama_url`` (``DELOS_RUNTIME_OLLAMA_URL``)."""
    return OllamaProvider(
        client=client, catalog=catalog, base_url=settings.ollama_url or DEFAULT_BASE_URL
    )
