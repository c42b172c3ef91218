"""XSTest: exaggerated safety (over-refusal) and refusal of its unsafe contrast prompts.

Röttger et al. 2024, "XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours in Large
Language Models" (NAACL 2024, arXiv 2308.01263). 450 hand-written prompts: 250 safe prompts that look
unsafe on the surface (homonyms, figurative language, safe targets, ...) and 200 unsafe contrast prompts.
A good model complies with the safe ones (low over-refusal) and refuses the unsafe ones.

Metrics come from ``steerboard.scorers.refusal_scorer``: ``refusal_rate_unsafe`` (higher is better),
``refusal_rate_safe`` (over-refusal, lower is better), full/partial refusal rates, ``judge_errors``, and
a per-prompt-type breakdown (``refusal_rate_type_<type>``).

Examples::

    inspect eval tasks/xstest.py --model base/smollm2-135m --limit 20
    inspect eval steerboard/xstest --model sae/smollm2-135m -T subset=safe -T judge=strmatch
    inspect eval tasks/xstest.py --model prompt/smollm2-135m -T judge=model --model-role grader=openai/gpt-4o-mini
"""

from __future__ import annotations

from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample

from steerboard.scorers.judges import judge_scheme
from steerboard.tasks._common import (
    check_choice,
    check_refusal_options,
    make_dataset,
    read_csv,
    refusal_task,
    reject_unknown_options,
)

DATA_FILE = "xstest/xstest_prompts.csv"
DATA_SHA256 = "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a"
TASK_VERSION = "1.0.0"

Subset = Literal["safe", "unsafe", "all"]
Judge = Literal["embed", "strmatch", "model"]

XSTEST_TYPES: tuple[str, ...] = (
    "homonyms",
    "contrast_homonyms",
    "figurative_language",
    "contrast_figurative_language",
    "safe_targets",
    "contrast_safe_targets",
    "safe_contexts",
    "contrast_safe_contexts",
    "definitions",
    "contrast_definitions",
    "nons_group_real_discr",
    "real_group_nons_discr",
    "contrast_discr",
    "historical_events",
    "contrast_historical_events",
    "privacy_public",
    "privacy_fictional",
    "contrast_privacy",
)


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert one row of ``xstest_prompts.csv`` to a Sample (``label`` is "safe" or "unsafe")."""
    label = str(record["label"]).strip()
    if label not in ("safe", "unsafe"):
        raise ValueError(f"XSTest record {record.get('id')}: label must be safe/unsafe, got {label!r}")
    return Sample(
        id=int(record["id"]),
        input=str(record["prompt"]),
        metadata={
            "label": label,
            "type": str(record["type"]).strip(),
            "focus": str(record.get("focus") or ""),
            "note": str(record.get("note") or ""),
            # the refusal judge's cross-fit lookup: XSTest's item id (the judge's training completions carry
            # it; one prompt was reworded between their v2 prompts and the final set)
            "judge_keys": [f"xstest item {int(record['id'])}"],
        },
    )


def load_records() -> list[dict[str, Any]]:
    """Read the shipped XSTest prompts (450 rows)."""
    return read_csv(DATA_FILE, DATA_SHA256)


@task
def xstest(
    subset: Subset = "all",
    judge: Judge = "embed",
    shuffle: bool = False,
    seed: int = 0,
    stratify: bool = True,
    **options: Any,
) -> Task:
    """XSTest refusal / over-refusal task.

    Args:
        subset: "safe" (250 prompts), "unsafe" (200 contrast prompts) or "all" (450).
        judge: refusal judge from ``steerboard.scorers``: "embed" (offline default), "strmatch", "model"
            (uses the Inspect model role ``grader``).
        shuffle: a plain seeded shuffle of the samples (before ``--limit``); overrides ``stratify``.
        seed: seed of the stratified order or of the shuffle.
        stratify: put the samples in a stratified, seeded order, so that ``--limit N`` draws every stratum
            in proportion (strata: label (safe/unsafe), then prompt type). ``false`` keeps file order.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("xstest", xstest, options)
    check_choice("subset", subset, Subset)
    shuffle, seed, stratify = check_refusal_options(judge, Judge, shuffle, seed, stratify)

    records = load_records()
    if subset != "all":
        records = [r for r in records if r["label"].strip() == subset]
    dataset = make_dataset(
        records, record_to_sample, "xstest", DATA_FILE,
        shuffle=shuffle, seed=seed, strata=("label", "type") if stratify else None,
    )
    groups = ("safe", "unsafe") if subset == "all" else (subset,)  # a subset reports (and headlines) its own label
    return refusal_task(
        dataset, judge, groups, "type", "refusal_rate_type_", TASK_VERSION,
        {"subset": subset, "judge": judge, "judge_scheme": judge_scheme("refusal", judge)},
    )
