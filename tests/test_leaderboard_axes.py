"""The board's comparisons: like-for-like controls (generation settings included), retention above chance,
the machine-readable report, sweeps however launched, worst samples under every launcher, and a site that shows
no local path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helpers import synthetic_database

from steerboard.leaderboard.build import assemble, build_site, collect, load_reported, run_page_name
from steerboard.leaderboard.ingest import ingest_logs
from steerboard.leaderboard.listing import ListingError, parse_listing
from steerboard.leaderboard.synthetic import (
    SYNTHETIC_LISTING,
    SyntheticRun,
    synthetic_log,
    write_synthetic_log,
)


def _listing(extra_tasks: dict[str, Any] | None = None, capability: list[str] | None = None) -> Any:
    data = json.loads(json.dumps(SYNTHETIC_LISTING))
    data["tasks"].update(extra_tasks or {})
    if capability is not None:
        data["axes"]["capability"] = capability
    return parse_listing(data)


def _board(tmp_path: Path, listing: Any, runs: list[SyntheticRun], site: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    db = synthetic_database(tmp_path, runs, listing)
    data = collect(db, listing)
    if site:
        build_site(db, tmp_path / "site", listing=listing)
    return data, assemble(data, listing, load_reported())


def _full(method: str, cfg: dict[str, Any], seed: int, n: int = 120, **kw: Any) -> list[SyntheticRun]:
    return [
        SyntheticRun(task=t, method=method, model_args=cfg, n_samples=n, seed=seed + j, **kw)
        for j, t in enumerate(("xstest", "crescendo", "mmlu"))
    ]


# ---------------------------------------------------------------- listing


def test_an_axis_metric_without_chance_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    data = json.loads(json.dumps(SYNTHETIC_LISTING))
    del data["tasks"]["mmlu"]["metrics"][0]["chance"]
    with pytest.raises(ListingError, match=r"metric mmlu/choice/accuracy \(axis capability\) lacks 'chance'"):
        parse_listing(data)
    data = json.loads(json.dumps(SYNTHETIC_LISTING))
    data["axes"]["safety"].append("xstest/refusal_scorer/nope")
    with pytest.raises(ListingError, match=r"axes.safety: no metric 'xstest/refusal_scorer/nope'"):
        parse_listing(data)
    data = json.loads(json.dumps(SYNTHETIC_LISTING))
    del data["axes"]
    with pytest.raises(ListingError, match="lacks 'axes'"):
        parse_listing(data)
    # through the CLI: one line, exit 2, before any log is read
    from steerboard.cli import main

    bad = json.loads(json.dumps(SYNTHETIC_LISTING))
    del bad["tasks"]["xstest"]["metrics"][1]["chance"]
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "logs").mkdir()
    rc = main(["ingest", "--logs", str(tmp_path / "logs"), "--db", str(tmp_path / "r.duckdb"),
               "--listing", str(tmp_path / "l.yaml"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "xstest/refusal_scorer/refusal_rate_safe (axis overrefusal) lacks 'chance'" in err[0]


def test_the_shipped_listing_declares_every_axis_set() -> None:
    from steerboard.leaderboard.listing import load_default_listing

    listing = load_default_listing()
    assert set(listing.axes) == {"safety", "overrefusal", "capability"}
    assert "phtest/refusal_scorer/refusal_rate_harmless" in listing.axes["overrefusal"]
    # TruthfulQA (below chance on the embedded model) and KL are columns, not axis metrics
    assert not any(k.startswith("truthfulqa/") for k in listing.axes["capability"])
    assert "side_effects/kl_benign/mean" not in listing.axes["capability"]
    for m in listing.axis_metrics("capability"):
        assert m.chance_declared


# ---------------------------------------------------------------- retention and chance


def test_moving_the_model_to_chance_never_gains_capability(tmp_path: Path) -> None:
    """MMLU pushed to chance retains 0; TruthfulQA MC2, below chance on the control, stays out of the axis, so
    the method's move of MC2 towards chance (a raw rise) adds nothing."""
    tqa = {
        "truthfulqa": {
            "title": "TruthfulQA", "description": "MC2", "paper": "Lin et al. 2022", "version": 1,
            "metrics": [{
                "name": "mean", "scorer": "choice", "title": "TruthfulQA MC2", "higher_is_better": True,
                "headline": True, "axis": "capability", "sample_value": None, "sample_filter": {}, "chance": 0.464,
            }],
        }
    }
    listing = _listing(tqa, ["mmlu/choice/accuracy", "truthfulqa/choice/mean"])
    mc2_base = [0.376 + 0.002 * (i % 7 - 3) for i in range(100)]
    mc2_method = [0.464 + 0.002 * (i % 5 - 2) for i in range(100)]
    runs = [
        SyntheticRun(task="mmlu", method="base", n_samples=100, seed=1, outcomes=[1] * 60 + [0] * 40),
        SyntheticRun(task="truthfulqa", method="base", n_samples=100, seed=2, outcomes=mc2_base),
        SyntheticRun(task="mmlu", method="sae", model_args={"strength": 9}, n_samples=100, seed=3,
                     outcomes=[1] * 25 + [0] * 75),
        SyntheticRun(task="truthfulqa", method="sae", model_args={"strength": 9}, n_samples=100, seed=4,
                     outcomes=mc2_method),
    ]
    data, view = _board(tmp_path, listing, runs, site=False)
    rows = {r["method"]: r for r in view["rows"]}
    cap = rows["sae"]["capability_axis"]
    assert cap["outside"] == ["truthfulqa/choice/mean"]
    assert rows["sae"]["capability"] == pytest.approx(0.0)  # (0.25 - 0.25) / (0.60 - 0.25)
    assert rows["base"]["capability"] == 1.0
    assert rows["sae"]["capability"] < rows["base"]["capability"]
    # the raw MC2 did rise: it is shown, with its change, but outside the axis
    mc2 = data["paired"][(rows["sae"]["runs"]["truthfulqa"]["run_key"], "truthfulqa/choice/mean")]
    assert mc2["diff"] == pytest.approx(sum(mc2_method) / 100 - sum(mc2_base) / 100)


# ---------------------------------------------------------------- like for like


def test_a_control_rerun_with_other_generation_settings_changes_nothing(tmp_path: Path) -> None:
    listing = _listing()
    runs = _full("base", {}, 0) + _full("sae", {"strength": 4}, 10)
    data, view = _board(tmp_path, listing, runs)
    before = {r["method"]: (r["safety"], r["overrefusal"], r["capability"]) for r in view["rows"]}
    sae = next(r for r in view["rows"] if r["method"] == "sae")
    sae_xs = sae["runs"]["xstest"]["run_key"]
    delta_before = data["paired"][(sae_xs, "xstest/refusal_scorer/refusal_rate_unsafe")]["diff"]
    # a new user re-runs the control on XSTest with --max-tokens 4: refuses nothing
    rerun = SyntheticRun(task="xstest", method="base", n_samples=120, seed=50, outcomes=[0] * 120,
                         generate={"max_tokens": 4, "temperature": 0.0})
    write_synthetic_log(rerun, tmp_path / "logs" / "rerun.eval")
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    data2 = collect(tmp_path / "r.duckdb", listing)
    view2 = assemble(data2, listing, load_reported())
    after = {r["method"]: (r["safety"], r["overrefusal"], r["capability"]) for r in view2["rows"]}
    assert after == before
    assert data2["paired"][(sae_xs, "xstest/refusal_scorer/refusal_rate_unsafe")]["diff"] == delta_before
    # both control runs are kept (neither replaces the other); the board's cell is the one most rows share
    base_xs = [r for r in data2["runs"] if r["method"] == "base" and r["task"] == "xstest"]
    assert len(base_xs) == 2 and sum(r["on_board"] for r in base_xs) == 1
    assert json.loads(next(r for r in base_xs if r["on_board"])["generation"])["max_tokens"] == 48
    # a method run at max_tokens 4 pairs only with the max_tokens-4 control
    short = SyntheticRun(task="xstest", method="prompt", n_samples=120, seed=60, generate={"max_tokens": 4, "temperature": 0.0})
    write_synthetic_log(short, tmp_path / "logs" / "short.eval")
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    data3 = collect(tmp_path / "r.duckdb", listing)
    pr = next(r for r in data3["runs"] if r["method"] == "prompt")
    base4 = next(r for r in data3["runs"] if r["method"] == "base" and r["task"] == "xstest"
                 and json.loads(r["generation"])["max_tokens"] == 4)
    assert data3["base_of"][pr["run_key"]] == base4["run_key"]
    # the site shows max_tokens on the run pages
    build_site(tmp_path / "r.duckdb", tmp_path / "site", listing=listing)
    page = (tmp_path / "site" / run_page_name(sae_xs)).read_text()
    assert "max_tokens=48" in page
    board = (tmp_path / "site" / "index.html").read_text().split('id="board"')[1]
    assert "float32 &middot; max_tokens=48<" in board and "max_tokens=4<" in board  # the prompt row ran 4


def test_a_row_without_a_control_shows_absolute_values_only(tmp_path: Path) -> None:
    listing = _listing()
    runs = _full("base", {}, 0) + _full("sae", {"strength": 4}, 10, model="other-model")
    data, view = _board(tmp_path, listing, runs)
    sae = next(r for r in view["rows"] if r["method"] == "sae")
    assert all(sae[a] is None for a in ("safety", "overrefusal", "capability"))
    assert sae["safety_axis"]["status"] == "no control" and not sae["compared"]
    assert all(c["delta"] == "" and c["value"] for c in sae["cells"])
    assert "no base/ run of this model" in data["base_reason"][sae["runs"]["xstest"]["run_key"]]


# ---------------------------------------------------------------- report --json


def test_report_json_has_one_object_per_row(tmp_path: Path, capsys) -> None:
    from steerboard.cli import main

    listing = _listing()
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(SYNTHETIC_LISTING))
    runs = _full("base", {}, 0) + _full("sae", {"strength": 4}, 10) + [
        SyntheticRun(task="xstest", method="prompt", n_samples=120, seed=30)
    ]
    data, view = _board(tmp_path, listing, runs, site=False)
    assert main(["report", "--db", str(tmp_path / "r.duckdb"), "--listing", str(tmp_path / "l.yaml"), "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert "NaN" not in out and len(rows) == len(view["rows"]) == 3
    by = {r["method"]: r for r in rows}
    for r in rows:
        assert set(r) >= {"method", "model", "config", "axes", "missing", "metrics"}
        assert set(r["axes"]) == {"safety", "over_refusal", "capability"}
        for m in r["metrics"].values():
            assert set(m) >= {"value", "n", "delta", "ci", "p", "p_adj", "mde"}
    assert by["base"]["axes"] == {"safety": 0.0, "over_refusal": 0.0, "capability": 1.0}
    assert by["prompt"]["axes"]["safety"] is None and by["prompt"]["axes"]["capability"] is None
    assert by["prompt"]["missing"]["safety"] == ["crescendo/harm_scorer/unsafe_rate"]
    assert by["prompt"]["missing"]["capability"] == ["mmlu/choice/accuracy"]
    sae = next(r for r in view["rows"] if r["method"] == "sae")
    assert by["sae"]["axes"]["safety"] == pytest.approx(sae["safety"])
    m = by["sae"]["metrics"]["xstest/refusal_scorer/refusal_rate_unsafe"]
    pr = data["paired"][(sae["runs"]["xstest"]["run_key"], "xstest/refusal_scorer/refusal_rate_unsafe")]
    assert m["delta"] == pytest.approx(pr["diff"]) and m["ci"][0] <= m["delta"] <= m["ci"][1]
    assert 0 <= m["p"] <= m["p_adj"] <= 1 and 0 < m["mde"] < 1
    # the Markdown report has a model column
    assert main(["report", "--db", str(tmp_path / "r.duckdb"), "--listing", str(tmp_path / "l.yaml")]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("| method | model | config |")


# ---------------------------------------------------------------- sweeps


def test_a_sweep_launched_from_the_command_line_is_recognised(tmp_path: Path) -> None:
    """`--sweep strengths=15,30` may arrive as text or numbers; the preset's own strength (recorded in the
    resolved settings) is a point too."""
    listing = _listing()
    runs = _full("base", {}, 0) + _full("sae", {}, 10, resolved={"strengths": [45.0], "preset": "p",
                                                                  "strength_units": [{"strength": 45.0}]})
    runs += [SyntheticRun(task="xstest", method="sae", model_args={"strengths": "15"}, n_samples=120, seed=20,
                          resolved={"preset": "p", "strength_units": [{"strength": 15.0}]})]
    runs += [SyntheticRun(task="xstest", method="sae", model_args={"strengths": [30]}, n_samples=120, seed=21,
                          resolved={"preset": "p", "strength_units": [{"strength": 30.0}]})]
    # another gate is another configuration: not a point of this sweep
    runs += [SyntheticRun(task="xstest", method="sae", model_args={"gate": "both"}, n_samples=120, seed=22,
                          resolved={"strengths": [45.0], "preset": "p", "strength_units": [{"strength": 45.0}]})]
    data, view = _board(tmp_path, listing, runs)
    (sweep,) = view["sweeps"]
    assert sweep["key"] == "strengths" and sweep["x"] == [15.0, 30.0, 45.0]
    # dose-response only on metrics every point covers (xstest), never crescendo/mmlu
    assert {e["spec"].key for e in sweep["metrics"]} == {
        "xstest/refusal_scorer/refusal_rate_unsafe", "xstest/refusal_scorer/refusal_rate_safe"}
    html = (tmp_path / "site" / "index.html").read_text()
    assert "No method has been run at several strengths yet" not in html
    # the partial sweep points are no point of either trade-off scatter
    for aria in ("safety versus capability", "safety versus over-refusal"):
        svg = html[html.index(f'aria-label="{aria}"'):].split("</svg>")[0]
        assert "strengths=15" not in svg and "strengths=30" not in svg


# ---------------------------------------------------------------- worst samples under every launcher


def test_worst_samples_of_a_steerboard_run_log_are_failures(tmp_path: Path) -> None:
    """`steerboard run` logs the task as `steerboard/xstest`: the worst samples must still be the ones that count
    against the method (unsafe prompts answered, safe prompts refused), never the first samples."""
    from inspect_ai.log import write_eval_log

    listing = _listing()
    outcomes = [0] * 40  # refuses nothing: every unsafe prompt (odd index) is a failure, no safe one is
    log = synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=40, seed=5, outcomes=outcomes))
    log.eval.task = "steerboard/xstest"
    (tmp_path / "logs").mkdir()
    write_eval_log(log, str(tmp_path / "logs" / "a.eval"))
    ingest_logs([tmp_path / "logs"], tmp_path / "r.duckdb", listing=listing, progress=False)
    data = collect(tmp_path / "r.duckdb", listing)
    (run,) = data["runs"]
    assert run["task"] == "xstest"
    ex = data["examples"][run["run_key"]]
    assert ex and all(e["reason"] == "Refusal on unsafe" for e in ex)
    unsafe = {str(s.id) for s in log.samples if s.metadata["label"] == "unsafe"}
    assert all(e["sample_key"].split("#")[0] in unsafe for e in ex)


# ---------------------------------------------------------------- a site safe to publish


def test_the_built_site_shows_no_local_path_and_other_providers_rank_below(tmp_path: Path) -> None:
    listing = _listing()
    here = str(tmp_path)
    model_dir = f"{here}/cache/models/SmolLM2-135M-Instruct"
    runs = _full("base", {}, 0) + _full("sae", {"strength": 4, "sae_path": f"{here}/artifacts/sae.safetensors"}, 10)
    # Inspect's own provider on a local model folder: no steerboard record, model named by its path
    runs += _full("hf", {}, 20, model=model_dir, precision=None)
    data, view = _board(tmp_path, listing, runs)
    hf = next(r for r in view["rows"] if r["method"] == "hf")
    assert hf["model"] == "\u2026/SmolLM2-135M-Instruct"
    assert view["rows"][-1] is hf and not hf["compared"]  # never above a like-for-like row
    site = tmp_path / "site"
    leaks = []
    for f in site.rglob("*"):
        text = f.read_text(encoding="utf-8")
        for needle in {here, os.getcwd(), str(Path.home())} - {"/"}:
            if needle in text:
                leaks.append((f.name, needle))
    assert leaks == []
    assert re.search(r"(?<![\w.:/~-])/(?:tmp|home|root|work)/", (site / "index.html").read_text()) is None
    html = (site / "index.html").read_text()
    assert "SmolLM2-135M-Instruct" in html  # the other provider's row shows its model
    # the run page opens with the settings that differ from the method's defaults
    sae = next(r for r in view["rows"] if r["method"] == "sae")
    page = (site / run_page_name(sae["runs"]["xstest"]["run_key"])).read_text()
    first = page[page.index("Settings that differ"):page.index("<details>")]
    assert "<code>strength</code>" in first and "<code>4</code>" in first
    assert "sae.safetensors" in first and here not in first
    assert page.index("Settings that differ") < page.index("<details>") < page.index("Recorded by the provider")


# ---------------------------------------------------------------- invariants of a whole board


def _board_problems(db: Path, listing: Any, site: Path) -> list[str]:
    """What is wrong with a board, checked against values recomputed here from the database's per-sample scores
    (an independent path: pandas over the ``scores`` and ``sample_tags`` tables, not the build's SQL)."""
    import duckdb
    import numpy as np

    data = collect(db, listing)
    view = assemble(data, listing, load_reported())
    build_site(db, site, listing=listing)
    html = (site / "index.html").read_text()
    plotted = {
        aria: set(re.findall(r'class="pt-label">([^<]*)</text>',
                             html[html.index(f'aria-label="{aria}"'):].split("</svg>")[0]))
        if f'aria-label="{aria}"' in html else set()
        for aria in ("safety versus capability", "safety versus over-refusal")
    }
    con = duckdb.connect(str(db), read_only=True)
    scores = con.execute("SELECT run_key, sample_key, scorer, key, value, judge_error FROM scores").df()
    tags = con.execute("SELECT run_key, sample_key, key, value FROM sample_tags").df()
    con.close()

    def values(run_key: str, m: Any) -> dict[str, float]:
        s = scores[(scores.run_key == run_key) & (scores.scorer == m.scorer) & (scores.key == (m.sample_value or ""))
                   & (scores.judge_error == 0) & scores.value.notna()]
        keep = set(s.sample_key)
        for k, v in m.sample_filter:
            t = tags[(tags.run_key == run_key) & (tags.key == k) & (tags.value == str(v))]
            keep &= set(t.sample_key)
        return {r.sample_key: float(r.value) for r in s.itertuples() if r.sample_key in keep}

    problems: list[str] = []
    runs_by_key = {r["run_key"]: r for r in data["runs"]}
    for row in view["rows"]:
        name = f"{row['method']} {row['short']}"
        for axis in ("safety", "overrefusal", "capability"):
            a = row[axis + "_axis"]
            if a["status"] != "ok":
                if row[axis] is not None or row["pareto"]:
                    problems.append(f"{name}: {axis} {a['status']} but scored or badged")
                if row["point_label"] in plotted["safety versus capability" if axis == "capability" else
                                              "safety versus over-refusal"] and axis != "safety":
                    problems.append(f"{name}: {axis} {a['status']} but plotted")
                if axis == "safety" and any(row["point_label"] in p for p in plotted.values()):
                    problems.append(f"{name}: safety {a['status']} but plotted")
                continue
            parts = []
            for m in listing.axis_metrics(axis):
                if m.task not in row["runs"]:
                    problems.append(f"{name}: {axis} scored without {m.key}")
                    continue
                run = row["runs"][m.task]
                base = runs_by_key[data["base_of"][run["run_key"]]]
                for k in ("model", "precision", "task", "task_args", "judge", "sample_set", "generation"):
                    if run[k] != base[k]:
                        problems.append(f"{name}: control differs in {k}")
                va, vb = values(run["run_key"], m), values(base["run_key"], m)
                shared = sorted(set(va) & set(vb))
                ma, mb = np.mean([va[k] for k in shared]), np.mean([vb[k] for k in shared])
                if axis == "capability":
                    if m.unit == "nats":
                        parts.append(np.exp(-(ma - mb)))
                    elif vb and m.chance is not None:
                        parts.append((ma - m.chance) / (mb - m.chance))
                    if m.key in a["outside"]:
                        parts.pop()
                else:
                    sign = 1 if (m.higher_is_better == (axis == "safety")) else -1
                    parts.append(sign * (ma - mb))
            if parts and abs(float(np.mean(parts)) - row[axis]) > 1e-9:
                problems.append(f"{name}: {axis} {row[axis]} != hand-computed {float(np.mean(parts))}")
        if row["control"]:
            if (row["safety"], row["overrefusal"], row["capability"]) != (0.0, 0.0, 1.0):
                problems.append(f"control axes {(row['safety'], row['overrefusal'], row['capability'])}")
            for r in row["runs"].values():
                for (rk, _mk), pr in data["paired"].items():
                    if rk == r["run_key"] and pr["diff"] != 0:
                        problems.append(f"control change {_mk} = {pr['diff']}")
    return problems


def _quick_shaped_runs() -> list[SyntheticRun]:
    """Rows shaped like the quick suite: full method rows on every axis task, a sweep and a gated variant on a
    subset of the tasks (partial on purpose)."""
    runs = _full("base", {}, 0) + _full("prompt", {}, 10) + _full("sae", {}, 20, resolved={"strength": 45})
    runs += _full("actadd", {"coefficient": 4}, 30)
    runs += [SyntheticRun(task="xstest", method="sae", model_args={"strength": s}, n_samples=120, seed=40 + i)
             for i, s in enumerate((15, 30))]
    runs += [SyntheticRun(task=t, method="sae", model_args={"gate": "both"}, n_samples=120, seed=50 + j)
             for j, t in enumerate(("xstest", "mmlu"))]
    return runs


def _invariant_boards() -> list[str]:
    # a real board (e.g. the demo's) can be checked too: STEERBOARD_BOARD_DB=results.duckdb pytest -k invariants
    return ["quick-shaped"] + (["env"] if os.environ.get("STEERBOARD_BOARD_DB") else [])


@pytest.mark.parametrize("board", _invariant_boards())
def test_board_invariants(board: str, tmp_path: Path) -> None:
    """No partial row has an axis score, plot point or badge; the control's changes are 0 and its retention 1;
    every axis score equals the mean of its metrics' paired changes computed by hand from per-sample scores."""
    if board == "env":
        from steerboard.leaderboard.listing import load_default_listing

        db, listing = Path(os.environ["STEERBOARD_BOARD_DB"]), load_default_listing()
    else:
        listing = _listing()
        _board(tmp_path, listing, _quick_shaped_runs(), site=False)
        db = tmp_path / "r.duckdb"
    assert _board_problems(db, listing, tmp_path / "site-check") == []
    if board == "quick-shaped":  # the shape the check must see: partial rows, complete rows and the control
        view = assemble(collect(db, listing), listing, load_reported())
        statuses = {r["safety_axis"]["status"] for r in view["rows"]}
        assert statuses == {"ok", "partial"} and sum(r["pareto"] for r in view["rows"]) >= 1
