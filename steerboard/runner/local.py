"""The local executor: a suite's pairs one after another in this process, interruptible with Ctrl-C, and the
dry run (which pairs are done, which would run, and how long they would take)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from steerboard.runner.estimate import estimate_pairs, print_estimate
from steerboard.runner.pair import run_pair
from steerboard.runner.plan import (
    Pair,
    RunSettings,
    pair_logs,
    pair_state,
    plan_pairs,
    select_runs,
    validate_runs,
)
from steerboard.runner.suite import Suite
from steerboard.runner.summary import finish_summary


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
    settings = RunSettings.for_suite(suite, model=model, generate=generate, model_roles=model_roles, display=display)
    runs = select_runs(suite, only_methods, only_tasks)
    validate_runs(suite, runs, settings)
    pairs = plan_pairs(suite, runs, log_dir, limit_scale, settings.generate)
    summary = [p.entry() for p in pairs]
    states = [pair_state(pair_logs(p.log_dir, p.task, p.limit)) for p in pairs]
    if dry_run:
        for entry, (state, previous) in zip(summary, states):
            entry["status"] = state
            if previous:
                entry["resumes"] = previous
    estimates, source = estimate_pairs(
        suite, runs, [{**e, "status": st} for e, (st, _) in zip(summary, states)], log_dir, settings.generate
    )
    if dry_run:
        for entry, seconds in zip(summary, estimates):
            if seconds is not None:
                entry["estimated_seconds"] = round(seconds, 1)
                entry["estimate_from"] = source
        return summary
    print_estimate([e for e, (st, _) in zip(estimates, states) if st != "done"], source)
    run_pairs(pairs, settings, summary, label=f"suite {suite.name}", summary_path=summary_path)
    return summary


def run_pairs(
    pairs: list[Pair],
    settings: RunSettings,
    summary: list[dict[str, Any]],
    *,
    label: str,
    summary_path: str | Path | None = None,
) -> None:
    """Run the pairs in order (:func:`steerboard.runner.pair.run_pair`), each into its entry of ``summary``; a
    Ctrl-C cancels the running pair and ends the suite; the summary is written to ``summary_path`` at the end."""
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
        finish_summary(summary, summary_path)
        print("steerboard run: second interrupt: aborted at once; re-run the same command to resume",
              file=sys.stderr, flush=True)
        os._exit(130)

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    bar = tqdm(total=len(pairs), desc=label, unit="run")
    current: dict[str, Any] | None = None
    try:
        for entry, pair in zip(summary, pairs):
            current = entry
            bar.set_postfix_str(pair.name)
            run_pair(pair, settings, entry)
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
        finish_summary(summary, summary_path)
