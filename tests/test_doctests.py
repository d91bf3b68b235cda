"""The examples in the library's docstrings run and print what they say (``>>>`` blocks)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import anovae

MODULES = sorted(m.name for m in pkgutil.walk_packages(anovae.__path__, "anovae.")
                 if not m.name.startswith(("anovae.bench", "anovae.__main__")))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
