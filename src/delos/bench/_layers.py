"""Which layer of the stack a profiled frame runs in, from its file's path.

The layers are what a change to the hot path would target: the gRPC server stack, the HTTP
client, each of the gateway's own subpackages, the async frameworks, protobuf, and the rest.
Installed packages are recognised by the directory under ``site-packages``; the gateway's own
code also from a source checkout (``src/delos/...``); the standard library by ``lib/pythonX.Y``
or, in a path already shortened to its package (``json/decoder.py``), by the interpreter's list
of its modules.
"""

from __future__ import annotations

import re
import sys

__all__ = [
    "ANYIO",
    "ASYNCIO",
    "DELOS_GRPC",
    "DELOS_OTHER",
    "DELOS_PROVIDERS",
    "DELOS_RESILIENCE",
    "DELOS_ROUTING",
    "GRPC_STACK",
    "HTTP_CLIENT",
    "LAYERS",
    "OTHER",
    "PROTOBUF",
    "STDLIB",
    "frame_path",
    "layer_of",
]

GRPC_STACK = "grpclib + h2 + hpack + hyperframe"
HTTP_CLIENT = "HTTP client (the gateway's `_h1.py` and httptools; aiohttp, httpx, httpcore)"
DELOS_GRPC = "delos/runtime/grpc"
DELOS_ROUTING = "delos/runtime/routing"
DELOS_PROVIDERS = "delos/runtime/providers"
DELOS_RESILIENCE = "delos/resilience"
DELOS_OTHER = "delos, other"
ANYIO = "anyio"
ASYNCIO = "asyncio (and uvloop)"
PROTOBUF = "protobuf"
STDLIB = "standard library, other"
OTHER = "other: third-party packages, generated code (`<string>`)"

#: Every layer, in the order tables list them.
LAYERS = (
    GRPC_STACK,
    HTTP_CLIENT,
    DELOS_GRPC,
    DELOS_ROUTING,
    DELOS_PROVIDERS,
    DELOS_RESILIENCE,
    DELOS_OTHER,
    ANYIO,
    ASYNCIO,
    PROTOBUF,
    STDLIB,
    OTHER,
)

_PACKAGES = {
    **dict.fromkeys(("grpclib", "h2", "hpack", "hyperframe"), GRPC_STACK),
    **dict.fromkeys(
        (
            "httptools",
            "aiohttp",
            "httpx",
            "httpcore",
            "h11",
            "yarl",
            "multidict",
            "propcache",
            "aiohappyeyeballs",
            "frozenlist",
            "aiosignal",
        ),
        HTTP_CLIENT,
    ),
    **dict.fromkeys(("anyio", "sniffio"), ANYIO),
    "uvloop": ASYNCIO,
}
_DELOS = (
    ("runtime/providers/_h1.py", HTTP_CLIENT),
    ("runtime/grpc/", DELOS_GRPC),
    ("runtime/routing/", DELOS_ROUTING),
    ("runtime/providers/", DELOS_PROVIDERS),
    ("resilience/", DELOS_RESILIENCE),
)
_INSTALLED = re.compile(r"/(?:site|dist)-packages/")
_STANDARD_LIBRARY = re.compile(r"/lib/python3\.\d+/")
_FRAME = re.compile(r"^.*? \((.*?)(?::\d+)?\)$")


def frame_path(frame: str) -> str:
    """The file of a py-spy frame ``function (path:line)``; "" when it names none."""
    found = _FRAME.match(frame.strip())
    return found.group(1) if found else ""


def _delos_layer(inside: str) -> str:
    for prefix, layer in _DELOS:
        if inside.startswith(prefix):
            return layer
    return DELOS_OTHER


def layer_of(path: str) -> str:
    """The layer (one of :data:`LAYERS`) of code in the file at ``path``."""
    if path.startswith("<frozen "):
        return STDLIB
    installed = _INSTALLED.search(path)
    standard = _STANDARD_LIBRARY.search(path)
    checkout = path.rfind("/delos/")
    if installed:
        inside = path[installed.end() :]
    elif checkout >= 0:
        inside = path[checkout + 1 :]
    elif standard:
        inside = path[standard.end() :]
    else:
        inside = path  # already short, or not a file at all (``<string>``)
    top = inside.split("/", 1)[0]
    if top == "delos":
        return _delos_layer(inside.removeprefix("delos/"))
    if inside.startswith("google/protobuf/"):
        return PROTOBUF
    if top in _PACKAGES:
        return _PACKAGES[top]
    if top == "asyncio":
        return ASYNCIO
    if not installed and top.removesuffix(".py") in sys.stdlib_module_names:
        return STDLIB
    return OTHER
