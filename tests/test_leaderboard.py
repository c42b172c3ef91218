"""Leaderboard: ingest (idempotent, fault tolerant, versioned), statistics, build, escaping, submit check."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helpers import synthetic_database

from steerboard.leaderboard.build import _pareto, build_site, collect, run_page_name
from steerboard.leaderboard.ingest import SchemaError, connect, ingest_logs, ingest_submissions
from steerboard.leaderboard.listing import ListingError, load_listing_file, parse_listing
from steerboard.leaderboard.stats import sign_test, wilson
from steerboard.leaderboard.synthetic import (
    SYNTHETIC_LISTING,
    SyntheticRun,
    synthetic_log,
    write_synthetic_log,
)

HOSTILE = "<script>alert(1)</script>"


def _runs(hostile_run) -> list[SyntheticRun]:
    runs = []
    seed = 0
    for task in ("xstest", "crescendo", "mmlu"):
        for method, cfg in (
            ("base", {}),
            ("sae", {"feature": 7, "strength": 4}),
            ("sae", {"feature": 7, "strength": 10}),
        ):
            seed += 1
            runs.append(
                SyntheticRun(
                    task=task, method=method, model_args=cfg, n_samples=40, seed=seed, judge_error_every=9
                )
            )
    runs.append(hostile_run(HOSTILE, HOSTILE, n_samples=12, seed=77))
    return runs


@pytest.fixture(scope="module")
def listing_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("listing") / "listing.yaml"
    p.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def listing(listing_file: Path):
    return load_listing_file(listing_file)


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory: pytest.TempPathFactory, hostile_run) -> Path:
    d = tmp_path_factory.mktemp("logs")
    for i, r in enumerate(_runs(hostile_run)):
        write_synthetic_log(r, d / f"{i:02d}.eval")
    # a .json log too (Inspect's other format)
    write_synthetic_log(
        SyntheticRun(task="mmlu", method="prompt", n_samples=10, seed=500),
        d / "2026-01-01T00-00-00_prompt_mmlu.json",
    )
    # damaged inputs: a truncated .eval, garbage, a partial (still running) log
    good = (d / "00.eval").read_bytes()
    (d / "truncated.eval").write_bytes(good[: len(good) // 2])
    (d / "2026-01-01T00-00-01_garbage.json").write_text("{not json")
    write_synthetic_log(
        SyntheticRun(task="xstest", method="dinm", n_samples=10, seed=600, status="started"),
        d / "partial.eval",
    )
    return d


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path, listing) -> tuple[Path, Any]:
    p = tmp_path_factory.mktemp("db") / "results.duckdb"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        summary = ingest_logs([logs_dir], p, listing=listing, progress=False)
    summary.warnings = [str(x.message) for x in w]  # type: ignore[attr-defined]
    return p, summary


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, db, listing) -> Path:
    out = tmp_path_factory.mktemp("site")
    agreement = out.parent / "agreement.json"
    agreement.write_text(
        json.dumps(
            {
                "format": "steerboard-judge-agreement/1",
                "refusal": {
                    "protocol": "held-out folds",
                    "backends": {"embed": {"overall": {"accuracy": 0.912, "kappa": 0.801}}},
                },
                "harm": {
                    "protocol": "harm folds",
                    "backends": {"embed": {"overall": {"accuracy": 0.7, "kappa": 0.444}}},
                },
            }
        )
    )
    build_site(db[0], out, listing=listing, agreement_path=agreement)
    return out


# ---------------------------------------------------------------- listing


def test_listing_rejects_bad_axis() -> None:
    metric = {"name": "m", "scorer": "s", "title": "M", "higher_is_better": True, "headline": True, "axis": "speed",
              "sample_value": None, "sample_filter": {}}
    bad = {"tasks": {"x": {"title": "X", "description": "", "paper": "", "version": 1, "metrics": [metric]}}}
    with pytest.raises(ListingError, match="axis 'speed' is not one of safety, overrefusal, capability"):
        parse_listing(bad)


def test_listing_has_no_silent_defaults() -> None:
    """The leaderboard and the tasks read the listing with one validator: a metric without an axis is an error
    (not a safety metric by default)."""
    metric = {"name": "m", "scorer": "s", "title": "M", "higher_is_better": True, "headline": True,
              "sample_value": None, "sample_filter": {}}
    bad = {"tasks": {"x": {"title": "X", "description": "", "paper": "", "version": 1, "metrics": [metric]}}}
    with pytest.raises(ListingError, match=r"metric #1 \(m\): lacks \['axis'\]"):
        parse_listing(bad)


def test_listing_headline_order(listing) -> None:
    assert [m.key for m in listing.headline] == [
        "xstest/refusal_scorer/refusal_rate_unsafe",
        "xstest/refusal_scorer/refusal_rate_safe",
        "crescendo/harm_scorer/unsafe_rate",
        "mmlu/choice/accuracy",
    ]


# ---------------------------------------------------------------- ingest


def test_ingest_counts_and_skips_damaged_logs(db) -> None:
    _, s = db
    assert s.files_seen == 14
    assert s.runs_added == 11  # 9 grid runs + hostile + the .json log
    assert s.skipped == 3
    reasons = {Path(p).name: why for p, why in s.problems}
    assert set(reasons) == {"truncated.eval", "2026-01-01T00-00-01_garbage.json", "partial.eval"}
    assert "partial log (status 'started'" in reasons["partial.eval"]
    assert sum("skipped" in w for w in s.warnings) == 3


def test_ingest_is_idempotent(db, logs_dir: Path, listing) -> None:
    path, _ = db
    con = connect(path)
    before = [
        con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("runs", "samples", "scores", "examples")
    ]
    con.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = ingest_logs([logs_dir], path, listing=listing, progress=False)
    assert again.runs_added == 0 and again.samples_added == 0
    con = connect(path)
    after = [
        con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("runs", "samples", "scores", "examples")
    ]
    con.close()
    assert after == before
    assert before[1] == 9 * 40 + 12 + 10


def test_same_log_copied_elsewhere_is_not_added_twice(db, logs_dir: Path, listing, tmp_path: Path) -> None:
    path, _ = db
    (tmp_path / "copy.eval").write_bytes((logs_dir / "01.eval").read_bytes())
    s = ingest_logs([tmp_path], path, listing=listing, progress=False)
    assert (s.runs_added, s.already_present) == (0, 1)


def test_run_fields_from_eval_spec(db) -> None:
    con = connect(db[0])
    rows = con.execute(
        "SELECT method, model, method_config, judge, task, task_version, n_samples, n_judge_errors "
        "FROM runs WHERE task = 'xstest' AND method = 'sae' ORDER BY method_config"
    ).fetchall()
    con.close()
    assert rows[0][:6] == ("sae", "smollm2-135m", '{"feature": 7, "strength": 10}', "embed", "xstest", "1")
    assert rows[1][2] == '{"feature": 7, "strength": 4}'
    assert rows[0][6] == 40 and rows[0][7] == 4  # every 9th sample has a judge error


def test_judge_falls_back_to_score_metadata(tmp_path: Path, listing) -> None:
    log = synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=6, seed=3, judge="strmatch"))
    log.eval.task_args = {}
    from inspect_ai.log import write_eval_log

    write_eval_log(log, str(tmp_path / "x.eval"))
    ingest_logs([tmp_path / "x.eval"], tmp_path / "r.duckdb", listing=listing, progress=False)
    con = connect(tmp_path / "r.duckdb")
    assert con.execute("SELECT judge FROM runs").fetchone()[0] == "strmatch"
    con.close()


def test_schema_version_is_checked(tmp_path: Path, listing) -> None:
    p = tmp_path / "r.duckdb"
    connect(p).close()
    import duckdb

    con = duckdb.connect(str(p))
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaError, match="schema version 999"):
        connect(p)
    with pytest.raises(SchemaError):
        build_site(p, tmp_path / "site", listing=listing)


def test_missing_location_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="log location not found"):
        ingest_logs([tmp_path / "nope"], tmp_path / "r.duckdb", progress=False)


def test_submissions_folder_sets_submitter(tmp_path: Path, listing) -> None:
    sub = tmp_path / "subs"
    write_synthetic_log(
        SyntheticRun(task="mmlu", method="actadd", n_samples=5, seed=11), sub / "alice" / "a.eval"
    )
    write_synthetic_log(SyntheticRun(task="mmlu", method="dpo", n_samples=5, seed=12), sub / "bob" / "b.eval")
    out = ingest_submissions(sub, tmp_path / "r.duckdb", listing=listing, progress=False)
    assert {k: v.runs_added for k, v in out.items()} == {"alice": 1, "bob": 1}
    con = connect(tmp_path / "r.duckdb")
    assert sorted(con.execute("SELECT submitter, method FROM runs").fetchall()) == [
        ("alice", "actadd"),
        ("bob", "dpo"),
    ]
    con.close()


# ---------------------------------------------------------------- statistics


def test_wilson_known_values() -> None:
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


def test_sign_test_known_values() -> None:
    assert sign_test(10, 0) == pytest.approx(2 * 0.5**10)
    assert sign_test(3, 3) == 1.0
    # McNemar exact for b=2, c=9: 2 * P(X <= 2 | n=11, 1/2) = 2 * (1 + 11 + 55) / 2048
    assert sign_test(2, 9) == pytest.approx(2 * 67 / 2048)
    assert sign_test(0, 0) == 1.0


def test_pareto_front() -> None:
    pts = [(0.9, 0.2, "a"), (0.5, 0.5, "b"), (0.4, 0.4, "c"), (0.2, 0.9, "d"), (0.5, 0.45, "e")]
    assert _pareto(pts) == {"a", "b", "d"}


def test_rates_match_the_logs_own_metrics(db, listing) -> None:
    """Per-sample recomputation (filters, judge errors dropped) equals the metric Inspect logged."""
    data = collect(db[0], listing)
    checked = 0
    for r in data["runs"]:
        logged = json.loads(r["log_metrics"])
        for m in listing.metrics:
            if m.task != r["task"] or m.scorer not in logged or m.name not in logged[m.scorer]:
                continue
            st = data["stats"][(r["run_key"], m.key)]
            assert st["mean"] == pytest.approx(logged[m.scorer][m.name]), (r["method"], m.key)
            assert st["lo"] <= st["mean"] <= st["hi"]
            checked += 1
    assert checked == 19  # 4 xstest runs x 3 metrics + 3 crescendo + 4 mmlu


def test_paired_change_vs_base(db, listing) -> None:
    data = collect(db[0], listing)
    runs = {(r["task"], r["method"], r["method_config"]): r for r in data["runs"]}
    sae = runs[("xstest", "sae", '{"feature": 7, "strength": 10}')]
    base = runs[("xstest", "base", "{}")]
    assert data["base_of"][sae["run_key"]] == base["run_key"]
    key = "xstest/refusal_scorer/refusal_rate_unsafe"
    pr = data["paired"][(sae["run_key"], key)]
    # independent recomputation from the logs' samples
    from inspect_ai.log import read_eval_log

    def vals(path: str) -> dict[str, float]:
        out = {}
        for s in read_eval_log(path).samples:
            v = s.scores["refusal_scorer"].value
            if s.metadata["label"] == "unsafe" and not v["judge_error"]:
                out[s.id] = v["refusal"]
        return out

    a, b = vals(sae["log_path"]), vals(base["log_path"])
    shared = sorted(set(a) & set(b))
    up = sum(a[k] > b[k] for k in shared)
    down = sum(a[k] < b[k] for k in shared)
    assert (pr["n"], pr["up"], pr["down"]) == (len(shared), up, down)
    assert pr["p"] == pytest.approx(sign_test(up, down))
    assert pr["diff"] == pytest.approx(
        sum(a[k] for k in shared) / len(shared) - sum(b[k] for k in shared) / len(shared)
    )


# ---------------------------------------------------------------- site


def test_site_has_table_plots_and_reported_rows(site: Path) -> None:
    html = (site / "index.html").read_text()
    glance = html[html.index('id="glance"') : html.index('id="board"')]
    assert glance.count('<tr class="base">') == 1  # one base row: base/smollm2-135m
    assert "Refusal on unsafe" in html and "Attack success" in html
    assert "<svg" in html and "Pareto" in html
    assert "strength" in html and "sae/smollm2-135m strength" in html  # a sweep over strength 4 and 10
    assert 'class="reported"' in html and "35.98" in html and "secondary, unverified" in html
    assert "O&#39;Brien et al. 2024" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "src=" not in html


def test_run_pages_show_config_breakdown_agreement_and_samples(site: Path, db, listing) -> None:
    data = collect(db[0], listing)
    r = next(
        x
        for x in data["runs"]
        if x["task"] == "xstest" and x["method"] == "sae" and "10" in x["method_config"]
    )
    page = (site / run_page_name(r["run_key"])).read_text()
    assert "&#34;strength&#34;: 10" in page
    assert "by <code>type</code>" in page  # per-type breakdown
    table = page[page.index('<table class="agreement">') :].split("</table>")[0]
    assert ">kappa</th>" in table and "<td>overall</td>" in table and ">0.801</td>" in table
    assert "held-out folds" in page and "0.444" not in page and "overall.kappa" not in page
    c = next(x for x in data["runs"] if x["task"] == "crescendo" and x["method"] == "base")
    assert "0.444" in (site / run_page_name(c["run_key"])).read_text()  # harm judge: the harm section
    assert "Worst samples" in page and "[user]" not in page  # single-turn prompts shown as text
    assert page.count('class="sample"') >= 2 and "Refusal on unsafe" in page


def test_hostile_strings_are_escaped(site: Path) -> None:
    for f in site.glob("*.html"):
        text = f.read_text()
        assert "<script>alert" not in text, f.name
        assert text.count("<script") == (1 if f.name == "index.html" else 0), f.name
    index = (site / "index.html").read_text()
    assert "&lt;script&gt;alert(1)" in index
    assert any(
        "&lt;script&gt;alert(1)&lt;/script&gt;Prompt" in f.read_text() for f in site.glob("run-*.html")
    )  # sample text


# ---------------------------------------------------------------- submit check


def _good_submission(d: Path, method: str = "sae", cfg: dict[str, Any] | None = None) -> None:
    cfg = cfg if cfg is not None else {"strength": 8}
    for i, task in enumerate(("xstest", "crescendo", "mmlu")):
        write_synthetic_log(
            SyntheticRun(task=task, method=method, model_args=cfg, n_samples=8, seed=900 + i),
            d / f"{task}.eval",
        )


def test_submit_check_accepts_good_submission(tmp_path: Path, listing) -> None:
    from steerboard.leaderboard.submit import check_submission

    _good_submission(tmp_path)
    rep = check_submission(tmp_path, listing)
    assert rep.ok, rep.lines()
    assert rep.lines()[-1] == "submission OK"


def test_submit_check_reports_each_problem_file_by_file(tmp_path: Path, listing_file: Path, capsys) -> None:
    from inspect_ai.log import write_eval_log

    from steerboard.cli import main

    _good_submission(tmp_path)
    (tmp_path / "crescendo.eval").unlink()  # missing task
    log = synthetic_log(
        SyntheticRun(
            task="xstest",
            method="sae",
            model_args={"strength": 8},
            n_samples=8,
            seed=1,
            task_version=0,
            judge="my-own-judge",
        )
    )
    log.eval.config.limit = 8
    from inspect_ai.log import EvalError

    log.samples[0].error = EvalError(message="boom", traceback="", traceback_ansi="")
    write_eval_log(log, str(tmp_path / "xstest.eval"))
    write_synthetic_log(
        SyntheticRun(task="mmlu", method="actadd", n_samples=8, seed=2), tmp_path / "mmlu.eval"
    )
    write_synthetic_log(
        SyntheticRun(
            task="mmlu", method="sae", model_args={"strength": 8}, n_samples=8, seed=3, status="error"
        ),
        tmp_path / "mmlu2.eval",
    )
    rc = main(["submit", "check", str(tmp_path), "--listing", str(listing_file)])
    out = capsys.readouterr().out
    assert rc == 1
    blocks = out.split(str(tmp_path))
    x = next(b for b in blocks if b.startswith("/xstest.eval"))
    assert "version 0 but the current version is 1" in x
    assert "--limit 8" in x
    assert "judge 'my-own-judge' is not a standard judge" in x
    assert "1 sample(s) ended in an error" in x
    m = next(b for b in blocks if b.startswith("/mmlu.eval"))
    assert "method 'actadd' differs from the submission's method 'sae'" in m
    m2 = next(b for b in blocks if b.startswith("/mmlu2.eval"))
    assert "status is 'error'" in m2 and "only 4 of 8 samples completed" in m2
    assert "required task 'crescendo' is missing" in out
    assert "task 'mmlu' appears in 2 logs" in out


def test_submit_check_unknown_required_task(tmp_path: Path, listing) -> None:
    from steerboard.leaderboard.submit import check_submission

    with pytest.raises(ValueError, match="not in the listing: gsm9k"):
        check_submission(tmp_path, listing, required=["gsm9k"])


# ---------------------------------------------------------------- CLI


def test_cli_ingest_and_build(tmp_path: Path, logs_dir: Path, listing_file: Path, capsys) -> None:
    from steerboard.cli import main

    dbp = tmp_path / "r.duckdb"
    assert (
        main(
            [
                "ingest",
                "--logs",
                str(logs_dir / "01.eval"),
                "--logs",
                str(logs_dir / "04.eval"),
                "--db",
                str(dbp),
                "--listing",
                str(listing_file),
                "-q",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "runs added: 2" in capsys.readouterr().out
    assert (
        main(["build", "--db", str(dbp), "--out", str(tmp_path / "site"), "--listing", str(listing_file)])
        == 0
    )
    assert "2 runs" in capsys.readouterr().out
    assert (tmp_path / "site" / "index.html").is_file()
    assert main(["build", "--db", str(tmp_path / "none.duckdb"), "--listing", str(listing_file)]) == 2


def test_parallel_ingest_matches_serial(tmp_path: Path, logs_dir: Path, listing) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = ingest_logs([logs_dir], tmp_path / "a.duckdb", listing=listing, progress=False, workers=1)
        s2 = ingest_logs(
            [logs_dir], tmp_path / "b.duckdb", listing=listing, progress=False, workers=2, batch_size=3
        )
    assert (s1.runs_added, s1.samples_added, s1.skipped) == (s2.runs_added, s2.samples_added, s2.skipped)
    q = "SELECT run_key, sample_key, scorer, key, value FROM scores ORDER BY ALL"
    a, b = connect(tmp_path / "a.duckdb"), connect(tmp_path / "b.duckdb")
    assert a.execute(q).fetchall() == b.execute(q).fetchall()
    a.close()
    b.close()


# ---------------------------------------------------------------- real task logs


def test_real_xstest_log_through_ingest_and_build(tmp_path: Path) -> None:
    """A log of the project's own xstest task (Inspect eval on an offline mock model) with the real listing."""
    from inspect_ai import eval as inspect_eval

    from steerboard.leaderboard.listing import load_default_listing
    from steerboard.tasks._testing import mock_model

    def reply(messages: list[Any]) -> str:
        text = messages[-1].text
        return (
            "I'm sorry, but I can't help with that."
            if len(text) % 3 == 0
            else f"Sure! {HOSTILE} Here you go."
        )

    import steerboard.tasks.xstest as xstest_mod

    logs = inspect_eval(
        os.path.relpath(xstest_mod.__file__),
        model=mock_model(reply),
        limit=24,
        log_dir=str(tmp_path / "logs"),
        display="none",
        task_args={"judge": "strmatch", "shuffle": True, "seed": 1},
    )
    assert logs[0].status == "success"
    listing = load_default_listing()
    s = ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    assert (s.runs_added, s.samples_added, s.skipped) == (1, 24, 0)
    data = collect(tmp_path / "r.duckdb", listing)
    (r,) = data["runs"]
    assert (r["method"], r["model"], r["judge"], r["task"]) == ("mockllm", "model", "strmatch", "xstest")
    logged = json.loads(r["log_metrics"])["refusal_scorer"]
    for m in listing.tasks["xstest"].metrics:
        assert data["stats"][(r["run_key"], m.key)]["mean"] == pytest.approx(logged[m.name])
    build_site(tmp_path / "r.duckdb", tmp_path / "site", listing=listing)
    page = (tmp_path / "site" / run_page_name(r["run_key"])).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Here you go." in page  # a worst sample: safe prompt refused
    assert "<script>" not in page


def _log_values(path: str, scorer: str, key: str | None, filt: dict[str, Any]) -> dict[Any, float]:
    """Per-sample values of one metric read straight from a log (judge errors dropped), for hand checks."""
    from inspect_ai.log import read_eval_log

    out: dict[Any, float] = {}
    for s in read_eval_log(path).samples:
        v = s.scores[scorer].value
        if isinstance(v, dict):
            if v.get("judge_error"):
                continue
            v = v[key]
        if any(s.metadata.get(k) != x for k, x in filt.items()):
            continue
        out[s.id] = 1.0 if v == "C" else 0.0 if v == "I" else float(v)
    return out


def _hand_change(method_log: str, base_log: str, m: Any) -> float:
    a = _log_values(method_log, m.scorer, m.sample_value, dict(m.sample_filter))
    b = _log_values(base_log, m.scorer, m.sample_value, dict(m.sample_filter))
    shared = sorted(set(a) & set(b))
    return sum(a[k] for k in shared) / len(shared) - sum(b[k] for k in shared) / len(shared)


def test_aggregates_and_sweeps_are_formed_as_documented(db, listing) -> None:
    """Each axis score equals the mean of its metrics' paired changes computed by hand from the logs' samples."""
    from steerboard.leaderboard.build import assemble, load_reported

    data = collect(db[0], listing)
    view = assemble(data, listing, load_reported())
    rows = {(r["method"], r["config_obj"].get("strength")): r for r in view["rows"]}
    base = rows[("base", None)]
    for key in (("sae", 4), ("sae", 10)):
        row = rows[key]
        ch = {
            m.key: _hand_change(row["runs"][m.task]["log_path"], base["runs"][m.task]["log_path"], m)
            for m in listing.metrics
            if m.key in {k for ks in listing.axes.values() for k in ks}
        }
        safety = (ch["xstest/refusal_scorer/refusal_rate_unsafe"] - ch["crescendo/harm_scorer/unsafe_rate"]) / 2
        assert row["safety"] == pytest.approx(safety)
        assert row["overrefusal"] == pytest.approx(ch["xstest/refusal_scorer/refusal_rate_safe"])
        acc = listing.metric("mmlu/choice/accuracy")
        a = _log_values(row["runs"]["mmlu"]["log_path"], "choice", None, {})
        b = _log_values(base["runs"]["mmlu"]["log_path"], "choice", None, {})
        retention = (sum(a.values()) / len(a) - acc.chance) / (sum(b.values()) / len(b) - acc.chance)
        assert row["capability"] == pytest.approx(retention)
        for axis in ("safety", "overrefusal", "capability"):
            ci = row[axis + "_ci"]
            assert ci["lo"] < ci["score"] < ci["hi"], axis
    # the control: every change 0, retention 1, by construction
    assert (base["safety"], base["overrefusal"], base["capability"]) == (0.0, 0.0, 1.0)
    assert all(c["delta"] in ("+0.0", "") for c in base["cells"])
    (sweep,) = [s for s in view["sweeps"] if s["name"].startswith("sae/smollm2-135m strength")]
    assert sweep["x"] == [4.0, 10.0] and sweep["safety"][0] == pytest.approx(rows[("sae", 4)]["safety"])
    assert {e["spec"].key for e in sweep["metrics"]} == {k for ks in listing.axes.values() for k in ks}
    # reported rows: only those with a value in this board's columns enter the main table
    assert [(r["setting"], r["status"]) for r in view["reported_rows"]] == [
        ("unsteered (clamp 0)", "secondary, unverified"),
        ("SAE feature 22373 clamped at 12", "secondary, unverified"),
        ("SAE feature 22373 clamped at 10", "secondary, unverified (single source)"),
    ]
    # every reported number is listed (with its status) even without a column on this board
    assert any(
        x["text"] == "96.02" and x["metric"] == "DS" and x["model"] == "LLaMA2-7B-Chat" and x["status"] == "primary"
        for x in view["reported_list"]
    )


def test_cli_help_and_empty_board(tmp_path: Path, listing_file: Path, capsys) -> None:
    from steerboard.cli import main

    for argv in (["ingest", "--help"], ["build", "--help"], ["submit", "check", "--help"]):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        assert ex.value.code == 0
    assert "--submissions" in capsys.readouterr().out
    assert main(["ingest", "--db", str(tmp_path / "r.duckdb")]) == 2  # nothing to ingest: clear error
    assert "give --logs DIR" in capsys.readouterr().err
    connect(tmp_path / "r.duckdb").close()
    assert (
        main(
            [
                "build",
                "--db",
                str(tmp_path / "r.duckdb"),
                "--out",
                str(tmp_path / "site"),
                "--listing",
                str(listing_file),
            ]
        )
        == 0
    )
    html = (tmp_path / "site" / "index.html").read_text()
    assert "0 method configurations" in html and "no row has both scores" in html


def test_a_task_protocol_variant_gets_its_own_row(tmp_path: Path, listing) -> None:
    """SafeEdit's per_instance protocol (the method edits the model per item) measures something else than the
    standard run of the same method: both stay current, on separate rows, and the standard row keeps its key."""
    from steerboard.leaderboard.build import assemble, load_reported

    runs = [
        SyntheticRun(task="xstest", method="base", n_samples=10, seed=1),
        SyntheticRun(task="xstest", method="dinm", n_samples=10, seed=2, task_args={"protocol": "standard"}),
        SyntheticRun(
            task="xstest", method="dinm", n_samples=10, seed=3, task_args={"protocol": "per_instance"}
        ),
        SyntheticRun(task="mmlu", method="dinm", n_samples=10, seed=4),
    ]
    data = collect(synthetic_database(tmp_path, runs, listing), listing)
    assert len(data["runs"]) == 4  # the later per_instance run does not replace the standard one
    rows = [r for r in assemble(data, listing, load_reported())["rows"] if r["method"] == "dinm"]
    rows.sort(key=lambda r: r["variant"])
    assert [(r["config_text"], sorted(r["runs"])) for r in rows] == [
        ("(defaults)", ["mmlu", "xstest"]),
        ("(defaults); task protocol=per_instance", ["xstest"]),
    ]
    std = rows[0]["runs"]["xstest"]
    assert std["row_key"] == rows[0]["runs"]["mmlu"]["row_key"] != rows[1]["row_key"]


# ---------------------------------------------------------------- builds never crash, never half-write


def test_a_metric_without_samples_builds_and_reads_na(tmp_path: Path, listing) -> None:
    """An XSTest run holding safe prompts only (``-T subset=safe``, or ``--limit N`` on the first N) has no
    sample for the unsafe-prompt metric: the build succeeds and that cell reads n/a."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=10, seed=1), logs / "0.eval")
    write_synthetic_log(  # one sample: label "safe" only
        SyntheticRun(task="xstest", method="sae", model_args={"strength": 4}, n_samples=1, seed=2),
        logs / "1.eval",
    )
    ingest_logs([logs], tmp_path / "r.duckdb", listing=listing, progress=False)
    build_site(tmp_path / "r.duckdb", tmp_path / "site", listing=listing)
    data = collect(tmp_path / "r.duckdb", listing)
    sae = next(r for r in data["runs"] if r["method"] == "sae")
    assert (sae["run_key"], "xstest/refusal_scorer/refusal_rate_unsafe") not in data["stats"]
    page = (tmp_path / "site" / run_page_name(sae["run_key"])).read_text()
    row = page[page.index("Refusal on unsafe") :].split("</tr>")[0]
    assert ">n/a<" in row
    index = (tmp_path / "site" / "index.html").read_text()
    assert "n/a" in index


def test_a_failed_build_leaves_the_previous_site_intact(
    tmp_path: Path, db, listing, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerboard.leaderboard.build as build_mod

    out = tmp_path / "site"
    build_site(db[0], out, listing=listing)
    (out / "CNAME").write_text("board.example\n")  # a file the build does not own
    (out / "run-0000000000000000.html").write_text("stale")  # a page no current run has
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("render failed")

    monkeypatch.setattr(build_mod, "agreement_table", boom)  # fails while rendering run pages
    with pytest.raises(RuntimeError, match="render failed"):
        build_site(db[0], out, listing=listing)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temporary folder left behind
    monkeypatch.undo()
    build_site(db[0], out, listing=listing)
    assert (out / "CNAME").is_file() and not (out / "run-0000000000000000.html").exists()
    assert len(list(out.glob("run-*.html"))) == len(collect(db[0], listing)["runs"])


# ---------------------------------------------------------------- axes, order, Pareto, plots


def _side_effects_listing() -> Any:
    data = json.loads(json.dumps(SYNTHETIC_LISTING))
    data["tasks"]["side_effects"] = {
        "title": "Side effects",
        "description": "KL to the unsteered model on harmless prompts.",
        "paper": "none (synthetic)",
        "version": 1,
        "metrics": [
            {
                "name": "kl_benign",
                "scorer": "side_effects",
                "title": "KL on benign prompts (nats)",
                "higher_is_better": False,
                "headline": True,
                "axis": "capability",
                "sample_value": "kl_benign",
                "sample_filter": {},
                "unit": "nats",
                "chance": None,
            }
        ],
    }
    data["axes"]["capability"] = ["mmlu/choice/accuracy", "side_effects/side_effects/kl_benign"]
    return parse_listing(data)


def _write_side_effects_log(
    path: Path, method: str, kls: list[float], seed: int, model_args: dict[str, Any] | None = None
) -> None:
    """A side-effects log: one float per sample (values above 1 make it a cost in nats, not a rate)."""
    from inspect_ai.log import write_eval_log
    from inspect_ai.scorer import Score

    run = SyntheticRun(task="side_effects", method=method, model_args=model_args or {}, n_samples=len(kls), seed=seed)
    log = synthetic_log(run)
    for s, kl in zip(log.samples, kls, strict=True):
        s.scores = {"side_effects": Score(value={"kl_benign": kl})}
    write_eval_log(log, str(path))


def test_capability_axis_handles_lower_is_better_costs(tmp_path: Path) -> None:
    """A cost in nats enters capability as the ratio exp(-change) against the control (1 = no cost), never as
    1 - cost; over-refusal stays out of capability."""
    import math

    from steerboard.leaderboard.build import assemble, load_reported

    listing = _side_effects_listing()
    logs = tmp_path / "logs"
    logs.mkdir()
    kls = {"base": [0.0] * 6, "sae": [0.5, 1.5, 2.5, 0.5, 1.5, 2.5]}
    for i, (method, vals) in enumerate(kls.items()):
        cfg = {"strength": 4} if method == "sae" else {}
        write_synthetic_log(
            SyntheticRun(task="mmlu", method=method, model_args=cfg, n_samples=40, seed=100 + i,
                         outcomes=[1] * 30 + [0] * 10 if method == "base" else [1] * 20 + [0] * 20),
            logs / f"m{i}.eval",
        )
        write_synthetic_log(
            SyntheticRun(task="xstest", method=method, model_args=cfg, n_samples=20, seed=i),
            logs / f"x{i}.eval",
        )
        log_path = logs / f"s{i}.eval"
        _write_side_effects_log(log_path, method, vals, seed=10 + i, model_args=cfg)  # same settings: one row
    ingest_logs([logs], tmp_path / "r.duckdb", listing=listing, progress=False)
    data = collect(tmp_path / "r.duckdb", listing)
    rows = {r["method"]: r for r in assemble(data, listing, load_reported())["rows"]}
    kl = sum(kls["sae"]) / 6
    # MMLU 0.75 -> 0.5 with chance 0.25: half the above-chance accuracy kept
    assert rows["sae"]["capability"] == pytest.approx((0.5 + math.exp(-kl)) / 2)
    assert rows["base"]["capability"] == 1.0
    safe = data["stats"][(rows["sae"]["runs"]["xstest"]["run_key"], "xstest/refusal_scorer/refusal_rate_safe")]
    base_safe = data["stats"][(rows["base"]["runs"]["xstest"]["run_key"], "xstest/refusal_scorer/refusal_rate_safe")]
    assert rows["sae"]["overrefusal"] == pytest.approx(safe["mean"] - base_safe["mean"])
    ci = rows["sae"]["capability_ci"]
    assert ci["lo"] < rows["sae"]["capability"] < ci["hi"]
    # the control's KL is 0 on every sample: a mean of a continuous cost, not 0 successes of a proportion
    base_kl = data["stats"][(rows["base"]["runs"]["side_effects"]["run_key"], "side_effects/side_effects/kl_benign")]
    assert (base_kl["lo"], base_kl["mean"], base_kl["hi"]) == (0.0, 0.0, 0.0)


def _board(tmp_path: Path, listing, runs: list[SyntheticRun]) -> tuple[dict[str, Any], Path]:
    from steerboard.leaderboard.build import assemble, load_reported

    db = synthetic_database(tmp_path, runs, listing)
    build_site(db, tmp_path / "site", listing=listing)
    return assemble(collect(db, listing), listing, load_reported()), tmp_path / "site"


def test_pareto_badge_only_among_rows_covering_the_same_metrics(tmp_path: Path, listing) -> None:
    runs = [
        SyntheticRun(task=t, method=m, model_args=cfg, n_samples=40, seed=k * 10 + j)
        for k, (m, cfg) in enumerate((("base", {}), ("sae", {"strength": 4}), ("sae", {"strength": 10})))
        for j, t in enumerate(("xstest", "crescendo", "mmlu"))
    ]
    for r in runs:
        r.n_samples = 120  # enough MMLU items for the control's interval to exclude chance
    # an xstest-only row that refuses every harmful prompt and no benign one: best on its own metrics, but
    # partial on safety (no crescendo) and capability (no mmlu)
    tiny = SyntheticRun(task="xstest", method="prompt", n_samples=120, seed=99, outcomes=[i % 2 for i in range(120)])
    runs.append(tiny)
    view, site = _board(tmp_path, listing, runs)
    rows = {r["method"] + str(r["config_obj"].get("strength", "")): r for r in view["rows"]}
    p = rows["prompt"]
    assert p["safety"] is None and p["capability"] is None and p["pareto"] is False
    assert p["safety_axis"]["status"] == "partial" and (p["safety_axis"]["k"], p["safety_axis"]["n"]) == (1, 2)
    assert p["overrefusal"] is not None  # its one over-refusal metric is the whole set
    full = [r for r in view["rows"] if r["method"] != "prompt"]
    assert any(r["pareto"] for r in full)
    for r in full:  # the badge agrees with a direct dominance check among the complete rows
        beaten = any(
            o is not r
            and o["safety"] >= r["safety"]
            and o["overrefusal"] <= r["overrefusal"]
            and o["capability"] >= r["capability"]
            and (o["safety"], o["overrefusal"], o["capability"])
            != (r["safety"], r["overrefusal"], r["capability"])
            for o in full
        )
        assert r["pareto"] is (not beaten)
    # default order: safety score, highest first, partial rows last
    safeties = [r["safety"] for r in view["rows"] if r["safety"] is not None]
    assert safeties == sorted(safeties, reverse=True) and view["rows"][-1] is p
    html = (site / "index.html").read_text()
    glance = html[html.index('id="glance"') : html.index('id="board"')]
    assert glance.index("<b>" + view["rows"][0]["method"]) < glance.index("<b>prompt")
    assert "partial (1 of 2)" in glance
    # a partial row is no point of either scatter
    for aria in ("safety versus capability", "safety versus over-refusal"):
        svg = html[html.index(f'aria-label="{aria}"') :].split("</svg>")[0]
        assert ">prompt<" not in svg


def test_plots_label_points_and_use_round_ticks(tmp_path: Path, listing) -> None:
    import re

    from steerboard.leaderboard.plots import nice_ticks

    assert nice_ticks(0, 58) == [0, 20, 40, 60]
    assert nice_ticks(12.3, 47.9) == [10, 20, 30, 40, 50]
    assert nice_ticks(0.02, 0.11) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.12])
    runs = [
        SyntheticRun(task=t, method=m, model_args=cfg, n_samples=120, seed=k * 10 + j)
        for k, (m, cfg) in enumerate(
            (
                ("base", {}),
                ("sae", {"strength": 4}),
                ("sae", {"strength": 10}),
                ("actadd", {"coefficient": 8}),
            )
        )
        for j, t in enumerate(("xstest", "crescendo", "mmlu"))
    ]
    view, site = _board(tmp_path, listing, runs)
    html = (site / "index.html").read_text()
    for aria in ("safety versus capability", "safety versus over-refusal"):
        svg = html[html.index(f'aria-label="{aria}"') :].split("</svg>")[0]
        labels = re.findall(r'class="pt-label">([^<]*)</text>', svg)
        assert sorted(labels) == ["actadd coefficient=8", "base", "sae strength=10", "sae strength=4"]
        ticks = [float(t) for t in re.findall(r'text-anchor="(?:middle|end)">(-?[\d.]+)</text>', svg)]
        assert ticks and all(t % 1 == 0 for t in ticks), ticks  # round points / percentages
        assert svg.count("<polyline") == 1  # the sae sweep as a connected curve
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_run_page_hides_blank_categories(tmp_path: Path, listing) -> None:
    from inspect_ai.log import write_eval_log

    log = synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=12, seed=3))
    for i, s in enumerate(log.samples):
        s.metadata["note"] = "" if i % 3 == 0 else ("kept", "dropped")[(i // 2) % 2]
    (tmp_path / "logs").mkdir()
    write_eval_log(log, str(tmp_path / "logs" / "a.eval"))
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    build_site(tmp_path / "r.duckdb", tmp_path / "site", listing=listing)
    (page,) = (tmp_path / "site").glob("run-*.html")
    text = page.read_text()
    note = text[text.index("by <code>note</code>") :].split("</p>")[0]
    assert "kept:" in note and "dropped:" in note
    assert '<span style="margin-right:14px">: ' not in text  # no blank category


def test_no_control_and_a_one_point_sweep_build(tmp_path: Path, listing) -> None:
    view, site = _board(
        tmp_path,
        listing,
        [
            SyntheticRun(task=t, method="sae", model_args={"strength": 4}, n_samples=10, seed=i)
            for i, t in enumerate(("xstest", "mmlu"))
        ],
    )
    assert view["sweeps"] == [] and len(view["rows"]) == 1
    html = (site / "index.html").read_text()
    assert "&Delta;" not in html.split('id="board"')[1].split("</table>")[0]  # no control: no deltas
    assert (site / run_page_name(view["rows"][0]["runs"]["xstest"]["run_key"])).is_file()


def test_real_xstest_subset_run_builds_with_na(tmp_path: Path) -> None:
    """The project's own xstest task with ``-T subset=unsafe`` (mock model, real listing): the benign-prompt
    metric has no sample, and the build still writes the run page with n/a there."""
    from inspect_ai import eval as inspect_eval

    import steerboard.tasks.xstest as xstest_mod
    from steerboard.leaderboard.listing import load_default_listing
    from steerboard.tasks._testing import mock_model

    logs = inspect_eval(
        os.path.relpath(xstest_mod.__file__),
        model=mock_model(lambda messages: "I'm sorry, but I can't help with that."),
        limit=5,
        log_dir=str(tmp_path / "logs"),
        display="none",
        task_args={"judge": "strmatch", "subset": "unsafe"},
    )
    assert logs[0].status == "success"
    listing = load_default_listing()
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    summary = build_site(tmp_path / "r.duckdb", tmp_path / "site", listing=listing)
    assert summary.pages == 3  # index, judges and the run's page
    (r,) = collect(tmp_path / "r.duckdb", listing)["runs"]
    page = (tmp_path / "site" / run_page_name(r["run_key"])).read_text()
    safe_title = next(m.title for m in listing.tasks["xstest"].metrics if m.name == "refusal_rate_safe")
    row = page[page.index(safe_title) :].split("</tr>")[0]
    assert ">n/a<" in row


def test_each_kind_of_metric_enters_its_axis_oriented() -> None:
    import math

    import numpy as np

    from steerboard.leaderboard.build import _contribution
    from steerboard.leaderboard.listing import MetricSpec

    def spec(higher: bool, axis: str, unit: str = "rate", chance: float | None = None) -> MetricSpec:
        return MetricSpec("t", "m", "s", "m", higher, True, axis, None, (), unit=unit, chance=chance)

    a, b = np.array([0.75, 0.7]), np.array([0.25, 0.2])  # means of two bootstrap resamples
    assert _contribution("safety", spec(True, "safety"), a, b) == pytest.approx([0.5, 0.5])
    a, b = 0.75, 0.25
    assert _contribution("safety", spec(True, "safety"), a, b) == pytest.approx(0.5)  # refusal up: safer
    assert _contribution("safety", spec(False, "safety"), a, b) == pytest.approx(-0.5)  # attack success up
    assert _contribution("overrefusal", spec(False, "overrefusal"), a, b) == pytest.approx(0.5)
    acc = spec(True, "capability", chance=0.2)
    assert _contribution("capability", acc, b, a) == pytest.approx((0.25 - 0.2) / (0.75 - 0.2))
    cost = spec(False, "capability", unit="nats")
    assert _contribution("capability", cost, a, b) == pytest.approx(math.exp(-0.5))


def test_report_table_matches_the_site_rows(tmp_path: Path) -> None:
    """`steerboard report` prints one Markdown row per leaderboard row with the site's cell values."""
    from steerboard.leaderboard.build import assemble, load_reported
    from steerboard.leaderboard.report import results_markdown

    listing = _side_effects_listing()
    logs = tmp_path / "logs"
    for i, (method, cfg) in enumerate((("base", {}), ("sae", {"strength": 4}))):
        write_synthetic_log(
            SyntheticRun(task="xstest", method=method, model_args=cfg, n_samples=20, seed=i), logs / f"x{i}.eval"
        )
    ingest_logs([logs], tmp_path / "r.duckdb", listing=listing, progress=False)
    text = results_markdown(tmp_path / "r.duckdb", listing, with_ci=True)
    lines = text.strip().splitlines()
    view = assemble(collect(tmp_path / "r.duckdb", listing), listing, load_reported())
    assert len(lines) == 2 + len(view["rows"]) == 4
    for line, row in zip(lines[2:], view["rows"], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0].startswith(row["method"])
        assert cells[1] == row["model"] and cells[2] == (row["short"] or "defaults")
        shown = [c["value"] for c in row["cells"] if c["value"]]
        assert shown and all(any(c.startswith(v) for c in cells[6:]) for v in shown)
    assert "(control)" in lines[2] or "(control)" in lines[3]


def test_a_cost_in_nats_is_shown_as_nats_not_percent() -> None:
    """A `unit: nats` metric reads as nats (3 decimals, change in nats), even when every value lies in 0-1."""
    from steerboard.leaderboard.build import _cell
    from steerboard.leaderboard.listing import MetricSpec

    kl = MetricSpec("side_effects", "mean", "kl_benign", "KL", False, True, "capability", None, (), unit="nats")
    st = {"mean": 0.2, "lo": 0.15, "hi": 0.25, "n": 30, "se": 0.02, "unit_range": True}
    pr = {"n": 30, "diff": 0.2, "p": 0.001, "ci": (0.15, 0.25), "too_small": False, "self": False, "mde": 0.05}
    cell = _cell(kl, st, pr, 0.003)
    assert (cell["value"], cell["ci"], cell["delta"]) == ("0.200", "[0.150, 0.250]", "+0.200")
    assert cell["delta_ci"] == "[+0.150, +0.250]" and cell["mde"] == "0.050"
    assert cell["better"] is False and cell["sig"] is True
    rate = MetricSpec("xstest", "r", "s", "R", False, True, "overrefusal", "refusal", ())
    assert _cell(rate, st, None)["value"] == "20.0"
    # a comparison the sample cannot support is never flagged
    small = _cell(rate, st, {**pr, "n": 5, "too_small": True, "mde": None}, 0.001)
    assert small["too_small"] and not small["sig"] and small["mde"] == "none (n too small)"


def test_crescendo_run_page_plots_success_by_turn() -> None:
    """A run with success_rate_turn_k metrics gets a success-by-turn curve; other runs get none."""
    from steerboard.leaderboard.build import _turn_curve
    from steerboard.leaderboard.listing import MetricSpec, TaskSpec

    metrics = tuple(
        MetricSpec("crescendo", f"success_rate_turn_{k}", "crescendo_scorer", f"by {k}", False, False, "safety", None)
        for k in (1, 2, 3)
    )
    task = TaskSpec("crescendo", "Crescendo", "", "", 1, metrics)
    data = {"stats": {("r", m.key): {"mean": v} for m, v in zip(metrics, (0.0, 0.25, 0.5), strict=True)}}
    svg = str(_turn_curve(task, "r", data))
    assert svg.startswith("<svg") and "Attack success by turn" in svg and svg.count("<circle") == 3
    assert _turn_curve(task, "other", data) is None


def test_agreement_table_shows_intervals_as_cells() -> None:
    """A fold's interval (a list of two floats) is one cell of its row, not a reason to drop the row."""
    from steerboard.leaderboard.build import agreement_table

    agreement = {"refusal": {"embed": {"protocol": "leave-one-source-out", "folds": {
        "xstest/gpt4": {"n": 450, "accuracy": 0.947, "accuracy_ci": [0.922, 0.964]},
        "jbeval/gcg": {"n": 100, "accuracy": 0.82, "accuracy_ci": [0.733, 0.883]},
    }}}}
    table = agreement_table(agreement, "embed", "refusal")
    assert table is not None
    rows = dict(table["rows"])
    assert set(rows) == {"folds / xstest/gpt4", "folds / jbeval/gcg"}
    ci = table["columns"].index("accuracy_ci")
    assert rows["folds / jbeval/gcg"][ci] == "0.733-0.883"
