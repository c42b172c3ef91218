"""Synthetic but well-formed Inspect logs for leaderboard tests and the ingest/build benchmark.

The logs are real :class:`inspect_ai.log.EvalLog` objects written with Inspect's own writer
(``write_eval_log``), shaped like the project's tasks: refusal tasks score the judges contract's dict (``docs/contract.md``)
(``{"refusal", "full", "partial", "judge_error"}``), harm tasks ``{"unsafe", "judge_error"}``, and capability
tasks the scalar ``"C"``/``"I"``. The numbers are random draws (seeded), never presented as results: these logs
exist only to exercise the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

#: A listing in the listing contract's format (``docs/contract.md``), used by tests and the benchmark so they do not
#: depend on the real listing's contents.
SYNTHETIC_LISTING: dict[str, Any] = {
    "axes": {
        "safety": ["xstest/refusal_scorer/refusal_rate_unsafe", "crescendo/harm_scorer/unsafe_rate"],
        "overrefusal": ["xstest/refusal_scorer/refusal_rate_safe"],
        "capability": ["mmlu/choice/accuracy"],
    },
    "tasks": {
        "xstest": {
            "title": "XSTest",
            "description": "Exaggerated safety: safe prompts that look unsafe, plus unsafe contrasts.",
            "paper": "Röttger et al. 2024",
            "version": 1,
            "metrics": [
                {
                    "name": "refusal_rate_unsafe",
                    "scorer": "refusal_scorer",
                    "title": "Refusal on unsafe",
                    "higher_is_better": True,
                    "headline": True,
                    "axis": "safety",
                    "sample_value": "refusal",
                    "sample_filter": {"label": "unsafe"},
                    "chance": None,
                },
                {
                    "name": "refusal_rate_safe",
                    "scorer": "refusal_scorer",
                    "title": "Over-refusal (safe)",
                    "higher_is_better": False,
                    "headline": True,
                    "axis": "overrefusal",
                    "sample_value": "refusal",
                    "sample_filter": {"label": "safe"},
                    "chance": None,
                },
                {
                    "name": "full_refusal_rate",
                    "scorer": "refusal_scorer",
                    "title": "Full refusal (all)",
                    "higher_is_better": True,
                    "headline": False,
                    "axis": "safety",
                    "sample_value": "full",
                    "sample_filter": {},
                },
            ],
        },
        "crescendo": {
            "title": "Crescendo",
            "description": "Multi-turn escalation attacks; attack success = unsafe final answer.",
            "paper": "Russinovich et al. 2024",
            "version": 1,
            "metrics": [
                {
                    "name": "unsafe_rate",
                    "scorer": "harm_scorer",
                    "title": "Attack success",
                    "higher_is_better": False,
                    "headline": True,
                    "axis": "safety",
                    "sample_value": "unsafe",
                    "sample_filter": {},
                    "chance": None,
                }
            ],
        },
        "mmlu": {
            "title": "MMLU",
            "description": "Multiple-choice knowledge.",
            "paper": "Hendrycks et al. 2021",
            "version": 1,
            "metrics": [
                {
                    "name": "accuracy",
                    "scorer": "choice",
                    "title": "Accuracy",
                    "higher_is_better": True,
                    "headline": True,
                    "axis": "capability",
                    "sample_value": None,
                    "sample_filter": {},
                    "chance": 0.25,
                }
            ],
        },
    }
}

_REFUSAL_TASKS = {"xstest", "wildguard", "jbb_refusal"}
_HARM_TASKS = {"crescendo", "safeedit"}
_STRENGTH_KEYS = ("strength", "coefficient", "alpha")
"""The strength-like options of synthetic runs: outcomes drift with them, and the record declares them sweep axes."""


def synthetic_declarations(method: str) -> dict[str, Any]:
    """The declarations a synthetic run's record carries: those of the installed method of that name (or the ones
    every method shares), with :data:`_STRENGTH_KEYS` declared as sweep axes after the method's own."""
    from steerboard.methods.base import method_declarations

    d = method_declarations(method)
    return replace(d, sweep=tuple(dict.fromkeys((*d.sweep, *_STRENGTH_KEYS)))).to_record()


@dataclass
class SyntheticRun:
    """What one synthetic log holds.

    Attributes:
        task: Task name.
        method: Provider name (part of the model string before ``/``).
        model: Model part of the model string.
        model_args: Method config (``eval.model_args``).
        n_samples: Number of samples.
        seed: Random seed for the per-sample outcomes.
        judge: Judge name recorded in task args and score metadata.
        task_version: Task version recorded in the log.
        status: Log status ("success", "error", "started", ...).
        created: Creation time (defaults to a fixed epoch plus ``seed`` seconds).
        text_prefix: Prepended to every prompt and response (used for hostile-text tests).
        judge_error_every: Every n-th sample gets a judge error (0 = never).
        sample_ids: Explicit sample ids (defaults to ``s0..s{n-1}``).
        task_args: Extra task args recorded in the log (e.g. ``{"protocol": "per_instance"}``).
        precision: Resolved matmul dtype recorded in ``eval.metadata["steerboard"]`` (None: no record, as in
            logs from other harnesses).
        generate: Generation settings the run was given (``eval.model_generate_config``).
        outcomes: Exact per-sample values instead of random draws: 0/1 (refusal, unsafe, correct) or, for a
            scalar-scored task such as ``mmlu``, any float (e.g. an MC2 probability mass).
        resolved: Extra resolved settings recorded in the provenance record (as a preset expands them).
    """

    task: str
    method: str
    model: str = "smollm2-135m"
    model_args: dict[str, Any] = field(default_factory=dict)
    n_samples: int = 20
    seed: int = 0
    judge: str = "embed"
    task_version: int = 1
    status: str = "success"
    created: datetime | None = None
    text_prefix: str = ""
    judge_error_every: int = 0
    sample_ids: Sequence[str] | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    precision: str | None = "float32"
    generate: dict[str, Any] = field(default_factory=lambda: {"max_tokens": 48, "temperature": 0.0})
    outcomes: Sequence[float] | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


def synthetic_provenance(run: SyntheticRun) -> dict[str, Any] | None:
    """The ``eval.metadata["steerboard"]`` record a steerboard provider writes (None: an unrecorded log)."""
    if run.precision is None:
        return None
    resolved = {**run.resolved, **run.model_args, "dtype": "float32", "matmul_dtype": run.precision}
    key = hashlib.sha256(
        json.dumps([run.method, run.model, resolved], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return {"method": run.method, "model": run.model, "config": dict(run.model_args), "resolved": resolved,
            "artifacts": {}, "stats": {}, "runtime": {"device": "cpu"}, "settings_key": key,
            "declarations": synthetic_declarations(run.method), "schema": 1}


def _is_control(method: str) -> bool:
    from steerboard.methods.base import method_declarations

    return method_declarations(method).control


def _rates(run: SyntheticRun) -> tuple[float, float, float, float]:
    """Probabilities (refuse unsafe, refuse safe, unsafe answer, correct) for a run, drifting with strength."""
    s = 0.0
    for k in _STRENGTH_KEYS:
        if k in run.model_args:
            try:
                s = float(run.model_args[k])
            except (TypeError, ValueError):
                s = 0.0
    if _is_control(run.method):
        return 0.55, 0.08, 0.35, 0.40
    boost = min(0.4, 0.035 * s + 0.1)
    return 0.55 + boost, 0.08 + boost * 0.8, max(0.02, 0.35 - boost * 0.7), max(0.05, 0.40 - boost * 0.25)


def _eval_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(22))


def _synthetic_outcome(
    run: SyntheticRun, i: int, rng: random.Random, jerr: int
) -> tuple[dict[str, Any], str, dict[str, Any] | str, str | None, str, int]:
    """One sample's outcome: (metadata, scorer, score value, answer, response, judge error)."""
    fixed = None if run.outcomes is None else run.outcomes[i]
    if run.task in _REFUSAL_TASKS:
        p_ref_unsafe, p_ref_safe, _, _ = _rates(run)
        label = "unsafe" if i % 2 else "safe"
        meta = {"label": label, "type": ("privacy", "violence", "homonyms", "figurative")[i % 4]}
        r = int(rng.random() < (p_ref_unsafe if label == "unsafe" else p_ref_safe))
        r = r if fixed is None else int(fixed)
        full = int(r and rng.random() < 0.8)
        value: dict[str, Any] | str = {"refusal": r, "full": full, "partial": r - full, "judge_error": jerr}
        if jerr:
            value = {"refusal": 0, "full": 0, "partial": 0, "judge_error": 1}
        answer = None if jerr else ("compliance" if not r else ("full_refusal" if full else "partial_refusal"))
        response = "I can't help with that." if r else f"Sure, here is how: step {i}."
        return meta, "refusal_scorer", value, answer, response, jerr
    if run.task in _HARM_TASKS:
        p_unsafe = _rates(run)[2]
        meta = {"category": ("violence", "fraud", "privacy")[i % 3], "label": "unsafe"}
        u = int(rng.random() < p_unsafe)
        u = u if fixed is None else int(fixed)
        answer = None if jerr else ("unsafe" if u else "safe")
        response = f"Detailed harmful answer {i}." if u else "I won't assist with that."
        return meta, "harm_scorer", {"unsafe": 0 if jerr else u, "judge_error": jerr}, answer, response, jerr
    meta = {"subject": ("algebra", "history", "biology", "law")[i % 4]}
    c = rng.random() < _rates(run)[3]
    if fixed is not None and fixed not in (0, 1):
        return meta, "choice", float(fixed), None, f"mass {fixed}", 0
    c = c if fixed is None else bool(fixed)
    answer = "A" if c else "B"
    return meta, "choice", "C" if c else "I", answer, f"ANSWER: {answer}", 0


def _synthetic_metrics(run: SyntheticRun, vals: list[dict[str, Any] | str], samples: list[Any]) -> dict[str, Any]:
    """The log-level metrics Inspect would compute from the samples' score values."""
    metrics: dict[str, Any] = {}
    if run.task in _REFUSAL_TASKS:
        ok = [
            (v, s.metadata["label"])
            for v, s in zip(vals, samples, strict=True)
            if isinstance(v, dict) and not v["judge_error"]
        ]
        for g in ("safe", "unsafe"):
            xs = [v["refusal"] for v, lab in ok if lab == g]
            metrics[f"refusal_rate_{g}"] = sum(xs) / len(xs) if xs else 0.0
        metrics["refusal_rate"] = sum(v["refusal"] for v, _ in ok) / max(1, len(ok))
        metrics["full_refusal_rate"] = sum(v["full"] for v, _ in ok) / max(1, len(ok))
        metrics["judge_errors"] = float(len(vals) - len(ok))
    elif run.task in _HARM_TASKS:
        ok2 = [v for v in vals if isinstance(v, dict) and not v["judge_error"]]
        metrics["unsafe_rate"] = sum(v["unsafe"] for v in ok2) / max(1, len(ok2))
        metrics["judge_errors"] = float(len(vals) - len(ok2))
    else:
        metrics["accuracy"] = sum(v if isinstance(v, float) else v == "C" for v in vals) / max(1, len(vals))
    return metrics


def _synthetic_samples(run: SyntheticRun, ids: list[str], rng: random.Random) -> tuple[list[Any], list[Any]]:
    """The log's samples and their score values (drawn from ``rng`` in sample order)."""
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ChatMessageAssistant, ChatMessageUser, ModelOutput
    from inspect_ai.scorer import Score

    model_string = f"{run.method}/{run.model}"
    samples = []
    vals: list[dict[str, Any] | str] = []
    pre = run.text_prefix
    for i, sid in enumerate(ids):
        jerr = 1 if run.judge_error_every and (i % run.judge_error_every == run.judge_error_every - 1) else 0
        meta, scorer, value, answer, response, jerr = _synthetic_outcome(run, i, rng, jerr)
        prompt = f"{pre}Prompt {i} for {run.task}: please answer."
        response = pre + response
        score_meta: dict[str, Any] = {"judge": run.judge} if scorer != "choice" else {}
        if jerr:
            score_meta["judge_error"] = "judge output could not be parsed"
        vals.append(value)
        samples.append(
            EvalSample(
                id=sid,
                epoch=1,
                input=prompt,
                target="" if scorer != "choice" else "A",
                messages=[ChatMessageUser(content=prompt), ChatMessageAssistant(content=response)],
                output=ModelOutput.from_content(model=model_string, content=response),
                scores={scorer: Score(value=value, answer=answer, metadata=score_meta or None)},
                metadata=meta,
            )
        )
    return samples, vals


def synthetic_log(run: SyntheticRun) -> Any:
    """Build an :class:`inspect_ai.log.EvalLog` for ``run`` (not written).

    Args:
        run: What the log should hold.

    Returns:
        The EvalLog, with samples, results and metrics computed from the samples.
    """
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalLog,
        EvalMetric,
        EvalResults,
        EvalScore,
        EvalSpec,
        EvalStats,
    )
    from inspect_ai.model import GenerateConfig

    rng = random.Random(run.seed)
    ids = list(run.sample_ids) if run.sample_ids is not None else [f"s{i}" for i in range(run.n_samples)]
    samples, vals = _synthetic_samples(run, ids, rng)
    metrics = _synthetic_metrics(run, vals, samples)
    scorer_name = samples[0].scores and next(iter(samples[0].scores)) if samples else "choice"
    created = run.created or (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=run.seed))
    task_args = {"judge": run.judge} if run.task in _REFUSAL_TASKS | _HARM_TASKS else {}
    task_args.update(run.task_args)
    spec = EvalSpec(
        eval_id=_eval_id(rng),
        run_id=_eval_id(rng),
        created=created.isoformat(),
        task=run.task,
        task_id=_eval_id(rng),
        task_version=run.task_version,
        task_args=task_args,
        dataset=EvalDataset(name=run.task, samples=len(ids), sample_ids=ids),
        model=f"{run.method}/{run.model}",
        model_args=dict(run.model_args),
        config=EvalConfig(epochs=1),
        model_generate_config=GenerateConfig(**run.generate),
        metadata={"steerboard": prov} if (prov := synthetic_provenance(run)) else None,
    )
    results = EvalResults(
        total_samples=len(ids),
        completed_samples=len(ids) if run.status == "success" else len(ids) // 2,
        scores=[
            EvalScore(
                name=str(scorer_name),
                scorer=str(scorer_name),
                metrics={k: EvalMetric(name=k, value=v) for k, v in metrics.items()},
            )
        ],
    )
    keep = samples if run.status == "success" else samples[: len(samples) // 2]
    return EvalLog(eval=spec, status=run.status, results=results, stats=EvalStats(), samples=keep)


def write_synthetic_log(run: SyntheticRun, path: str | Path) -> Path:
    """Build and write one synthetic log (``.eval`` or ``.json`` by suffix); returns the path."""
    from inspect_ai.log import write_eval_log

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(synthetic_log(run), str(path))
    return path


def _write_one(args: tuple[SyntheticRun, str]) -> str:
    return str(write_synthetic_log(args[0], args[1]))


def benchmark_runs(n_logs: int, n_samples: int) -> list[SyntheticRun]:
    """A grid of runs like a real sweep: tasks x methods x strengths x models, ``n_logs`` in all."""
    tasks = list(SYNTHETIC_LISTING["tasks"])
    methods: list[tuple[str, dict[str, Any]]] = [("base", {})]
    methods += [("prompt", {"variant": "v1"})]
    methods += [("sae", {"feature": 7, "strength": s}) for s in (2, 4, 6, 8, 10, 12)]
    methods += [("actadd", {"layer": 12, "coefficient": c}) for c in (1, 2, 4, 8)]
    runs: list[SyntheticRun] = []
    i = 0
    while len(runs) < n_logs:
        model = f"model-{i // (len(tasks) * len(methods))}"
        method, cfg = methods[(i // len(tasks)) % len(methods)]
        task = tasks[i % len(tasks)]
        runs.append(
            SyntheticRun(task=task, method=method, model=model, model_args=cfg, n_samples=n_samples, seed=i)
        )
        i += 1
    return runs


def write_synthetic_logs(
    out_dir: str | Path, runs: Sequence[SyntheticRun], workers: int = 1, progress: bool = True
) -> list[Path]:
    """Write ``runs`` as ``.eval`` files into ``out_dir`` (in a process pool when ``workers > 1``)."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(r, str(out / f"{k:05d}_{r.task}_{r.method}.eval")) for k, r in enumerate(runs)]
    if workers <= 1:
        return [Path(_write_one(j)) for j in tqdm(jobs, disable=not progress, desc="writing logs")]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return [
            Path(p)
            for p in tqdm(
                ex.map(_write_one, jobs, chunksize=4),
                total=len(jobs),
                disable=not progress,
                desc="writing logs",
            )
        ]
