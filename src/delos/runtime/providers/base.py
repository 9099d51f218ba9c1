"""The ``Provider`` protocol of the product spec, and the base class the HTTP adapters share.

An adapter speaks one provider's native wire format and nothing else: no routing, no retries, no
limits. It raises only errors of :mod:`delos.runtime.errors` and reports the rate-limit headers it
sees to the listener set with ``set_rate_limit_listener``, which the resilience layer consumes.

:class:`HttpProvider` holds the HTTP steps every adapter takes, written once: send a JSON body,
report the rate-limit headers, turn a non-2xx answer into our error (:meth:`_status_error`, the
hook for a provider's own error shapes), then read a bounded JSON body (:meth:`_post_json`) or
check a stream's media type and hand its body to the adapter's reading loop (:meth:`_open_stream`).
Adapters build bodies and parse answers with their sans-IO ``_*_wire`` module and do nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any, Final, Protocol, runtime_checkable

import httpx

from delos.resilience._limiter import RateLimitHints
from delos.runtime.catalog import Catalog
from delos.runtime.config import EMBEDDING_PROVIDERS, PROVIDERS
from delos.runtime.errors import EmbeddingsNotSupported, ProviderError
from delos.runtime.providers._http import (
    MAX_BODY_BYTES,
    MAX_ERROR_BODY_BYTES,
    decode_json,
    encode_json,
    error_from_status,
    rate_limit_hints,
    read_bounded,
    require_media_type,
    upstream_errors,
)
from delos.runtime.providers._transport import UpstreamAnswer, UpstreamClient, as_upstream_client
from delos.runtime.values import ChatRequest, Completion, Embeddings, EmbedRequest, StreamEvent

__all__ = ["HttpClient", "HttpProvider", "MessageOf", "Provider", "RateLimitListener", "StreamRead"]

RateLimitListener = Callable[[RateLimitHints], None]
#: What an adapter is built with: an upstream client, or an httpx client (wrapped as one).
HttpClient = UpstreamClient | httpx.AsyncClient
#: Extracts a provider's own message from a decoded error body; None when it has none.
MessageOf = Callable[[Any], str | None]
#: Reads a streamed answer's body into our stream events (an adapter's format loop).
StreamRead = Callable[[UpstreamAnswer], AsyncGenerator[StreamEvent, None]]

_JSON: Final = "application/json"


@runtime_checkable
class Provider(Protocol):
    """What the router needs from a provider."""

    @property
    def name(self) -> str: ...

    @property
    def supports_embeddings(self) -> bool: ...

    @property
    def base_url(self) -> str:
        """Where requests go (for ListProviders); never carries a credential."""
        ...

    def models(self) -> Sequence[str]:
        """Chat model ids this provider serves."""
        ...

    def set_rate_limit_listener(self, listener: RateLimitListener | None) -> None:
        """Report the rate-limit hints of every answer to ``listener`` from now on."""
        ...

    async def start(self) -> None:
        """Warm up before serving (Ollama lists its models). The caller bounds the time it may
        take and logs a :class:`~delos.runtime.errors.ProviderError` it raises."""
        ...

    def discovered_catalog(self, base: Catalog) -> Catalog:
        """``base`` plus the models found at run time; ``base`` itself when there are none."""
        ...

    async def available(self) -> bool:
        """Whether the provider can be asked now (configured, and reachable where that is cheap)."""
        ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a streamed completion; leaving the block closes the upstream request.

        The iterator yields :class:`~delos.runtime.values.TextDelta` events and, last,
        exactly one :class:`~delos.runtime.values.StreamFinished`. A stream that ends any other way
        raises :class:`~delos.runtime.errors.UpstreamProtocolError`: never a silent truncation.
        """
        ...

    async def embed(self, request: EmbedRequest) -> Embeddings: ...

    async def aclose(self) -> None: ...


def _no_message(payload: Any) -> str | None:
    return None


class HttpProvider:
    """Shared state and HTTP steps of an adapter: its name, pooled client, catalog view, the
    headers of its requests and its rate-limit listener.

    ``client``: an :class:`UpstreamClient` (an ``httpx.AsyncClient`` is wrapped as one);
    ``headers`` go with every request (credentials included: they are never logged);
    ``message_of`` reads the provider's own message out of an error body.
    """

    def __init__(
        self,
        name: str,
        *,
        client: HttpClient,
        catalog: Catalog,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        message_of: MessageOf = _no_message,
        on_rate_limits: RateLimitListener | None = None,
    ) -> None:
        self._name = name
        self._client = as_upstream_client(client)
        self._catalog = catalog
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        # Built once: every POST carries a JSON body encoded here (see _headers_for).
        self._json_headers = {**self._headers, "content-type": _JSON}
        self._message_of = message_of
        self.on_rate_limits = on_rate_limits

    @property
    def name(self) -> str:
        return self._name

    @property
    def supports_embeddings(self) -> bool:
        facts = PROVIDERS.get(self._name)
        return facts is not None and facts.embeddings

    def models(self) -> Sequence[str]:
        return tuple(model.id for model in self._catalog.chat_models(self._name))

    def embedding_models(self) -> Sequence[str]:
        return tuple(model.id for model in self._catalog.embedding_models(self._name))

    def set_rate_limit_listener(self, listener: RateLimitListener | None) -> None:
        self.on_rate_limits = listener

    async def start(self) -> None:
        return None

    def discovered_catalog(self, base: Catalog) -> Catalog:
        return base

    async def available(self) -> bool:
        return True

    async def embed(self, request: EmbedRequest) -> Embeddings:
        raise EmbeddingsNotSupported(
            f"{self._name} has no embeddings API; providers with embeddings: "
            f"{', '.join(EMBEDDING_PROVIDERS)}"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- HTTP steps -------------------------------------------------------------------------------

    async def _post_json(self, url: str, body: Any) -> Any:
        """POST ``body`` as JSON; the decoded JSON answer.

        Raises the :class:`ProviderError` of a non-2xx status (:meth:`_status_error`), of a
        transport failure, or :class:`UpstreamProtocolError` for an oversized or non-JSON answer.
        """
        payload, _ = await self._fetch_json(url, body)
        return payload

    async def _fetch_json(
        self, url: str, body: Any = None, *, limit: int = MAX_BODY_BYTES
    ) -> tuple[Any, Mapping[str, str]]:
        """:meth:`_post_json` (a GET when ``body`` is None), with the answer's headers and a
        body limit of ``limit`` bytes."""
        with upstream_errors(self.name):
            async with self._exchange(url, body, accept=_JSON) as answer:
                await self._accept(answer)
                raw = await self._read_answer(answer, limit)
        headers = answer.headers
        return decode_json(self.name, raw, headers.get("content-type")), headers

    @asynccontextmanager
    async def _open_stream(
        self, url: str, body: Any, media_type: str, read: StreamRead
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """POST ``body`` as JSON; once the answer is a 2xx of ``media_type``, yield the events
        ``read`` makes of its body. Leaving the block closes them and the upstream request.

        Raises the errors of :meth:`_post_json`, and :class:`UpstreamProtocolError` for an answer
        of another media type (an HTML error page is not a stream).
        """
        with upstream_errors(self.name):
            async with self._exchange(url, body, accept=media_type) as answer:
                await self._accept(answer)
                require_media_type(self.name, answer, media_type)
                async with aclosing(read(answer)) as events:
                    yield events

    def _exchange(
        self, url: str, body: Any, *, accept: str
    ) -> AbstractAsyncContextManager[UpstreamAnswer]:
        """The client's exchange for a GET (``body`` None) or a POST of ``body`` as JSON; the
        block checks the answer with :meth:`_accept`. Call inside :func:`upstream_errors`.

        The client's own context manager, not one wrapped around it: this runs once per
        upstream call."""
        if body is None:
            return self._client.exchange("GET", url, self._headers, None)
        content = encode_json(body)
        headers = self._headers_for(url, content, accept)
        return self._client.exchange("POST", url, headers, content)

    async def _accept(self, answer: UpstreamAnswer) -> None:
        """Report the answer's rate-limit headers; raise the error of a non-2xx status."""
        self._observe_headers(answer.headers)
        await self._raise_for_status(answer)

    async def _raise_for_status(self, answer: UpstreamAnswer) -> None:
        if answer.status < 300:
            return
        body = await read_bounded(self.name, answer, limit=MAX_ERROR_BODY_BYTES)
        raise self._status_error(answer.status, answer.headers, body)

    # -- hooks ------------------------------------------------------------------------------------

    def _headers_for(self, url: str, content: bytes, accept: str) -> Mapping[str, str]:
        """The headers of a POST of ``content`` to ``url`` expecting ``accept``. Bedrock signs
        them over the exact bytes; the others send their fixed headers."""
        return self._json_headers

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """The error for a non-2xx answer (``body``: at most
        :data:`~delos.runtime.providers._http.MAX_ERROR_BODY_BYTES`). Adapters extend it with
        their provider's own error shapes."""
        return error_from_status(self.name, status, headers, body, message_of=self._message_of)

    async def _read_answer(self, answer: UpstreamAnswer, limit: int) -> bytes:
        """A 2xx answer's whole body, at most ``limit`` bytes."""
        return await read_bounded(self.name, answer, limit)

    def _observe_headers(self, headers: Mapping[str, str]) -> None:
        if self.on_rate_limits is None:
            return
        hints = rate_limit_hints(headers)
        if hints is not None:
            self.on_rate_limits(hints)
