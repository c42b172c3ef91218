"""``steerboard submit check DIR``: validate a method author's submission (a folder of Inspect logs).

A submission passes when every required task of the listing is present at the listing's current task version,
each log completed all its samples (no ``--limit``/``--sample-id`` subset, no errored samples), every judge
recorded is a standard one, and all logs record the same method (provider) and method config.

The shipped suite ``steerboard/suites/submission.yaml`` runs exactly these tasks for one method::

    steerboard run --suite submission --method mymethod -M key=value --log-dir logs/
    steerboard submit check logs/<mymethod-config hash>/
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerboard.leaderboard.ingest import canonical_json, discover_logs
from steerboard.leaderboard.listing import Listing

#: The shipped suite that produces a submission (``steerboard run --suite submission --method NAME``).
SUBMISSION_SUITE = "submission"

#: Tasks whose data is gated: how to give it (``steerboard run`` skips them with a note when it is not given).
GATED_TASKS = {
    "wildguard": "its data is gated: set HF_TOKEN (after accepting the dataset's terms) or give "
    "-T wildguard.data_file=PATH",
}

#: Judge names the judges contract defines (docs/contract.md; refusal: embed, strmatch, model; harm: embed, model,
#: safeedit_classifier).
STANDARD_JUDGES = frozenset({"embed", "strmatch", "model", "safeedit_classifier"})


@dataclass
class SubmissionReport:
    """Problems found, file by file (``""`` = the submission as a whole)."""

    files: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

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
        out.append(
            "submission OK"
            if self.ok
            else f"submission has {sum(map(len, self.problems.values()))} problem(s)"
        )
        return out


def required_tasks(listing: Listing) -> list[str]:
    """The tasks a submission must contain by default: every task of the listing."""
    return list(listing.tasks)


def check_submission(
    folder: str | Path,
    listing: Listing,
    required: Sequence[str] | None = None,
    judges: frozenset[str] = STANDARD_JUDGES,
) -> SubmissionReport:
    """Check a submission folder.

    Args:
        folder: Folder of ``.eval``/``.json`` logs (searched recursively).
        listing: Current task listing (tasks and their versions).
        required: Tasks that must be present (default: every task of the listing).
        judges: Accepted judge names.

    Returns:
        The report (``.ok`` False when anything is wrong).

    Raises:
        FileNotFoundError: when ``folder`` does not exist.
        ValueError: when a required task is not in the listing.
    """
    from inspect_ai.log import read_eval_log

    req = list(required) if required is not None else required_tasks(listing)
    unknown = [t for t in req if t not in listing.tasks]
    if unknown:
        raise ValueError(
            f"required task(s) not in the listing: {', '.join(unknown)}; listed: {', '.join(listing.tasks)}"
        )
    rep = SubmissionReport()
    paths = discover_logs([folder])
    rep.files = paths
    if not paths:
        rep.problems[""].append(f"no .eval or .json logs found under {folder}")
    methods: dict[str, tuple[str, str]] = {}
    tasks_seen: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        try:
            log = read_eval_log(p, header_only=True)
        except Exception as ex:  # noqa: BLE001 - any unreadable file is a problem to report, not a crash
            rep.problems[p].append(f"unreadable log ({type(ex).__name__}: {str(ex)[:150]})")
            continue
        spec = log.eval
        tasks_seen[spec.task.split("/")[-1]].append(p)
        rep.problems[p].extend(_log_problems(p, log, listing, judges))
        methods[p] = (spec.model.partition("/")[0], canonical_json(spec.model_args or {}))
    _add_cross_log_problems(rep, methods, tasks_seen, req)
    return rep


def _log_problems(path: str, log: Any, listing: Listing, judges: frozenset[str]) -> list[str]:
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
    if spec.config.limit is not None:
        probs.append(f"run used --limit {spec.config.limit}; submissions must cover the full dataset")
    if spec.config.sample_id is not None:
        probs.append("run used --sample-id; submissions must cover the full dataset")
    res = log.results
    if res is None:
        probs.append("log has no results (scoring did not finish)")
    else:
        if res.completed_samples < res.total_samples:
            probs.append(f"only {res.completed_samples} of {res.total_samples} samples completed")
        n_ds = spec.dataset.samples
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
            rep.problems[""].append(f"task {t!r} appears in {len(ps)} logs; submit one run per task")
