"""Every public package and module says what it exports: a sorted ``__all__`` of names it has.

One rule for the whole of ``src/delos`` (the generated ``delos.runtime.v1`` aside):

- every public package and public module (no ``_`` in its dotted path) defines ``__all__``;
- ``__all__`` is in ruff's RUF022 order: CONSTANTS, then Classes, then everything else, each
  group in natural order (``v2`` before ``v10``), so ``ruff check --fix`` and this test agree;
- every name in ``__all__`` exists, and none is listed twice.

Private modules may define ``__all__`` too (for their siblings); when they do, the same order
and existence checks apply.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

import delos

GENERATED = "delos.runtime.v1"

#: Packages that break the rule while their owners rework them. Strict: once fixed, the xfail
#: turns into a failure, so the entry must be removed here.
PENDING: dict[str, str] = {}


def _walk() -> list[tuple[str, bool]]:
    found = [("delos", True)]
    for info in pkgutil.walk_packages(delos.__path__, "delos."):
        if info.name == GENERATED or info.name.startswith(GENERATED + "."):
            continue
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # running it is its whole job
        found.append((info.name, info.ispkg))
    return found


MODULES = _walk()
PACKAGES = [name for name, is_package in MODULES if is_package]


def _is_public(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def _params(names: list[str]) -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=PENDING[name], strict=True))
        if name in PENDING
        else name
        for name in names
    ]


def ruff_order(name: str) -> tuple[int, list[int | str]]:
    """The sort key of ruff's RUF022 ("isort-style") for one ``__all__`` entry."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_the_walk_finds_every_package() -> None:
    assert {"delos", "delos.resilience", "delos.runtime.wire", "delos.testing"} <= set(PACKAGES)
    assert GENERATED not in PACKAGES


def test_ruff_order_puts_constants_then_classes_then_the_rest_naturally() -> None:
    names = ["race", "RESET", "Behaviour", "v10", "HANG_UP", "v2", "T"]
    expected = ["HANG_UP", "RESET", "Behaviour", "T", "race", "v2", "v10"]
    assert sorted(names, key=ruff_order) == expected


@pytest.mark.parametrize("name", _params([n for n, _ in MODULES if _is_public(n)]))
def test_every_public_package_and_module_defines_all(name: str) -> None:
    assert hasattr(_import(name), "__all__"), f"{name} has no __all__"


@pytest.mark.parametrize("name", [n for n, _ in MODULES])
def test_all_is_sorted_unique_and_every_name_exists(name: str) -> None:
    module = _import(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return  # a private module without __all__; the public ones are checked above
    exported = list(exported)
    assert exported == sorted(exported, key=ruff_order), f"{name}.__all__ is not in RUF022 order"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [attribute for attribute in exported if not hasattr(module, attribute)]
    assert not missing, f"{name}.__all__ lists missing names: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_docstring_describes_its_layout(name: str) -> None:
    doc = _import(name).__doc__
    assert doc and "Layout" in doc and len(doc.strip().splitlines()) >= 2
