"""The observability package and the edge modules export what they say, sorted."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["delos.runtime.observability", "delos.runtime.grpc.auth", "delos.runtime.grpc.tls"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    # The project's order: constants first, then the rest (what ruff's RUF022 keeps).
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute} is exported but missing"


def test_the_package_re_exports_every_public_name_of_its_modules() -> None:
    package = importlib.import_module("delos.runtime.observability")
    for private in ("_metrics", "_logging", "_tracing"):
        module = importlib.import_module(f"delos.runtime.observability.{private}")
        assert set(module.__all__) <= set(package.__all__), private


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_describes_the_module(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) >= 2
