"""Image URLs fetched for the providers that take only bytes (Gemini, Bedrock, Vertex, Ollama),
without opening a way into the gateway's own network.

A gateway that fetches whatever URL a client names is a server-side request forgery hole: the
client reads the cloud metadata service (169.254.169.254), admin ports on loopback, or anything
on the private network. Fetching is off unless ``DELOS_RUNTIME_FETCH_IMAGE_URLS=true``, and the
:class:`ImageFetcher` is strict:

- ``https`` only, without userinfo;
- it resolves the host itself and refuses the URL when *any* address is not public;
- it connects to an address it checked, never resolving again (a second answer from the DNS
  could differ: DNS rebinding), with the hostname kept as the Host header and as the TLS server
  name, so the certificate is verified against the hostname;
- no redirects, a size cap while streaming, one time limit for the whole fetch;
- the declared media type must be an allowed image type, and the bytes must be that type.

What the client controls (the URL, hence the server and its answers) fails with
:class:`~delos.runtime.errors.InvalidRequest`; the network with
:class:`~delos.runtime.errors.UpstreamUnavailable` or
:class:`~delos.runtime.errors.UpstreamTimeout`. Messages name the host, never the whole URL,
whose query may hold a token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeGuard

import anyio
import httpx
from anyio.abc import TaskGroup

from delos.runtime.errors import DelosError, InvalidRequest, UpstreamTimeout, UpstreamUnavailable
from delos.runtime.values import ChatMessage, ContentPart, ImagePart

__all__ = [
    "DEFAULT_FETCH_TIMEOUT_SECONDS",
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE_MEDIA_TYPES",
    "MAX_CONCURRENT_FETCHES",
    "ImageFetcher",
    "Resolver",
    "non_public_reason",
    "resolve_image_urls",
    "sniff_image_type",
]

#: Bytes one image may have (20 MiB).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: Seconds one whole fetch may take: resolution, connection, TLS, headers and body.
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0
#: The image types every provider that needs bytes accepts, and the ones we can sniff.
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: Fetches one request runs at once.
MAX_CONCURRENT_FETCHES = 4

#: ``(host, port) -> IP addresses as text``.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The "provider" named by network errors of a fetch.
_SOURCE = "image fetch"
#: Seconds a response or a connection may take to close once the fetch is over or cancelled.
_CLOSE_GRACE_SECONDS = 1.0
_CARRIER_GRADE_NAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NO_SUCH_HOST = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in infos]


def sniff_image_type(data: bytes) -> str | None:
    """The image type ``data`` starts like (its magic bytes), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _embedded_ipv4(address: _IPAddress) -> _IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped ``::ffff:a.b.c.d``, 6to4, NAT64), else the
    address itself. Needed: on Python 3.11 ``IPv6Address("::ffff:127.0.0.1").is_loopback`` is
    False, and a NAT64 gateway turns ``64:ff9b::a9fe:a9fe`` into 169.254.169.254."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def non_public_reason(address: _IPAddress) -> str | None:
    """Why ``address`` must not be fetched from ("loopback", "private", …), or None if public."""
    address = _embedded_ipv4(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CARRIER_GRADE_NAT:
        return "carrier-grade NAT"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved:  # before private: Python counts 240.0.0.0/4 as both
        return "reserved"
    if address.is_private:  # RFC 1918, IPv6 unique local (fc00::/7), and the like
        return "private"
    # The catch-all: whatever else the IANA registries hold as not globally reachable
    # (documentation, benchmarking ranges, …), as Python's version knows them.
    if not address.is_global:
        return "non-global"
    return None


class ImageFetcher:
    """Fetches images by https URL, refusing anything but public addresses.

    ``max_bytes``: the largest image (bytes); ``timeout_seconds``: the whole fetch (seconds);
    ``media_types``: the allowed types, a subset of :data:`IMAGE_MEDIA_TYPES`. ``resolver``
    (default: :func:`anyio.getaddrinfo`) and ``transport`` (default: a fresh
    ``httpx.AsyncHTTPTransport`` per fetch, closed after it, verifying certificates against
    certifi's roots) are seams for tests; an injected transport is the caller's to close.
    Raises ValueError for limits that make no sense.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        media_types: Iterable[str] = IMAGE_MEDIA_TYPES,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._media_types = frozenset(media_types)
        if max_bytes <= 0 or timeout_seconds <= 0:
            raise ValueError("max_bytes and timeout_seconds must be positive")
        if not self._media_types or not self._media_types <= IMAGE_MEDIA_TYPES:
            raise ValueError(f"media_types must be some of {sorted(IMAGE_MEDIA_TYPES)}")
        self._max_bytes = max_bytes
        self._timeout_seconds = timeout_seconds
        self._resolve = resolver or _getaddrinfo
        self._transport = transport
        # Loaded once (tens of milliseconds), shared by the per-fetch transports.
        self._ssl_context = httpx.create_ssl_context(trust_env=False) if transport is None else None

    async def fetch(self, url: str) -> tuple[str, bytes]:
        """The image at ``url``: (media type, bytes).

        Raises InvalidRequest (not https, userinfo, a non-public address, a redirect, an error
        status below 500, too large, not an allowed image type, content not of the declared
        type), UpstreamTimeout (over ``timeout_seconds``), UpstreamUnavailable (resolution or
        connection failure, a 5xx).
        """
        target = _parse(url)
        host = target.raw_host.decode("ascii")
        try:
            with anyio.fail_after(self._timeout_seconds):
                addresses = await self._public_addresses(host, target.port or 443)
                return await self._download(target, addresses)
        except TimeoutError:
            raise UpstreamTimeout(
                _SOURCE, f"{host} did not send the image within {self._timeout_seconds:g} s"
            ) from None
        except httpx.RequestError as error:  # connect, TLS, read, protocol
            raise UpstreamUnavailable(
                _SOURCE, f"could not fetch the image from {host} ({type(error).__name__})"
            ) from error

    async def _public_addresses(self, host: str, port: int) -> list[_IPAddress]:
        try:
            resolved: Sequence[str] = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                resolved = await self._resolve(host, port)
            except socket.gaierror as error:
                if error.errno in _NO_SUCH_HOST:
                    raise InvalidRequest(f"image URL host {host} does not resolve") from None
                raise UpstreamUnavailable(_SOURCE, f"could not resolve {host}") from error
            except OSError as error:
                raise UpstreamUnavailable(_SOURCE, f"could not resolve {host}") from error
        if not resolved:
            raise InvalidRequest(f"image URL host {host} resolves to no address")
        # Every address, not the first: the attacker's DNS chooses the answer and its order (and
        # the resolver re-sorts it), and we fall back to the next address when one does not
        # connect; a host with any non-public address is refused outright rather than
        # trusting that we happen to pick a public one.
        addresses = [ipaddress.ip_address(text) for text in dict.fromkeys(resolved)]
        for address in addresses:
            reason = non_public_reason(address)
            if reason is not None:
                raise InvalidRequest(
                    f"image URL host {host} resolves to a {reason} address; "
                    "only public addresses are fetched"
                )
        return addresses

    async def _download(self, target: httpx.URL, addresses: list[_IPAddress]) -> tuple[str, bytes]:
        # A transport per fetch unless one was injected: a pooled connection is keyed by the IP
        # alone, and must not carry another hostname's request under this one's TLS name.
        transport = self._transport or httpx.AsyncHTTPTransport(
            verify=self._ssl_context or True, trust_env=False
        )
        try:
            response = await _connect(transport, target, addresses, sorted(self._media_types))
            try:
                return await self._read(response, target.raw_host.decode("ascii"))
            finally:
                with anyio.move_on_after(_CLOSE_GRACE_SECONDS, shield=True):
                    await response.aclose()
        finally:
            if self._transport is None:
                with anyio.move_on_after(_CLOSE_GRACE_SECONDS, shield=True):
                    await transport.aclose()

    async def _read(self, response: httpx.Response, host: str) -> tuple[str, bytes]:
        status = response.status_code
        if 300 <= status < 400:
            # Not followed: each hop would need the same checks, and a client can send the
            # final URL itself; a refusal is also simpler to reason about than a chain.
            raise InvalidRequest(
                f"image URL host {host} answered with a redirect (HTTP {status}); "
                "redirects are not followed: send the final URL"
            )
        if status >= 500:
            raise UpstreamUnavailable(_SOURCE, f"{host} answered HTTP {status}", http_status=status)
        if status != 200:
            raise InvalidRequest(f"image URL host {host} answered HTTP {status}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            # We asked for identity; a compressed body would hide its real size until inflated.
            raise InvalidRequest(f"image URL host {host} sent a compressed body ({encoding[:32]})")
        declared = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if declared not in self._media_types:
            allowed = ", ".join(sorted(self._media_types))
            raise InvalidRequest(
                f"image URL host {host} sent {declared[:64] or 'no media type'}, "
                f"not one of {allowed}"
            )
        too_large = InvalidRequest(
            f"the image at {host} is larger than the limit of {self._max_bytes} bytes"
        )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.aiter_bytes():  # raw: any Content-Encoding is refused above
            body += chunk
            if len(body) > self._max_bytes:
                raise too_large
        data = bytes(body)
        actual = sniff_image_type(data)
        if actual != declared:
            sent = actual or "no image of a known type"
            raise InvalidRequest(f"image URL host {host} declared {declared} but sent {sent}")
        return declared, data


def _parse(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidRequest("image URL is not a valid URL") from None
    host = target.raw_host.decode("ascii", errors="replace") or "(none)"
    if target.scheme != "https":
        raise InvalidRequest(
            f"image URL for host {host}: only https URLs are fetched, not {target.scheme[:16]}:"
        )
    if target.userinfo:
        raise InvalidRequest(f"image URL for host {host} holds credentials; they are refused")
    if not target.raw_host:
        raise InvalidRequest("image URL has no host")
    if target.port is not None and not 0 < target.port < 65536:
        raise InvalidRequest(f"image URL for host {host} has no valid port")
    return target


async def _connect(
    transport: httpx.AsyncBaseTransport,
    target: httpx.URL,
    addresses: list[_IPAddress],
    media_types: list[str],
) -> httpx.Response:
    """The response's head from the first of ``addresses`` that connects.

    The request goes to the IP itself, so nothing below resolves the name again; the Host header
    and the ``sni_hostname`` extension (httpcore's, on every backend) keep the hostname for the
    server and for TLS, whose certificate is then verified against the hostname.
    """
    hostname = target.raw_host.decode("ascii")
    headers = {
        "Host": target.netloc.decode("ascii"),
        "Accept": ", ".join(media_types),
        "Accept-Encoding": "identity",
    }
    failure: httpx.ConnectError | None = None
    for address in addresses:
        request = httpx.Request(
            "GET",
            target.copy_with(host=str(address)),
            headers=headers,
            extensions={"sni_hostname": hostname},
        )
        try:
            return await transport.handle_async_request(request)
        except httpx.ConnectError as error:
            failure = error
    assert failure is not None  # addresses is never empty
    raise failure


async def resolve_image_urls(
    messages: Iterable[ChatMessage],
    fetcher: ImageFetcher,
    *,
    concurrency: int = MAX_CONCURRENT_FETCHES,
) -> tuple[ChatMessage, ...]:
    """``messages`` with every image given only by an https URL replaced by its bytes.

    Fetches ``concurrency`` at a time, each distinct URL once; ``data:`` URLs and images with
    bytes are left as they are. Raises the first error of :meth:`ImageFetcher.fetch`.
    """
    messages = tuple(messages)
    urls = list(
        dict.fromkeys(part.url for message in messages for part in message.parts if _fetched(part))
    )
    if not urls:
        return messages
    images: dict[str, tuple[str, bytes]] = {}
    failures: list[DelosError] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def fetch_one(url: str, group: TaskGroup) -> None:
        async with limiter:
            try:
                images[url] = await fetcher.fetch(url)
            except DelosError as error:
                # One error for the caller, not an ExceptionGroup; the other fetches stop.
                failures.append(error)
                group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for url in urls:
            group.start_soon(fetch_one, url, group)
    if failures:
        raise failures[0]
    return tuple(_with_images(message, images) for message in messages)


def _fetched(part: ContentPart) -> TypeGuard[ImagePart]:
    """An image only a URL names (not a ``data:`` one): what :func:`resolve_image_urls` fetches."""
    if not isinstance(part, ImagePart) or part.data or not part.url:
        return False
    return not part.url.startswith("data:")


def _with_images(message: ChatMessage, images: dict[str, tuple[str, bytes]]) -> ChatMessage:
    if not any(_fetched(part) for part in message.parts):
        return message
    parts: list[ContentPart] = []
    for part in message.parts:
        if _fetched(part):
            media_type, data = images[part.url]
            part = ImagePart(data=data, media_type=media_type)
        parts.append(part)
    return dataclasses.replace(message, parts=tuple(parts))
