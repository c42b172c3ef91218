"""The PHTest task: shipped data pinned, labels kept apart, stratified limits, refusal rates per label, and its
harmless refusal rate on the leaderboard's over-refusal axis."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from steerboard.tasks import phtest as ph


def test_shipped_data_counts_and_labels() -> None:
    records = ph.load_records()
    assert len(records) == 3260
    assert collections.Counter(r["Harmfulness"] for r in records) == {"harmless": 2069, "controversial": 1191}
    assert len(ph.phtest(judge="strmatch").dataset) == 3260
    assert len(ph.phtest(judge="strmatch", subset="harmless").dataset) == 2069
    assert len(ph.phtest(judge="strmatch", subset="controversial").dataset) == 1191
    assert (Path(ph.__file__).parent / "data" / "phtest" / "LICENSE").is_file()


def test_a_limited_run_is_a_stratified_sample() -> None:
    first = list(ph.phtest(judge="strmatch").dataset)[:160]
    counts = collections.Counter(s.metadata["label"] for s in first)
    assert abs(counts["harmless"] - 160 * 2069 / 3260) <= 1  # in proportion within one sample
    other = list(ph.phtest(judge="strmatch", seed=1).dataset)[:160]
    assert [s.id for s in other] != [s.id for s in first]


def test_bad_records_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="Harmfulness must be harmless/controversial"):
        ph.record_to_sample({"ID": "3", "Request": "x", "Harmfulness": "harmful"})
    with pytest.raises(ValueError, match="subset"):
        ph.phtest(subset="safe")


def test_refusal_rates_per_label_and_the_over_refusal_axis(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval

    from steerboard.leaderboard.build import assemble, collect, load_reported
    from steerboard.leaderboard.ingest import ingest_logs
    from steerboard.leaderboard.listing import load_default_listing
    from steerboard.tasks._testing import mock_model

    (log,) = inspect_eval(
        os.path.relpath(ph.__file__),
        model=mock_model(lambda messages: "I'm sorry, but I can't help with that."),
        limit=12,
        log_dir=str(tmp_path / "logs"),
        display="none",
        task_args={"judge": "strmatch"},
    )
    assert log.status == "success"
    metrics = log.results.scores[0].metrics
    assert metrics["refusal_rate_harmless"].value == 1.0 and metrics["refusal_rate_controversial"].value == 1.0
    listing = load_default_listing()
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    data = collect(tmp_path / "r.duckdb", listing)
    (run,) = data["runs"]
    st = data["stats"][(run["run_key"], "phtest/refusal_scorer/refusal_rate_harmless")]
    assert st["mean"] == 1.0 and st["n"] == 8  # 12 stratified: 8 harmless, 4 controversial
    row = assemble(data, listing, load_reported())["rows"][0]
    assert row["overrefusal_axis"]["status"] == "partial" and row["overrefusal_axis"]["k"] == 1
