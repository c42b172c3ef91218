"""``steerboard submit check DIR|METHOD``: validate a method author's submission (a folder of Inspect logs).

A submission passes when every required task of the listing is present at the listing's current task version,
each log ran the submission suite's items (its size and shuffle seed, or the whole dataset; no ``--sample-id``
subset) and completed all of them with no errored samples, every judge recorded is a standard one, and all
logs record the same method (provider) and method config. WildGuard (gated data) is optional: when absent the
report says so in a note.

The shipped suite ``steerboard/suites/submission.yaml`` runs exactly these tasks for one method::

    steerboard run --suite submission --method mymethod -M key=value --log-dir logs/
    steerboard submit check logs/<mymethod-config hash>/     # a run folder
    steerboard submit check mymethod                         # or a method: its run under logs/

Logs beside the submission that are not part of it -- a ``--limit 20`` try of a task the submission ran in full,
or (given a method) other methods' runs -- are left out with a note.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerboard.leaderboard.ingest import canonical_json, discover_logs
from steerboard.leaderboard.listing import Listing
from steerboard.tasks.listing import GATED_TASKS

#: The shipped suite that produces a submission (``steerboard run --suite submission --method NAME``).
SUBMISSION_SUITE = "submission"

#: Where ``submit check METHOD`` looks for the method's run (``steerboard run``'s default ``--log-dir``).
DEFAULT_LOG_DIR = "logs"

#: Judge names the judges contract defines (docs/contract.md; refusal: embed, strmatch, model; harm: embed, model,
#: safeedit_classifier).
STANDARD_JUDGES = frozenset({"embed", "strmatch", "model", "safeedit_classifier"})


@dataclass
class SubmissionReport:
    """Problems found, file by file (``""`` = the submission as a whole)."""

    files: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems at all."""
        return not any(self.problems.values())

    def lines(self) -> list[str]:
        """Printable report."""
        out: list[str] = []
        for f in self.files + [""]:
            probs = self.problems.get(f, [])
            name = f or "(submission)"
            if probs:
                out.append(f"{name}:")
                out += [f"  - {p}" for p in probs]
            elif f:
                out.append(f"{name}: ok")
        out += [f"note: {n}" for n in self.notes]
        out.append(
            "submission OK"
            if self.ok
            else f"submission has {sum(map(len, self.problems.values()))} problem(s)"
        )
        return out


def required_tasks(listing: Listing) -> list[str]:
    """The tasks a submission must contain by default: every task of the listing."""
    return list(listing.tasks)


def suite_sizes() -> dict[str, tuple[int | None, dict[str, Any]]]:
    """task -> (limit, task args) of the shipped submission suite: the items every submission scores."""
    from steerboard.runner.suite import load_suite

    return {t.name: (t.limit, dict(t.args)) for t in load_suite(SUBMISSION_SUITE).tasks}


def _matches_suite(log: Any, sizes: dict[str, tuple[int | None, dict[str, Any]]]) -> bool:
    """Whether a log ran the submission suite's items: the whole dataset, or the suite's size and shuffle."""
    from steerboard.runner.plan import task_args_match as _task_args_match

    spec = log.eval
    task = spec.task.split("/")[-1]
    if spec.config.limit is None:
        return True
    limit, args = sizes.get(task, (None, {}))
    order = {k: v for k, v in args.items() if k in ("shuffle", "seed")}
    return limit is not None and spec.config.limit == limit and _task_args_match(spec.task_args, order)


def _method_logs(method: str, root: Path) -> Path:
    """``submit check METHOD``: the folder of the method's one run under ``root`` (``logs/``).

    Raises:
        ValueError: no run of the method there, or several configurations (naming their run folders).
    """
    from inspect_ai.log import read_eval_log

    if not root.is_dir():
        raise ValueError(f"{method!r} is neither a folder nor a method with a run under {root}/ (no such folder)")
    configs: dict[str, set[Path]] = defaultdict(set)
    for p in discover_logs([root]):
        try:
            spec = read_eval_log(p, header_only=True).eval
        except Exception:  # noqa: BLE001 - unreadable logs are reported when the folder is checked
            continue
        if spec.model.partition("/")[0] == method:
            path = Path(p)
            # steerboard run writes <log-dir>/<method slug>/<task>/<log>: the run folder is the slug's; a log
            # directly in <log-dir> (an `inspect eval` try) belongs to no run folder
            run_dir = path.parent.parent if path.parent != root and path.parent.parent != root else root
            configs[canonical_json(spec.model_args or {})].add(run_dir)
    if not configs:
        raise ValueError(f"no logs of method {method!r} under {root}/; give the run folder to check instead")
    if len(configs) > 1:
        listed = "; ".join(f"{cfg} in {', '.join(sorted(map(str, dirs)))}" for cfg, dirs in sorted(configs.items()))
        raise ValueError(f"method {method!r} has {len(configs)} configurations under {root}/ ({listed}); "
                         "give the run folder of the one to check")
    (dirs,) = configs.values()
    if len(dirs) > 1:  # loose logs in <log-dir> beside a run folder: the run folder
        dirs = dirs - {root}
    if len(dirs) > 1:
        raise ValueError(f"method {method!r}'s runs lie in {len(dirs)} folders under {root}/ "
                         f"({', '.join(sorted(map(str, dirs)))}); give one run folder")
    return next(iter(dirs))


def check_submission(
    folder: str | Path,
    listing: Listing,
    required: Sequence[str] | None = None,
    judges: frozenset[str] = STANDARD_JUDGES,
) -> SubmissionReport:
    """Check a submission folder (or a method's run).

    Args:
        folder: Folder of ``.eval``/``.json`` logs (searched recursively), or the name of an installed method
            whose one run under ``logs/`` is checked.
        listing: Current task listing (tasks and their versions).
        required: Tasks that must be present (default: every task of the listing; gated tasks are optional
            unless named here).
        judges: Accepted judge names.

    Returns:
        The report (``.ok`` False when anything is wrong).

    Raises:
        FileNotFoundError: when ``folder`` does not exist (and is no method name).
        ValueError: when a required task is not in the listing, or a method's run cannot be told apart.
    """
    from inspect_ai.log import read_eval_log

    req = list(required) if required is not None else required_tasks(listing)
    optional = set() if required is not None else set(GATED_TASKS)
    unknown = [t for t in req if t not in listing.tasks]
    if unknown:
        raise ValueError(
            f"required task(s) not in the listing: {', '.join(unknown)}; listed: {', '.join(listing.tasks)}"
        )
    rep = SubmissionReport()
    if not Path(str(folder)).exists() and "://" not in str(folder) and "/" not in str(folder):
        from steerboard.methods.registry import method_entry_points

        if str(folder) in method_entry_points():
            run_dir = _method_logs(str(folder), Path(DEFAULT_LOG_DIR))
            rep.notes.append(f"checking method {folder}'s run in {run_dir}")
            folder = run_dir
    paths = discover_logs([folder])
    if not paths:
        rep.problems[""].append(f"no .eval or .json logs found under {folder}")
    sizes = suite_sizes()
    logs: dict[str, Any] = {}
    for p in paths:
        try:
            logs[p] = read_eval_log(p, header_only=True)
        except Exception as ex:  # noqa: BLE001 - any unreadable file is a problem to report, not a crash
            rep.problems[p].append(f"unreadable log ({type(ex).__name__}: {str(ex)[:150]})")
    # a log of a task the submission also ran with the suite's items (e.g. an earlier --limit 20 try) is not
    # part of the submission: left out, with a note
    by_task: dict[str, list[str]] = defaultdict(list)
    for p, log in logs.items():
        by_task[log.eval.task.split("/")[-1]].append(p)
    for task, ps in by_task.items():
        matching = [p for p in ps if _matches_suite(logs[p], sizes)]
        if matching and len(matching) < len(ps):
            for p in ps:
                if p not in matching:
                    limit = logs[p].eval.config.limit
                    rep.notes.append(f"ignored {p}: {task} with --limit {limit}, not the submission's items "
                                     "(another log of the task has them)")
                    del logs[p]
    rep.files = [p for p in paths if p in logs or p in rep.problems]
    methods: dict[str, tuple[str, str]] = {}
    tasks_seen: dict[str, list[str]] = defaultdict(list)
    for p, log in logs.items():
        spec = log.eval
        tasks_seen[spec.task.split("/")[-1]].append(p)
        rep.problems[p].extend(_log_problems(p, log, listing, judges, sizes))
        methods[p] = (spec.model.partition("/")[0], canonical_json(spec.model_args or {}))
    _add_cross_log_problems(rep, methods, tasks_seen, [t for t in req if t not in optional])
    for t in sorted(optional & set(req) - set(tasks_seen)):
        rep.notes.append(f"optional task {t!r} is absent ({GATED_TASKS[t]}); the submission is listed without it")
    return rep


def _log_problems(
    path: str, log: Any, listing: Listing, judges: frozenset[str],
    sizes: dict[str, tuple[int | None, dict[str, Any]]] | None = None,
) -> list[str]:
    """What is wrong with one submitted log on its own (status, task version, coverage, errors, judge)."""
    from inspect_ai.log import read_eval_log_sample_summaries

    probs: list[str] = []
    spec = log.eval
    task = spec.task.split("/")[-1]
    if log.status != "success":
        probs.append(f"log status is {log.status!r}; only completed ('success') runs can be submitted")
    t = listing.tasks.get(task)
    if t is None:
        probs.append(f"task {task!r} is not a leaderboard task (tasks: {', '.join(listing.tasks)})")
    elif t.version is not None and str(spec.task_version) != str(t.version):
        probs.append(
            f"task {task!r} version {spec.task_version} but the current version is {t.version}; re-run it"
        )
    if spec.config.limit is not None and not _matches_suite(log, sizes or {}):
        limit, args = (sizes or {}).get(task, (None, {}))
        want = (f"the submission suite's {limit} samples ({', '.join(f'{k}={v}' for k, v in args.items())})"
                if limit is not None else "the full dataset")
        probs.append(f"run used --limit {spec.config.limit}; submissions must cover {want}: run "
                     f"`steerboard run --suite {SUBMISSION_SUITE} --method NAME`")
    if spec.config.sample_id is not None:
        probs.append("run used --sample-id; submissions must cover the full dataset")
    res = log.results
    if res is None:
        probs.append("log has no results (scoring did not finish)")
    else:
        if res.completed_samples < res.total_samples:
            probs.append(f"only {res.completed_samples} of {res.total_samples} samples completed")
        n_ds = spec.dataset.samples
        if n_ds is not None and spec.config.limit is not None:  # the suite's size (checked above)
            n_ds = min(n_ds, int(spec.config.limit))
        epochs = spec.config.epochs or 1
        if n_ds is not None and res.total_samples < n_ds * epochs:
            probs.append(
                f"{res.total_samples} samples scored but the dataset has {n_ds} x {epochs} epoch(s)"
            )
    if log.status == "success":
        try:
            summaries = read_eval_log_sample_summaries(path)
        except Exception as ex:  # noqa: BLE001
            probs.append(f"sample summaries unreadable ({type(ex).__name__}: {str(ex)[:150]})")
            summaries = []
        errored = sum(1 for x in summaries if x.error)
        if errored:
            probs.append(f"{errored} sample(s) ended in an error")
    judge = (spec.task_args or {}).get("judge")
    for sc in spec.scorers or []:
        j = (sc.options or {}).get("judge")
        if j is not None and judge is None:
            judge = j
    if judge is not None and str(judge) not in judges:
        probs.append(f"judge {judge!r} is not a standard judge ({', '.join(sorted(judges))})")
    return probs


def _add_cross_log_problems(
    rep: SubmissionReport,
    methods: dict[str, tuple[str, str]],
    tasks_seen: dict[str, list[str]],
    req: list[str],
) -> None:
    """Problems across the logs: one method and config throughout, every required task once."""
    if methods:
        common = Counter(methods.values()).most_common(1)[0][0]
        for p, mc in methods.items():
            if mc[0] != common[0]:
                rep.problems[p].append(f"method {mc[0]!r} differs from the submission's method {common[0]!r}")
            elif mc[1] != common[1]:
                rep.problems[p].append(
                    f"method config {mc[1]} differs from the submission's config {common[1]}"
                )
    for t in req:
        if t not in tasks_seen:
            how = f"run `steerboard run --suite {SUBMISSION_SUITE} --method NAME [-M ...]`"
            if t in GATED_TASKS:
                how += f"; {t} {GATED_TASKS[t]}"
            rep.problems[""].append(f"required task {t!r} is missing ({how})")
    for t, ps in tasks_seen.items():
        if len(ps) > 1:
            rep.problems[""].append(
                f"task {t!r} appears in {len(ps)} logs ({', '.join(ps)}); submit one run per task (a run folder "
                "holds one)"
            )
