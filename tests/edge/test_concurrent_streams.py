"""One client connection runs many calls at once: the server advertises a high stream limit."""

from __future__ import annotations

import anyio
import h2.config
import h2.connection
import h2.events
import pytest
from h2.settings import SettingCodes

from delos.runtime.v1 import runtime_pb2 as pb
from delos.testing import Behaviour, Latency
from tests.gateway.harness import open_harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib runs on asyncio only


async def _advertised_stream_limit(port: int) -> int | None:
    """Open an HTTP/2 connection as a client would and read the server's stream limit."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    limit: int | None = None
    async with await anyio.connect_tcp("127.0.0.1", port) as sock:
        await sock.send(client.data_to_send())
        with anyio.fail_after(5):
            while limit is None or limit == 100:
                events = client.receive_data(await sock.receive())
                for event in events:
                    if isinstance(event, h2.events.RemoteSettingsChanged):
                        changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
                        if changed is not None:
                            limit = changed.new_value
                await sock.send(client.data_to_send())
    return limit


async def test_the_server_advertises_the_configured_stream_limit() -> None:
    async with open_harness(settings={"max_concurrent_streams": 4321}) as harness:
        assert await _advertised_stream_limit(harness.running.port) == 4321


async def test_three_hundred_streams_on_one_channel_all_start_at_once() -> None:
    async with open_harness() as harness:
        # The upstream holds every first token: the calls can only be in flight together.
        harness.controls["openai"].behaviour = Behaviour(time_to_first_token=Latency(base=60.0))
        request = pb.CompleteRequest(
            params=pb.CompletionParams(
                messages=[pb.Message(role="user", content="hold")], provider="openai"
            )
        )
        upstream = harness.fakes["openai"]
        async with anyio.create_task_group() as calls:

            async def call() -> None:
                async with harness.stub.CompleteStream.open() as stream:
                    await stream.send_message(request, end=True)
                    await stream.recv_message()

            for _ in range(300):
                calls.start_soon(call)
            with anyio.fail_after(30):
                await upstream.wait_until(lambda stats: stats.active_responses == 300)
            assert harness.running.service.calls.in_flight == 300
            calls.cancel_scope.cancel()
