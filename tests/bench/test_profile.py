"""Profiles grouped by layer: which layer a frame's file belongs to, and the tables."""

from __future__ import annotations

import pytest

from delos.bench._layers import (
    ANYIO,
    ASYNCIO,
    DELOS_GRPC,
    DELOS_OTHER,
    DELOS_PROVIDERS,
    DELOS_RESILIENCE,
    DELOS_ROUTING,
    GRPC_STACK,
    HTTP_CLIENT,
    LAYERS,
    OTHER,
    PROTOBUF,
    STDLIB,
    frame_path,
    layer_of,
)
from delos.bench._profile import layer_table, parse_collapsed

SITE = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages"
STDLIB_DIR = "/root/.pyenv/versions/3.11.7/lib/python3.11"


@pytest.mark.parametrize(
    ("path", "layer"),
    [
        (f"{SITE}/grpclib/server.py", GRPC_STACK),
        (f"{SITE}/h2/connection.py", GRPC_STACK),
        (f"{SITE}/hpack/hpack.py", GRPC_STACK),
        (f"{SITE}/hyperframe/frame.py", GRPC_STACK),
        (f"{SITE}/aiohttp/client.py", HTTP_CLIENT),
        (f"{SITE}/httpx/_client.py", HTTP_CLIENT),
        (f"{SITE}/httpcore/_async/connection_pool.py", HTTP_CLIENT),
        (f"{SITE}/yarl/_url.py", HTTP_CLIENT),
        (f"{SITE}/multidict/_multidict_py.py", HTTP_CLIENT),
        (f"{SITE}/httptools/parser/__init__.py", HTTP_CLIENT),
        ("/work/main/src/delos/runtime/providers/_h1.py", HTTP_CLIENT),
        ("/work/main/src/delos/runtime/grpc/service.py", DELOS_GRPC),
        ("/work/main/src/delos/runtime/routing/_router.py", DELOS_ROUTING),
        ("/work/main/src/delos/runtime/providers/openai.py", DELOS_PROVIDERS),
        ("/work/main/src/delos/resilience/breaker.py", DELOS_RESILIENCE),
        ("/work/main/src/delos/runtime/config.py", DELOS_OTHER),
        (f"{SITE}/delos/runtime/routing/_router.py", DELOS_ROUTING),
        (f"{SITE}/anyio/_backends/_asyncio.py", ANYIO),
        (f"{STDLIB_DIR}/asyncio/events.py", ASYNCIO),
        (f"{SITE}/uvloop/__init__.py", ASYNCIO),
        (f"{SITE}/google/protobuf/message.py", PROTOBUF),
        (f"{STDLIB_DIR}/json/decoder.py", STDLIB),
        ("<frozen importlib._bootstrap>", STDLIB),
        (f"{SITE}/pydantic/main.py", OTHER),
        ("<string>", OTHER),
        ("grpclib/server.py", GRPC_STACK),
        ("asyncio/events.py", ASYNCIO),
        ("json/decoder.py", STDLIB),
        ("delos/resilience/breaker.py", DELOS_RESILIENCE),
    ],
)
def test_a_file_belongs_to_its_layer(path: str, layer: str) -> None:
    assert layer_of(path) == layer
    assert layer in LAYERS


def test_the_file_of_a_frame_is_read_without_its_line_number() -> None:
    assert frame_path("send (/x/grpclib/server.py:10)") == "/x/grpclib/server.py"
    assert frame_path("<module> (<string>:4)") == "<string>"
    assert frame_path("no file here") == ""


def test_functions_are_named_with_their_file_from_the_package_on() -> None:
    collapsed = (
        f"run ({STDLIB_DIR}/asyncio/events.py:80);send ({SITE}/grpclib/protocol.py:5) 3\n"
        "run (/work/main/src/delos/runtime/grpc/service.py:9) 1\n"
    )
    assert set(parse_collapsed(collapsed).self_samples) == {
        "send (grpclib/protocol.py)",
        "run (delos/runtime/grpc/service.py)",
    }
    assert "run (asyncio/events.py)" in parse_collapsed(collapsed).total_samples


def test_self_time_is_grouped_by_the_layer_of_the_running_frame() -> None:
    collapsed = (
        f"run ({STDLIB_DIR}/asyncio/events.py:80);"
        f"handle ({SITE}/grpclib/server.py:10);"
        f"send ({SITE}/aiohttp/client.py:5) 30\n"
        f"run ({STDLIB_DIR}/asyncio/events.py:80);"
        f"complete (/src/delos/runtime/routing/_router.py:12) 10\n"
    )
    profile = parse_collapsed(collapsed)
    assert profile.layer_samples == {HTTP_CLIENT: 30, DELOS_ROUTING: 10}
    table = layer_table(profile, cpu_per_unit_us=200.0, unit="request", title="t")
    rows = {row[0]: row[1:] for row in table.rows}
    assert [row[0] for row in table.rows] == list(LAYERS)
    assert rows[HTTP_CLIENT] == ("75.0%", "150.0")
    assert rows[DELOS_ROUTING] == ("25.0%", "50.0")
    assert rows[GRPC_STACK] == ("0.0%", "0.0")
