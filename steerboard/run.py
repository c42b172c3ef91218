"""``steerboard run``: suites of methods x tasks through Inspect's eval-set machinery.

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

Each (method config, task) pair is one Inspect ``eval_set`` call into its own log sub-folder, so an
interrupted run resumes and a re-run only runs what is missing (eval_set skips finished logs).
Strength sweeps (``sweep``) expand into one run per value; the leaderboard draws them as curves.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import itertools
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SUITE_KEYS = {"name", "description", "model", "max_connections", "methods", "tasks", "generate"}
METHOD_KEYS = {"name", "args", "sweep", "tasks"}
TASK_KEYS = {"name", "limit", "args", "config", "methods", "exclude_methods"}


@dataclass
class MethodRun:
    """One method configuration (after sweep expansion)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None  # only these tasks (None: all)

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
    name: str, args: dict[str, Any], sweep: dict[str, Any], tasks: list[str] | None = None
) -> list[MethodRun]:
    if not sweep:
        return [MethodRun(name, dict(args), tasks)]
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
        runs.append(MethodRun(name, a, tasks))
    return runs


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
    known_methods = method_entry_points()
    methods: list[MethodRun] = []
    for i, m in enumerate(data.get("methods") or []):
        m = {"name": m} if isinstance(m, str) else m
        bad = set(m) - METHOD_KEYS
        if bad:
            raise ValueError(f"{source}: methods[{i}]: unknown key(s) {sorted(bad)}; valid: {sorted(METHOD_KEYS)}")
        if m.get("name") not in known_methods:
            raise ValueError(f"{source}: methods[{i}]: {unknown_method_message(str(m.get('name')))}")
        only = m.get("tasks")
        if only is not None:
            for t in only:
                resolve_task(t)
        methods.extend(_expand_sweep(m["name"], m.get("args") or {}, m.get("sweep") or {}, only))
    if not methods:
        raise ValueError(f"{source}: no methods")
    tasks: list[TaskRun] = []
    for i, t in enumerate(data.get("tasks") or []):
        t = {"name": t} if isinstance(t, str) else t
        bad = set(t) - TASK_KEYS
        if bad:
            raise ValueError(f"{source}: tasks[{i}]: unknown key(s) {sorted(bad)}; valid: {sorted(TASK_KEYS)}")
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
        max_connections=int(data.get("max_connections", 32)),
        description=str(data.get("description", "")),
        generate=dict(data.get("generate") or {}),
    )


def load_suite(name_or_path: str) -> Suite:
    import yaml

    path = suite_path(name_or_path)
    with open(path) as fh:
        data = yaml.safe_load(fh)
    return parse_suite(data, source=str(path.name))


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
    """Why a task cannot run here (its data is gated and not given), or None when it can."""
    import os

    if task.name != "wildguard" or task.args.get("data_file"):
        return None
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return None
    return (
        "skipped wildguard: its data (WildGuardTest) is gated. Accept its terms on the Hugging Face hub and set "
        "HF_TOKEN, or give a local copy with -T wildguard.data_file=PATH; a submission without it fails "
        "`steerboard submit check`"
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


TASK_NAMES = ("xstest", "wildguard", "jbb_refusal", "crescendo", "safeedit", "mmlu", "truthfulqa", "gsm8k")


def resolve_task(name: str) -> Any:
    """The ``@task`` function ``steerboard.tasks.<name>.<name>``."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")
    module = importlib.import_module(f"steerboard.tasks.{name}")
    return getattr(module, name)


def run_suite(
    suite: Suite,
    log_dir: str | Path,
    *,
    model: str | None = None,
    limit_scale: float = 1.0,
    only_methods: list[str] | None = None,
    only_tasks: list[str] | None = None,
    display: str | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Run every (method config, task) pair of a suite; resumable.

    Args:
        suite: the parsed suite.
        log_dir: root log folder; each pair writes into ``<log_dir>/<method slug>/<task>``.
        model: override the suite's model (alias, local dir or hub id).
        limit_scale: multiply every task limit (e.g. 0.25 for a smoke run).
        only_methods: restrict to these method names.
        only_tasks: restrict to these task names.
        display: Inspect display mode (``none``, ``plain``, ``rich``...).
        dry_run: only list what would run.

    Returns:
        One summary dict per pair (method, args, task, status, seconds, log).
    """
    from inspect_ai import eval_set
    from tqdm.auto import tqdm

    model_name = model or suite.model
    runs = [
        (m, t) for m, t in suite.runs()
        if (not only_methods or m.name in only_methods) and (not only_tasks or t.name in only_tasks)
    ]
    summary: list[dict[str, Any]] = []
    from steerboard.storage import join

    bar = tqdm(runs, desc=f"suite {suite.name}", unit="run", disable=dry_run)
    for method, task in bar:
        bar.set_postfix_str(f"{method.slug} x {task.name}")
        limit = None if task.limit is None else max(1, int(round(task.limit * limit_scale)))
        entry: dict[str, Any] = {
            "method": method.name, "args": method.args, "task": task.name, "limit": limit,
            "log_dir": join(log_dir, method.slug, task.name),  # a local folder or an fsspec URL
        }
        if dry_run:
            entry["status"] = "planned"
            summary.append(entry)
            continue
        t0 = time.perf_counter()
        gen = copy.deepcopy(suite.generate)
        gen.update(task.config)
        task_fn = resolve_task(task.name)
        ok, logs = eval_set(
            tasks=[task_fn(**task.args)],
            log_dir=entry["log_dir"],
            model=f"{method.name}/{model_name}",
            model_args=method.args,
            limit=limit,
            max_connections=suite.max_connections,
            display=display,  # type: ignore[arg-type]
            retry_attempts=1,
            log_dir_allow_dirty=True,
            **gen,
        )
        entry["status"] = "success" if ok else "error"
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entry["log"] = logs[0].location if logs else None
        if logs and logs[0].results:
            entry["metrics"] = {
                f"{s.name}/{k}": round(v.value, 4)
                for s in logs[0].results.scores for k, v in s.metrics.items()
                if isinstance(v.value, (int, float))
            }
        summary.append(entry)
    return summary
