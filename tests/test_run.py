"""Suite parsing and validation for `steerboard run` (no model work)."""

from __future__ import annotations

import pytest

from steerboard.run import load_suite, parse_suite


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
