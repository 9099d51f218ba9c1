"""Every package re-exports its public names with a sorted ``__all__`` that matches reality."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "delos",
    "delos.runtime",
    "delos.runtime.wire",
    "delos.runtime.catalog",
    "delos.runtime.routing",
    "delos.runtime.providers",
    "delos.resilience",
    "delos.testing",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n)) or exported == sorted(
        exported
    )
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute} is exported but missing"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_docstring_describes_its_layout(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) >= 2
