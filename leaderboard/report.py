"""``steerboard report``: the leaderboard's rows as a Markdown table, from the same numbers the site shows.

The README's and ``docs/results.md``'s results tables are this command's output on the database that
``make demo`` builds, so they cannot drift from the site: both come from
:func:`steerboard.leaderboard.build.collect` and :func:`~steerboard.leaderboard.build.assemble`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerboard.leaderboard.build import assemble, collect, load_reported
from steerboard.leaderboard.listing import Listing


def _axis(row: dict[str, Any], axis: str) -> str:
    ci = row.get(axis + "_ci")
    if not ci:
        return "n/a"
    return f"{100 * ci['score']:.1f} [{100 * ci['lo']:.1f}, {100 * ci['hi']:.1f}]"


def _metric_header(m: Any) -> str:
    arrow = "↑" if m.higher_is_better else "↓"
    return f"{m.title} {arrow}"


def results_markdown(db: str | Path, listing: Listing, with_ci: bool = False) -> str:
    """One Markdown table: per leaderboard row, its three axis scores and every headline metric.

    Args:
        db: results database written by ``steerboard ingest``.
        listing: the task listing (headline metrics and their directions).
        with_ci: add each metric's 95 % interval after its value.

    Returns:
        The table, rows in the site's default order, values in % (axis scores with their 95 % intervals); a
        metric a row did not run reads ``-``, one with no samples ``n/a``.
    """
    data = collect(db, listing)
    view = assemble(data, listing, load_reported())
    headline = view["headline"]
    head = ["method", "config", "safety ↑", "over-refusal ↓", "capability ↑"] + [
        _metric_header(m) for m in headline
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in view["rows"]:
        cells = []
        for c in row["cells"]:
            v = c["value"] or "-"
            if with_ci and c["ci"]:
                v += f" {c['ci']}"
            cells.append(v)
        # the options the run was given (sweep keys first), as the site's plots label points; the resolved
        # settings are on the site's configuration pages
        cfg = row.get("short") or "defaults"
        name = row["method"] + (" (control)" if row.get("control") else "")
        out = [name, cfg.replace("|", "\\|"), _axis(row, "safety"), _axis(row, "overrefusal"), _axis(row, "capability")]
        lines.append("| " + " | ".join(out + cells) + " |")
    return "\n".join(lines) + "\n"
