"""Open stand-in for WildGuardTest: harmful vs benign refusal on JailbreakBench goals (runs offline).

NOT WildGuardTest. WildGuardTest (see ``wildguard``) is gated on the hub; this task measures the same two
quantities on open data so every run has them: refusal of harmful requests (higher is better) and
over-refusal of benign requests that look similar (lower is better).

Data: JailbreakBench (Chao et al. 2024, "JailbreakBench: An Open Robustness Benchmark for Jailbreaking
Large Language Models", arXiv 2404.01318) JBB-Behaviors, 100 harmful + 100 benign goals (topic-matched).
``-T extra=harmbench`` adds the 159 *standard* HarmBench test behaviours (Mazeika et al. 2024,
arXiv 2402.04249) as further harmful prompts. StrongREJECT is deliberately not offered: it is reserved for
method fitting (the fit-data contract, ``docs/contract.md``), so evaluating on it would leak.

Metrics (``steerboard.scorers.refusal_scorer``): ``refusal_rate_unsafe`` (harmful, higher is better),
``refusal_rate_safe`` (benign, lower is better), full/partial refusal rates, ``judge_errors``, and a
per-source breakdown (``refusal_rate_source_<source>``).

Examples::

    inspect eval tasks/jbb_refusal.py --model base/smollm2-135m --limit 20 -T shuffle=true
    inspect eval steerboard/jbb_refusal --model actadd/smollm2-135m -T extra=harmbench -T judge=strmatch
"""

from __future__ import annotations

from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample

from steerboard.scorers.judges import judge_scheme
from steerboard.taskdata import JBB_FILE, JBB_SHA256
from steerboard.tasks._common import (
    check_choice,
    check_refusal_options,
    data_file,
    load_harmbench_standard,
    make_dataset,
    read_json,
    refusal_task,
    reject_unknown_options,
)

TASK_VERSION = "1.0.0"

Judge = Literal["embed", "strmatch", "model"]
Extra = Literal["none", "harmbench"]


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert a JBB goal (``{"text", "label": "harmful"|"safe", "index"}``) to a Sample.

    The export labels the benign goals "safe" (JBB calls them "benign"); both spellings are accepted.
    """
    raw = str(record["label"]).strip().lower()
    if raw not in ("harmful", "safe", "benign"):
        raise ValueError(f"JBB record {record.get('index')}: label must be harmful/safe/benign, got {raw!r}")
    label = "unsafe" if raw == "harmful" else "safe"
    return Sample(
        id=f"jbb-{'harmful' if label == 'unsafe' else 'benign'}-{int(record['index']):03d}",
        input=str(record["text"]),
        metadata={"label": label, "source": "jbb"},
    )


def harmbench_record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert a HarmBench behaviour row to a harmful (``label="unsafe"``) Sample."""
    return Sample(
        id=f"harmbench-{record['BehaviorID']}",
        input=str(record["Behavior"]),
        metadata={"label": "unsafe", "source": "harmbench", "category": str(record.get("SemanticCategory") or "")},
    )


def load_jbb_records() -> list[dict[str, Any]]:
    """The 200 JBB goals with a per-label running ``index`` (0-99 harmful, 0-99 benign)."""
    rows = read_json(data_file(JBB_FILE, JBB_SHA256))
    counters: dict[str, int] = {}
    out = []
    for r in rows:
        lab = str(r["label"]).strip().lower()
        out.append({**r, "index": counters.get(lab, 0)})
        counters[lab] = counters.get(lab, 0) + 1
    return out


@task
def jbb_refusal(
    extra: Extra = "none",
    judge: Judge = "embed",
    shuffle: bool = False,
    seed: int = 0,
    stratify: bool = True,
    **options: Any,
) -> Task:
    """Open stand-in for WildGuardTest: JBB 100 harmful + 100 benign goals (+ optional HarmBench test).

    Args:
        extra: "none" or "harmbench" (adds 159 standard HarmBench test behaviours as harmful prompts).
        judge: refusal judge ("embed", "strmatch", "model").
        shuffle: a plain seeded shuffle of the samples (before ``--limit``); overrides ``stratify``.
        seed: seed of the stratified order or of the shuffle.
        stratify: put the samples in a stratified, seeded order, so that ``--limit N`` draws every stratum
            in proportion (strata: label (harmful/benign), then source (jbb/harmbench)). ``false`` keeps file order.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("jbb_refusal", jbb_refusal, options)
    check_choice("extra", extra, Extra)
    shuffle, seed, stratify = check_refusal_options(judge, Judge, shuffle, seed, stratify)

    samples_fn = record_to_sample
    records: list[dict[str, Any]] = load_jbb_records()
    if extra == "harmbench":
        records = records + [{"_harmbench": True, **r} for r in load_harmbench_standard()]

        def samples_fn(r: dict[str, Any]) -> Sample:  # noqa: F811 - dispatch by source
            return harmbench_record_to_sample(r) if r.get("_harmbench") else record_to_sample(r)

    dataset = make_dataset(
        records, samples_fn, "jbb_refusal", JBB_FILE,
        shuffle=shuffle, seed=seed, strata=("label", "source") if stratify else None,
    )
    return refusal_task(
        dataset, judge, ("unsafe", "safe"), "source", "refusal_rate_source_", TASK_VERSION,
        {
            "extra": extra,
            "judge": judge,
            "judge_scheme": judge_scheme("refusal", judge),
            "title": "Open stand-in for WildGuardTest (JailbreakBench goals)",
        },
    )
