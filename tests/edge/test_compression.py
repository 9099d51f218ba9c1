"""Compressed requests are read (gzip, deflate), answers compressed back, the size limit holds."""

from __future__ import annotations

import gzip
import zlib

import anyio
import grpc
import pytest

from delos.runtime.v1 import runtime_pb2 as pb
from tests.edge.raw_grpc import frame, raw_call
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio

COMPLETE = "/delos.runtime.v1.RuntimeService/Complete"
LIST_PROVIDERS = "/delos.runtime.v1.RuntimeService/ListProviders"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib runs on asyncio only


def _complete_request(text: str = "hello") -> bytes:
    return pb.CompleteRequest(
        params=pb.CompletionParams(
            messages=[pb.Message(role="user", content=text)], provider="openai"
        )
    ).SerializeToString()


async def test_the_official_client_with_gzip_on_is_served() -> None:
    async with open_harness() as harness:
        target = f"127.0.0.1:{harness.running.port}"

        def call() -> pb.CompleteResponse:
            with grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
                complete = channel.unary_unary(
                    COMPLETE,
                    request_serializer=pb.CompleteRequest.SerializeToString,
                    response_deserializer=pb.CompleteResponse.FromString,
                )
                prompt = "a realistic prompt " * 200  # large enough that grpcio compresses it
                request = pb.CompleteRequest(
                    params=pb.CompletionParams(
                        messages=[pb.Message(role="user", content=prompt)], provider="openai"
                    )
                )
                return complete(request, timeout=10)  # type: ignore[no-any-return]

        response = await anyio.to_thread.run_sync(call)
        assert response.content and response.provider == "openai"
        seen = harness.fakes["openai"].stats.requests[-1].json()
        assert seen["messages"][0]["content"].startswith("a realistic prompt")


@pytest.mark.parametrize(
    ("encoding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
async def test_a_compressed_request_gets_a_compressed_answer(encoding: str, pack: object) -> None:
    assert callable(pack)
    async with open_harness() as harness:
        body = frame(pack(pb.ListProvidersRequest().SerializeToString()), compressed=True)
        answer = await raw_call(
            harness.running.port,
            LIST_PROVIDERS,
            body,
            {"grpc-encoding": encoding, "grpc-accept-encoding": "gzip,deflate,identity"},
        )
    assert answer.status == 0
    assert answer.headers["grpc-encoding"] == encoding
    assert set(answer.headers["grpc-accept-encoding"].split(",")) >= {"gzip", "identity"}
    [(compressed, payload)] = answer.messages
    assert compressed  # the provider list is well over the compression threshold
    unpack = gzip.decompress if encoding == "gzip" else zlib.decompress
    providers = pb.ListProvidersResponse.FromString(unpack(payload)).providers
    assert [p.name for p in providers][:2] == ["openai", "anthropic"]


async def test_an_uncompressed_client_gets_plain_answers_and_the_accepted_encodings() -> None:
    async with open_harness() as harness:
        answer = await raw_call(
            harness.running.port,
            COMPLETE,
            frame(_complete_request(), compressed=False),
            {"grpc-accept-encoding": "gzip"},
        )
    assert answer.status == 0
    assert "grpc-encoding" not in answer.headers
    assert "gzip" in answer.headers["grpc-accept-encoding"]
    [(compressed, payload)] = answer.messages
    assert not compressed and pb.CompleteResponse.FromString(payload).content


async def test_an_encoding_we_do_not_read_is_unimplemented() -> None:
    async with open_harness() as harness:
        answer = await raw_call(
            harness.running.port,
            COMPLETE,
            frame(b"\x00snappy-bytes", compressed=True),
            {"grpc-encoding": "snappy"},
        )
    assert answer.status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "snappy" in answer.trailers.get("grpc-message", answer.headers.get("grpc-message", ""))


async def test_a_gzip_bomb_is_refused_at_the_size_limit() -> None:
    bomb = gzip.compress(b"\x00" * (8 * 1024 * 1024))  # 8 MiB of zeros in about 8 KiB
    assert len(bomb) < 64 * 1024
    async with open_harness(settings={"max_message_bytes": 1024 * 1024}) as harness:
        answer = await raw_call(
            harness.running.port, COMPLETE, frame(bomb, compressed=True), {"grpc-encoding": "gzip"}
        )
    assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


async def test_a_corrupt_compressed_message_is_an_invalid_argument() -> None:
    async with open_harness() as harness:
        answer = await raw_call(
            harness.running.port,
            COMPLETE,
            frame(b"not gzip at all", compressed=True),
            {"grpc-encoding": "gzip"},
        )
    assert answer.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
