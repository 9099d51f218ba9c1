"""A bare HTTP/2 gRPC client for tests that need to see or send what grpc clients hide:
response headers such as ``grpc-encoding``, compressed-flag bits, odd encodings."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import anyio
import h2.config
import h2.connection
import h2.events


@dataclass
class RawAnswer:
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def messages(self) -> list[tuple[bool, bytes]]:
        """Each response message as (compressed flag, payload)."""
        found, data = [], self.body
        while data:
            compressed, length = struct.unpack(">?I", data[:5])
            found.append((compressed, data[5 : 5 + length]))
            data = data[5 + length :]
        return found

    @property
    def status(self) -> int:
        """The grpc-status, from trailers (or headers of a trailers-only answer)."""
        return int(self.trailers.get("grpc-status", self.headers.get("grpc-status", "-1")))


def frame(payload: bytes, *, compressed: bool) -> bytes:
    return struct.pack(">?I", compressed, len(payload)) + payload


async def raw_call(port: int, path: str, body: bytes, headers: dict[str, str]) -> RawAnswer:
    """One unary call over a fresh connection; ``body`` is the already-framed request."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    stream_id = connection.get_next_available_stream_id()
    connection.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{port}"),
            (":path", path),
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
            *headers.items(),
        ],
    )
    connection.send_data(stream_id, body, end_stream=True)
    answer = RawAnswer()
    async with await anyio.connect_tcp("127.0.0.1", port) as sock:
        await sock.send(connection.data_to_send())
        with anyio.fail_after(10):
            done = False
            while not done:
                for event in connection.receive_data(await sock.receive()):
                    if isinstance(event, h2.events.ResponseReceived):
                        answer.headers = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h2.events.DataReceived):
                        answer.body += event.data
                        connection.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.TrailersReceived):
                        answer.trailers = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        done = True
                await sock.send(connection.data_to_send())
    return answer
