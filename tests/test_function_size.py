"""No function over :data:`LIMIT` lines in the package code (``steerboard/`` except the engine, ``methods/``,
``scorers/``, ``tasks/``, ``leaderboard/``), read with ``ast``: a function's lines run from its ``def`` to its last
line (docstring and nested functions included; a nested function is measured on its own as well)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("steerboard", "methods", "scorers", "tasks", "leaderboard")
LIMIT = 80


def _covered(path: Path) -> bool:
    """Package code under the limit: the engine (``steerboard/engine.py``, ``steerboard/engine/``) has its own."""
    rel = path.relative_to(ROOT).as_posix()
    return not rel.startswith("steerboard/engine")


def long_functions(path: Path, limit: int = LIMIT) -> list[str]:
    """``name (lines, line N)`` of every function or method in the file longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
    ]


def test_no_function_over_the_limit():
    long = [
        f"{path.relative_to(ROOT)}: {f}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if _covered(path)
        for f in long_functions(path)
    ]
    assert not long, f"functions over {LIMIT} lines (split them into well-named helpers):\n" + "\n".join(long)


def test_the_size_check_measures_nested_and_async_functions(tmp_path):
    src = tmp_path / "m.py"
    body = "        x = 1\n" * 4
    src.write_text(f"def outer():\n    async def inner():\n{body}    return inner\n\n\ndef small():\n    pass\n")
    assert long_functions(src, 4) == ["outer (7 lines, line 1)", "inner (5 lines, line 2)"]
    assert long_functions(src, 7) == []
    assert not _covered(ROOT / "steerboard" / "engine" / "core.py") and not _covered(ROOT / "steerboard" / "engine.py")
    assert _covered(ROOT / "steerboard" / "runner" / "plan.py") and _covered(ROOT / "methods" / "dinm.py")
