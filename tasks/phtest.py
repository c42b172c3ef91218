"""PHTest: false refusals on pseudo-harmful prompts, harmless and controversial kept apart.

An et al. 2024, "Automatic Pseudo-Harmful Prompt Generation for Evaluating False Refusals in Large Language
Models" (COLM 2024, arXiv 2409.00598). 3,260 prompts generated to look harmful while being harmless: 2,069
labelled ``harmless`` (refusing them is a false refusal) and 1,191 labelled ``controversial`` (whether refusing is
wrong is debatable). The prompts were written without sight of XSTest's categories, so a refusal gate fitted to
mirror XSTest can be checked on them.

Metrics come from ``steerboard.scorers.refusal_scorer``: ``refusal_rate_harmless`` (over-refusal, lower is
better; on the leaderboard's over-refusal axis) and ``refusal_rate_controversial`` (reported apart, on no axis),
plus full/partial refusal rates and ``judge_errors``.

Examples::

    inspect eval tasks/phtest.py --model base/smollm2-135m --limit 40
    inspect eval steerboard/phtest --model sae/smollm2-135m -T subset=harmless -T judge=strmatch
"""

from __future__ import annotations

from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample

from steerboard.tasks._common import (
    check_choice,
    check_refusal_options,
    make_dataset,
    read_csv,
    reject_unknown_options,
)

DATA_FILE = "phtest/dataset_v0.1.csv.gz"
DATA_SHA256 = "5695465e3626780572dfbe8d88de84be05576bc9b106ca2826736545c065a677"
TASK_VERSION = "1.0.0"
LABELS = ("harmless", "controversial")

Subset = Literal["harmless", "controversial", "all"]
Judge = Literal["embed", "strmatch", "model"]


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert one row of ``dataset_v0.1.csv`` (``ID``, ``Request``, ``Harmfulness``) to a Sample."""
    label = str(record["Harmfulness"]).strip()
    if label not in LABELS:
        raise ValueError(f"PHTest record {record.get('ID')}: Harmfulness must be harmless/controversial, got {label!r}")
    return Sample(id=int(record["ID"]), input=str(record["Request"]), metadata={"label": label})


def load_records() -> list[dict[str, Any]]:
    """Read the shipped PHTest prompts (3,260 rows)."""
    return read_csv(DATA_FILE, DATA_SHA256)


@task
def phtest(
    subset: Subset = "all",
    judge: Judge = "embed",
    shuffle: bool = False,
    seed: int = 0,
    stratify: bool = True,
    **options: Any,
) -> Task:
    """PHTest false-refusal task.

    Args:
        subset: "harmless" (2,069 prompts), "controversial" (1,191) or "all" (3,260).
        judge: refusal judge from ``steerboard.scorers``: "embed" (offline default), "strmatch", "model"
            (uses the Inspect model role ``grader``).
        shuffle: a plain seeded shuffle of the samples (before ``--limit``); overrides ``stratify``.
        seed: seed of the stratified order or of the shuffle.
        stratify: a stratified, seeded order by label, so ``--limit N`` draws harmless and controversial prompts
            in proportion (about 63 % harmless). ``false`` keeps file order.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    from inspect_ai.solver import generate

    from steerboard.scorers import refusal_scorer

    reject_unknown_options("phtest", phtest, options)
    check_choice("subset", subset, Subset)
    shuffle, seed, stratify = check_refusal_options(judge, Judge, shuffle, seed, stratify)

    records = load_records()
    if subset != "all":
        records = [r for r in records if r["Harmfulness"].strip() == subset]
    dataset = make_dataset(
        records, record_to_sample, "phtest", DATA_FILE,
        shuffle=shuffle, seed=seed, strata=("label",) if stratify else None,
    )
    return Task(
        dataset=dataset,
        solver=generate(),
        scorer=refusal_scorer(judge=judge, groups_key="label", groups=LABELS),
        version=TASK_VERSION,
        metadata={"subset": subset, "judge": judge},
    )
