"""The ``delos-runtime`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from delos.runtime import __version__
from delos.runtime.catalog import CatalogError
from delos.runtime.config import ConfigError, Settings
from delos.runtime.prompts import PromptFileError
from delos.runtime.server import serve_until_signalled

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delos-runtime", description="The Delos LLM gateway.")
    parser.add_argument("--version", action="version", version=f"delos-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the gRPC API")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also start built-in fake providers on loopback and use them",
    )
    serve.add_argument("--host", help="listen address (default: DELOS_RUNTIME_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: DELOS_RUNTIME_PORT or 9001)")
    return parser


async def _serve(settings: Settings, demo: bool) -> None:
    if not demo:
        await serve_until_signalled(settings)
        return
    from delos.testing.demo import open_demo_providers

    async with open_demo_providers(settings) as (demo_settings, _controls):
        await serve_until_signalled(demo_settings)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    environ = dict(os.environ)
    if arguments.host:
        environ["DELOS_RUNTIME_HOST"] = arguments.host
    if arguments.port is not None:
        environ["DELOS_RUNTIME_PORT"] = str(arguments.port)
    try:
        settings = Settings.from_environ(environ)
    except ConfigError as error:
        print(f"delos-runtime: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        backend_options = {"use_uvloop": True} if _has_uvloop() else {}
        anyio.run(
            _serve, settings, arguments.demo, backend="asyncio", backend_options=backend_options
        )
    except (CatalogError, PromptFileError) as error:
        print(f"delos-runtime: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
