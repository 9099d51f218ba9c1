from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.health.service import Health
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server, Stream

from delos.runtime.config import ConfigError
from delos.runtime.errors import Unauthenticated
from delos.runtime.grpc import auth
from delos.runtime.grpc.auth import (
    DEFAULT_OPEN_METHODS,
    ClientKeys,
    current_client,
    install_auth,
    warn_if_exposed,
)
from delos.runtime.observability import ANONYMOUS
from tests.observability.servers import serving

WHO_AM_I = "/delos.test.Probe/WhoAmI"
KEYS = "team-a:key-of-team-a-0001, team-b:key-of-team-b-0002"


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Probe:
    """A protected method that reports who the gateway thinks is calling."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, dict[str, Any]]] = []

    async def who_am_i(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        await stream.recv_message()
        self.seen.append((current_client(), dict(stream.metadata or {})))
        await stream.send_message(HealthCheckResponse(status=HealthCheckResponse.SERVING))

    def __mapping__(self) -> dict[str, Handler]:
        return {
            WHO_AM_I: Handler(
                self.who_am_i, Cardinality.UNARY_UNARY, HealthCheckRequest, HealthCheckResponse
            )
        }


@asynccontextmanager
async def gateway_with(keys: ClientKeys) -> AsyncIterator[tuple[Probe, Channel]]:
    probe = Probe()
    server = Server([probe, Health()])
    install_auth(server, keys)
    async with serving(server) as port:
        channel = Channel("127.0.0.1", port)
        try:
            yield probe, channel
        finally:
            channel.close()


async def who_am_i(channel: Channel, metadata: dict[str, str] | None = None) -> None:
    method = UnaryUnaryMethod(channel, WHO_AM_I, HealthCheckRequest, HealthCheckResponse)
    await method(HealthCheckRequest(), metadata=metadata)


# -- over gRPC ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "missing client key"),
        ({"authorization": "Bearer not-a-configured-key"}, "invalid client key"),
        ({"authorization": "Basic key-of-team-a-0001"}, "invalid client key"),
        ({"authorization": "Bearer "}, "invalid client key"),
    ],
)
async def test_a_call_without_a_valid_key_is_unauthenticated_before_its_handler_runs(
    metadata: dict[str, str] | None, message: str
) -> None:
    async with gateway_with(ClientKeys.from_settings(KEYS, None)) as (probe, channel):
        with pytest.raises(GRPCError) as raised:
            await who_am_i(channel, metadata)
    assert raised.value.status is Status.UNAUTHENTICATED
    assert raised.value.message == message
    assert probe.seen == []


@pytest.mark.anyio
async def test_the_right_key_reaches_the_handler_with_the_client_name_and_without_the_key() -> None:
    async with gateway_with(ClientKeys.from_settings(KEYS, None)) as (probe, channel):
        await who_am_i(channel, {"authorization": "Bearer key-of-team-b-0002", "x-trace": "1"})
        await who_am_i(channel, {"authorization": "bearer key-of-team-a-0001"})
    assert probe.seen == [("team-b", {"x-trace": "1"}), ("team-a", {})]


@pytest.mark.anyio
async def test_health_is_open_without_a_key() -> None:
    async with gateway_with(ClientKeys.from_settings(KEYS, None)) as (_, channel):
        method = UnaryUnaryMethod(
            channel, "/grpc.health.v1.Health/Check", HealthCheckRequest, HealthCheckResponse
        )
        reply = await method(HealthCheckRequest())
    assert reply.status == HealthCheckResponse.SERVING
    assert "/delos.runtime.v1.RuntimeService/Health" in DEFAULT_OPEN_METHODS
    assert "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in DEFAULT_OPEN_METHODS


@pytest.mark.anyio
async def test_without_keys_nothing_is_checked_and_no_client_is_named() -> None:
    async with gateway_with(ClientKeys.from_settings(None, None)) as (probe, channel):
        await who_am_i(channel)
    assert probe.seen == [(None, {})]


# -- the keys themselves --------------------------------------------------------------------------


def test_pairs_and_file_are_merged_and_each_key_maps_to_its_name(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "# rotated 2025-01\n"
        "\n"
        f"ops:{sha256('ops-key-0003')}\n"
        f"ci:{sha256('ci-key-0004').upper()}  # the CI runner\n"
    )
    keys = ClientKeys.from_settings(KEYS, str(keys_file))
    assert keys.enabled
    assert keys.names == {"team-a", "team-b", "ops", "ci"}
    assert keys.check("Bearer key-of-team-a-0001") == "team-a"
    assert keys.check("Bearer ops-key-0003") == "ops"
    assert keys.check("Bearer ci-key-0004") == "ci"
    assert "key-of" not in repr(keys)


def test_no_keys_means_disabled_and_every_caller_is_anonymous() -> None:
    keys = ClientKeys.from_settings(None, None)
    assert not keys.enabled
    assert keys.check(None) == ANONYMOUS


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing client key"),
        ("  ", "missing client key"),
        ("Bearer nope", "invalid client key"),
    ],
)
def test_check_refuses_missing_and_unknown_keys(header: str | None, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        ClientKeys.from_settings(KEYS, None).check(header)


@pytest.mark.parametrize("position", [0, 4])
def test_every_stored_digest_is_compared_whichever_key_matches(
    monkeypatch: pytest.MonkeyPatch, position: int
) -> None:
    keys = ClientKeys.from_settings(",".join(f"c{i}:secret-key-{i}" for i in range(5)), None)
    compared: list[bytes] = []

    def counting(stored: bytes, given: bytes) -> bool:
        compared.append(stored)
        return stored == given

    monkeypatch.setattr(auth, "compare_digest", counting)
    assert keys.check(f"Bearer secret-key-{position}") == f"c{position}"
    assert len(compared) == 5
    compared.clear()
    with pytest.raises(Unauthenticated):
        keys.check("Bearer secret-key-9")
    assert len(compared) == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "team-a:ok-key,sk-plaintext-without-name",
            "DELOS_RUNTIME_API_KEYS: entry 2 is not name:key",
        ),
        ("team-a:", "DELOS_RUNTIME_API_KEYS: entry 1 is not name:key"),
        ("team a:sk-with-bad-name", "DELOS_RUNTIME_API_KEYS: entry 1: a client name is"),
        ("a:same-key-twice,b:same-key-twice", "the same key is listed twice"),
    ],
)
def test_malformed_pairs_name_the_variable_and_entry_never_the_key(
    value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        ClientKeys.from_settings(value, None)
    assert str(raised.value).startswith(expected) or expected in str(raised.value)
    for secret in ("sk-plaintext-without-name", "sk-with-bad-name", "same-key-twice", "ok-key"):
        assert secret not in str(raised.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("ops:sk-plaintext-key-in-the-file", "expected name:sha256-hex"),
        (f"ops {sha256('x')}", "expected name:sha256-hex"),
        (f"ops:{sha256('x')[:-1]}", "expected name:sha256-hex"),
        (f"bad/name:{sha256('x')}", "a client name is"),
    ],
)
def test_a_malformed_file_line_names_the_variable_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# header\nfine:{sha256('fine-key')}\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        ClientKeys.from_settings(None, str(keys_file))
    message = str(raised.value)
    assert message.startswith(f"DELOS_RUNTIME_API_KEYS_FILE ({keys_file}) line 3: {problem}")
    assert "sk-plaintext" not in message
    assert sha256("x")[:20] not in message


def test_an_unreadable_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=r"^DELOS_RUNTIME_API_KEYS_FILE: cannot read .*absent"):
        ClientKeys.from_settings(None, str(missing))


# -- exposure warning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "configured", "warned"),
    [
        ("0.0.0.0", None, True),
        ("", None, True),
        ("gateway.internal", None, True),
        ("0.0.0.0", "team-a:k", False),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_serving_beyond_loopback_without_keys_is_warned_about(
    caplog: pytest.LogCaptureFixture, host: str, configured: str | None, warned: bool
) -> None:
    logger = logging.getLogger("delos.test.auth")
    with caplog.at_level(logging.WARNING, logger="delos.test.auth"):
        assert warn_if_exposed(host, ClientKeys.from_settings(configured, None), logger) is warned
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert "without client keys" in warnings[0].getMessage()
        assert "DELOS_RUNTIME_API_KEYS" in warnings[0].getMessage()
