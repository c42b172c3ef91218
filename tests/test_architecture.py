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

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"steerboard": "steerboard", "tasks": "steerboard.tasks", "methods": "steerboard.methods",
           "scorers": "steerboard.scorers", "leaderboard": "steerboard.leaderboard"}
SUBPACKAGES = ("tasks", "methods", "scorers", "leaderboard")

APP_MODULES = {"steerboard.runner", "steerboard.resources", "steerboard._registry"}
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


def module_edges(in_layer: str) -> dict[tuple[str, str], list[str]]:
    """``{(module, imported module): ["file:line", ...]}`` between distinct modules of one layer."""
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, (path, is_pkg) in modules.items():
        if layer(module) != in_layer:
            continue
        for target, line in _imports(module, path, is_pkg):
            if target not in modules:  # `from module import name`
                target = target.rsplit(".", 1)[0]
            if target in modules and target != module and layer(target) == in_layer:
                edges[(module, target)].append(f"{path.relative_to(ROOT)}:{line}")
    return dict(edges)


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
    assert layer("steerboard.engine") == "core" and layer("steerboard.runner.plan") == "app"
    assert layer("steerboard.methods.sae_cli") == "cli" and layer("steerboard.tasks.mmlu") == "tasks"


def test_no_import_cycle_between_packages():
    edges = layer_edges()
    cycle = find_cycle(edges)
    detail = [f"  {a} -> {b}: {'; '.join(edges[(a, b)][:3])}" for a, b in zip(cycle or [], (cycle or [])[1:])]
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or []) + "\n" + "\n".join(detail)


def test_no_import_cycle_between_the_app_modules():
    # the suite runner's modules import in one direction (suite <- plan <- pair <- local, ray_executor <- executor),
    # and the package __init__ that re-exports them is imported by none of them
    edges = module_edges("app")
    assert ("steerboard.runner.local", "steerboard.runner.pair") in edges  # the graph sees the runner's imports
    assert ("steerboard.runner.ray_executor", "steerboard.runner.pair") in edges  # the worker's, function-local
    cycle = find_cycle(edges)
    detail = [f"  {a} -> {b}: {'; '.join(edges[(a, b)][:3])}" for a, b in zip(cycle or [], (cycle or [])[1:])]
    assert cycle is None, "import cycle between app modules: " + " -> ".join(cycle or []) + "\n" + "\n".join(detail)


def test_imports_follow_the_layering():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [line for (a, b), lines in sorted(layer_edges().items()) if rank[b] > rank[a] for line in lines]
    assert not upward, f"imports from a lower layer into a higher one ({' < '.join(LAYERS)}):\n" + "\n".join(upward)


def test_the_checks_see_function_local_imports_and_cycles():
    # the cycles were function-local imports: the walk must see those
    imports = _imports("steerboard.x", ROOT / "steerboard" / "runner" / "plan.py", False)
    assert any(t.startswith("steerboard.methods.provider") for t, _ in imports)  # imported inside check_runs
    assert find_cycle({("core", "methods"): ["x"], ("methods", "core"): ["y"]}) == ["core", "methods", "core"]
    assert find_cycle({("core", "methods"): ["x"], ("methods", "scorers"): ["y"]}) is None


def test_type_checking_imports_are_left_out_of_the_layering(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nimport typing\n"
        "if TYPE_CHECKING:\n    from steerboard.runner import Suite\nelse:\n    import steerboard.engine\n"
        "if typing.TYPE_CHECKING:\n    import steerboard.resources\n"
        "def f():\n    from steerboard.tasks import mmlu\n"
    )
    targets = {t for t, _ in _imports("steerboard.methods.m", src, False)}
    assert "steerboard.engine" in targets and "steerboard.tasks.mmlu" in targets
    assert "steerboard.runner" not in targets and "steerboard.resources" not in targets


_PRIVATE = re.compile(r"^inspect_ai(\.\w+)*\._\w*")


def package_hits(check, skip) -> list[str]:
    """``file:hit`` for every hit of ``check(path)`` over the package folders' files that ``skip`` lets through."""
    return [
        f"{path.relative_to(ROOT)}:{h}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not skip(path)
        for h in check(path)
    ]


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


ENGINE_PACKAGE = ROOT / "steerboard" / "engine"
_ENGINE_HOLDERS = {"engine", "eng", "_engine", "Engine"}
"""Names under which package code holds an engine (``engine._x``, ``self.engine._x``, ``Engine._x``)."""


def engine_private_uses(path: Path) -> list[str]:
    """``line: expression`` of every ``_private`` attribute (dunders aside) read from an engine in the file."""
    hits: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        holder = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        if holder in _ENGINE_HOLDERS:
            hits.append((node.lineno, f"{node.lineno}: {ast.unparse(node)}"))
    return [h for _, h in sorted(hits)]


PRIVATE_USE_CHECKS = {
    "inspect": (
        inspect_private_uses,
        lambda p: str(p.relative_to(ROOT)) in INSPECT_PRIVATE_ALLOWED,
        "private Inspect imports (use the public API, or steerboard/inspect_private.py)",
        "from inspect_ai.model._model import active_model\n"
        "import inspect_ai._util.error\n"
        "from inspect_ai.model import _model\n"
        "from inspect_ai.model import get_model, model_roles\n"
        "import importlib\nimportlib.import_module('inspect_ai.scorer._scorer')\n",
        ["1", "1", "2", "3", "6"],
    ),
    "engine": (
        engine_private_uses,
        lambda p: p.is_relative_to(ENGINE_PACKAGE),
        "Engine privates used outside steerboard/engine/ (add a public method)",
        "engine._pad_batch(seqs)\n"
        "eng._split_lm()[1]\n"
        "self.engine._run_lm(input_ids=ids)\n"
        "Engine._choose(logits, reqs, gens)\n"
        "engine.pad_batch(seqs)\nengine.__class__\nself._engine_ready\nother._x\n",
        ["1", "2", "3", "4"],
    ),
}
"""Per private API: its finder, the files allowed to use it, the failure message, a probe source, its hit lines."""


@pytest.mark.parametrize("kind", sorted(PRIVATE_USE_CHECKS))
def test_no_private_use_outside_its_module(kind):
    check, allowed, message, _, _ = PRIVATE_USE_CHECKS[kind]
    hits = package_hits(check, skip=allowed)
    assert not hits, f"{message}:\n" + "\n".join(hits)


@pytest.mark.parametrize("kind", sorted(PRIVATE_USE_CHECKS))
def test_the_private_use_check_finds_each_form(kind, tmp_path):
    check, _, _, source, expected = PRIVATE_USE_CHECKS[kind]
    src = tmp_path / "m.py"
    src.write_text(source)
    assert [h.split(":")[0] for h in check(src)] == expected


def test_the_one_allowed_module_has_private_inspect_imports():
    assert inspect_private_uses(ROOT / "steerboard" / "inspect_private.py")


def long_definitions(path: Path, kinds: tuple[type, ...], limit: int) -> list[str]:
    """``name (lines)`` of every definition of one of ``kinds`` in the file longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1})"  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, kinds) and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
    ]


def test_no_class_over_400_lines():
    long = [
        f"{path.relative_to(ROOT)}: {d}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for d in long_definitions(path, (ast.ClassDef,), 400)
    ]
    assert not long, "classes over 400 lines (split them by concern):\n" + "\n".join(long)


def test_the_length_check_measures_whole_definitions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("class Big:\n" + "    x = 1\n" * 5 + "\n\nclass Small:\n    y = 2\n")
    assert long_definitions(src, (ast.ClassDef,), 5) == ["Big (6)"]
    assert long_definitions(src, (ast.ClassDef,), 6) == []


# ---------------------------------------------------------------------- training apart from inference
TRAINING_PACKAGES = ("steerboard.methods.training", "steerboard.scorers.training")
"""The modules that fit, train and select (docs/architecture.md): they write the artifacts the runtime loads."""

TRAINING_IMPORTS_ALLOWED = {
    ("steerboard.methods.steering", "load_or_fit_probe.fit"):
        "the gate probe for a (model, layer, pooling) that has no shipped or cached probe is fitted on first use",
    ("steerboard.methods.prompt_gate", "load_or_fit_classifier.fit"):
        "the prompt-text gate classifier for fit data with no shipped or cached classifier is fitted on first use",
    ("steerboard.methods.dpo", "AdapterMethod.prepare"):
        "an adapter for options that no shipped or cached adapter matches is trained on first use",
    ("steerboard.methods.steering", "__getattr__"): "old import path of the gate fitting names (lazy forward)",
    ("steerboard.methods.sae", "__getattr__"): "old import path of the SAE training names (lazy forward)",
    ("steerboard.methods.dpo", "__getattr__"): "old import path of the adapter training names (lazy forward)",
    ("steerboard.methods.actadd", "__getattr__"): "old import path of fit_and_choose (lazy forward)",
    ("steerboard.methods.prompt_gate", "__getattr__"): "old import path of fit_classifier (lazy forward)",
    ("steerboard.methods.sae", "__main__"): "`python -m steerboard.methods.sae max-activation`, a training command",
    ("steerboard.methods.dpo", "__main__"): "`python -m steerboard.methods.dpo train`, a training command",
}
"""``(runtime module, scope) -> why``: the only places a runtime module may import a training module. ``scope`` is
the enclosing function's qualified name, or ``__main__`` for an ``if __name__ == "__main__":`` block."""


def is_training(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in TRAINING_PACKAGES)


def _scoped_imports(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import of the file with its scope: the enclosing functions' qualified name (classes included),
    ``__main__`` inside ``if __name__ == "__main__":``, ``""`` at module level."""
    out: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def walk(node: ast.AST, scope: list[str], in_def: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, ".".join(scope) if in_def else ("__main__" if scope == ["__main__"] else "")))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(child, [s for s in scope if s != "__main__"] + [child.name], True)
            elif isinstance(child, ast.ClassDef):
                walk(child, scope + [child.name], in_def)
            elif (isinstance(child, ast.If) and isinstance(child.test, ast.Compare)
                  and isinstance(child.test.left, ast.Name) and child.test.left.id == "__name__"):
                walk(child, ["__main__"], False)
            else:
                walk(child, scope, in_def)

    walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), [], False)
    return out


def training_imports() -> list[tuple[str, str, str, int]]:
    """``(runtime module, scope, imported training module, line)`` for every import of a training module by a
    module that is neither training code nor a command-line module."""
    modules = _modules()
    hits = []
    for module, (path, is_pkg) in modules.items():
        if is_training(module) or layer(module) == "cli":
            continue
        for node, scope in _scoped_imports(path):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                target = (".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                          if node.level else (node.module or ""))
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            for t in dict.fromkeys(targets):
                if is_training(t):
                    hits.append((module, scope, t, node.lineno))
    return hits


def test_runtime_modules_import_no_training_module():
    hits = training_imports()
    bad = [f"{m} ({scope or 'module level'}, line {line}) -> {t}" for m, scope, t, line in hits
           if (m, scope) not in TRAINING_IMPORTS_ALLOWED]
    assert not bad, ("runtime modules importing training code (load a shipped artifact, or call training through "
                     "the method's one documented lazy entry point):\n" + "\n".join(bad))
    stale = set(TRAINING_IMPORTS_ALLOWED) - {(m, scope) for m, scope, _, _ in hits}
    assert not stale, f"allowed training imports that no longer occur (remove them): {sorted(stale)}"


def test_the_training_check_sees_scopes(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from steerboard.methods.training import gates\n"
        "class C:\n    def prepare(self):\n        def inner():\n            import steerboard.scorers.training\n"
        "if __name__ == '__main__':\n    from steerboard.methods.training.sae import discover\n"
    )
    scopes = [(scope, n.lineno) for n, scope in _scoped_imports(src)]
    assert scopes == [("", 1), ("C.prepare.inner", 5), ("__main__", 7)]
    assert is_training("steerboard.scorers.training") and is_training("steerboard.methods.training.gates")
    assert not is_training("steerboard.methods.steering") and not is_training("steerboard.scorers.trainingdata")
