"""A suite run's plan: which pairs run, whether every pair is valid, and what each pair runs with.

:func:`select_runs` picks a suite's (method configuration, task) pairs (``--only-method``/``--only-task``);
:func:`check_runs` lists every problem of their options without model work (:func:`validate_runs` raises them
together); :func:`plan_pairs` turns them into :class:`Pair` values (limit, log folder, generate config) that
:func:`steerboard.runner.pair.run_pair` runs, here or on a Ray actor, with the run's :class:`RunSettings`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerboard.runner.suite import MethodRun, Suite, TaskRun, build_task, generate_config

GRADER_ROLE = "grader"
"""The Inspect model role the ``model`` judges use (``--model-role grader=...``)."""


class SuiteInvalid(ValueError):
    """A suite whose pairs have problems (all of them listed in the message)."""


@dataclass(frozen=True)
class RunSettings:
    """What every pair of one suite run shares.

    Attributes:
        model: the model every pair runs on (the suite's, or ``--model``).
        max_connections: the suite's concurrent samples per pair.
        generate: the command line's GenerateConfig overrides (already merged into each :attr:`Pair.generate`).
        model_roles: Inspect model roles: the suite's, then the command line's.
        display: Inspect's display mode (``none``, ``plain``, ``rich``...).
    """

    model: str
    max_connections: int = 32
    generate: dict[str, Any] = field(default_factory=dict)
    model_roles: dict[str, str] = field(default_factory=dict)
    display: str | None = None

    @classmethod
    def for_suite(
        cls, suite: Suite, *, model: str | None = None, generate: dict[str, Any] | None = None,
        model_roles: dict[str, str] | None = None, display: str | None = None,
    ) -> RunSettings:
        """The settings of a run of ``suite`` with the command line's overrides."""
        return cls(model=model or suite.model, max_connections=suite.max_connections, generate=dict(generate or {}),
                   model_roles={**suite.model_roles, **(model_roles or {})}, display=display)


@dataclass
class Pair:
    """One (method configuration, task) pair of a suite run, ready to run.

    Attributes:
        method: the method configuration.
        task: the task with its options.
        limit: samples (the task's limit scaled by ``--limit-scale``; None: the whole dataset).
        log_dir: the pair's log folder or fsspec URL (``<log dir>/<method slug>/<task>``).
        generate: the GenerateConfig keys the eval gets (:func:`steerboard.runner.suite.generate_config`).
    """

    method: MethodRun
    task: TaskRun
    limit: int | None
    log_dir: str
    generate: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``<method slug> x <task>``, as progress lines name the pair."""
        return f"{self.method.slug} x {self.task.name}"

    def entry(self) -> dict[str, Any]:
        """The pair's summary entry before it runs (status ``not started``)."""
        return {
            "method": self.method.name, "args": self.method.args, "task": self.task.name,
            "task_args": self.task.args, "limit": self.limit, "log_dir": self.log_dir, "status": "not started",
        }


def plan_pairs(
    suite: Suite, runs: list[tuple[MethodRun, TaskRun]], log_dir: str | Path, limit_scale: float = 1.0,
    generate: dict[str, Any] | None = None,
) -> list[Pair]:
    """The selected ``runs`` as pairs: each with its scaled limit, its log folder under ``log_dir`` (joined as
    text: a folder or an fsspec URL) and its generate config (the suite's, the task's, then ``generate``)."""
    root = str(log_dir).rstrip("/")
    return [
        Pair(method=method, task=task,
             limit=None if task.limit is None else max(1, int(round(task.limit * limit_scale))),
             log_dir=f"{root}/{method.slug}/{task.name}",
             generate=generate_config(suite.generate, task.config, generate))
        for method, task in runs
    ]


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


def batch_notice(method_name: str, max_batch_size: int, max_connections: int) -> str | None:
    """One line when the suite's ``max_connections`` exceeds a method's ``max_batch_size``: what the engine does
    with the extra requests (they wait for a free row), else None."""
    if max_connections <= max_batch_size:
        return None
    return (f"{method_name}: max_connections {max_connections} > max_batch_size {max_batch_size}: the engine decodes "
            f"at most {max_batch_size} requests at once and the others wait for a free row "
            f"(-M max_batch_size={max_connections} batches them all)")


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
        gen = generate_config(suite.generate, task.config, generate)
        bad = sorted(set(gen) - set(GenerateConfig.model_fields))
        if bad:
            problems.append(f"{where}: unknown generation option(s) {', '.join(bad)}; see inspect_ai GenerateConfig")
        else:
            try:
                GenerateConfig(**gen)
            except Exception as ex:  # noqa: BLE001 - pydantic's validation error, listed
                problems.append(f"{where}: generation options {gen}: {str(ex).splitlines()[0]}")
    return problems


def validate_runs(suite: Suite, runs: list[tuple[MethodRun, TaskRun]], settings: RunSettings) -> None:
    """Check every pair's options (:func:`check_runs`) before anything runs.

    Raises:
        SuiteInvalid: every problem found, one a line; nothing was run.
    """
    problems = check_runs(suite, runs, settings.model, generate=settings.generate, model_roles=settings.model_roles)
    if problems:
        raise SuiteInvalid(
            f"suite {suite.name!r}: {len(problems)} problem(s), nothing was run:\n  - " + "\n  - ".join(problems)
        )


def task_args_match(log_args: dict[str, Any] | None, args: dict[str, Any]) -> bool:
    """Whether a log's task arguments hold every one of ``args`` (values compared as text)."""
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
        if not task_args_match(log.eval.task_args, task.args) or log.eval.config.limit != limit:
            continue
        out.append(log)
    return out


def pair_state(logs: list[Any]) -> tuple[str, str | None]:
    """``("done", None)``, ``("to resume", <status of the log it resumes>)`` or ``("to run", None)``."""
    if any(log.status == "success" for log in logs):
        return "done", None
    if logs:
        return "to resume", logs[0].status
    return "to run", None
