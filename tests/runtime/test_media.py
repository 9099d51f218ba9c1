"""The image fetcher: every refusal that keeps it from being a request-forgery hole, the size, time
and type limits, the pinned connection, and ``resolve_image_urls``. No sockets: the resolver and
the transport are injected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import anyio.lowlevel
import httpx
import pytest
from trio.testing import MockClock

from delos.runtime.errors import InvalidRequest, UpstreamTimeout, UpstreamUnavailable
from delos.runtime.media import (
    DEFAULT_MAX_IMAGE_BYTES,
    ImageFetcher,
    resolve_image_urls,
    sniff_image_type,
)
from delos.runtime.values import ChatMessage, ImagePart, TextPart

PUBLIC = "93.184.215.14"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG = b"\xff\xd8\xff\xe0" + bytes(24)
GIF = b"GIF89a" + bytes(24)
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(16)
URL = "https://images.example.com/cat.png?token=s3cret"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Backend-neutral: asyncio, and trio on a virtual clock (a 10 s limit passes instantly)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


class Resolver:
    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.addresses


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """An ``httpx.MockTransport`` handler that answers ``answer(request)`` and keeps requests."""

    def __init__(self, answer: Handler | None = None) -> None:
        self.answer = answer or (lambda request: image(PNG, "image/png"))
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def image(body: bytes, media_type: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": media_type}, content=body)


def fetcher_for(
    recorder: Recorder, *addresses: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[ImageFetcher, Resolver]:
    """A fetcher whose host resolves to ``addresses`` (one public one by default)."""
    resolver = Resolver(*(addresses or (PUBLIC,)))
    transport = httpx.MockTransport(recorder)
    return ImageFetcher(resolver=resolver, transport=transport, max_bytes=max_bytes), resolver


async def refused(fetcher: ImageFetcher, url: str = URL) -> str:
    with pytest.raises(InvalidRequest) as caught:
        await fetcher.fetch(url)
    message = caught.value.message
    assert "s3cret" not in message  # never the query, which may hold a token
    return message


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.com/cat.png",
        "file:///etc/passwd",
        "ftp://images.example.com/cat.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ],
)
async def test_only_https_is_fetched(url: str) -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder)
    assert "only https" in await refused(fetcher, url)
    assert resolver.calls == [] and recorder.requests == []


@pytest.mark.anyio
async def test_userinfo_is_refused_without_echoing_it() -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder)
    message = await refused(fetcher, "https://admin:hunter2@images.example.com/cat.png")
    assert "credentials" in message and "hunter2" not in message and "admin" not in message
    assert resolver.calls == [] and recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://[::1/", "not a valid URL"),
        ("https://images.example.com:99999/", "no valid port"),
        ("https:///cat.png", "no host"),
    ],
)
async def test_an_unusable_url_is_refused(url: str, reason: str) -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder)
    assert reason in await refused(fetcher, url)
    assert resolver.calls == [] and recorder.requests == []


# --- addresses --------------------------------------------------------------------------------

NON_PUBLIC = {
    "127.0.0.1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # the cloud metadata service
    "100.64.0.1": "carrier-grade NAT",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "192.0.2.1": "private",  # documentation
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fd12:3456::1": "private",  # unique local
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "link-local",
    "::ffff:10.0.0.1": "private",
    "::ffff:100.64.0.1": "carrier-grade NAT",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
}


@pytest.mark.anyio
@pytest.mark.parametrize(("address", "reason"), NON_PUBLIC.items())
async def test_a_host_resolving_to_a_non_public_address_is_refused(
    address: str, reason: str
) -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder, address)
    message = await refused(fetcher)
    assert f"images.example.com resolves to a {reason} address" in message
    assert address not in message  # the client learns no internal address
    assert resolver.calls == [("images.example.com", 443)]
    assert recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("order", ["public first", "private first"])
async def test_one_non_public_address_among_public_ones_refuses_the_host(order: str) -> None:
    addresses = [PUBLIC, "2606:2800:220:1::1", "10.0.0.7"]
    if order == "private first":
        addresses.reverse()
    recorder = Recorder()
    fetcher, _ = fetcher_for(recorder, *addresses)
    assert "private address" in await refused(fetcher)
    assert recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/x.png", "https://[::1]/x.png", "https://169.254.169.254/latest/"]
)
async def test_an_address_in_the_url_is_checked_without_resolving(url: str) -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder)
    assert "only public addresses" in await refused(fetcher, url)
    assert resolver.calls == [] and recorder.requests == []


@pytest.mark.anyio
async def test_a_host_resolving_to_nothing_is_refused() -> None:
    fetcher = ImageFetcher(resolver=Resolver(), transport=httpx.MockTransport(Recorder()))
    assert "resolves to no address" in await refused(fetcher)


# --- the pinned connection --------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_request_goes_to_the_checked_address_with_the_hostname_kept() -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder)
    assert await fetcher.fetch(URL) == ("image/png", PNG)
    assert resolver.calls == [("images.example.com", 443)]
    [request] = recorder.requests
    assert request.url == httpx.URL(f"https://{PUBLIC}/cat.png?token=s3cret")
    assert request.headers["Host"] == "images.example.com"
    assert request.extensions["sni_hostname"] == "images.example.com"  # TLS: name and cert
    assert request.headers["Accept-Encoding"] == "identity"


@pytest.mark.anyio
async def test_an_explicit_port_and_an_ipv6_address_are_kept() -> None:
    recorder = Recorder()
    fetcher, resolver = fetcher_for(recorder, "2606:2800:220:1::1")
    await fetcher.fetch("https://images.example.com:8443/cat.png")
    assert resolver.calls == [("images.example.com", 8443)]
    [request] = recorder.requests
    assert request.url == httpx.URL("https://[2606:2800:220:1::1]:8443/cat.png")
    assert request.headers["Host"] == "images.example.com:8443"


@pytest.mark.anyio
async def test_the_next_checked_address_is_tried_when_one_does_not_connect() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC:
            raise httpx.ConnectError("unreachable", request=request)
        return image(PNG, "image/png")

    recorder = Recorder(answer)
    fetcher, _ = fetcher_for(recorder, PUBLIC, "93.184.215.15")
    assert await fetcher.fetch(URL) == ("image/png", PNG)
    assert [r.url.host for r in recorder.requests] == [PUBLIC, "93.184.215.15"]


@pytest.mark.anyio
async def test_network_failures_are_upstream_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("unreachable", request=request)

    fetcher, _ = fetcher_for(Recorder(answer), PUBLIC, "93.184.215.15")
    with pytest.raises(UpstreamUnavailable) as caught:
        await fetcher.fetch(URL)
    message = caught.value.message
    assert "from images.example.com (ConnectError)" in message and "s3cret" not in message


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_refused_not_followed(status: int) -> None:
    recorder = Recorder(
        lambda request: httpx.Response(status, headers={"Location": "http://169.254.169.254/"})
    )
    fetcher, _ = fetcher_for(recorder)
    assert f"redirect (HTTP {status})" in await refused(fetcher)
    assert len(recorder.requests) == 1


@pytest.mark.anyio
async def test_error_statuses() -> None:
    fetcher, _ = fetcher_for(Recorder(lambda request: httpx.Response(404)))
    assert "HTTP 404" in await refused(fetcher)
    fetcher, _ = fetcher_for(Recorder(lambda request: httpx.Response(503)))
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        await fetcher.fetch(URL)


@pytest.mark.anyio
@pytest.mark.parametrize("body", [PNG, JPEG, GIF, WEBP])
async def test_each_allowed_type_is_fetched(body: bytes) -> None:
    media_type = sniff_image_type(body)
    assert media_type is not None
    fetcher, _ = fetcher_for(Recorder(lambda request: image(body, f"{media_type}; q=1")))
    assert await fetcher.fetch(URL) == (media_type, body)


@pytest.mark.anyio
@pytest.mark.parametrize("media_type", ["text/html", "image/svg+xml", "application/octet-stream"])
async def test_a_type_that_is_not_an_allowed_image_is_refused(media_type: str) -> None:
    fetcher, _ = fetcher_for(Recorder(lambda request: image(PNG, media_type)))
    assert f"sent {media_type}, not one of" in await refused(fetcher)


@pytest.mark.anyio
async def test_a_type_the_fetcher_was_not_configured_for_is_refused() -> None:
    recorder = Recorder(lambda request: image(GIF, "image/gif"))
    fetcher = ImageFetcher(
        resolver=Resolver(PUBLIC),
        transport=httpx.MockTransport(recorder),
        media_types={"image/png", "image/jpeg"},
    )
    assert "sent image/gif, not one of image/jpeg, image/png" in await refused(fetcher)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("declared", "body", "sent"),
    [
        ("image/png", JPEG, "image/jpeg"),
        ("image/webp", b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(16), "no image"),
        ("image/gif", b"<svg onload=alert(1)>", "no image"),
        ("image/jpeg", b"", "no image"),
    ],
)
async def test_the_bytes_must_be_the_declared_type(declared: str, body: bytes, sent: str) -> None:
    fetcher, _ = fetcher_for(Recorder(lambda request: image(body, declared)))
    assert f"declared {declared} but sent {sent}" in await refused(fetcher)


@pytest.mark.anyio
async def test_a_compressed_body_is_refused() -> None:
    # A streamed body: httpx would inflate (and fail on) a body given whole.
    headers = {"Content-Type": "image/png", "Content-Encoding": "gzip"}
    recorder = Recorder(lambda request: httpx.Response(200, headers=headers, content=Endless(PNG)))
    fetcher, _ = fetcher_for(recorder)
    assert "compressed body (gzip)" in await refused(fetcher)


# --- limits -----------------------------------------------------------------------------------


class Endless:
    """A body that never ends, counting the chunks read from it."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.chunks_read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.chunks_read += 1
            yield self.chunk


@pytest.mark.anyio
async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    body = Endless(PNG)
    recorder = Recorder(
        lambda request: httpx.Response(
            200, headers={"Content-Type": "image/png", "Content-Length": "4097"}, content=body
        )
    )
    fetcher, _ = fetcher_for(recorder, max_bytes=4096)
    assert "larger than the limit of 4096 bytes" in await refused(fetcher)
    assert body.chunks_read == 0


@pytest.mark.anyio
async def test_an_undeclared_length_is_counted_while_streaming() -> None:
    body = Endless(PNG + bytes(1024 - len(PNG)))
    recorder = Recorder(
        lambda request: httpx.Response(200, headers={"Content-Type": "image/png"}, content=body)
    )
    fetcher, _ = fetcher_for(recorder, max_bytes=4096)
    assert "larger than the limit of 4096 bytes" in await refused(fetcher)
    assert body.chunks_read == 5  # stopped at the first chunk past the cap


@pytest.mark.anyio
async def test_an_image_of_exactly_the_cap_is_fetched() -> None:
    fetcher, _ = fetcher_for(Recorder(), max_bytes=len(PNG))
    assert await fetcher.fetch(URL) == ("image/png", PNG)


class Silent(httpx.AsyncBaseTransport):
    """A server that accepts the connection and never answers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.mark.anyio
async def test_the_whole_fetch_has_one_time_limit(anyio_backend_name: str) -> None:
    # On trio the default 10 s passes on the virtual clock; on asyncio a tiny real limit.
    limit = 10.0 if anyio_backend_name == "trio" else 0.05
    fetcher = ImageFetcher(resolver=Resolver(PUBLIC), transport=Silent(), timeout_seconds=limit)
    started = anyio.current_time()
    with pytest.raises(UpstreamTimeout) as caught:
        await fetcher.fetch(URL)
    assert f"images.example.com did not send the image within {limit:g} s" in caught.value.message
    assert anyio.current_time() - started == pytest.approx(limit, abs=0.5)


class Stalling(httpx.AsyncByteStream):
    """A body that sends its first bytes and then nothing; knows whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield PNG
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
async def test_a_body_cut_off_by_the_time_limit_is_closed(anyio_backend_name: str) -> None:
    body = Stalling()
    recorder = Recorder(
        lambda request: httpx.Response(200, headers={"Content-Type": "image/png"}, stream=body)
    )
    limit = 10.0 if anyio_backend_name == "trio" else 0.05
    fetcher = ImageFetcher(
        resolver=Resolver(PUBLIC), transport=httpx.MockTransport(recorder), timeout_seconds=limit
    )
    with pytest.raises(UpstreamTimeout):
        await fetcher.fetch(URL)
    assert body.closed


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        ImageFetcher(max_bytes=0)
    with pytest.raises(ValueError, match="media_types"):
        ImageFetcher(media_types={"image/svg+xml"})


# --- resolve_image_urls -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_resolve_fetches_each_url_once_and_leaves_the_rest() -> None:
    bodies = {"/a.png": PNG, "/b.jpg": JPEG}
    types = {"/a.png": "image/png", "/b.jpg": "image/jpeg"}
    recorder = Recorder(lambda request: image(bodies[request.url.path], types[request.url.path]))
    fetcher, _ = fetcher_for(recorder)
    a, b = "https://images.example.com/a.png", "https://images.example.com/b.jpg"
    inline = ImagePart(url="data:image/gif;base64,R0lGODlh")
    given = ImagePart(data=WEBP, media_type="image/webp")
    plain = ChatMessage("system", "be brief")
    messages = [
        plain,
        ChatMessage("user", "two", parts=(ImagePart(url=a), TextPart("and"), ImagePart(url=b))),
        ChatMessage("user", "again", parts=(ImagePart(url=a), inline, given)),
    ]
    resolved = await resolve_image_urls(messages, fetcher)
    assert sorted(r.url.path for r in recorder.requests) == ["/a.png", "/b.jpg"]
    assert resolved[0] is plain
    assert resolved[1].parts == (
        ImagePart(data=PNG, media_type="image/png"),
        TextPart("and"),
        ImagePart(data=JPEG, media_type="image/jpeg"),
    )
    assert resolved[2].parts == (ImagePart(data=PNG, media_type="image/png"), inline, given)
    assert resolved[2].content == "again"


@pytest.mark.anyio
async def test_resolve_without_urls_fetches_nothing() -> None:
    recorder = Recorder()
    fetcher, _ = fetcher_for(recorder)
    messages = (ChatMessage("user", "hi", parts=(ImagePart(data=PNG, media_type="image/png"),)),)
    assert await resolve_image_urls(messages, fetcher) == messages
    assert recorder.requests == []


@pytest.mark.anyio
async def test_resolve_fetches_a_bounded_number_at_once() -> None:
    in_flight = peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(20):  # let every other fetch that may start, start
            await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return image(PNG, "image/png")

    fetcher = ImageFetcher(resolver=Resolver(PUBLIC), transport=httpx.MockTransport(answer))
    urls = [f"https://images.example.com/{n}.png" for n in range(7)]
    messages = [ChatMessage("user", "", parts=tuple(ImagePart(url=u) for u in urls))]
    resolved = await resolve_image_urls(messages, fetcher, concurrency=3)
    assert peak == 3
    assert all(isinstance(p, ImagePart) and p.data == PNG for p in resolved[0].parts)


@pytest.mark.anyio
async def test_resolve_raises_the_fetch_error_itself() -> None:
    fetcher, _ = fetcher_for(Recorder(), "10.0.0.1")
    messages: Sequence[ChatMessage] = [
        ChatMessage("user", "", parts=(ImagePart(url=URL), ImagePart(url=URL + "&n=2")))
    ]
    with pytest.raises(InvalidRequest, match="private address"):
        await resolve_image_urls(messages, fetcher)
