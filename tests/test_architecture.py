"""The package's layering (docs/architecture.md) and its boundary with Inspect, read from the source.

Every ``.py`` file of ``steerboard``, ``tasks``, ``methods``, ``scorers`` and ``leaderboard`` is parsed with
``ast``; every import that can run counts, the function-local ones included. Imports under
``if TYPE_CHECKING:`` never run and are left out of the layering (never out of the private-Inspect check).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"steerboard": "steerboard", "tasks": "steerboard.tasks", "methods": "steerboard.methods",
           "scorers": "steerboard.scorers", "leaderboard": "steerboard.leaderboard"}
SUBPACKAGES = ("tasks", "methods", "scorers", "leaderboard")

APP_MODULES = {"steerboard.run", "steerboard.executors", "steerboard.resources", "steerboard._registry"}
"""steerboard's application modules: they run methods on tasks (suites, executors, memory estimates, Inspect's
task registry), so they sit above both."""

LAYERS = ("core", "scorers", "methods", "tasks", "app", "leaderboard", "cli")
"""Lowest first: a module may import its own layer and the layers before it (docs/architecture.md)."""

INSPECT_PRIVATE_ALLOWED = {"steerboard/inspect_private.py"}


def layer(module: str) -> str:
    """The layer of a ``steerboard...`` module name."""
    parts = module.split(".")
    if parts[-1] == "cli" or parts[-1].endswith("_cli"):
        return "cli"
    if module in APP_MODULES or any(module.startswith(m + ".") for m in APP_MODULES):
        return "app"
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "core"


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{module name: (file, is a package __init__)}`` of every package file."""
    out: dict[str, tuple[Path, bool]] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            is_pkg = rel[-1] == "__init__"
            out[".".join((package, *(rel[:-1] if is_pkg else rel)))] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` runs)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))
    return out


def _imports(module: str, path: Path, is_pkg: bool) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every import in the file that can run, relative imports resolved;
    ``from X import name`` yields ``X.name`` too (``name`` may be a submodule)."""
    out: list[tuple[str, int]] = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return out


def layer_edges() -> dict[tuple[str, str], list[str]]:
    """``{(importing layer, imported layer): ["file:line module -> target", ...]}`` across layers."""
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, (path, is_pkg) in modules.items():
        for target, line in _imports(module, path, is_pkg):
            if target.split(".")[0] != "steerboard" or target == "steerboard":
                continue
            if target not in modules:  # `from pkg import name`: name is not a module
                target = target.rsplit(".", 1)[0]
            if target not in modules or target == "steerboard":
                continue
            a, b = layer(module), layer(target)
            if a != b:
                edges[(a, b)].append(f"{path.relative_to(ROOT)}:{line} {module} -> {target}")
    return {k: list(dict.fromkeys(v)) for k, v in edges.items()}


def find_cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    """One cycle of the layer graph (``[a, b, ..., a]``), or None."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_layers_cover_every_module():
    assert {layer(m) for m in _modules()} == set(LAYERS)
    assert layer("steerboard.engine") == "core" and layer("steerboard.run") == "app"
    assert layer("steerboard.methods.sae_cli") == "cli" and layer("steerboard.tasks.mmlu") == "tasks"


def test_no_import_cycle_between_packages():
    edges = layer_edges()
    cycle = find_cycle(edges)
    detail = [f"  {a} -> {b}: {'; '.join(edges[(a, b)][:3])}" for a, b in zip(cycle or [], (cycle or [])[1:])]
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or []) + "\n" + "\n".join(detail)


def test_imports_follow_the_layering():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [line for (a, b), lines in sorted(layer_edges().items()) if rank[b] > rank[a] for line in lines]
    assert not upward, f"imports from a lower layer into a higher one ({' < '.join(LAYERS)}):\n" + "\n".join(upward)


def test_the_checks_see_function_local_imports_and_cycles():
    # the cycles were function-local imports: the walk must see those
    imports = _imports("steerboard.x", ROOT / "steerboard" / "run.py", False)
    assert any(t.startswith("steerboard.methods.provider") for t, _ in imports)  # imported inside check_runs
    assert find_cycle({("core", "methods"): ["x"], ("methods", "core"): ["y"]}) == ["core", "methods", "core"]
    assert find_cycle({("core", "methods"): ["x"], ("methods", "scorers"): ["y"]}) is None


def test_type_checking_imports_are_left_out_of_the_layering(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nimport typing\n"
        "if TYPE_CHECKING:\n    from steerboard.run import Suite\nelse:\n    import steerboard.engine\n"
        "if typing.TYPE_CHECKING:\n    import steerboard.resources\n"
        "def f():\n    from steerboard.tasks import mmlu\n"
    )
    targets = {t for t, _ in _imports("steerboard.methods.m", src, False)}
    assert "steerboard.engine" in targets and "steerboard.tasks.mmlu" in targets
    assert "steerboard.run" not in targets and "steerboard.resources" not in targets


_PRIVATE = re.compile(r"^inspect_ai(\.\w+)*\._\w*")


def inspect_private_uses(path: Path) -> list[str]:
    """``line: name`` of every private Inspect name the file imports (``inspect_ai.<...>._x``, or ``_x`` from
    an ``inspect_ai`` module), also as a string (``importlib.import_module("inspect_ai._util")``)."""
    hits: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inspect_ai"):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"inspect_ai(\.\w+)+", node.value):
            names = [node.value]
        hits += [f"{node.lineno}: {n}" for n in names if _PRIVATE.match(n)]
    return sorted(set(hits))


def test_no_private_inspect_imports_outside_one_module():
    hits = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel not in INSPECT_PRIVATE_ALLOWED:
                hits += [f"{rel}:{h}" for h in inspect_private_uses(path)]
    assert not hits, "private Inspect imports (use the public API, or steerboard/inspect_private.py):\n" + "\n".join(hits)


def test_the_private_import_check_finds_each_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from inspect_ai.model._model import active_model\n"
        "import inspect_ai._util.error\n"
        "from inspect_ai.model import _model\n"
        "from inspect_ai.model import get_model, model_roles\n"
        "import importlib\nimportlib.import_module('inspect_ai.scorer._scorer')\n"
    )
    hits = inspect_private_uses(src)
    assert [h.split(":")[0] for h in hits] == ["1", "1", "2", "3", "6"], hits
    assert inspect_private_uses(ROOT / "steerboard" / "inspect_private.py")  # the one allowed module has them
