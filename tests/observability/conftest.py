from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.servers import CertificatePair, write_self_signed


@pytest.fixture
def anyio_backend() -> str:
    """These tests drive the grpclib edge and OpenTelemetry's asyncio context: asyncio only.

    Tests of backend-neutral code (the metrics endpoint) parametrize ``anyio_backend`` again.
    """
    return "asyncio"


@pytest.fixture
def certificate(tmp_path: Path) -> CertificatePair:
    return write_self_signed(tmp_path)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger (and the quieted library loggers) back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "hpack", "h2")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, previous in quieted.items():
        logging.getLogger(name).setLevel(previous)
