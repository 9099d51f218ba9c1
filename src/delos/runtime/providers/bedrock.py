"""AWS Bedrock: chat through Converse / ConverseStream, embeddings through InvokeModel.

Every request is signed with SigV4 (service ``bedrock``) over the exact bytes sent. Streams are
AWS binary event-streams, decoded with :class:`~delos.runtime.wire.EventStreamDecoder` (both CRCs
checked) and interpreted by :class:`~delos.runtime.providers._bedrock_answer.ConverseStreamReader`.

Chat speaks Converse natively: tools and tool choice, tool calls and results, images and
documents as bytes, Claude's thinking (budget, signed and redacted thinking sent back verbatim)
and ``cachePoint`` blocks for cache breakpoints; cache reads and writes are reported in usage.
What Converse cannot express exactly is refused before anything is sent
(:class:`~delos.runtime.errors.UnsupportedByProvider`); ``_bedrock_request`` lists those cases.

Embeddings speak each model vendor's native body:

- Titan (``amazon.titan-embed-*``) embeds one text per call, so a request of many texts becomes
  that many calls, run concurrently, at most ``embed_concurrency`` at a time;
- Cohere (``cohere.embed-*``) embeds up to 96 texts per call; larger requests are split into
  batches, run the same way. Cohere reports its token count only in the
  ``X-Amzn-Bedrock-Input-Token-Count`` response header.

Bedrock sends no rate-limit headers; throttling arrives as HTTP 429 ``ThrottlingException``.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, aclosing
from functools import partial
from typing import Any, Final, TypeVar, cast
from urllib.parse import quote

import anyio

from delos.runtime.catalog import Catalog
from delos.runtime.config import Settings, secret_value
from delos.runtime.errors import (
    EmbeddingsNotSupported,
    ProviderError,
    ProviderNotConfigured,
    UpstreamProtocolError,
)
from delos.runtime.providers._bedrock_answer import (
    ConverseStreamReader,
    error_from_response,
    parse_converse,
)
from delos.runtime.providers._bedrock_request import converse_body
from delos.runtime.providers._http import feed_decoder, upstream_errors
from delos.runtime.providers._sigv4 import RequestSigner
from delos.runtime.providers._transport import UpstreamAnswer
from delos.runtime.providers.base import HttpClient, HttpProvider, Provider, RateLimitListener
from delos.runtime.values import (
    ChatRequest,
    Completion,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    Usage,
)
from delos.runtime.wire import EventStreamDecoder, WireProtocolError

__all__ = ["COHERE_MAX_TEXTS", "DEFAULT_EMBED_CONCURRENCY", "BedrockProvider", "build_bedrock"]

_JSON: Final = "application/json"
_EVENT_STREAM: Final = "application/vnd.amazon.eventstream"
#: Texts per Cohere InvokeModel call (Bedrock's limit).
COHERE_MAX_TEXTS: Final = 96
#: Default bound on concurrent InvokeModel calls of one embeddings request.
DEFAULT_EMBED_CONCURRENCY: Final = 8

_T = TypeVar("_T")


class BedrockProvider(HttpProvider):
    """The Bedrock adapter. ``base_url`` defaults to the region's bedrock-runtime endpoint."""

    def __init__(
        self,
        *,
        signer: RequestSigner,
        client: HttpClient,
        catalog: Catalog,
        base_url: str | None = None,
        on_rate_limits: RateLimitListener | None = None,
        embed_concurrency: int = DEFAULT_EMBED_CONCURRENCY,
    ) -> None:
        if embed_concurrency < 1:
            raise ValueError("embed_concurrency must be at least 1")
        super().__init__(
            "bedrock",
            client=client,
            catalog=catalog,
            base_url=base_url or f"https://bedrock-runtime.{signer.region}.amazonaws.com",
            on_rate_limits=on_rate_limits,
        )
        self._signer = signer
        self._embed_concurrency = embed_concurrency

    # -- transport ----------------------------------------------------------------------------

    def _url(self, model: str, operation: str) -> str:
        # The model id is one path segment: ':' and '/' (ARNs, profiles) are percent-encoded.
        return f"{self.base_url}/model/{quote(model, safe='')}/{operation}"

    def _headers_for(self, url: str, content: bytes, accept: str) -> Mapping[str, str]:
        # SigV4 covers the exact bytes sent, and every header given here.
        return self._signer.sign("POST", url, {"content-type": _JSON, "accept": accept}, content)

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return error_from_response(self.name, status, headers, body)

    # -- chat ---------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> Completion:
        url = self._url(request.model, "converse")
        payload = await self._post_json(url, converse_body(self.name, request))
        return parse_converse(self.name, payload, request)

    def open_stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        url = self._url(request.model, "converse-stream")
        body = converse_body(self.name, request)
        return self._open_stream(url, body, _EVENT_STREAM, partial(self._events, request))

    async def _events(
        self, request: ChatRequest, response: UpstreamAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = EventStreamDecoder()
        reader = ConverseStreamReader(
            self.name, request.model, structured=request.output_schema is not None
        )
        # Close the body iterator when leaving early (on an error, or when the consumer stops)
        # rather than when the garbage collector finds it: trio warns about that.
        body = cast("AsyncGenerator[bytes, None]", response.chunks())
        with upstream_errors(self.name):
            async with aclosing(body) as chunks:
                async for data in chunks:
                    if reader.finished:
                        # The finish has been handed out; reading on to the end of the body (it
                        # follows metadata at once) lets the connection go back to the pool.
                        continue
                    messages = feed_decoder(self.name, decoder, data, what="event stream")
                    for message in messages:
                        for event in reader.feed(message):
                            yield event
        if reader.finished:
            return
        try:
            decoder.close()
        except WireProtocolError:
            raise UpstreamProtocolError(
                self.name, "stream ended inside a frame: the answer is truncated"
            ) from None
        for event in reader.end():
            yield event

    # -- embeddings ---------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> Embeddings:
        """Vectors in the order of ``request.texts``; usage is the summed input tokens.

        Usage is None when any call reported no token count. Raises
        :class:`EmbeddingsNotSupported` for a model that is neither Titan nor Cohere.
        """
        texts = list(request.texts)
        if "titan-embed" in request.model:
            jobs = [self._titan_job(request.model, text) for text in texts]
        elif "cohere.embed" in request.model:
            jobs = [
                self._cohere_job(request.model, texts[start : start + COHERE_MAX_TEXTS])
                for start in range(0, len(texts), COHERE_MAX_TEXTS)
            ]
        else:
            raise EmbeddingsNotSupported(
                f"bedrock: {request.model!r} is not an embedding model of a known family; "
                "use amazon.titan-embed-* or cohere.embed-*"
            )
        results = await self._run_bounded(jobs)
        vectors = [vector for batch, _ in results for vector in batch]
        counts = [count for _, count in results]
        usage = None if None in counts else Usage(sum(c for c in counts if c is not None), 0)
        return Embeddings(vectors, request.model, usage)

    def _titan_job(
        self, model: str, text: str
    ) -> Callable[[], Awaitable[tuple[list[list[float]], int | None]]]:
        async def job() -> tuple[list[list[float]], int | None]:
            payload, headers = await self._invoke(model, {"inputText": text})
            try:
                vector = _floats(payload["embedding"])
            except (KeyError, TypeError, ValueError):
                raise UpstreamProtocolError(
                    self.name, "embeddings answer has an unexpected shape"
                ) from None
            count = payload.get("inputTextTokenCount")
            return [vector], count if isinstance(count, int) else _token_header(headers)

        return job

    def _cohere_job(
        self, model: str, texts: Sequence[str]
    ) -> Callable[[], Awaitable[tuple[list[list[float]], int | None]]]:
        async def job() -> tuple[list[list[float]], int | None]:
            body = {"texts": list(texts), "input_type": "search_document"}
            payload, headers = await self._invoke(model, body)
            try:
                embeddings = payload["embeddings"]
                if isinstance(embeddings, dict):  # the by-type shape: {"float": [[...]]}
                    embeddings = embeddings["float"]
                vectors = [_floats(vector) for vector in embeddings]
            except (KeyError, TypeError, ValueError):
                raise UpstreamProtocolError(
                    self.name, "embeddings answer has an unexpected shape"
                ) from None
            if len(vectors) != len(texts):
                raise UpstreamProtocolError(self.name, "embeddings answer has the wrong count")
            return vectors, _token_header(headers)

        return job

    async def _invoke(self, model: str, body: dict[str, Any]) -> tuple[Any, Mapping[str, str]]:
        payload, headers = await self._fetch_json(self._url(model, "invoke"), body)
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(self.name, "embeddings answer is not a JSON object")
        return payload, headers

    async def _run_bounded(self, jobs: Sequence[Callable[[], Awaitable[_T]]]) -> list[_T]:
        """Run ``jobs`` with at most ``embed_concurrency`` in flight; results in job order.

        The first :class:`ProviderError` cancels the other jobs and is raised alone (not in an
        exception group), so callers see the same errors as from a single call.
        """
        results: dict[int, _T] = {}
        failures: list[ProviderError] = []
        pending = iter(enumerate(jobs))

        async def worker(scope: anyio.CancelScope) -> None:
            # Workers share one iterator: each takes the next job when it is free.
            for index, job in pending:
                try:
                    results[index] = await job()
                except ProviderError as exc:
                    failures.append(exc)
                    scope.cancel()
                    return

        async with anyio.create_task_group() as group:
            for _ in range(min(self._embed_concurrency, len(jobs))):
                group.start_soon(worker, group.cancel_scope)
        if failures:
            raise failures[0]
        return [results[index] for index in range(len(jobs))]


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list):
        raise TypeError("not a list")
    return [float(v) for v in value]


def _token_header(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-amzn-bedrock-input-token-count")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def build_bedrock(settings: Settings, catalog: Catalog, client: HttpClient) -> Provider:
    """The Bedrock adapter from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_REGION`` and ``DELOS_RUNTIME_BEDROCK_BASE_URL``.

    Raises:
        ProviderNotConfigured: the access key id or the secret access key is missing.
    """
    if settings.aws_access_key_id is None or settings.aws_secret_access_key is None:
        raise ProviderNotConfigured(
            "bedrock is not configured: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    signer = RequestSigner(
        access_key_id=settings.aws_access_key_id.get_secret_value(),
        secret_access_key=settings.aws_secret_access_key.get_secret_value(),
        session_token=secret_value(settings.aws_session_token) or None,
        region=settings.aws_region,
    )
    return BedrockProvider(
        signer=signer, client=client, catalog=catalog, base_url=settings.bedrock_base_url
    )
