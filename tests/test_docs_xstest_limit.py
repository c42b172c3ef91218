"""What the docs say XSTest's ``--limit N`` takes is what the task's sample order holds."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from steerboard.tasks.xstest import xstest

ROOT = Path(__file__).resolve().parents[1]


def _prefix(n: int) -> tuple[Counter, int]:
    samples = list(xstest().dataset)[:n]
    return Counter(s.metadata["label"] for s in samples), len({s.metadata["type"] for s in samples})


def test_leaderboard_doc_limit_counts_match_the_task() -> None:
    text = " ".join((ROOT / "docs" / "leaderboard.md").read_text().split())
    m = re.search(r"`--limit (\d+)` holds (\d+) safe and (\d+) unsafe prompts of (\d+) types", text)
    assert m, "docs/leaderboard.md no longer states what --limit takes on XSTest"
    n, safe, unsafe, types = map(int, m.groups())
    labels, n_types = _prefix(n)
    assert (labels["safe"], labels["unsafe"], n_types) == (safe, unsafe, types)
    assert "stratified by label (safe/unsafe), then prompt type" in text
    assert "safe prompts only" not in text
    one, _ = _prefix(1)
    assert "`--limit 1` on XSTest, one safe prompt" in text and one == Counter({"safe": 1})


def test_tasks_readme_limit_counts_match_the_task() -> None:
    text = " ".join((ROOT / "tasks" / "README.md").read_text().split())
    m = re.search(r"xstest\.py --limit (\d+)` measures (\d+) safe and (\d+) unsafe prompts across (\d+) prompt types",
                  text)
    assert m
    n, safe, unsafe, types = map(int, m.groups())
    labels, n_types = _prefix(n)
    assert (labels["safe"], labels["unsafe"], n_types) == (safe, unsafe, types)
