"""Messages framed in one event-loop turn leave the gateway in one write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from delos.runtime.grpc._grpclib_private import send_frame

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the gRPC edge runs on asyncio


class H2Stand:
    """What ``send_frame`` uses of h2's connection: windows, framing, the output buffer."""

    max_outbound_frame_size = 16_384

    def __init__(self, window: int) -> None:
        self.streams = {1: object()}
        self.window = window
        self.pending = b""

    def local_flow_control_window(self, stream_id: int) -> int:
        return self.window

    def send_data(self, stream_id: int, data: bytes) -> None:
        self.pending += data
        self.window -= len(data)

    def data_to_send(self) -> bytes:
        data, self.pending = self.pending, b""
        return data


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


class Connection:
    def __init__(self) -> None:
        self.write_ready = asyncio.Event()
        self.write_ready.set()
        self.data_sent = 0
        self.messages_sent = 0
        self.last_message_sent = 0.0

    def data_send_process(self) -> None:
        pass


class RawStream:
    def __init__(self, window: int) -> None:
        self.id = 1
        self._h2_connection = H2Stand(window)
        self._transport = Transport()
        self.connection = Connection()
        self.data_sent = 0
        self.waited: list[bytes] = []

    async def send_data(self, data: bytes) -> None:  # grpclib's way: waits for the window
        self.waited.append(data)


class GrpcStream:
    def __init__(self, window: int = 65_535) -> None:
        self._stream = RawStream(window)
        self._send_message_done = False
        self._messages_sent = 0


async def test_frames_sent_in_one_turn_are_written_together_at_its_end() -> None:
    stream = GrpcStream()
    transport = stream._stream._transport
    for frame in (b"one", b"two", b"three"):
        await send_frame(stream, frame)  # type: ignore[arg-type]
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"onetwothree"]
    assert stream._messages_sent == 3


async def test_frames_of_separate_turns_are_written_separately() -> None:
    stream = GrpcStream()
    transport = stream._stream._transport
    await send_frame(stream, b"one")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await send_frame(stream, b"two")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert transport.writes == [b"one", b"two"]


async def test_a_frame_beyond_the_window_waits_for_it_the_way_grpclib_does() -> None:
    stream: Any = GrpcStream(window=4)
    await send_frame(stream, b"too large")
    await asyncio.sleep(0)
    assert stream._stream.waited == [b"too large"]
    assert stream._stream._transport.writes == []
