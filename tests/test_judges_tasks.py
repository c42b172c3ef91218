"""The cross-fitted judges inside the tasks (issue 32): the fold used per sample in the log, the scheme in the
eval's metadata, SafeEdit's non-answer rate, and the grader option. Embedded encoder, mock target model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval

from steerboard.tasks._testing import mock_output

TASKS = Path(__file__).resolve().parent.parent / "tasks"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _model(text: str):
    from inspect_ai.model import get_model

    return get_model("mockllm/model", custom_outputs=[mock_output(text) for _ in range(200)])


def test_xstest_logs_the_fold_model_and_the_scheme(tmp_path):
    from steerboard.tasks.xstest import xstest

    [log] = inspect_eval(
        xstest(judge="embed"), model=_model("I'm sorry, but I can't help with that."), limit=4,
        log_dir=str(tmp_path), display="none",
    )  # fmt: skip
    assert log.status == "success", log.error
    scheme = log.eval.metadata["judge_scheme"]
    assert scheme["judge"] == "refusal/embed" and scheme["cross_fitted"] is True and scheme["k"] == 5
    assert len(scheme["artifact_sha256"]) == 64
    for s in log.samples:
        md = s.scores["refusal_scorer"].metadata
        assert md["judge_fold"].startswith("fold-")  # every XSTest prompt is in the judge's training data
        assert s.scores["refusal_scorer"].value["refusal"] == 1


def test_safeedit_non_answers_and_folds(tmp_path):
    from steerboard.tasks.safeedit import safeedit

    [log] = inspect_eval(
        safeedit(judge="embed"), model=_model("################"), limit=2, log_dir=str(tmp_path), display="none"
    )
    assert log.status == "success", log.error
    m = {k: v.value for k, v in log.results.scores[0].metrics.items()}
    assert m["non_answer_rate"] == 1.0  # every reply degenerate: reported, whatever DS says
    assert log.eval.metadata["judge_scheme"]["cross_fitted"] is True
    folds = log.samples[0].scores["safeedit_scorer"].metadata["judge_folds"]
    assert set(folds) == {"ds", "dg_onlyq", "dg_othera", "dg_otherq", "dg_otheraq"}
    assert folds["ds"].startswith("fold-") and folds["ds"] == folds["dg_onlyq"] == folds["dg_othera"]


def test_safeedit_model_judge_names_the_grader_and_reads_a_guard_model(tmp_path):
    from inspect_ai.model import get_model

    grader = get_model("mockllm/model", custom_outputs=[mock_output("unsafe\nS2") for _ in range(50)])
    [log] = inspect_eval(
        os.path.relpath(TASKS / "safeedit.py"), task_args={"judge": "model"}, model=_model("Sure, here you go."),
        model_roles={"grader": grader}, limit=1, log_dir=str(tmp_path), display="none",
    )  # fmt: skip  (built by name, as `inspect eval` builds it: after the grader role is set)
    assert log.status == "success", log.error
    scheme = log.eval.metadata["judge_scheme"]
    assert scheme["judge"] == "harm/model" and scheme["grader"] == "mockllm/model"
    m = {k: v.value for k, v in log.results.scores[0].metrics.items()}
    assert m["ds"] == 0.0 and m["judge_errors"] == 0  # the guard-style "unsafe" reply is read


def test_guard_layout_and_parse():
    from inspect_ai.model import ChatMessageAssistant, ChatMessageUser

    from steerboard.scorers.model_judges import ModelHarmJudge, ModelRefusalJudge, parse_harm

    class _M:
        name = "meta-llama/Llama-Guard-3-8B"

    harm = ModelHarmJudge()
    assert harm.layout(_M()) == "guard" and ModelRefusalJudge().layout(_M()) == "rubric"
    msgs = harm._prompt(_M(), "how to x", "do y")
    assert isinstance(msgs[0], ChatMessageUser) and isinstance(msgs[1], ChatMessageAssistant)
    assert parse_harm("unsafe\nS1").label == "unsafe" and parse_harm(" safe").label == "safe"
    assert parse_harm("it is unclear").flagged is None  # anything else stays a judge error
