"""Time estimates of a suite's pairs (``steerboard run --dry-run`` and the line a run starts with): a pair's
samples times its task's seconds per sample, measured on this machine's finished logs or else the shipped
reference rates (``steerboard/suites/rates.json``, written by ``benchmarks/pair_rates.py``)."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from steerboard.runner.suite import MethodRun, Suite, TaskRun, build_task, generate_config

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
        max_tokens = generate_config(suite.generate, task.config, generate).get("max_tokens") or DEFAULT_MAX_TOKENS
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


def print_estimate(to_run: list[float | None], source: str) -> None:
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
