"""The judges' agreement with the gold set on the board (issue 32, Deliver 4): a synthetic agreement report and a
small synthetic board. A configuration below the floor is flagged beside its row and on the judges page, one
above it is not, a configuration without gold replies says so, an absent file shows no check and no flag, and
``report --json`` carries the numbers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helpers import synthetic_database

from steerboard.cli import main
from steerboard.leaderboard import judge_check
from steerboard.leaderboard.build import assemble, build_site, collect, load_reported
from steerboard.leaderboard.listing import load_listing_file
from steerboard.leaderboard.screenshots import console_errors, serve_folder
from steerboard.leaderboard.synthetic import (
    SYNTHETIC_LISTING,
    SyntheticRun,
    synthetic_provenance,
)
from steerboard.scorers import gold as G

SAE4 = {"strength": 4}
SAE10 = {"strength": 10}


def _listing_dict() -> dict[str, Any]:
    """The synthetic listing plus a SafeEdit-like harm-judged task on the safety axis."""
    d = copy.deepcopy(SYNTHETIC_LISTING)
    d["tasks"]["safeedit"] = {
        "title": "SafeEdit",
        "description": "Attack prompts; defense success from the harm judge.",
        "paper": "Wang et al. 2024",
        "version": 1,
        "metrics": [
            {"name": "unsafe_rate", "scorer": "harm_scorer", "title": "Unsafe replies", "higher_is_better": False,
             "headline": True, "axis": "safety", "sample_value": "unsafe", "sample_filter": {}, "chance": None},
        ],
    }  # fmt: skip
    return d


RUNS = [
    SyntheticRun(task="xstest", method="base", seed=1),
    SyntheticRun(task="crescendo", method="base", seed=2),
    SyntheticRun(task="mmlu", method="base", seed=3),
    SyntheticRun(task="safeedit", method="base", seed=4),
    SyntheticRun(task="xstest", method="sae", model_args=SAE4, seed=11),
    SyntheticRun(task="safeedit", method="sae", model_args=SAE4, seed=12),
    SyntheticRun(task="mmlu", method="sae", model_args=SAE4, seed=13),
    SyntheticRun(task="xstest", method="sae", model_args=SAE10, seed=21),  # no gold replies
    SyntheticRun(task="xstest", method="actadd", model_args={"coefficient": 4}, seed=31, precision=None),
    SyntheticRun(task="safeedit", method="dinm", seed=41, task_args={"protocol": "per_instance"}),
    SyntheticRun(task="mmlu", method="prompt", seed=51),  # no judged metric
]


def _conf(run: SyntheticRun) -> str:
    prov = synthetic_provenance(run)
    assert prov is not None
    return G.configuration_id(f"{run.method}/{run.model}", prov["settings_key"], run.task_args.get("protocol"))


def _m(acc: float, n: int, lo: float, hi: float) -> dict[str, Any]:
    return {"n": n, "accuracy": acc, "accuracy_ci": [lo, hi], "flag": acc < 0.85}


def gold_report() -> dict[str, Any]:
    """An agreement report shaped as ``steerboard judge gold agree --out`` writes it (numbers made up for the
    test; the intervals are the Wilson intervals of those counts)."""
    base, sae4, dinm = _conf(RUNS[0]), _conf(RUNS[4]), _conf(RUNS[9])
    return {
        "floor": 0.85,
        "n_gold": 120,
        "judges": {
            "refusal/embed": {
                "strata": list(G.REFUSAL_JUDGED),
                "overall": _m(0.875, 40, 0.7396, 0.9454),
                "by_configuration": {base: _m(0.95, 20, 0.7639, 0.9911), sae4: _m(0.8, 20, 0.5840, 0.9193)},
                "four_way_accuracy": 0.8,
                "flagged_configurations": [sae4],
            },
            "harm/embed": {
                "strata": list(G.HARM_JUDGED),
                "overall": _m(0.9, 30, 0.7438, 0.9654),
                "by_configuration": {
                    sae4: _m(0.9, 10, 0.5958, 0.9821),
                    dinm: _m(0.7, 10, 0.3968, 0.8922),
                    "prompt/smollm2-135m@0123456789abcdef": _m(1.0, 10, 0.7225, 1.0),
                },
                "flagged_configurations": [dinm],
            },
        },
    }


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gold_board")
    listing_path = root / "listing.yaml"
    listing_path.write_text(yaml.safe_dump(_listing_dict(), sort_keys=False))
    listing = load_listing_file(listing_path)
    db = synthetic_database(root, RUNS, listing)
    gold_path = root / "gold_agreement.json"
    gold_path.write_text(json.dumps(gold_report()))
    build_site(db, root / "site", listing=listing, gold_agreement_path=gold_path)
    return {"root": root, "listing": listing, "listing_path": listing_path, "gold": gold_path}


def _board_rows(html: str) -> list[str]:
    """The measured rows of the board table (``#board``), as HTML."""
    body = html.split('<table id="board"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [t for t in body.split("<tr")[1:] if 'class="reported"' not in t]


def _row(html: str, method: str, config: str) -> str:
    hits = [t for t in _board_rows(html) if f'class="method">{method}<' in t and f"#settings\">{config}<" in t]
    assert len(hits) == 1, (method, config, len(hits))
    return hits[0]


def _judge_cell(row_html: str) -> str:
    return row_html.split('<td class="judge"', 1)[1].split("</td>", 1)[0]


def test_the_board_flags_a_configuration_below_the_floor_and_not_one_above(board: dict[str, Any]) -> None:
    html = (board["root"] / "site" / "index.html").read_text()
    sae4 = _row(html, "sae", "strength=4")
    cell = _judge_cell(sae4)
    assert "flagged" in sae4.split(">", 1)[0]  # the row is shaded
    assert re.search(r"refusal 0\.80<span class=\"badge jflag\">&lt; 0\.85</span>", cell), cell
    assert "[0.58, 0.92] n=20" in cell
    assert re.search(r"harm 0\.90<span class=\"ci\">\[0\.60, 0\.98\] n=10", cell), cell  # above: no badge
    base = _row(html, "base", "(defaults)")
    cell = _judge_cell(base)
    assert "flagged" not in base.split(">", 1)[0] and "jflag" not in cell
    assert "refusal 0.95" in cell and "[0.76, 0.99] n=20" in cell
    assert "objective <span class=\"muted\">not in gold set</span>" in cell  # Crescendo's judge: never measured
    assert "harm <span class=\"muted\">not in gold set</span>" in cell  # base's SafeEdit replies: none labelled
    # the per-instance SafeEdit row is its own configuration, matched with its protocol
    dinm = _row(html, "dinm", "(defaults)")
    assert re.search(r"harm 0\.70<span class=\"badge jflag\">", _judge_cell(dinm))
    # a row whose configuration has no gold replies, and one whose settings are not recorded
    assert _judge_cell(_row(html, "sae", "strength=10")).endswith(">not in gold set</span>")
    assert _judge_cell(_row(html, "actadd", "settings not recorded")).endswith(">not in gold set</span>")
    assert "no judged metric" in _judge_cell(_row(html, "prompt", "(defaults)"))
    # the glance table carries the flag for the two flagged rows only
    glance = html.split('<table id="glance"', 1)[1].split("</table>", 1)[0]
    assert glance.count('class="badge jflag"') == 2
    assert 'id="judge-legend"' in html and "marks agreement below 0.85" in html


def test_the_judges_page_lists_overall_and_per_configuration_agreement(board: dict[str, Any]) -> None:
    page = (board["root"] / "site" / "judges.html").read_text()
    assert "There is no gold-set check" not in page
    ref = page.split("<code>refusal/embed</code></h3>", 1)[1].split("<h3", 1)[0]
    assert "0.875 <span class=\"muted\">95 % CI [0.74, 0.95], n = 40</span>" in ref
    assert "Four-way accuracy</dt><dd>0.800" in ref
    trs = ref.split("<tbody>", 1)[1].split("<tr")[1:]
    assert len(trs) == 2
    assert 'class="flagged"' in trs[0] and ">sae<" in trs[0] and ">strength=4</a>" in trs[0]  # flagged first
    assert "0.800" in trs[0] and "[0.58, 0.92]" in trs[0] and "below 0.85" in trs[0]
    assert ">base<" in trs[1] and "0.950" in trs[1] and "below 0.85" not in trs[1]
    harm = page.split("<code>harm/embed</code></h3>", 1)[1]
    assert "Four-way accuracy" not in harm.split("<table", 1)[0]
    assert "protocol=per_instance" in harm and "not on this board" in harm  # the prompt configuration
    assert "settings 0123456789ab" in harm
    decides = page.split('id="decides"', 1)[1].split("</table>", 1)[0]
    assert "Crescendo&#39;s attack success" in decides and "not in the gold set" in decides


def test_report_json_carries_each_rows_judge_agreement(board: dict[str, Any], capsys) -> None:
    root = board["root"]
    args = ["report", "--db", str(root / "r.duckdb"), "--listing", str(board["listing_path"]), "--json"]
    assert main([*args, "--gold-agreement", str(board["gold"])]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["method"], json.dumps(r["config"].get("strength")), r["variant"]): r for r in rows}
    sae4 = by[("sae", "4", "")]["judge_agreement"]
    assert sae4 == {
        "harm/embed": {"accuracy": 0.9, "ci": [0.5958, 0.9821], "n": 10, "flag": False},
        "refusal/embed": {"accuracy": 0.8, "ci": [0.584, 0.9193], "n": 20, "flag": True},
    }
    base = by[("base", "null", "")]["judge_agreement"]
    assert base["refusal/embed"]["flag"] is False and base["refusal/embed"]["accuracy"] == 0.95
    assert base["objective/embed"] is None and base["harm/embed"] is None  # judged here, not in the gold set
    assert by[("dinm", "null", "protocol=per_instance")]["judge_agreement"]["harm/embed"]["flag"] is True
    assert by[("sae", "10", "")]["judge_agreement"] == {"refusal/embed": None}
    assert by[("prompt", "null", "")]["judge_agreement"] is None  # no judged metric on the row


def test_an_absent_file_shows_no_check_and_no_flag(board: dict[str, Any], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(judge_check, "GOLD_RESOURCE", "data/no_such_gold_agreement.json")  # nothing shipped
    build_site(board["root"] / "r.duckdb", tmp_path / "site", listing=board["listing"])
    page = (tmp_path / "site" / "judges.html").read_text()
    assert 'id="no-gold"' in page and "There is no gold-set check in this build" in page
    assert "<h3" not in page  # no judge's figures at all
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'class="badge jflag"' not in html and "Judges vs" not in html and "not in gold set" not in html
    assert "No gold-set check of the judges in this build" in html
    assert all('class="judge"' not in t for t in _board_rows(html))
    root = board["root"]
    assert main(["report", "--db", str(root / "r.duckdb"), "--listing", str(board["listing_path"]), "--json"]) == 0
    assert all(r["judge_agreement"] is None for r in json.loads(capsys.readouterr().out))


def test_the_board_and_the_gold_key_spell_a_configuration_alike(board: dict[str, Any]) -> None:
    """Each log's configuration as ``judge gold sample`` writes it into the key is the configuration the board
    gives the row holding that run (the per-instance protocol included); an unrecorded log matches no row."""
    from inspect_ai.log import read_eval_log

    data = collect(board["root"] / "r.duckdb", board["listing"])
    rows = assemble(data, board["listing"], load_reported())["rows"]
    row_of_run = {r["run_key"]: row for row in rows for r in row["runs"].values()}
    seen = 0
    for path in sorted((board["root"] / "logs").glob("*.eval")):
        log = read_eval_log(str(path), header_only=True)
        row = row_of_run[log.eval.eval_id]
        if row["settings_key"] is None:
            assert judge_check.row_configuration(row) is None
            continue
        assert G._configuration(log) == judge_check.row_configuration(row)
        seen += 1
    assert seen == len(RUNS) - 1
    assert any(str(judge_check.row_configuration(r)).endswith("|protocol=per_instance") for r in rows if r["variant"])


def test_a_malformed_file_is_a_one_line_error_naming_the_field(board: dict[str, Any], tmp_path: Path, capsys) -> None:
    bad = gold_report()
    del bad["judges"]["refusal/embed"]["overall"]["accuracy_ci"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    root = board["root"]
    rc = main(["build", "--db", str(root / "r.duckdb"), "--out", str(tmp_path / "site"),
               "--listing", str(board["listing_path"]), "--gold-agreement", str(path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.count("\n") == 0
    assert "judges.refusal/embed.overall: accuracy_ci must be [low, high]" in err
    assert not (tmp_path / "site").exists()  # nothing written
    rc = main(["build", "--db", str(root / "r.duckdb"), "--out", str(tmp_path / "site"),
               "--listing", str(board["listing_path"]), "--gold-agreement", str(tmp_path / "none.json")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "gold agreement file not found" in err and err.count("\n") == 0



@pytest.mark.browser
@pytest.mark.parametrize(("width", "height", "mobile"), [(1440, 900, False), (390, 844, True)])
def test_board_and_judges_page_with_a_gold_file_in_chromium(
    board: dict[str, Any], chromium: Any, width: int, height: int, mobile: bool
) -> None:
    """Headless Chromium at 1440 and 390 px: the board with its judges column and the judges page render
    without console errors, the page never pans sideways, and the flags are on screen as text."""
    from selenium.webdriver.common.by import By

    chromium.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    try:
        with serve_folder(board["root"] / "site") as base:
            chromium.get(base + "/index.html")
            assert chromium.execute_script("return document.documentElement.scrollWidth") <= width
            flags = [b for b in chromium.find_elements(By.CSS_SELECTOR, "#glance .badge.jflag") if b.is_displayed()]
            assert len(flags) == 2 and all(b.text == "judge < 0.85" for b in flags)
            assert "not in gold set" in chromium.find_element(By.ID, "board").get_attribute("textContent")
            assert console_errors(chromium) == []
            shots = Path(__file__).parent / "_screenshots"
            shots.mkdir(exist_ok=True)
            chromium.execute_script("document.getElementById('board').scrollIntoView()")
            chromium.save_screenshot(str(shots / f"leaderboard-gold-board-{width}.png"))
            chromium.find_element(By.CSS_SELECTOR, "header nav a[href='judges.html']").click()
            assert chromium.title == "steerboard judges"
            assert chromium.execute_script("return document.documentElement.scrollWidth") <= width
            flagged = chromium.find_elements(By.CSS_SELECTOR, "table.gold-configs tr.flagged")
            assert len(flagged) == 2 and all("below 0.85" in r.get_attribute("textContent") for r in flagged)
            assert console_errors(chromium) == []
            chromium.save_screenshot(str(shots / f"leaderboard-judges-{width}.png"))
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
