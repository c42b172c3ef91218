"""A suite run's summary: one entry per pair (what :func:`steerboard.runner.pair.run_pair` records), written as
JSON next to the logs, and the headline-metrics table ``steerboard run`` prints at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def finish_summary(summary: list[dict[str, Any]], summary_path: str | Path | None) -> None:
    """Mark the running pair ``cancelled`` and write the summary JSON (when a path is given)."""
    for entry in summary:
        if entry["status"] == "running":
            entry["status"] = "cancelled"
    if summary_path is not None:
        from steerboard import storage

        storage.atomic_write_text(summary_path, storage.dumps_json(summary, indent=2))


def headline_metrics(task: str) -> list[tuple[str, str, str]]:
    """``(scorer, metric, title)`` of a task's headline metrics from ``tasks/listing.yaml``."""
    from steerboard.tasks.listing import load_listing

    spec = load_listing()["tasks"].get(task, {})
    return [(m["scorer"], m["name"], m["title"]) for m in spec.get("metrics", []) if m["headline"]]


def results_table(summary: list[dict[str, Any]]) -> str:
    """A plain-text table of the headline metrics per method config x task, with the sample count n."""
    rows = [("method", "config", "task", "status", "n", "headline metrics")]
    for s in summary:
        metrics = s.get("metrics") or {}
        cells = []
        for scorer, name, _ in headline_metrics(s["task"]):
            value = metrics.get(f"{scorer}/{name}")
            missing = value is None or (isinstance(value, float) and value != value)  # no samples: NaN
            cells.append(f"{name}={'n/a' if missing else f'{value:.3f}'}")
        config = json.dumps(s["args"], sort_keys=True, default=str) if s["args"] else "-"
        n = s.get("samples")
        rows.append((s["method"], config, s["task"], s["status"], "-" if n is None else str(n), "  ".join(cells)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows
    )
