"""Suites: the YAML data file ``steerboard run`` reads, parsed and validated without loading any model.

A suite is a YAML data file (``steerboard/suites/<name>.yaml`` or any path)::

    name: quick
    model: smollm2-135m
    max_connections: 32
    methods:
      - {name: base}
      - {name: sae, args: {preset: smollm2-135m}, sweep: {strength: [0, 4, 8]}}   # one run per value
    tasks:
      - {name: xstest, limit: 40, args: {subset: all}, config: {max_tokens: 64}}
      - {name: safeedit, limit: 10, args: {protocol: per_instance}, methods: [dinm]}  # only these methods
    generate: {temperature: 0}                  # optional: GenerateConfig keys for every task
    model_roles: {grader: openai/gpt-4o-mini}   # optional: Inspect model roles (the ``model`` judges' grader)
    resources: {num_cpus: 2, memory: 8GiB}      # optional, Ray executor only (also per method entry); see
                                                # steerboard.resources; the local executor ignores it

Strength sweeps (``sweep``) expand into one method configuration per value; the leaderboard draws them as
curves. :func:`generate_config` is the one place a pair's generation settings are merged (the suite's
``generate``, the task's ``config``, the command line's overrides): the eval, the validation, the time estimate
and the Ray memory estimate all read what it returns.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import importlib
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SUITE_KEYS = {
    "name", "description", "model", "max_connections", "methods", "tasks", "generate", "model_roles", "resources"
}
METHOD_KEYS = {"name", "args", "sweep", "tasks", "resources"}
TASK_KEYS = {"name", "limit", "args", "config", "methods", "exclude_methods"}


@dataclass
class MethodRun:
    """One method configuration (after sweep expansion)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None  # only these tasks (None: all)
    resources: dict[str, float] = field(default_factory=dict)  # the method entry's ``resources:`` (Ray only)

    @property
    def slug(self) -> str:
        digest = hashlib.sha256(json.dumps(self.args, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}" if self.args else self.name


@dataclass
class TaskRun:
    """One task with its limit, task args and generate config."""

    name: str
    limit: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    methods: list[str] | None = None
    exclude_methods: list[str] = field(default_factory=list)

    def applies_to(self, method: str) -> bool:
        if method in self.exclude_methods:
            return False
        return self.methods is None or method in self.methods


@dataclass
class Suite:
    """A parsed, validated suite."""

    name: str
    model: str
    methods: list[MethodRun]
    tasks: list[TaskRun]
    max_connections: int = 32
    description: str = ""
    generate: dict[str, Any] = field(default_factory=dict)
    model_roles: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)  # the suite's ``resources:`` (Ray only)

    def runs(self) -> list[tuple[MethodRun, TaskRun]]:
        return [
            (m, t) for m in self.methods for t in self.tasks
            if t.applies_to(m.name) and (m.tasks is None or t.name in m.tasks)
        ]


def suite_path(name_or_path: str) -> Path:
    """A suite file by name (``quick``, ``full``) or path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"suite file {name_or_path} does not exist")
        return p
    shipped = Path(str(resources.files("steerboard"))) / "suites"
    cand = shipped / f"{name_or_path}.yaml"
    if not cand.is_file():
        names = sorted(x.stem for x in shipped.glob("*.yaml"))
        raise ValueError(f"unknown suite {name_or_path!r}; shipped suites: {', '.join(names)} (or give a .yaml path)")
    return cand


def _expand_sweep(
    name: str, args: dict[str, Any], sweep: dict[str, Any], tasks: list[str] | None = None,
    resources: dict[str, float] | None = None,
) -> list[MethodRun]:
    if not sweep:
        return [MethodRun(name, dict(args), tasks, dict(resources or {}))]
    keys = list(sweep)
    values = []
    for k in keys:
        v = sweep[k]
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",") if x.strip()]
        if not isinstance(v, list) or not v:
            raise ValueError(f"method {name}: sweep.{k} must be a non-empty list, got {v!r}")
        values.append(v)
    runs = []
    for combo in itertools.product(*values):
        a = dict(args)
        a.update(dict(zip(keys, combo)))
        runs.append(MethodRun(name, a, tasks, dict(resources or {})))
    return runs


def _entry(item: str | dict[str, Any], valid: set[str], where: str) -> dict[str, Any]:
    """A suite's method or task entry as a mapping (a bare string is its name); unknown keys are an error."""
    item = {"name": item} if isinstance(item, str) else item
    bad = set(item) - valid
    if bad:
        raise ValueError(f"{where}: unknown key(s) {sorted(bad)}; valid: {sorted(valid)}")
    return item


def parse_suite(data: dict[str, Any], source: str = "suite") -> Suite:
    """Validate a suite dict (from YAML) without loading any model.

    Raises:
        ValueError: unknown keys, unknown methods or tasks, bad limits -- naming what is valid.
    """
    from steerboard.methods.registry import method_entry_points, unknown_method_message

    if not isinstance(data, dict):
        raise ValueError(f"{source}: a suite is a mapping with keys {sorted(SUITE_KEYS)}")
    bad = set(data) - SUITE_KEYS
    if bad:
        raise ValueError(f"{source}: unknown suite key(s) {sorted(bad)}; valid: {sorted(SUITE_KEYS)}")
    from steerboard.resources import check_resources

    suite_resources = check_resources(data.get("resources"), source)
    known_methods = method_entry_points()
    methods: list[MethodRun] = []
    for i, m in enumerate(data.get("methods") or []):
        m = _entry(m, METHOD_KEYS, f"{source}: methods[{i}]")
        if m.get("name") not in known_methods:
            raise ValueError(f"{source}: methods[{i}]: {unknown_method_message(str(m.get('name')))}")
        only = m.get("tasks")
        if only is not None:
            for t in only:
                resolve_task(t)
        res = check_resources(m.get("resources"), f"{source}: methods[{i}] ({m['name']})")
        methods.extend(_expand_sweep(m["name"], m.get("args") or {}, m.get("sweep") or {}, only, res))
    if not methods:
        raise ValueError(f"{source}: no methods")
    tasks: list[TaskRun] = []
    for i, t in enumerate(data.get("tasks") or []):
        t = _entry(t, TASK_KEYS, f"{source}: tasks[{i}]")
        resolve_task(t.get("name", ""))  # raises listing the valid names
        limit = t.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{source}: tasks[{i}] ({t['name']}): limit must be a positive integer, got {limit!r}")
        tasks.append(
            TaskRun(
                name=t["name"], limit=limit, args=dict(t.get("args") or {}), config=dict(t.get("config") or {}),
                methods=t.get("methods"), exclude_methods=list(t.get("exclude_methods") or []),
            )
        )
    if not tasks:
        raise ValueError(f"{source}: no tasks")
    return Suite(
        name=str(data.get("name", source)),
        model=str(data.get("model", "smollm2-135m")),
        methods=methods,
        tasks=tasks,
        max_connections=_max_connections(data.get("max_connections", 32), source),
        description=str(data.get("description", "")),
        generate=dict(data.get("generate") or {}),
        model_roles={str(k): str(v) for k, v in (data.get("model_roles") or {}).items()},
        resources=suite_resources,
    )


def _max_connections(value: Any, source: str) -> int:
    """A suite's ``max_connections``: an integer >= 1 (Inspect's concurrent samples per pair)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source}: max_connections must be an integer >= 1 (concurrent samples per pair); got {value!r}")
    return value


def read_suite_yaml(path: Path) -> Any:
    """A suite file's YAML data.

    Raises:
        ValueError: a YAML syntax error, as one line naming the file, line and column.
    """
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as ex:
        mark = ex.problem_mark or ex.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(x) for x in (ex.context, ex.problem) if x)
        raise ValueError(f"suite file {where}: YAML syntax error: {what or ex}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as ex:
        raise ValueError(f"suite file {path}: not valid YAML: {str(ex).splitlines()[0]}") from None


def load_suite(name_or_path: str) -> Suite:
    path = suite_path(name_or_path)
    return parse_suite(read_suite_yaml(path), source=str(path.name))


def replace_methods(data: dict[str, Any], methods: list[dict[str, Any]]) -> dict[str, Any]:
    """A suite dict (from YAML) with its methods replaced: ``steerboard run --suite NAME --method M [-M ...]``.

    The suite's tasks stay as they are, including tasks restricted to named methods (which then apply
    only if a given method has that name).
    """
    if not isinstance(data, dict):
        raise ValueError(f"a suite is a mapping with keys {sorted(SUITE_KEYS)}")
    return {**data, "methods": methods}


def set_task_args(suite: Suite, items: dict[str, Any]) -> None:
    """Apply ``-T TASK.KEY=VALUE`` options to the suite's tasks named TASK (in place).

    Raises:
        ValueError: a key without ``TASK.`` or a task the suite does not run (naming the suite's tasks).
    """
    names = sorted({t.name for t in suite.tasks})
    for key, value in items.items():
        task, dot, opt = key.partition(".")
        if not dot or not opt:
            raise ValueError(f"-T {key}=...: with --suite, task options are TASK.KEY=VALUE (tasks: {', '.join(names)})")
        if task not in names:
            raise ValueError(f"-T {key}=...: the suite runs no task {task!r}; its tasks: {', '.join(names)}")
        for t in suite.tasks:
            if t.name == task:
                t.args[opt] = value


def gated_task_note(task: TaskRun) -> str | None:
    """Why a task cannot run here (its data is gated and not given), or None when it can.

    The gated tasks and how to give their data are listed once, in
    :data:`steerboard.tasks.listing.GATED_TASKS`.
    """
    from steerboard.tasks.listing import GATED_TASKS

    if task.name not in GATED_TASKS or task.args.get("data_file"):
        return None
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return None
    return (
        f"skipped {task.name}: {GATED_TASKS[task.name]}; it is optional: `steerboard submit check` passes "
        "without it (with a note) and the leaderboard lists the submission without it"
    )


def drop_gated_tasks(suite: Suite) -> list[str]:
    """Remove the suite's tasks whose gated data is not available (in place); returns one note per task."""
    notes: list[str] = []
    kept: list[TaskRun] = []
    for t in suite.tasks:
        note = gated_task_note(t)
        if note is None:
            kept.append(t)
        elif note not in notes:
            notes.append(note)
    suite.tasks = kept
    return notes


TASK_NAMES = (
    "xstest", "phtest", "wildguard", "jbb_refusal", "crescendo", "safeedit", "mmlu", "truthfulqa", "gsm8k",
    "side_effects",
)


def resolve_task(name: str) -> Any:
    """The ``@task`` function ``steerboard.tasks.<name>.<name>``."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")
    module = importlib.import_module(f"steerboard.tasks.{name}")
    return getattr(module, name)


def build_task(task: TaskRun) -> Any:
    """Construct a task with its options, outside any eval's context.

    A fresh ``contextvars.Context``: an earlier ``eval_set`` in this process leaves Inspect's active model and
    model roles set in the caller's context, and a task reads them when it checks its grader role.
    """
    return contextvars.Context().run(resolve_task(task.name), **task.args)


def generate_config(
    suite_generate: Mapping[str, Any], task_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A pair's GenerateConfig keys: the suite's ``generate``, then the task's ``config``, then the command
    line's overrides (``--max-tokens``, ``--temperature``, ``--generate``), each over the one before.

    The only place these are merged: the eval, the validation, the time estimate and the Ray memory estimate
    all use it.
    """
    gen = copy.deepcopy(dict(suite_generate))
    gen.update(task_config)
    gen.update(overrides or {})
    return gen
