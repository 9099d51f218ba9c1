"""The ``delos-runtime`` command: above both the gateway and the demo providers it can start."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from delos.runtime import __version__
from delos.runtime.catalog import Catalog, CatalogError
from delos.runtime.config import ConfigError, Settings
from delos.runtime.grpc.server import serve_until_signalled
from delos.runtime.grpc.workers import default_worker_count, run_workers
from delos.runtime.observability import configure_logging
from delos.runtime.prompts import DirectoryPromptStore, PromptFileError
from delos.runtime.redaction import Redactor
from delos.testing.demo import demo_providers_in_thread, open_demo_providers

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
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the port (SO_REUSEPORT); default: one per core",
    )
    return parser


async def _serve(settings: Settings, demo: bool) -> None:
    if not demo:
        await serve_until_signalled(settings)
        return
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
    configure_logging(settings.log_level, settings.env, Redactor(settings.secrets()))
    workers = arguments.workers if arguments.workers is not None else default_worker_count()
    if workers < 1:
        print("delos-runtime: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        # Fail fast, once, on a malformed catalog or prompt directory (before any worker starts).
        Catalog.load(settings.catalog_path)
        if settings.prompts_dir:
            DirectoryPromptStore(settings.prompts_dir)
    except (CatalogError, PromptFileError) as error:
        print(f"delos-runtime: {error}", file=sys.stderr)
        return 2
    if workers > 1:
        return _serve_workers(settings, arguments.demo, workers)
    backend_options = {"use_uvloop": True} if _has_uvloop() else {}
    try:
        anyio.run(
            _serve, settings, arguments.demo, backend="asyncio", backend_options=backend_options
        )
    except KeyboardInterrupt:
        pass
    return 0


def _serve_workers(settings: Settings, demo: bool, workers: int) -> int:
    if not demo:
        return run_workers(settings, workers)
    # The demo fakes live in this (supervising) process, shared by every worker.
    with demo_providers_in_thread(settings) as demo_settings:
        return run_workers(demo_settings, workers)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
