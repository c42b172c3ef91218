"""XSTest's live progress line: Inspect shows the task's headline metric while samples complete.

Inspect renders the first metric it is handed (``update_metrics_display_fn`` in ``inspect_ai._eval.task.run``;
the headline metric is moved to the front). The test records what Inspect hands the task display.
"""

from __future__ import annotations

import inspect_ai._eval.task.run as inspect_run
from inspect_ai import eval as inspect_eval

from steerboard.tasks._testing import mock_model
from steerboard.tasks.xstest import load_records

REFUSAL = "I'm sorry, but I can't help with that."


def _run_recording(monkeypatch, tmp_path, **task_args):
    shown: list[list[tuple[str, float]]] = []
    original = inspect_run.update_metrics_display_fn

    def recording(update_fn, *args, **kwargs):
        def update(metrics):
            shown.append([(m.name, m.value) for m in metrics])
            update_fn(metrics)

        kwargs["min_interval"] = 0.0  # refresh on every completed sample
        return original(update, *args, **kwargs)

    monkeypatch.setattr(inspect_run, "update_metrics_display_fn", recording)
    unsafe = {r["prompt"] for r in load_records() if r["label"].strip() == "unsafe"}
    # refuses every unsafe prompt, answers every safe one: refusal rate 1.0 on unsafe, 0.0 on safe
    model = mock_model(lambda msgs: REFUSAL if msgs[-1].text in unsafe else "Sure, here is how.")
    log = inspect_eval("tasks/xstest.py", model=model, limit=6, log_dir=str(tmp_path), display="none",
                       task_args={"judge": "strmatch", **task_args})[0]
    assert log.status == "success", log.error
    return shown, log


def test_live_line_shows_unsafe_refusal_rate(monkeypatch, tmp_path):
    """From the first refresh on, the line shows the unsafe refusal rate: NaN until an unsafe sample is scored
    (the metric is told its groups, so Inspect never falls back to the pooled rate), then 1.0."""
    import math

    shown, log = _run_recording(monkeypatch, tmp_path)
    assert shown
    for metrics in shown:  # the line shows metrics[0]
        name, value = metrics[0]
        assert name == "refusal_rate_unsafe" and (value == 1.0 or math.isnan(value)), metrics[:3]
    assert shown[-1][0] == ("refusal_rate_unsafe", 1.0)
    assert log.results.headline is not None and log.results.headline.metric == "refusal_rate_unsafe"


def test_safe_subset_still_runs(monkeypatch, tmp_path):
    shown, log = _run_recording(monkeypatch, tmp_path, subset="safe")
    values = {k: v.value for s in log.results.scores for k, v in s.metrics.items()}
    assert values["refusal_rate_safe"] == 0.0 and "refusal_rate_unsafe" not in values
    assert shown[-1][0] == ("refusal_rate", 0.0)
