"""Suite parsing and validation for `steerboard run` (no model work)."""

from __future__ import annotations

import pytest

from steerboard.runner import load_suite, parse_suite


def test_shipped_suites_parse_and_cover_every_method() -> None:
    from steerboard.methods.registry import method_entry_points

    quick = load_suite("quick")
    names = {m.name for m in quick.methods}
    assert names == set(method_entry_points())  # every installed method runs in the demo
    assert all(t.limit for t in quick.tasks)
    full = load_suite("full")
    assert {m.name for m in full.methods} == names


def test_sweep_expands_into_runs() -> None:
    s = parse_suite({"methods": [{"name": "base"}, {"name": "prompt", "sweep": {"placement": ["replace", "prepend"]}}],
                     "tasks": [{"name": "xstest", "limit": 2}]})
    assert [(m.name, m.args) for m in s.methods] == [
        ("base", {}), ("prompt", {"placement": "replace"}), ("prompt", {"placement": "prepend"})
    ]
    assert len({m.slug for m in s.methods}) == 3
    assert len(s.runs()) == 3


def test_method_task_filter() -> None:
    s = parse_suite({"methods": ["base", {"name": "prompt", "tasks": ["mmlu"], "sweep": {"placement": ["replace", "prepend"]}}],
                     "tasks": [{"name": "xstest", "limit": 2}, {"name": "mmlu", "limit": 2}]})
    assert [(m.name, t.name) for m, t in s.runs()] == [
        ("base", "xstest"), ("base", "mmlu"), ("prompt", "mmlu"), ("prompt", "mmlu")
    ]
    with pytest.raises(ValueError, match="unknown task"):
        parse_suite({"methods": [{"name": "base", "tasks": ["xstets"]}], "tasks": ["xstest"]})


def test_task_method_filter() -> None:
    s = parse_suite({"methods": ["base", "prompt"],
                     "tasks": [{"name": "xstest", "limit": 2, "methods": ["prompt"]}, {"name": "mmlu", "limit": 2}]})
    assert [(m.name, t.name) for m, t in s.runs()] == [("base", "mmlu"), ("prompt", "xstest"), ("prompt", "mmlu")]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"methods": ["base"], "tasks": ["xstest"], "modle": "x"}, "unknown suite key"),
        ({"methods": ["nosuchmethod"], "tasks": ["xstest"]}, "unknown method 'nosuchmethod'; installed: .*base"),
        ({"methods": ["base"], "tasks": ["nosuchtask"]}, "unknown task 'nosuchtask'; valid: .*xstest"),
        ({"methods": ["base"], "tasks": [{"name": "xstest", "limit": 0}]}, "limit must be a positive integer"),
        ({"methods": [{"name": "base", "sweep": {"strength": []}}], "tasks": ["xstest"]}, "non-empty list"),
        ({"methods": [{"name": "base", "argz": {}}], "tasks": ["xstest"]}, "unknown key"),
        ({"methods": [], "tasks": ["xstest"]}, "no methods"),
    ],
)
def test_bad_suites_rejected(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_suite(data)


def test_unknown_suite_name_lists_shipped() -> None:
    with pytest.raises(ValueError, match="quick"):
        load_suite("quik")


def test_run_suite_end_to_end_and_resume(tiny_model_dir: str, tmp_path) -> None:
    """Two methods x one task on the tiny model; a second run skips what finished."""
    from steerboard.runner import run_suite

    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base", {"name": "prompt", "sweep": {"placement": ["replace", "prepend"]}}],
        "tasks": [{"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 4}}],
    })
    first = run_suite(suite, tmp_path, display="none")
    assert [s["status"] for s in first] == ["success"] * 3
    assert all("refusal_scorer/refusal_rate" in s["metrics"] for s in first)
    logs = sorted(tmp_path.rglob("*.eval"))
    assert len(logs) == 3
    second = run_suite(suite, tmp_path, display="none")
    assert [s["status"] for s in second] == ["success"] * 3
    assert sorted(tmp_path.rglob("*.eval")) == logs  # nothing re-ran
    plan = run_suite(suite, tmp_path, dry_run=True, only_methods=["prompt"])
    assert [s["status"] for s in plan] == ["done", "done"]  # finished pairs are listed as done


@pytest.mark.parametrize("bad", [0, -3, "many", 2.5, True])
def test_max_connections_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match=r"max_connections must be an integer >= 1 .*got"):
        parse_suite({"methods": ["base"], "tasks": ["xstest"], "max_connections": bad})
    assert parse_suite({"methods": ["base"], "tasks": ["xstest"], "max_connections": 8}).max_connections == 8


def test_more_connections_than_batch_rows_is_a_one_line_note(capsys) -> None:
    from steerboard.runner.plan import batch_notice, check_runs, select_runs

    assert batch_notice("base", 64, 32) is None
    note = batch_notice("base", 64, 200)
    assert note is not None and "\n" not in note and "at most 64 requests at once" in note
    suite = parse_suite({"methods": [{"name": "base", "args": {"max_batch_size": 4}}], "tasks": ["xstest"],
                         "max_connections": 16})
    assert check_runs(suite, select_runs(suite, None, None), "smollm2-135m") == []  # a note, not a problem
    err = capsys.readouterr().err
    assert "max_connections 16 > max_batch_size 4" in err and err.count("\n") == 1
