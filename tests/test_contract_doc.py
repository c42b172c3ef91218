"""``docs/contract.md`` names what the code uses, and nothing cites a document outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    m = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", DOC, flags=re.M | re.S)
    assert m, f"docs/contract.md has no '## {title}' section"
    return m.group(1)


def test_listing_fields_match_the_validator() -> None:
    from steerboard.tasks.listing import AXES, METRIC_FIELDS, OPTIONAL_METRIC_FIELDS, TASK_FIELDS

    documented = re.findall(r"^\| `(\w+)` \|", _section("Listing"), flags=re.M)
    assert documented == [*METRIC_FIELDS, *OPTIONAL_METRIC_FIELDS]
    for name in (*TASK_FIELDS, *AXES):
        assert name in _section("Listing")


def test_task_and_method_names_match_the_registries() -> None:
    from steerboard.methods.registry import method_entry_points
    from steerboard.runner.suite import TASK_NAMES

    tasks = _section("Tasks")
    assert all(f"`{t}`" in tasks for t in TASK_NAMES)
    methods = _section("Model strings and methods")
    assert all(f"`{m}`" in methods for m in method_entry_points())


def test_suite_keys_match_the_suite_parser() -> None:
    from steerboard.runner.suite import METHOD_KEYS, SUITE_KEYS, TASK_KEYS

    commands = _section("Commands")
    for key in SUITE_KEYS | METHOD_KEYS | TASK_KEYS:
        assert f"`{key}`" in commands, key


def test_suite_label_key_is_rejected() -> None:
    from steerboard.runner import parse_suite

    with pytest.raises(ValueError, match=r"methods\[0\]: unknown key\(s\) \['label'\]; valid: \['args', 'name', 'resources', 'sweep', 'tasks'\]"):
        parse_suite({"methods": [{"name": "base", "label": "control"}], "tasks": ["xstest"]})


def test_shipped_suites_parse() -> None:
    from steerboard.runner import load_suite

    for name in ("quick", "full"):
        assert load_suite(name).methods


def test_no_citation_of_a_document_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"contract[ -]\d|" + "COMMON" + "/DESIGN", re.I)  # split: this file must not match
    hits = []
    for f in files:
        if f == "README.md" or not f.endswith((".py", ".md", ".yaml", ".toml", ".html", ".j2")):
            continue
        text = (ROOT / f).read_text(encoding="utf-8", errors="replace")
        hits += [f"{f}:{i}" for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_shipped_files_hold_no_machine_paths() -> None:
    """Artifacts and data the package ships name models and files portably, never by a path on the machine that
    made them (peft writes the base model's local path into adapter_config.json; the ship step replaces it)."""
    import re

    pattern = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users)/")
    roots = [ROOT / d for d in ("methods/artifacts", "methods/data", "methods/presets", "scorers/data", "scorers/artifacts",
                                "tasks/data", "leaderboard/data", "steerboard/suites")]
    bad = []
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file() and f.suffix in (".json", ".jsonl", ".yaml", ".md", ".csv", ".txt"):
                if pattern.search(f.read_text(errors="replace")):
                    bad.append(str(f.relative_to(ROOT)))
    assert not bad, bad
