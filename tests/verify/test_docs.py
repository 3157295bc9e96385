"""The usage examples in the verifier's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["text", "expr", "extract", "answer", "compare", "core", "api", "pool"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, warm_pool):
    module = importlib.import_module(f"mathse_rl.verify.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} shows no example"
    assert result.failed == 0
