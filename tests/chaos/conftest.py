"""Across the whole chaos suite, no provider key may reach a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from delos.runtime.observability import configure_logging
from delos.runtime.redaction import Redactor
from delos.testing.fakes import FAKE_KEYS


@pytest.fixture(autouse=True, scope="package")
def no_key_in_any_log_line() -> Iterator[None]:
    output = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("debug", "production", Redactor(FAKE_KEYS.values()), stream=output)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = output.getvalue()
    assert lines, "the suite logged nothing: the check would be empty"
    for key in FAKE_KEYS.values():
        assert key not in lines
