"""WildGuardTest: refusal of harmful prompts and over-refusal of benign ones, vanilla vs adversarial.

Han et al. 2024, "WildGuard: Open One-Stop Moderation Tools for Safety Risks, Jailbreaks, and Refusals of
LLMs" (arXiv 2406.18495). The test split (``allenai/wildguardmix``, config ``wildguardtest``, 1,725 items)
holds vanilla and adversarial (jailbreak-wrapped) prompts labelled harmful/unharmful. O'Brien et al. 2024
(arXiv 2411.11296) report refusal on its harmful prompts (higher is better) and on its benign prompts
(over-refusal, lower is better).

The data set is gated on the Hugging Face hub. Supply it either way:

* set ``HF_TOKEN`` to a token whose account accepted the dataset terms (loaded at a pinned revision), or
* ``-T data_file=wildguardtest.jsonl`` (or ``.parquet``) with the hub schema: ``prompt``,
  ``prompt_harm_label`` ("harmful"/"unharmful"), ``adversarial`` (bool), optionally ``response``,
  ``response_refusal_label``, ``response_harm_label``, ``subcategory``.

For an offline harmful/benign refusal measurement use ``jbb_refusal`` (the open stand-in).

Examples::

    HF_TOKEN=hf_... inspect eval tasks/wildguard.py --model base/smollm2-135m --limit 50
    inspect eval steerboard/wildguard --model sae/smollm2-135m -T data_file=wildguardtest.parquet
"""

from __future__ import annotations

import os
from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample

from steerboard.tasks._common import (
    check_choice,
    check_fields,
    check_refusal_options,
    load_hub_rows,
    make_dataset,
    read_records,
    refusal_task,
    reject_unknown_options,
)

HF_DATASET = "allenai/wildguardmix"
HF_CONFIG = "wildguardtest"
HF_SPLIT = "test"
HF_REVISION = "main"
"""Hub revision. Not pinned to a commit sha: the hub was unreachable when this task was written, so no sha
could be verified; pass ``-T revision=<sha>`` to pin a run (the revision is recorded in the task metadata)."""
TASK_VERSION = "1.0.0"

Judge = Literal["embed", "strmatch", "model"]
Subset = Literal["all", "vanilla", "adversarial"]

REQUIRED_FIELDS = ("prompt", "prompt_harm_label", "adversarial")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"adversarial must be a boolean, got {value!r}")


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert one WildGuardTest record (hub schema) to a Sample.

    ``label`` is "unsafe" for ``prompt_harm_label == "harmful"`` and "safe" for "unharmful";
    ``group`` combines it with vanilla/adversarial (e.g. "unsafe_adversarial").
    """
    harm = str(record["prompt_harm_label"]).strip().lower()
    if harm not in ("harmful", "unharmful"):
        raise ValueError(f"prompt_harm_label must be 'harmful' or 'unharmful', got {record['prompt_harm_label']!r}")
    label = "unsafe" if harm == "harmful" else "safe"
    adversarial = _as_bool(record["adversarial"])
    meta = {
        "label": label,
        "adversarial": adversarial,
        "group": f"{label}_{'adversarial' if adversarial else 'vanilla'}",
        "subcategory": str(record.get("subcategory") or ""),
    }
    for key in ("response_refusal_label", "response_harm_label"):
        if record.get(key) is not None:
            meta[key] = str(record[key])
    return Sample(input=str(record["prompt"]), metadata=meta)


def load_records(data_file: str | None, revision: str = HF_REVISION) -> list[dict[str, Any]]:
    """Load WildGuardTest from a local file or from the hub (``HF_TOKEN``).

    Raises:
        RuntimeError: neither a data file nor a token is available (explains both ways).
        ValueError: a malformed local file or a record without the required fields (names file and record).
    """
    if data_file:
        rows = read_records(data_file)
        check_fields(rows, REQUIRED_FIELDS, str(data_file))
        return rows
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise RuntimeError(
            "wildguard needs the gated WildGuardTest data. Either (1) accept the terms of "
            f"https://huggingface.co/datasets/{HF_DATASET} and set HF_TOKEN to your token, or (2) pass "
            "-T data_file=PATH to a .jsonl/.parquet file in its schema (fields: prompt, prompt_harm_label "
            "['harmful'|'unharmful'], adversarial [bool]). For an offline stand-in run the jbb_refusal task."
        )
    return load_hub_rows(
        HF_DATASET, HF_CONFIG, HF_SPLIT, revision, token, REQUIRED_FIELDS, f"{HF_DATASET}/{HF_CONFIG}",
        f"could not load {HF_DATASET}/{HF_CONFIG}@{revision}",
        "; check HF_TOKEN and that your account accepted the dataset terms, or pass -T data_file=PATH",
    )


@task
def wildguard(
    data_file: str | None = None,
    subset: Subset = "all",
    judge: Judge = "embed",
    shuffle: bool = False,
    seed: int = 0,
    stratify: bool = True,
    revision: str = HF_REVISION,
    **options: Any,
) -> Task:
    """WildGuardTest refusal / over-refusal task.

    Args:
        data_file: local WildGuardTest file (.jsonl/.json/.parquet); otherwise loaded from the hub with HF_TOKEN.
        subset: "all", "vanilla" or "adversarial" prompts.
        judge: refusal judge ("embed", "strmatch", "model").
        shuffle: a plain seeded shuffle of the samples (before ``--limit``); overrides ``stratify``.
        seed: seed of the stratified order or of the shuffle.
        stratify: put the samples in a stratified, seeded order, so that ``--limit N`` draws every stratum
            in proportion (strata: label (harmful/unharmful), then vanilla/adversarial, then subcategory).
            ``false`` keeps file order.
        revision: hub revision (only used without ``data_file``).
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("wildguard", wildguard, options)
    check_choice("subset", subset, Subset)
    shuffle, seed, stratify = check_refusal_options(judge, Judge, shuffle, seed, stratify)

    records = load_records(data_file, revision=revision)
    samples_source = str(data_file) if data_file else f"{HF_DATASET}/{HF_CONFIG}@{revision}"
    dataset = make_dataset(
        records, record_to_sample, "wildguardtest", samples_source,
        shuffle=shuffle, seed=seed, strata=("label", "adversarial", "subcategory") if stratify else None,
    )
    if subset != "all":
        want = subset == "adversarial"
        dataset = dataset.filter(lambda s: bool(s.metadata and s.metadata["adversarial"] == want))
    return refusal_task(
        dataset, judge, ("unsafe", "safe"), "group", "refusal_rate_", TASK_VERSION,
        {"subset": subset, "judge": judge, "data": samples_source},
    )
