"""``steerboard report``: the leaderboard's rows as a Markdown table or as JSON, from the numbers the site shows.

The README's and ``docs/results.md``'s results tables are this command's output on the database that
``make demo`` builds, so they cannot drift from the site: both come from
:func:`steerboard.leaderboard.build.collect` and :func:`~steerboard.leaderboard.build.assemble`. ``--json`` is the
machine-readable board (format in ``docs/contract.md``, "Report").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from steerboard.leaderboard.build import assemble, collect, load_reported, public_text
from steerboard.leaderboard.judge_check import attach, load_gold_agreement
from steerboard.leaderboard.listing import Listing

#: JSON names of the three axes (``over_refusal`` is the listing's ``overrefusal``).
JSON_AXES = {"safety": "safety", "overrefusal": "over_refusal", "capability": "capability"}


def _axis(row: dict[str, Any], axis: str) -> str:
    a = row[axis + "_axis"]
    if a["status"] == "partial":
        return f"partial ({a['k']} of {a['n']})"
    if a["status"] in ("no control", "below chance"):
        return a["status"]
    lo, hi = a["lo"], a["hi"]
    if axis == "capability":
        text = f"{100 * a['score']:.1f}"
        if lo is not None and not math.isnan(lo):
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    else:
        text = f"{100 * a['score']:+.1f}"
        if lo is not None and not math.isnan(lo):
            text += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return text + (" (n too small)" if a["status"] == "n too small" else "")


def _metric_header(m: Any) -> str:
    arrow = "↑" if m.higher_is_better else "↓"
    return f"{m.title} {arrow}"


def _view(db: str | Path, listing: Listing) -> tuple[dict[str, Any], dict[str, Any]]:
    data = collect(db, listing)
    return data, assemble(data, listing, load_reported())


def results_markdown(db: str | Path, listing: Listing, with_ci: bool = False) -> str:
    """One Markdown table: per leaderboard row, its model, three axis scores and every headline metric.

    Args:
        db: results database written by ``steerboard ingest``.
        listing: the task listing (headline metrics, axis sets and their directions).
        with_ci: add each metric's 95 % interval, and its paired change versus the control with that change's
            interval, after its value.

    Returns:
        The table, rows in the site's default order: safety and over-refusal as paired changes versus the control
        in points, capability as % retained (each with its 95 % paired bootstrap interval; ``partial (k of n)``
        where the row lacks a metric of the axis); metrics in % (costs in nats); a metric a row did not run reads
        ``-``, one with no samples ``n/a``.
    """
    _, view = _view(db, listing)
    headline = view["headline"]
    head = ["method", "model", "config", "safety Δ ↑", "over-refusal Δ ↓", "capability kept ↑"] + [
        _metric_header(m) for m in headline
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in view["rows"]:
        cells = []
        for c in row["cells"]:
            v = c["value"] or "-"
            if with_ci and c["ci"]:
                v += f" {c['ci']}"
            if with_ci and c["delta"] and not c["control"]:
                v += f" Δ {c['delta']}{'*' if c['sig'] else ''} {c['delta_ci']}".rstrip()
            cells.append(v)
        # the options the run was given (sweep keys first), as the site's plots label points; the resolved
        # settings are on the site's configuration pages
        cfg = row.get("short") or "defaults"
        name = row["method"] + (" (control)" if row.get("control") else "")
        out = [
            name, row["model"], cfg.replace("|", "\\|"),
            _axis(row, "safety"), _axis(row, "overrefusal"), _axis(row, "capability"),
        ]
        lines.append("| " + " | ".join(out + cells) + " |")
    return "\n".join(lines) + "\n"


def _num(x: Any) -> float | None:
    """A JSON number, or None for a missing or non-finite value (the report never writes NaN)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def results_json(
    db: str | Path, listing: Listing, gold_agreement_path: str | Path | None = None
) -> list[dict[str, Any]]:
    """The board as plain data: one object per row, in the site's order (format in ``docs/contract.md``).

    ``judge_agreement`` comes from ``gold_agreement_path`` (default: the shipped gold agreement file; see
    :mod:`steerboard.leaderboard.judge_check`).

    Raises:
        GoldAgreementError: ``gold_agreement_path`` is missing or not a gold agreement report.
    """
    gold = load_gold_agreement(gold_agreement_path)
    data, view = _view(db, listing)
    attach(view["rows"], gold, listing)
    out = []
    for row in view["rows"]:
        metrics: dict[str, Any] = {}
        for r in row["runs"].values():
            task = listing.tasks.get(r["task"])
            for m in task.metrics if task else []:
                st = data["stats"].get((r["run_key"], m.key))
                if st is None:
                    continue
                pr = data["paired"].get((r["run_key"], m.key))
                has = pr is not None and pr["n"] > 0
                metrics[m.key] = {
                    "value": _num(st["mean"]),
                    "n": st["n"],
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "delta": _num(pr["diff"]) if has else None,
                    "ci": [_num(pr["ci"][0]), _num(pr["ci"][1])] if has else None,
                    "n_paired": pr["n"] if has else 0,
                    "p": _num(pr["p"]) if has else None,
                    "p_adj": _num(data["p_adj"].get((r["run_key"], m.key))) if has and not pr["self"] else (
                        1.0 if has else None),
                    "mde": _num(pr["mde"]) if has else None,
                    "n_too_small": bool(pr["too_small"]) if has else None,
                }
        axes, missing, status = {}, {}, {}
        for axis, name in JSON_AXES.items():
            a = row[axis + "_axis"]
            axes[name] = _num(a["score"]) if a["status"] in ("ok", "n too small") else None
            missing[name] = list(a["missing"])
            status[name] = a["status"]
        config = row["resolved"] if isinstance(row.get("resolved"), dict) else row["config_obj"]
        out.append(
            {
                "method": row["method"],
                "model": row["model"],
                "submitter": row["submitter"],
                "control": row["control"],
                "variant": row["variant"],
                "config": {k: public_text(v) for k, v in (config or {}).items()},
                "axes": axes,
                "axes_ci": {
                    JSON_AXES[a]: [_num(row[a + "_axis"]["lo"]), _num(row[a + "_axis"]["hi"])]
                    if row[a + "_axis"]["score"] is not None else None
                    for a in JSON_AXES
                },
                "axis_status": status,
                "missing": missing,
                "pareto": row["pareto"],
                "metrics": metrics,
                "judge_agreement": row["judge_agreement"],
            }
        )
    return out
