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
from delos.runtime.grpc.auth import ClientKeys
from delos.runtime.grpc.server import bind_grpc_port, listening_socket, serve_until_signalled
from delos.runtime.grpc.tls import server_ssl_context
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
        # Fail fast, once (before any worker starts), on anything that would stop start-up.
        _check_startup(settings, workers)
    except ConfigError as error:
        print(f"delos-runtime: {error}", file=sys.stderr)
        return 2
    if workers > 1:
        try:
            return _serve_workers(settings, arguments.demo, workers)
        except ConfigError as error:  # the metrics port, taken since the check
            print(f"delos-runtime: {error}", file=sys.stderr)
            return 2
    backend_options = {"use_uvloop": True} if _has_uvloop() else {}
    try:
        anyio.run(
            _serve, settings, arguments.demo, backend="asyncio", backend_options=backend_options
        )
    except KeyboardInterrupt:
        pass
    except BaseException as error:
        # Start-up checks raced (a port taken since): one line, no traceback.
        problem = _config_error_in(error)
        if problem is None:
            raise
        print(f"delos-runtime: {problem}", file=sys.stderr)
        return 2
    return 0


def _check_startup(settings: Settings, workers: int) -> None:
    """Raise :class:`ConfigError` naming the variable at fault for anything that would stop
    a worker's start: client keys, TLS files, catalog, prompts, the gRPC and metrics ports."""
    ClientKeys.from_settings(settings.api_keys, settings.api_keys_file)
    server_ssl_context(settings.tls_cert, settings.tls_key)
    try:
        Catalog.load(settings.catalog_path)
    except CatalogError as error:
        prefix = "DELOS_RUNTIME_CATALOG: " if settings.catalog_path else ""
        raise ConfigError(f"{prefix}{error}") from None
    if settings.prompts_dir:
        try:
            DirectoryPromptStore(settings.prompts_dir)
        except PromptFileError as error:
            raise ConfigError(f"DELOS_RUNTIME_PROMPTS_DIR: {error}") from None
    bind_grpc_port(settings, reuse_port=workers > 1).close()
    if settings.metrics_port:  # one endpoint, whatever the number of workers
        try:
            listening_socket(settings.host, settings.metrics_port).close()
        except OSError as error:
            raise ConfigError(
                f"DELOS_RUNTIME_METRICS_PORT: cannot listen on {settings.host}:"
                f"{settings.metrics_port} ({error.strerror or error}); stop what holds it, "
                "choose another port, or set 0 to turn metrics off"
            ) from None


def _config_error_in(error: BaseException) -> ConfigError | None:
    """The configuration error behind ``error``, also inside exception groups."""
    if isinstance(error, ConfigError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _config_error_in(inner)
            if found is not None:
                return found
    return None


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
