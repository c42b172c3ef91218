"""The marker lists in tests/conftest.py name tests that exist, so a renamed slow test cannot slip into
``make test-fast`` unnoticed, and the fast selection is what the Makefile runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import conftest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _test_functions(module: str) -> set[str]:
    tree = ast.parse((TESTS / f"{module}.py").read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_listed_module_and_test_exists() -> None:
    missing = []
    for module in conftest.SLOW_MODULES | conftest.NUMERICS_MODULES:
        if not (TESTS / f"{module}.py").is_file():
            missing.append(module)
    for name in conftest.SLOW_TESTS:
        module, _, function = name.partition("::")
        base = function.split("[", 1)[0]
        if not (TESTS / f"{module}.py").is_file() or base not in _test_functions(module):
            missing.append(name)
    assert missing == []


def test_make_test_fast_leaves_the_slow_tests_out() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test-fast:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe is not None, "Makefile has no test-fast target"
    assert '-m "not slow"' in recipe.group(1)
    assert re.search(r"^test:.*\n(?:\t.*\n)*\t.*-m pytest -q\n", makefile, flags=re.M)  # the whole suite, unfiltered
