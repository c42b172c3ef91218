"""The submission path: ``steerboard run --suite submission --method M`` runs what ``submit check`` requires."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from steerboard.leaderboard.listing import resolve_listing
from steerboard.leaderboard.submit import (
    STANDARD_JUDGES,
    check_submission,
    required_tasks,
    suite_sizes,
)
from steerboard.runner.suite import drop_gated_tasks, load_suite, parse_suite, replace_methods, suite_path
from steerboard.tasks._testing import WILDGUARD_ROWS
from steerboard.tasks.listing import GATED_TASKS

SUITE = suite_path("submission")


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from steerboard.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = int(e.code or 0)
    out = capsys.readouterr()
    return rc or 0, out.out, out.err


def test_submission_suite_and_submit_check_agree() -> None:
    """Every task ``submit check`` requires is in the suite exactly once, at full size, with standard judges."""
    listing = resolve_listing(None)
    raw = yaml.safe_load(SUITE.read_text())
    names = [t["name"] for t in raw["tasks"]]
    assert sorted(names) == sorted(required_tasks(listing))
    assert len(names) == len(set(names))  # submit check: one run per task
    for t in raw["tasks"]:
        assert t.get("limit") and "seed" in t["args"], t  # laptop-sized: the same seeded items for everyone
        assert not t.get("methods") and not t.get("exclude_methods"), t  # runs for any --method
        for key, value in (t.get("args") or {}).items():
            if "judge" in key:
                assert value in STANDARD_JUDGES
    suite = load_suite("submission")
    assert 2_000 <= sum(t.limit for t in suite.tasks if t.name not in GATED_TASKS) <= 5_000  # a few thousand
    assert {t.name: (t.limit, t.args) for t in suite.tasks} == suite_sizes()  # what submit check compares
    assert set(GATED_TASKS) <= set(names)


def test_method_replaces_the_suites_methods() -> None:
    raw = yaml.safe_load(SUITE.read_text())
    suite = parse_suite(replace_methods(raw, [{"name": "sae", "args": {"strengths": 4}}]), "submission.yaml")
    assert [(m.name, m.args) for m in suite.methods] == [("sae", {"strengths": 4})]
    assert sorted({t.name for _, t in suite.runs()}) == sorted(required_tasks(resolve_listing(None)))


def test_gated_task_is_dropped_with_a_note_unless_data_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    suite = load_suite("submission")
    notes = drop_gated_tasks(suite)
    assert "wildguard" not in {t.name for t in suite.tasks}
    assert len(notes) == 1 and "HF_TOKEN" in notes[0] and "wildguard.data_file" in notes[0]
    suite = load_suite("submission")
    next(t for t in suite.tasks if t.name == "wildguard").args["data_file"] = "/data/wgt.jsonl"
    assert drop_gated_tasks(suite) == [] and "wildguard" in {t.name for t in suite.tasks}
    monkeypatch.setenv("HF_TOKEN", "x")
    suite = load_suite("submission")
    assert drop_gated_tasks(suite) == []


def test_cli_suite_with_method_runs_every_required_task(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--suite submission --method M -M ...`` (the suite plus one method) is accepted and plans the
    listing's tasks; wildguard is skipped with a note, or planned when ``-T wildguard.data_file=`` gives its data."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    required = set(required_tasks(resolve_listing(None)))
    argv = ["run", "--suite", "submission", "--method", "sae", "-M", "strengths=4", "--dry-run",
            "--log-dir", str(tmp_path)]
    rc, out, err = _run_cli(argv, capsys)
    assert rc == 0, err
    plan = _planned(out)  # a dry run prints its plan (and writes no summary)
    assert {task for _, _, task in plan} == required - {"wildguard"}
    assert {m for m, _, _ in plan} == {"sae"} and all(a == {"strengths": "4"} for _, a, _ in plan)
    assert "skipped wildguard" in err and "HF_TOKEN" in err
    wgt = tmp_path / "wgt.jsonl"  # local records of WildGuardTest's schema
    wgt.write_text("\n".join(json.dumps(r) for r in WILDGUARD_ROWS) + "\n")
    rc, out, err = _run_cli(argv + ["-T", f"wildguard.data_file={wgt}"], capsys)
    assert rc == 0, err
    assert {task for _, _, task in _planned(out)} == required
    assert "skipped" not in err


def _planned(out: str) -> list[tuple[str, dict[str, Any], str]]:
    """(method, args, task) of each pair a dry run lists (``status  method {args}  task``)."""
    plan = []
    for line in out.splitlines():
        m = re.match(r"\s*(to run|to resume|done)\s+(\S+)\s+(\{.*\})\s+(\S+)", line)
        if m:
            plan.append((m.group(2), json.loads(m.group(3)), m.group(4)))
    return plan


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-T", "judge=embed"], "TASK.KEY=VALUE"),
        (["-T", "nosuchtask.judge=embed"], "the suite runs no task 'nosuchtask'"),
        (["--task", "xstest"], "not both"),
    ],
)
def test_cli_suite_bad_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = _run_cli(["run", "--suite", "submission", "--dry-run", "--log-dir", str(tmp_path), *argv], capsys)
    assert rc != 0 and message in err
    assert "Traceback" not in err


def test_unknown_method_lists_registered_and_says_how_to_register(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["run", "--suite", "submission", "--method", "randdir", "--dry-run", "--log-dir", str(tmp_path)]
    rc, _, err = _run_cli(argv, capsys)
    assert rc != 0
    assert "unknown method 'randdir'" in err
    assert "actadd" in err and "base" in err and "sae" in err  # the registered ones
    assert 'entry-points."steerboard.methods"' in err and "pip install -e" in err


def test_submit_check_names_the_suite_and_the_gated_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rep = check_submission(tmp_path / "empty", resolve_listing(None))
    text = "\n".join(rep.lines())
    assert not rep.ok
    assert "required task 'wildguard'" not in text  # optional: gated data
    assert "note: optional task 'wildguard' is absent" in text and "HF_TOKEN" in text
    assert "steerboard run --suite submission --method NAME" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
