"""Integration tests: tasks on the embedded SmolLM2-135M through the ``base/`` provider (quick, CPU)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval

from steerboard.tasks import _common

pytestmark = pytest.mark.integration

TASKS = Path(_common.__file__).parent


def _task(name: str) -> str:
    return os.path.relpath(TASKS / f"{name}.py")


def test_xstest_smollm_both_labels(tmp_path):
    # shuffle seed 4 puts both safe and unsafe prompts among the first four samples
    log = inspect_eval(
        _task("xstest"),
        model="base/smollm2-135m",
        limit=4,
        task_args={"judge": "strmatch", "shuffle": True, "seed": 4},
        model_args={},
        max_tokens=32,
        log_dir=str(tmp_path),
        display="none",
    )[0]
    assert log.status == "success", log.error
    labels = {s.metadata["label"] for s in log.samples}
    assert labels == {"safe", "unsafe"}
    m = {k: v.value for sc in log.results.scores for k, v in sc.metrics.items()}
    for key in ("refusal_rate_safe", "refusal_rate_unsafe", "judge_errors"):
        assert key in m and not math.isnan(m[key])
    assert all(s.output.completion.strip() for s in log.samples)


def test_mmlu_smollm_letter_logprobs_come_back(tmp_path):
    # the engine provider returns top_logprobs, so the logprob reading must not fall back
    log = inspect_eval(
        _task("mmlu"),
        model="base/smollm2-135m",
        limit=2,
        task_args={"subjects": "high_school_geography"},
        log_dir=str(tmp_path),
        display="none",
    )[0]
    assert log.status == "success", log.error
    lp = {k: v.value for sc in log.results.scores if sc.name == "mmlu_logprob" for k, v in sc.metrics.items()}
    assert lp["logprob_fallbacks"] == 0
    for s in log.samples:
        lps = s.scores["mmlu_logprob"].metadata["logprobs"]
        assert lps and set(lps) <= set("ABCD")
