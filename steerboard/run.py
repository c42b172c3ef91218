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
    model_roles: {grader: openai/gpt-4o-mini}   # optional: Inspect model roles (the ``model`` judges' grader)
    resources: {num_cpus: 2, memory: 8GiB}      # optional, Ray executor only (also per method entry); see
                                                # steerboard.resources; the local executor ignores it

Each (method config, task) pair is one Inspect ``eval_set`` call into its own log sub-folder, so an
interrupted run resumes and a re-run only runs what is missing (eval_set skips finished logs). Every pair's
options are validated before the first one runs; Ctrl-C stops the whole suite.
Strength sweeps (``sweep``) expand into one run per value; the leaderboard draws them as curves.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import importlib
import itertools
import json
import os
import signal
import sys
import threading
import time
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


def batch_notice(method_name: str, max_batch_size: int, max_connections: int) -> str | None:
    """One line when the suite's ``max_connections`` exceeds a method's ``max_batch_size``: what the engine does
    with the extra requests (they wait for a free row), else None."""
    if max_connections <= max_batch_size:
        return None
    return (f"{method_name}: max_connections {max_connections} > max_batch_size {max_batch_size}: the engine decodes "
            f"at most {max_batch_size} requests at once and the others wait for a free row "
            f"(-M max_batch_size={max_connections} batches them all)")


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
    import os

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


GRADER_ROLE = "grader"
"""The Inspect model role the ``model`` judges use (``--model-role grader=...``)."""


def select_runs(
    suite: Suite, only_methods: list[str] | None = None, only_tasks: list[str] | None = None
) -> list[tuple[MethodRun, TaskRun]]:
    """The suite's (method config, task) pairs, restricted by ``--only-method`` / ``--only-task``.

    Raises:
        ValueError: a filter names a method or task the suite does not have (listing those it has), or the
            filters leave nothing to run.
    """
    all_runs = suite.runs()
    methods = sorted({m.name for m, _ in all_runs})
    tasks = sorted({t.name for _, t in all_runs})
    for flag, given, valid in (("--only-method", only_methods, methods), ("--only-task", only_tasks, tasks)):
        bad = sorted(set(given or []) - set(valid))
        if bad:
            raise ValueError(f"{flag} {', '.join(bad)}: not in suite {suite.name!r}; its {flag[7:]}s: {', '.join(valid)}")
    runs = [
        (m, t) for m, t in all_runs
        if (not only_methods or m.name in only_methods) and (not only_tasks or t.name in only_tasks)
    ]
    if not runs:
        raise ValueError(
            f"--only-method {','.join(only_methods or [])} --only-task {','.join(only_tasks or [])} select no "
            f"(method, task) pair of suite {suite.name!r} (a method may be limited to some tasks)"
        )
    return runs


def generate_config(suite: Suite, task: TaskRun, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The GenerateConfig keys for one task: suite ``generate``, then the task's ``config``, then overrides."""
    gen = copy.deepcopy(suite.generate)
    gen.update(task.config)
    gen.update(overrides or {})
    return gen


def check_runs(
    suite: Suite,
    runs: list[tuple[MethodRun, TaskRun]],
    model_name: str,
    *,
    generate: dict[str, Any] | None = None,
    model_roles: dict[str, str] | None = None,
) -> list[str]:
    """Every problem with the pairs' method options, task options and generation options; no model work.

    Method options go through the method's config (and, when the model's config is on disk, the method's
    checks against it, e.g. layer ranges); each task is constructed with its options (tasks validate them
    at construction); generation keys are checked against Inspect's ``GenerateConfig``.

    Returns:
        One line per problem (empty: everything is valid).
    """
    from inspect_ai.model import GenerateConfig

    from steerboard.methods.provider import method_class
    from steerboard.methods.registry import method_entry_points
    from steerboard.models import model_problem, read_model_config

    problems: list[str] = []
    entry_points = method_entry_points()
    model_config = read_model_config(model_name)
    bad_model = model_problem(model_name)
    if bad_model:
        problems.append(bad_model)
    seen_methods: set[str] = set()
    for method, _ in runs:
        key = method.slug
        if key in seen_methods:
            continue
        seen_methods.add(key)
        where = f"method {method.name} {json.dumps(method.args, sort_keys=True, default=str)}"
        try:
            cls = method_class(entry_points[method.name])
            instance = cls(cls.config_class.from_dict(method.args), model_name)
            if model_config is not None:
                instance.check_model_config(model_config)
            notice = batch_notice(method.name, getattr(instance.config, "max_batch_size", suite.max_connections),
                                  suite.max_connections)
            if notice:
                print(f"steerboard run: note: {notice}", file=sys.stderr)
        except Exception as ex:  # noqa: BLE001 - every problem is listed, whatever raised it
            problems.append(f"{where}: {ex}")
    roles = dict(suite.model_roles)
    roles.update(model_roles or {})
    seen_tasks: set[str] = set()
    for _, task in runs:
        key = json.dumps([task.name, task.args], sort_keys=True, default=str)
        if key in seen_tasks:
            continue
        seen_tasks.add(key)
        where = f"task {task.name} {json.dumps(task.args, sort_keys=True, default=str)}"
        try:
            build_task(task)
        except Exception as ex:  # noqa: BLE001 - every problem is listed, whatever raised it
            problems.append(f"{where}: {ex}")
        judges = sorted(k for k, v in task.args.items() if k.endswith("judge") and v == "model")
        if judges and GRADER_ROLE not in roles:
            problems.append(
                f"{where}: -T {judges[0]}=model needs a grader model: add --model-role {GRADER_ROLE}=<model> "
                f"(or 'model_roles: {{{GRADER_ROLE}: <model>}}' in the suite)"
            )
        gen = generate_config(suite, task, generate)
        bad = sorted(set(gen) - set(GenerateConfig.model_fields))
        if bad:
            problems.append(f"{where}: unknown generation option(s) {', '.join(bad)}; see inspect_ai GenerateConfig")
        else:
            try:
                GenerateConfig(**gen)
            except Exception as ex:  # noqa: BLE001 - pydantic's validation error, listed
                problems.append(f"{where}: generation options {gen}: {str(ex).splitlines()[0]}")
    return problems


def _task_args_match(log_args: dict[str, Any] | None, args: dict[str, Any]) -> bool:
    log_args = log_args or {}
    return all(k in log_args and str(log_args[k]) == str(v) for k, v in args.items())


def pair_logs(log_dir: str | Path, task: TaskRun, limit: int | None) -> list[Any]:
    """Headers of the logs in a pair's folder that belong to this task, its options and its limit, newest first."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    if not Path(log_dir).is_dir():
        return []
    out = []
    for info in list_eval_logs(str(log_dir), recursive=False):
        try:
            log = read_eval_log(info, header_only=True)
        except Exception:  # noqa: BLE001 - an unreadable log is not a finished run
            continue
        if log.eval.task_registry_name not in (task.name, f"steerboard/{task.name}") and log.eval.task != task.name:
            continue
        if not _task_args_match(log.eval.task_args, task.args) or log.eval.config.limit != limit:
            continue
        out.append(log)
    return out


def _pair_state(logs: list[Any]) -> tuple[str, str | None]:
    """``("done", None)``, ``("to resume", <status of the log it resumes>)`` or ``("to run", None)``."""
    if any(log.status == "success" for log in logs):
        return "done", None
    if logs:
        return "to resume", logs[0].status
    return "to run", None


class SuiteInvalid(ValueError):
    """A suite whose pairs have problems (all of them listed in the message)."""


def build_task(task: TaskRun) -> Any:
    """Construct a task with its options, outside any eval's context.

    A fresh ``contextvars.Context``: an earlier ``eval_set`` in this process leaves Inspect's active model and
    model roles set in the caller's context, and a task reads them when it checks its grader role.
    """
    return contextvars.Context().run(resolve_task(task.name), **task.args)


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
    generate: dict[str, Any] | None = None,
    model_roles: dict[str, str] | None = None,
    summary_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run every (method config, task) pair of a suite; resumable, validated up front, interruptible.

    Before anything runs (and for a dry run) every pair's method options, task options and generation
    options are checked; all problems are raised together. A Ctrl-C stops the suite: the pair that was
    running is ``cancelled``, the rest ``not started`` (a second Ctrl-C aborts Inspect's clean-up at once).
    A log left ``started`` by a killed run is resumed from and then removed.

    Args:
        suite: the parsed suite.
        log_dir: root log folder; each pair writes into ``<log_dir>/<method slug>/<task>``.
        model: override the suite's model (alias, local dir or hub id).
        limit_scale: multiply every task limit (e.g. 0.25 for a smoke run).
        only_methods: restrict to these method names (each must be in the suite).
        only_tasks: restrict to these task names (each must be in the suite).
        display: Inspect display mode (``none``, ``plain``, ``rich``...).
        dry_run: validate and list the pairs: ``done`` (a finished log exists), ``to resume`` (an
            unfinished one exists) or ``to run``.
        generate: GenerateConfig keys applied over the suite's and the tasks' (e.g. ``max_tokens``).
        model_roles: Inspect model roles (e.g. ``{"grader": "openai/gpt-4o-mini"}``) over the suite's.
        summary_path: where to write the summary JSON after the run (also on an interrupt); never written
            for a dry run or when validation fails.

    Returns:
        One summary dict per pair (method, args, task, limit, status, seconds, log, samples, metrics);
        status is ``success``, ``error``, ``cancelled``, ``not started``, or for a dry run ``done``,
        ``to resume`` (``resumes``: the status of the unfinished log) or ``to run``.

    Raises:
        ValueError: bad filters, or nothing selected.
        SuiteInvalid: problems with the pairs' options (all listed).
    """
    model_name = model or suite.model
    runs = select_runs(suite, only_methods, only_tasks)
    roles = {**suite.model_roles, **(model_roles or {})}
    problems = check_runs(suite, runs, model_name, generate=generate, model_roles=roles)
    if problems:
        raise SuiteInvalid(
            f"suite {suite.name!r}: {len(problems)} problem(s), nothing was run:\n  - " + "\n  - ".join(problems)
        )
    summary = _plan(runs, str(log_dir).rstrip("/"), limit_scale)  # joined as text: a folder or an fsspec URL
    states = [_pair_state(pair_logs(entry["log_dir"], task, entry["limit"])) for entry, (_, task) in zip(summary, runs)]
    if dry_run:
        for entry, (state, previous) in zip(summary, states):
            entry["status"] = state
            if previous:
                entry["resumes"] = previous
    estimates, source = estimate_pairs(
        suite, runs, [{**e, "status": st} for e, (st, _) in zip(summary, states)], log_dir, generate
    )
    if dry_run:
        for entry, seconds in zip(summary, estimates):
            if seconds is not None:
                entry["estimated_seconds"] = round(seconds, 1)
                entry["estimate_from"] = source
        return summary
    _print_estimate([e for e, (st, _) in zip(estimates, states) if st != "done"], source)
    _run_interruptibly(summary, runs, suite, model_name, display, generate, roles, summary_path)
    return summary


def _print_estimate(to_run: list[float | None], source: str) -> None:
    """One line on stderr: how many pairs are to run and their estimated time (``to_run``: seconds or None per
    pair not yet done; ``source``: where the rates come from)."""
    known = [s for s in to_run if s is not None]
    if to_run and known:
        print(
            f"steerboard run: {len(to_run)} pair(s) to run, estimated {format_duration(sum(known))} on this machine"
            + (f" ({len(to_run) - len(known)} without a rate)" if len(known) < len(to_run) else "")
            + f" from {source}; model loads and method fits not included",
            file=sys.stderr, flush=True,
        )
    elif to_run:
        print(f"steerboard run: {len(to_run)} pair(s) to run (no time estimate: no rate for their tasks)",
              file=sys.stderr, flush=True)


def _plan(runs: list[tuple[MethodRun, TaskRun]], root: str, limit_scale: float) -> list[dict[str, Any]]:
    """One ``not started`` summary entry per pair, with its scaled limit and log folder."""
    summary: list[dict[str, Any]] = []
    for method, task in runs:
        limit = None if task.limit is None else max(1, int(round(task.limit * limit_scale)))
        summary.append({
            "method": method.name, "args": method.args, "task": task.name, "task_args": task.args, "limit": limit,
            "log_dir": f"{root}/{method.slug}/{task.name}", "status": "not started",
        })
    return summary


def _finish(summary: list[dict[str, Any]], summary_path: str | Path | None) -> None:
    """Mark the running pair ``cancelled`` and write the summary JSON (when a path is given)."""
    for entry in summary:
        if entry["status"] == "running":
            entry["status"] = "cancelled"
    if summary_path is not None:
        from steerboard import storage

        storage.atomic_write_text(summary_path, storage.dumps_json(summary, indent=2))


def _run_interruptibly(
    summary: list[dict[str, Any]],
    runs: list[tuple[MethodRun, TaskRun]],
    suite: Suite,
    model_name: str,
    display: str | None,
    generate: dict[str, Any] | None,
    roles: dict[str, str],
    summary_path: str | Path | None,
) -> None:
    """Run the pairs in order, updating ``summary``; a Ctrl-C cancels the running pair and ends the suite."""
    from inspect_ai import eval_set
    from tqdm.auto import tqdm

    interrupts = 0

    def on_sigint(signum: int, frame: Any) -> None:
        # Our own handler (asyncio then leaves SIGINT alone): the first Ctrl-C raises KeyboardInterrupt,
        # which cancels the running eval (Inspect writes its log as 'cancelled') and ends the suite; a
        # second one, during that clean-up, writes the summary and exits at once (the pair's log stays
        # 'started' and the next run resumes from it).
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print("steerboard run: stopping after the current run's log is written (Ctrl-C again to abort at once)",
                  file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        _finish(summary, summary_path)
        print("steerboard run: second interrupt: aborted at once; re-run the same command to resume",
              file=sys.stderr, flush=True)
        os._exit(130)

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    bar = tqdm(total=len(runs), desc=f"suite {suite.name}", unit="run")
    current: dict[str, Any] | None = None
    try:
        for entry, (method, task) in zip(summary, runs):
            current = entry
            bar.set_postfix_str(f"{method.slug} x {task.name}")
            _run_pair(entry, method, task, suite, model_name, display, generate, roles, eval_set)
            bar.update(1)
            if entry["status"] == "cancelled":
                break
    except KeyboardInterrupt:
        if current is not None and current["status"] in ("not started", "running"):
            current["status"] = "cancelled"
    finally:
        if any(e["status"] == "cancelled" for e in summary):
            interrupts = max(interrupts, 1)  # a Ctrl-C that Inspect's own handler took during the eval
        if in_main and not interrupts:  # after a Ctrl-C, a second one until exit still aborts at once (rc 130)
            signal.signal(signal.SIGINT, previous)
        bar.close()
        _finish(summary, summary_path)


def _run_pair(
    entry: dict[str, Any],
    method: MethodRun,
    task: TaskRun,
    suite: Suite,
    model_name: str,
    display: str | None,
    generate: dict[str, Any] | None,
    roles: dict[str, str],
    eval_set: Any,
) -> None:
    """Run one pair into ``entry`` (status, seconds, log, samples, metrics); KeyboardInterrupt propagates."""
    from filelock import FileLock, Timeout

    pair_dir = Path(entry["log_dir"])
    remote = "://" in entry["log_dir"]  # an fsspec URL: no local lock file, and no stale-log clean-up
    lock: Any = contextlib.nullcontext()
    if remote:
        from steerboard import storage

        storage.share_aws_data_loader()  # Inspect's S3 reads and flushes reuse parsed botocore data
    else:
        pair_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(pair_dir) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            entry["status"] = "error"
            entry["error"] = f"another steerboard run is writing {pair_dir} (lock {lock.lock_file})"
            return
    try:
        # holding the pair's lock, no other steerboard run writes here: a 'started' log is a killed run's
        stale = [] if remote else [
            log.location for log in pair_logs(pair_dir, task, entry["limit"]) if log.status == "started"
        ]
        if stale:
            entry["stale_logs"] = stale
        entry["status"] = "running"
        t0 = time.perf_counter()
        try:
            ok, logs = eval_set(
                tasks=[build_task(task)],
                log_dir=entry["log_dir"],
                model=f"{method.name}/{model_name}",
                model_args=method.args,
                model_roles=roles or None,
                limit=entry["limit"],
                max_connections=suite.max_connections,
                display=display,  # type: ignore[arg-type]
                retry_attempts=1,
                log_dir_allow_dirty=True,
                **generate_config(suite, task, generate),
            )
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 1)
        log = logs[0] if logs else None
        if log is None:
            # eval_set swallows the KeyboardInterrupt of a cancelled eval and returns no logs: read the
            # newest log of this pair from disk to tell a Ctrl-C (status 'cancelled') from a failure
            written = [x for x in pair_logs(pair_dir, task, entry["limit"]) if x.location not in stale]
            log = written[0] if written else None
        _record_log(entry, log, ok)
        if entry["status"] == "success" and stale:
            entry["replaced_stale_logs"] = _remove_stale(stale)
    finally:
        if not remote:
            # removed while still held (filelock retries on an unlinked inode), so no run leaves a .lock behind
            with contextlib.suppress(OSError):
                os.unlink(lock.lock_file)
            lock.release()


def _record_log(entry: dict[str, Any], log: Any, ok: bool) -> None:
    """Write a finished pair's log into its summary ``entry``: location, status, first error line, samples and
    numeric metrics."""
    entry["log"] = log.location if log else None
    if log is not None and log.status == "cancelled":
        entry["status"] = "cancelled"
    else:
        entry["status"] = "success" if ok and log is not None and log.status == "success" else "error"
    if log is not None and log.error is not None:
        entry["error"] = str(log.error.message).splitlines()[0] if log.error.message else "error"
    if log is not None and log.results:
        entry["samples"] = log.results.completed_samples
        entry["metrics"] = {
            f"{s.name}/{k}": round(v.value, 4)
            for s in log.results.scores for k, v in s.metrics.items()
            if isinstance(v.value, (int, float))
        }


def _remove_stale(locations: list[str]) -> list[str]:
    """Delete logs still ``started`` after their pair finished (a killed run's; eval_set resumed from them)."""
    from inspect_ai.log import read_eval_log

    removed = []
    for loc in locations:
        try:
            if read_eval_log(loc, header_only=True).status == "started":
                Path(loc.removeprefix("file://")).unlink()
                removed.append(loc)
        except (OSError, ValueError):
            continue
        except Exception:  # noqa: BLE001 - an unreadable stale log is left for ingest to skip
            continue
    return removed


def headline_metrics(task: str) -> list[tuple[str, str, str]]:
    """``(scorer, metric, title)`` of a task's headline metrics from ``tasks/listing.yaml``."""
    from steerboard.tasks.listing import load_listing

    spec = load_listing()["tasks"].get(task, {})
    return [(m["scorer"], m["name"], m["title"]) for m in spec.get("metrics", []) if m["headline"]]


def results_table(summary: list[dict[str, Any]]) -> str:
    """A plain-text table of the headline metrics per method config x task, with the sample count n."""
    rows = [("method", "config", "task", "status", "n", "headline metrics")]
    for s in summary:
        metrics = s.get("metrics") or {}
        cells = []
        for scorer, name, _ in headline_metrics(s["task"]):
            value = metrics.get(f"{scorer}/{name}")
            missing = value is None or (isinstance(value, float) and value != value)  # no samples: NaN
            cells.append(f"{name}={'n/a' if missing else f'{value:.3f}'}")
        config = json.dumps(s["args"], sort_keys=True, default=str) if s["args"] else "-"
        n = s.get("samples")
        rows.append((s["method"], config, s["task"], s["status"], "-" if n is None else str(n), "  ".join(cells)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows
    )


# ---------------------------------------------------------------------- time estimates

GENERATION_TASKS = frozenset({"xstest", "wildguard", "jbb_refusal", "crescendo", "safeedit", "gsm8k"})
"""Tasks whose time grows with ``max_tokens`` (the rest score log-likelihoods: one forward per answer)."""


def reference_rates() -> dict[str, Any]:
    """The shipped per-sample rates (``steerboard/suites/rates.json``, written by ``benchmarks/pair_rates.py``)."""
    path = Path(str(resources.files("steerboard"))) / "suites" / "rates.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"tasks": {}}


def _seconds(log: Any) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(log.stats.completed_at) - datetime.fromisoformat(log.stats.started_at)).total_seconds()
    except (TypeError, ValueError, AttributeError):
        return None


MIN_RATE_SAMPLES = 10
"""Logs with fewer samples are left out of measured rates (their time is mostly the model load)."""


def measured_rates(log_dir: str | Path, max_logs: int = 400) -> dict[str, dict[str, float]]:
    """Seconds per sample per task, from the finished logs under a local ``log_dir`` (this machine's own runs).

    Returns:
        task -> ``{"seconds_per_sample", "max_tokens", "logs"}``: the task's total seconds over its total
        samples, over logs of at least :data:`MIN_RATE_SAMPLES` samples (so small runs, mostly model load,
        weigh little); empty when there are none (or ``log_dir`` is a URL).
    """
    import statistics

    from steerboard.methods.provider import DEFAULT_MAX_TOKENS

    if "://" in str(log_dir) or not Path(log_dir).is_dir():
        return {}
    from inspect_ai.log import read_eval_log

    per_task: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(Path(log_dir).rglob("*.eval"))[-max_logs:]:
        try:
            log = read_eval_log(str(path), header_only=True)
        except Exception:  # noqa: BLE001 - an unreadable log gives no rate
            continue
        seconds = _seconds(log)
        n = log.results.completed_samples if log.results else 0
        if log.status != "success" or not seconds or n < MIN_RATE_SAMPLES:
            continue
        task = log.eval.task.split("/")[-1]
        per_task.setdefault(task, []).append((seconds, n, float(log.plan.config.max_tokens or DEFAULT_MAX_TOKENS)))
    return {
        t: {"seconds_per_sample": sum(x[0] for x in v) / sum(x[1] for x in v),
            "max_tokens": statistics.median(x[2] for x in v), "logs": len(v)}
        for t, v in per_task.items()
    }


def estimate_pairs(
    suite: Suite,
    runs: list[tuple[MethodRun, TaskRun]],
    summary: list[dict[str, Any]],
    log_dir: str | Path,
    generate: dict[str, Any] | None = None,
) -> tuple[list[float | None], str]:
    """Estimated seconds for each pair still to run (None: done, or no rate for its task), and where the rates
    came from.

    A pair's estimate is its sample count (the limit, or the dataset's size) times the task's seconds per
    sample: measured from this machine's finished logs under ``log_dir`` when there are any for the task, else
    the shipped reference rate (``steerboard/suites/rates.json``). Generation tasks scale with ``max_tokens``.
    Model loads and method fits (DPO training, DINM edits) are not included.
    """
    from steerboard.methods.provider import DEFAULT_MAX_TOKENS

    local = measured_rates(log_dir)
    shipped = reference_rates().get("tasks", {})
    sizes: dict[str, int] = {}
    out: list[float | None] = []
    used: set[str] = set()
    for entry, (_, task) in zip(summary, runs):
        if entry.get("status") == "done":
            out.append(None)
            continue
        rate = local.get(task.name) or shipped.get(task.name)
        if not rate:
            out.append(None)
            continue
        used.add("this machine's logs" if task.name in local else "reference rates")
        n = entry.get("limit")
        if n is None:
            key = json.dumps([task.name, task.args], sort_keys=True, default=str)
            if key not in sizes:
                try:
                    sizes[key] = len(build_task(task).dataset)
                except Exception:  # noqa: BLE001 - a task that cannot be built was reported by check_runs
                    sizes[key] = 0
            n = sizes[key]
        seconds = float(rate["seconds_per_sample"]) * n
        max_tokens = generate_config(suite, task, generate).get("max_tokens") or DEFAULT_MAX_TOKENS
        if task.name in GENERATION_TASKS and max_tokens and rate.get("max_tokens"):
            seconds *= float(max_tokens) / float(rate["max_tokens"])
        out.append(seconds)
    source = " and ".join(sorted(used)) or "no rate"
    if "reference rates" in used:
        source += f" ({reference_rates().get('machine', 'the development machine')})"
    return out, source


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
