"""DuckDB -> static site (``steerboard build``).

The site is plain HTML rendered with Jinja2 (autoescaping on: every string that comes from a log is escaped),
plots are inline SVG drawn in :mod:`steerboard.leaderboard.plots`, and the only script is a small inline
sorter/filter that reorders existing table rows (it never writes HTML). Nothing is fetched from the network.
Pages are rendered into a temporary folder and moved into place only when all of them rendered.

How the numbers are formed (``docs/leaderboard.md`` has the long form):

- Per (run, metric): the per-sample values of the listing's ``sample_value`` key (or the scalar value, "C" = 1,
  "I" = 0) over samples matching ``sample_filter``, dropping samples whose judge failed (``judge_error`` = 1).
  Rate = mean; 95 % CI = Wilson score interval (0/1 values) or normal approximation (other values). A run with
  no sample under a metric shows "n/a" there.
- Change vs the control (:data:`~steerboard.leaderboard.listing.CONTROL_METHOD`): against the current control
  run of the same model and task (same submitter preferred, then the same judge), on the samples both runs
  scored: difference of means in points, and McNemar's exact test (the two-sided sign test on discordant pairs).
- Three axes per row, each the mean over the row's headline metrics on that axis with a 95 % normal interval:
  safety (oriented so higher is safer), over-refusal (the raw rate, lower is better) and capability
  (capability and side-effect metrics only, oriented so higher is better; see :func:`axis_value`).
- Pareto badge: rows no other row of the same model covering the same headline metrics beats on every axis.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

from steerboard.leaderboard.ingest import (
    SCHEMA_VERSION,
    SETTINGS_NOT_RECORDED,
    SchemaError,
    canonical_json,
    choose_bases,
    tag_text,
)
from steerboard.leaderboard.listing import CONTROL_METHOD, Listing, MetricSpec
from steerboard.leaderboard.plots import PALETTE, Curve, Point, sweep_svg, tradeoff_svg
from steerboard.leaderboard.stats import Z95, mean_ci, sign_test, wilson

SWEEP_KEYS = (
    "strength",
    "strengths",
    "coefficient",
    "alpha",
    "clamp",
    "clamp_value",
    "multiplier",
    "scale",
    "coeff",
)
MAX_BREAKDOWN_VALUES = 20


@dataclass
class BuildSummary:
    """What one build wrote."""

    out: Path | str
    rows: int
    runs: int
    pages: int


def run_page_name(run_key: str) -> str:
    """File name of a run's page (a hash: run keys come from logs and must not shape paths)."""
    return "run-" + hashlib.sha1(run_key.encode("utf-8")).hexdigest()[:16] + ".html"


def load_agreement(path: str | Path | None = None) -> dict[str, Any] | None:
    """The judges' measured agreement with human labels (``scorers/artifacts/agreement.json``), if present."""
    if path is None:
        try:
            res = files("steerboard.scorers").joinpath("artifacts/agreement.json")
        except ModuleNotFoundError:
            return None
        if not res.is_file():
            return None
        text = res.read_text(encoding="utf-8")
    else:
        p = Path(path)
        if not p.is_file():
            return None
        text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else {"agreement": data}


def judge_kind(scorers: list[str]) -> str | None:
    """Which judge family a run's scorers use: "refusal", "objective", "harm" or None."""
    names = " ".join(scorers).lower()
    if "crescendo" in names:
        return "objective"
    if "refusal" in names:
        return "refusal"
    if any(k in names for k in ("harm", "safeedit")):
        return "harm"
    return None


def _agreement_entry(
    agreement: dict[str, Any] | None, judge: str | None, kind: str | None
) -> tuple[Any, str]:
    """The agreement entry of ``judge`` and its protocol text.

    The judges' file groups backends by judge family (``{"refusal": {"protocol", "backends": {name: ...}}}``);
    the entry is looked up under ``kind`` first, then by key at any depth.
    """
    if not agreement or not judge:
        return None, ""
    if kind and isinstance(agreement.get(kind), dict):
        section = agreement[kind]
        backends = section.get("backends") if isinstance(section.get("backends"), dict) else section
        if isinstance(backends, dict) and isinstance(backends.get(judge), dict):
            return backends[judge], str(section.get("protocol") or "")[:700]

    def find(obj: Any, depth: int = 0) -> Any:
        if isinstance(obj, dict) and depth < 4:
            if judge in obj:
                return obj[judge]
            for v in obj.values():
                hit = find(v, depth + 1)
                if hit is not None:
                    return hit
        if isinstance(obj, list) and depth < 4:
            for v in obj:
                if isinstance(v, dict) and judge in (v.get("judge"), v.get("backend"), v.get("name")):
                    return v
        return None

    return find(agreement), ""


def _agreement_value(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(x, float) for x in v):  # an interval: [lo, hi]
        return "-".join(f"{x:.3f}" for x in v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)[:200]


def _is_leaf(v: Any) -> bool:
    """A scalar, or a list of scalars (such as an interval), is one cell of the agreement table."""
    return not isinstance(v, dict) and not (isinstance(v, list) and any(isinstance(x, dict | list) for x in v))


def agreement_table(
    agreement: dict[str, Any] | None, judge: str | None, kind: str | None = None
) -> dict[str, Any] | None:
    """The agreement entry of ``judge`` as a table: one row per group of measures, one column per measure.

    A mapping whose values are all scalars (e.g. ``overall: {n, accuracy, kappa}`` or one fold) becomes a row
    named by its path (``overall``, ``folds / gpt4``); scalars beside nested groups (e.g.
    ``min_fold_accuracy``) are listed under the table.

    Returns:
        ``{"protocol", "columns", "rows": [(name, [cell, ...])], "extra": [(name, value)]}``, or None when the
        file has no entry for the judge.
    """
    entry, protocol = _agreement_entry(agreement, judge, kind)
    if entry is None:
        return None
    groups: list[tuple[str, dict[str, Any]]] = []
    extra: list[tuple[str, str]] = []

    def walk(path: str, obj: Any) -> None:
        if not isinstance(obj, dict):
            extra.append((path or "value", _agreement_value(obj)))
        elif obj and all(_is_leaf(v) for v in obj.values()):
            groups.append((path or "overall", obj))
        else:
            for k, v in obj.items():
                walk(f"{path} / {k}" if path else str(k), v)

    walk("", entry)
    groups.sort(key=lambda g: g[0] != "overall")  # the overall row first, then the rest in file order
    columns: list[str] = []
    for _, g in groups:
        columns += [str(k) for k in g if str(k) not in columns]
    rows = [(name, [_agreement_value(g[c]) if c in g else "" for c in columns]) for name, g in groups[:40]]
    return {"protocol": protocol, "columns": columns, "rows": rows, "extra": extra[:20]}


def load_reported(path: str | Path | None = None) -> dict[str, Any]:
    """The seed papers' reported numbers (``leaderboard/data/reported.yaml``)."""
    import yaml

    text = (
        Path(path).read_text(encoding="utf-8")
        if path
        else files("steerboard.leaderboard").joinpath("data/reported.yaml").read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text) or {}
    return {"papers": data.get("papers") or {}, "rows": data.get("rows") or []}


def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _sv_sql(m: MetricSpec) -> tuple[str, list[Any]]:
    joins = []
    params: list[Any] = [m.key]
    for i, (k, v) in enumerate(m.sample_filter):
        joins.append(
            f"JOIN r.sample_tags t{i} ON t{i}.run_key = sc.run_key AND t{i}.sample_key = sc.sample_key "
            f"AND t{i}.key = ? AND t{i}.value = ?"
        )
        params += [k, tag_text(v)]
    params += [m.task, m.scorer, m.sample_value or ""]
    sql = (
        "INSERT INTO sv SELECT sc.run_key, ? AS metric_key, sc.sample_key, sc.value AS v "
        "FROM r.scores sc JOIN cur ON cur.run_key = sc.run_key " + " ".join(joins) + " "
        "WHERE cur.task = ? AND sc.scorer = ? AND sc.key = ? AND sc.judge_error = 0 AND sc.value IS NOT NULL"
    )
    return sql, params


def _pareto(points: list[tuple[Any, ...]]) -> set[Any]:
    """Keys of the points no other point dominates; a point is ``(*coords, key)``, every coord higher-is-better."""
    front = set()
    for p in points:
        *c, k = p
        dominated = False
        for q in points:
            *d, k2 = q
            if (
                k2 != k
                and all(y >= x for x, y in zip(c, d, strict=True))
                and any(y > x for x, y in zip(c, d, strict=True))
            ):
                dominated = True
                break
        if not dominated:
            front.add(k)
    return front


def _sweep_key(cfg: dict[str, Any]) -> str | None:
    for k in SWEEP_KEYS:
        if k in cfg and isinstance(cfg[k], int | float) and not isinstance(cfg[k], bool):
            return k
    return None


def _open(db: str | Path) -> Any:
    """Attach ``db`` read-only, check its schema version and make the ``cur`` table of current runs."""
    import duckdb

    if not Path(db).exists():
        raise FileNotFoundError(f"results database not found: {db} (run `steerboard ingest` first)")
    con = duckdb.connect()
    con.execute("ATTACH ? AS r (READ_ONLY)", [str(db)])
    ver = con.execute("SELECT value FROM r.meta WHERE key = 'schema_version'").fetchone()
    if ver is None or int(ver[0]) != SCHEMA_VERSION:
        con.close()
        raise SchemaError(
            f"{db}: schema version {ver and ver[0]}, expected {SCHEMA_VERSION}; re-ingest the logs"
        )
    # timestamps as text: fetching TIMESTAMPTZ into Python would need pytz
    con.execute(
        "CREATE TEMP TABLE cur AS SELECT * REPLACE (strftime(created, '%Y-%m-%d %H:%M:%S UTC') AS created, "
        "CAST(ingested_at AS VARCHAR) AS ingested_at) FROM r.v_current_runs"
    )
    return con


def _metric_stats(con: Any, listing: Listing) -> dict[tuple[str, str], dict[str, Any]]:
    """Fill the ``sv`` table (per-sample values per run and metric) and summarise it per (run, metric)."""
    con.execute("CREATE TEMP TABLE sv (run_key VARCHAR, metric_key VARCHAR, sample_key VARCHAR, v DOUBLE)")
    for m in listing.metrics:
        sql, params = _sv_sql(m)
        con.execute(sql, params)
    agg = con.execute(
        "SELECT run_key, metric_key, count(*) AS n, sum(v) AS s, avg(v) AS mean, var_samp(v) AS var, "
        "bool_and(v = 0 OR v = 1) AS binary, bool_and(v >= 0 AND v <= 1) AS unit_range FROM sv GROUP BY ALL"
    ).fetchall()
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    # a rate's 0/1 values are outcomes (Wilson interval); a continuous metric (nats, counts) whose values all
    # happen to be 0 (the control's KL to itself) is not a proportion
    continuous = {m.key for m in listing.metrics if m.unit != "rate"}
    for rk, mk, n, s, mean, var, binary, _unit_range in agg:
        binary = bool(binary) and mk not in continuous
        lo, hi = wilson(s, n) if binary else mean_ci(mean, var, n)
        se = math.sqrt(mean * (1 - mean) / n) if binary else math.sqrt(var / n) if var and n > 1 else 0.0
        stats[(rk, mk)] = {"n": n, "mean": mean, "lo": lo, "hi": hi, "se": se, "binary": binary}
    # a metric is a rate when every value of every run lies in 0-1 (decided per metric, not per run)
    outside = {mk for _, mk, *_rest, unit_range in agg if not unit_range}
    for (_, mk), st in stats.items():
        st["unit_range"] = mk not in outside
    return stats


def _pair_with_base(
    con: Any, run_list: list[dict[str, Any]]
) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, str], dict[str, Any]]]:
    """Pair every non-control run with a control run of the same model, precision, task arguments, judge and
    samples (:func:`~steerboard.leaderboard.ingest.choose_bases`); paired differences.

    Returns:
        ``(base_of, base_reason, paired)``: the chosen control run per run, why a run has none, and the paired
        statistics per (run, metric).
    """
    base_choice = choose_bases(run_list)
    pairs = [(rk, bk) for rk, (bk, _) in base_choice.items() if bk is not None]
    base_reason = {rk: why for rk, (bk, why) in base_choice.items() if bk is None}
    paired: dict[tuple[str, str], dict[str, Any]] = {}
    if pairs:
        import pandas as pd

        pairs_df = pd.DataFrame(pairs, columns=["run_key", "base_key"])  # noqa: F841 - DuckDB scan
        for rk, mk, n, up, down, diff in con.execute(
            "SELECT p.run_key, a.metric_key, count(*), sum(CASE WHEN a.v > b.v THEN 1 ELSE 0 END), "
            "sum(CASE WHEN a.v < b.v THEN 1 ELSE 0 END), avg(a.v) - avg(b.v) "
            "FROM pairs_df p JOIN sv a ON a.run_key = p.run_key "
            "JOIN sv b ON b.run_key = p.base_key AND b.metric_key = a.metric_key AND b.sample_key = a.sample_key "
            "GROUP BY ALL"
        ).fetchall():
            paired[(rk, mk)] = {
                "n": n,
                "up": int(up),
                "down": int(down),
                "diff": diff,
                "p": sign_test(int(up), int(down)),
            }
    return dict(pairs), base_reason, paired


def _breakdowns(con: Any, listing: Listing) -> dict[str, dict[str, dict[str, list[tuple[str, int, float]]]]]:
    """Headline metrics per value of each low-cardinality sample tag (blank values left out)."""
    metric_by_key = {m.key: m for m in listing.metrics}
    rows_bd = con.execute(
        "SELECT sv.run_key, sv.metric_key, t.key, t.value, count(*) AS n, avg(sv.v) AS mean "
        "FROM sv JOIN r.sample_tags t ON t.run_key = sv.run_key AND t.sample_key = sv.sample_key "
        "WHERE t.value IS NOT NULL AND trim(t.value) <> '' GROUP BY ALL ORDER BY 1, 2, 3, 4"
    ).fetchall()
    tmp: dict[tuple[str, str, str], list[tuple[str, int, float]]] = defaultdict(list)
    for rk, mk, k, v, n, mean in rows_bd:
        tmp[(rk, mk, k)].append((v, n, mean))
    breakdown: dict[str, dict[str, dict[str, list[tuple[str, int, float]]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for (rk, mk, k), vals in tmp.items():
        m = metric_by_key.get(mk)
        if (
            m is None
            or not m.headline
            or k in dict(m.sample_filter)
            or not (1 < len(vals) <= MAX_BREAKDOWN_VALUES)
        ):
            continue
        breakdown[rk][mk][k] = vals
    return breakdown


def _examples(con: Any) -> dict[str, list[dict[str, Any]]]:
    """The stored worst samples of each current run, with their judges' verdicts."""
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rk, sk, prompt, response, verdicts, reason in con.execute(
        "SELECT e.run_key, e.sample_key, e.prompt, e.response, e.verdicts, e.reason "
        "FROM r.examples e JOIN cur USING (run_key) ORDER BY e.run_key, e.reason, e.sample_key"
    ).fetchall():
        try:
            v = json.loads(verdicts)
        except json.JSONDecodeError:
            v = {}
        examples[rk].append(
            {
                "sample_key": sk,
                "prompt": prompt,
                "response": response,
                "reason": reason,
                "verdicts": [
                    (name, d.get("answer"), canonical_json(d.get("value")), d.get("explanation"))
                    for name, d in v.items()
                    if isinstance(d, dict)
                ],
            }
        )
    return examples


def collect(db: str | Path, listing: Listing) -> dict[str, Any]:
    """Query the database and compute everything the pages show.

    Raises:
        FileNotFoundError: when ``db`` does not exist.
        SchemaError: when it holds another schema version.
    """
    con = _open(db)
    try:
        cur = con.execute("SELECT * FROM cur ORDER BY model, method, method_config, task")
        names = [d[0] for d in cur.description]
        run_list: list[dict[str, Any]] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        stats = _metric_stats(con, listing)
        base_of, base_reason, paired = _pair_with_base(con, run_list)
        breakdown = _breakdowns(con, listing)
        examples = _examples(con)
        totals = con.execute(
            "SELECT (SELECT count(*) FROM r.runs), (SELECT count(*) FROM r.samples), "
            "(SELECT count(DISTINCT path) FROM r.ingest_files WHERE outcome = 'skipped' "
            "AND path NOT IN (SELECT path FROM r.ingest_files WHERE outcome = 'added'))"
        ).fetchone()
    finally:
        con.close()
    return {
        "runs": run_list,
        "stats": stats,
        "paired": paired,
        "base_of": base_of,
        "base_reason": base_reason,
        "breakdown": breakdown,
        "examples": examples,
        "totals": totals,
    }


NO_SAMPLES = "n/a"


def _cell(m: MetricSpec, st: dict[str, Any] | None, pr: dict[str, Any] | None) -> dict[str, Any]:
    """One metric cell; every key is always present so templates never meet a missing field.

    ``st`` is None when the run scored no sample for the metric (e.g. ``-T subset=unsafe`` leaves the
    safe-prompt metric empty): the cell then reads ``n/a``.
    """
    cell: dict[str, Any] = {
        "sort": "",
        "value": NO_SAMPLES,
        "ci": "",
        "n": 0,
        "delta": "",
        "p": "",
        "sig": False,
        "better": None,
        "n_paired": 0,
    }
    if st is None:
        return cell
    fmt = _pct if m.unit == "rate" else _num  # rates in %, costs in nats as they are
    cell.update(
        sort=f"{st['mean']:.6f}",
        value=fmt(st["mean"]),
        ci=f"[{fmt(st['lo'])}, {fmt(st['hi'])}]",
        n=st["n"],
    )
    if pr is not None and pr["n"] > 0:
        d = 100 * pr["diff"] if m.unit == "rate" else pr["diff"]
        cell["delta"] = f"{d:+.1f}" if m.unit == "rate" else f"{d:+.3f}"
        cell["p"] = f"{pr['p']:.3g}"
        cell["sig"] = pr["p"] < 0.05
        cell["better"] = (d > 0) == m.higher_is_better if d != 0 else None
        cell["n_paired"] = pr["n"]
    return cell


def axis_value(m: MetricSpec, st: dict[str, Any]) -> tuple[float, float] | None:
    """A metric's contribution to its axis score, oriented so higher is better, with its standard error.

    - Rates (every per-sample value in 0-1): the rate, or ``1 - rate`` where lower is better.
    - Lower-is-better costs (listing ``unit: nats``, such as ``kl_benign`` or ``ce_delta_text``, or any
      lower-is-better metric with values outside 0-1): ``exp(-max(v, 0))``, the share of per-token likelihood kept (1 = no cost), with the
      delta-method standard error.
    - Higher-is-better metrics with values outside 0-1 have no common scale with rates: shown in their column,
      left out of the axis score (None).

    The over-refusal axis is reported as a rate (lower is better): its caller uses the raw mean.
    """
    v, se = st["mean"], st.get("se", 0.0)
    if m.unit == "count":
        return None
    if st.get("unit_range", True) and m.unit == "rate":
        return (v if m.higher_is_better else 1.0 - v), se
    if m.higher_is_better:
        return None
    kept = math.exp(-max(v, 0.0))
    return kept, kept * se if v > 0 else 0.0


def _axis_summary(parts: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Mean of a row's per-metric axis values with a 95 % normal interval (metrics taken as independent)."""
    if not parts:
        return None
    k = len(parts)
    score = sum(v for v, _ in parts) / k
    half = Z95 * math.sqrt(sum(se * se for _, se in parts)) / k
    return {"score": score, "lo": max(0.0, score - half), "hi": min(1.0, score + half), "k": k}


def short_config(cfg: Any, max_len: int = 26) -> str:
    """A short label for a method configuration (``k=v`` pairs, strength-like keys first, cut to ``max_len``)."""
    if not isinstance(cfg, dict) or not cfg:
        return ""
    keys = sorted(cfg, key=lambda k: (k not in SWEEP_KEYS, str(k)))
    text = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in ((k, cfg[k]) for k in keys)
    )
    return text if len(text) <= max_len else text[: max_len - 1] + "\u2026"


def _config_text(cfg: Any, variant: str) -> str:
    text = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
        for k, v in (cfg.items() if isinstance(cfg, dict) else [])
    )
    return (text or "(defaults)") + (f"; task {variant}" if variant else "")


def _new_row(r: dict[str, Any]) -> dict[str, Any]:
    cfg = json.loads(r["method_config"] or "{}")
    return {
        "row_key": r["row_key"],
        "submitter": r["submitter"],
        "model": r["model"],
        "method": r["method"],
        "config": r["method_config"] + (f" {r['row_variant']}" if r.get("row_variant") else ""),
        "config_obj": cfg,
        "variant": r.get("row_variant") or "",
        "control": r["method"] == CONTROL_METHOD,
        "runs": {},
        "reported": False,
        "settings_recorded": bool(r.get("settings_recorded")),
        "config_short": r.get("config_short") or SETTINGS_NOT_RECORDED,
        "precision": r.get("precision") or "",
        "config_page": run_page_name(r["run_key"]),
    }


def _score_row(row: dict[str, Any], headline: list[MetricSpec], data: dict[str, Any]) -> None:
    """Cells, the three axis scores with intervals, and the covered metrics of one row."""
    cells = []
    axes: dict[str, list[tuple[float, float]]] = {"safety": [], "overrefusal": [], "capability": []}
    covered = []
    for m in headline:
        r = row["runs"].get(m.task)
        st = data["stats"].get((r["run_key"], m.key)) if r else None
        pr = data["paired"].get((r["run_key"], m.key)) if r else None
        c = _cell(m, st, pr)
        if r is None:
            c["value"] = ""  # task not run for this row (n/a is for a run with no samples)
        c["page"] = run_page_name(r["run_key"]) if r else None
        cells.append(c)
        if st is None:
            continue
        covered.append(m.key)
        if m.axis == "overrefusal":
            axes["overrefusal"].append((st["mean"], st["se"]) if st.get("unit_range", True) else None)
        else:
            axes[m.axis].append(axis_value(m, st))
    row["cells"] = cells
    row["coverage"] = tuple(covered)
    for axis, parts in axes.items():
        row[axis + "_ci"] = _axis_summary([p for p in parts if p is not None])
        row[axis] = row[axis + "_ci"]["score"] if row[axis + "_ci"] else None
    row["n_safety"] = len([p for p in axes["safety"] if p is not None])
    row["n_capability"] = len([p for p in axes["capability"] if p is not None])
    row["n_overrefusal"] = len([p for p in axes["overrefusal"] if p is not None])
    cfg = row["config_obj"] if isinstance(row["config_obj"], dict) else {}
    row["config_text"] = _config_text(cfg, row["variant"])
    row["short"] = " ".join(x for x in (short_config(cfg), row["variant"].replace("protocol=", "")) if x)
    row["label"] = f"{row['method']}/{row['model']} {row['config']}" + (
        f" ({row['submitter']})" if row["submitter"] != "steerboard" else ""
    )
    row["point_label"] = (row["method"] + (" " + row["short"] if row["short"] else "")).strip()


def build_rows(data: dict[str, Any], headline: list[MetricSpec]) -> list[dict[str, Any]]:
    """One row per resolved configuration (``row_key``), scored on the headline metrics, in default order.

    Default order: by model, then safety score (highest first), then capability score; rows without a safety
    score last.
    """
    rows_by_key: dict[str, dict[str, Any]] = {}
    for r in data["runs"]:
        if not r.get("on_board", True):
            continue  # a current run under other task arguments: its own page, not this row's cell
        rows_by_key.setdefault(r["row_key"], _new_row(r))["runs"][r["task"]] = r
    rows = list(rows_by_key.values())
    for row in rows:
        _score_row(row, headline, data)
    rows.sort(
        key=lambda r: (
            r["model"],
            r["safety"] is None,
            -(r["safety"] or 0.0),
            -(r["capability"] or 0.0),
            r["method"],
            r["config"],
            r["submitter"],
        )
    )
    return rows


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set ``pareto`` on rows no comparable row beats on every axis.

    Rows are compared only with rows of the same model that cover the same headline metrics (so a row run on
    one task is never ranked against rows run on all of them), on safety (higher), over-refusal (lower) and
    capability (higher), whichever the group has; a row needs a safety score and at least one other row in
    its group to get the badge.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        r["pareto"] = False
        r["peers"] = 0
        if r["safety"] is not None:
            groups[(r["model"], r["coverage"])].append(r)
    for members in groups.values():
        if len(members) < 2:
            continue
        pts = []
        for r in members:
            coords = [r["safety"]]
            if r["overrefusal"] is not None:
                coords.append(-r["overrefusal"])
            if r["capability"] is not None:
                coords.append(r["capability"])
            pts.append((*coords, r["row_key"]))
        if len({len(p) for p in pts}) != 1:
            continue  # same metrics but an axis undefined for some rows: nothing comparable
        front = _pareto(pts)
        for r in members:
            r["pareto"] = r["row_key"] in front
            r["peers"] = len(members) - 1


def find_sweeps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strength sweeps: rows of one source/model/method whose configs differ only in one strength-like key.

    A group with one strength value is not a sweep. Each sweep lists its points in strength order.
    """
    groups: dict[tuple[str, ...], list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for r in rows:
        cfg = r["config_obj"] if isinstance(r["config_obj"], dict) else {}
        k = _sweep_key(cfg)
        if k is None:
            continue
        rest = {a: b for a, b in cfg.items() if a != k}
        groups[(r["submitter"], r["model"], r["method"], k, canonical_json(rest), r["variant"])].append(
            (float(cfg[k]), r)
        )
    sweeps = []
    for (sub, model, method, key, rest, variant), pts in sorted(groups.items()):
        if len({x for x, _ in pts}) < 2:
            continue
        pts.sort(key=lambda t: t[0])
        name = (
            f"{method}/{model} {key}"
            + ("" if rest == "{}" else f" {rest}")
            + (f" {variant}" if variant else "")
            + ("" if sub == "steerboard" else f" ({sub})")
        )
        sweeps.append(
            {
                "name": name,
                "key": key,
                "x": [x for x, _ in pts],
                "row_keys": [r["row_key"] for _, r in pts],
                "safety": [r["safety"] for _, r in pts],
                "overrefusal": [r["overrefusal"] for _, r in pts],
                "capability": [r["capability"] for _, r in pts],
            }
        )
    return sweeps


def assemble(data: dict[str, Any], listing: Listing, reported: dict[str, Any]) -> dict[str, Any]:
    """Turn query results into rows/columns/plots for the templates.

    Columns are the listing's headline metrics that at least one run measured (all of them on an empty board),
    so a laptop screen is not filled with empty columns; reported numbers for other tasks stay in the
    reported-numbers table.
    """
    measured = {mk for _, mk in data["stats"]}
    headline = [m for m in listing.headline if m.key in measured] or listing.headline
    rows = build_rows(data, headline)
    mark_pareto(rows)
    rep_rows, rep_list = reported_rows(reported, headline)
    return {
        "headline": headline,
        "rows": rows,
        "reported_rows": rep_rows,
        "reported_list": rep_list,
        "sweeps": find_sweeps(rows),
    }


def _reported_entry(rr: dict[str, Any], paper: dict[str, Any], status: str, v: dict[str, Any] | None) -> dict[str, Any]:
    """One line of the full reported-numbers list (``v`` None: a row with no numbers transcribed)."""
    v = v if v is not None else {"text": "(no numbers transcribed)"}
    return {
        "paper": paper.get("citation", rr.get("paper")),
        "url": paper.get("url", ""),
        "model": rr.get("model"),
        "setting": rr.get("setting"),
        "task": v.get("task") or "",
        "axis": v.get("axis") or "",
        "metric": v.get("metric") or "",
        "text": v.get("text"),
        "note": v.get("note") or "",
        "source": rr.get("source"),
        "status": status,
        "test_set": rr.get("test_set") or "",
    }


def _fill_reported_cell(cell: dict[str, Any], v: dict[str, Any]) -> None:
    """Put a reported value (a rate shown in %) or a reported delta range into a main-table cell."""
    if v.get("kind") == "delta":
        lo, hi = v.get("low"), v.get("high")
        cell["delta"] = f"{lo:+g}" if lo == hi else f"{lo:+g}..{hi:+g}"
        cell["reported_delta"] = True
    else:
        cell["value"] = f"{100 * float(v['value']):.2f}"
        cell["sort"] = f"{float(v['value']):.6f}"


def reported_rows(
    reported: dict[str, Any], headline: list[MetricSpec]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The papers' numbers: rows for the main table (values in its columns) and the full reported list."""
    # reported rows (matched to columns by task + axis)
    col_index = {(m.task, m.axis): i for i, m in reversed(list(enumerate(headline)))}
    rep_rows = []
    rep_list = []
    for rr in reported["rows"]:
        paper = reported["papers"].get(rr.get("paper"), {})
        cells: list[dict[str, Any]] = [
            {"sort": "", "value": "", "ci": "", "delta": "", "sig": False, "better": None, "n": 0, "page": None}
            for _ in headline
        ]
        status = rr.get("status") or paper.get("status") or "unspecified"
        if not rr.get("values"):
            rep_list.append(_reported_entry(rr, paper, status, None))
        for v in rr.get("values") or []:
            rep_list.append(_reported_entry(rr, paper, status, v))
            i = col_index.get((v.get("task"), v.get("axis")))
            if i is not None:
                _fill_reported_cell(cells[i], v)
        if not any(c["value"] or c["delta"] for c in cells):
            continue  # nothing in this board's columns: listed in the reported-numbers table only
        rep_rows.append(
            {
                "paper": paper.get("citation", rr.get("paper")),
                "url": paper.get("url", ""),
                "model": rr.get("model"),
                "method": rr.get("method"),
                "setting": rr.get("setting"),
                "source": rr.get("source"),
                "status": status,
                "primary": status == "primary",
                "test_set": rr.get("test_set") or "",
                "cells": cells,
            }
        )
    return rep_rows, rep_list


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,  # every template is HTML: strings from logs are always escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    return env


def _publish(tmp: Path, outp: Path) -> None:
    """Move the freshly rendered pages from ``tmp`` into ``outp``, then drop run pages no longer built.

    Each page is moved with ``os.replace`` (atomic per file, same filesystem); other files in ``outp`` are
    left alone.
    """
    outp.mkdir(parents=True, exist_ok=True)
    fresh = {p.name for p in tmp.iterdir()}
    for name in sorted(fresh - {"index.html"}) + ["index.html"]:  # index last: its links exist by then
        os.replace(tmp / name, outp / name)
    for old in outp.glob("run-*.html"):
        if old.name not in fresh:
            old.unlink()


def build_site(
    db: str | Path,
    out: str | Path,
    listing: Listing,
    agreement_path: str | Path | None = None,
    reported_path: str | Path | None = None,
) -> BuildSummary:
    """Render the leaderboard from ``db`` into ``out`` (``index.html`` plus one page per run).

    Pages are rendered into a temporary folder beside ``out`` and moved into place only when every page
    rendered, so a failed build leaves the previous site as it was.

    Args:
        db: Results database written by :func:`steerboard.leaderboard.ingest.ingest_logs`.
        out: Output folder (its ``index.html`` and ``run-*.html`` pages are replaced).
        listing: Task listing (columns, directions, axes, per-sample values).
        agreement_path: Judge agreement JSON (default: the judges' shipped ``agreement.json`` if present).
        reported_path: Reported-numbers YAML (default: the shipped ``data/reported.yaml``).

    Returns:
        Counts of what was written.
    """
    from steerboard import storage

    remote = storage.is_url(out)
    if remote:  # fsspec URL (s3://...): fail on a missing bucket or credentials before rendering anything
        storage.check_writable(str(out), "cannot publish the site to")
    data = collect(db, listing)
    reported = load_reported(reported_path)
    view = assemble(data, listing, reported)
    agreement = load_agreement(agreement_path)
    outp = Path(tempfile.gettempdir(), "site") if remote else storage.local_path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outp.name}.building-", dir=outp.parent))
    try:
        pages = _render_site(tmp, data, view, listing, agreement)
        if remote:
            storage.publish_dir(tmp, str(out), stale=lambda name: name.startswith("run-") and name.endswith(".html"))
        else:
            _publish(tmp, outp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildSummary(out=str(out) if remote else outp, rows=len(view["rows"]), runs=len(data["runs"]), pages=pages)


def _plots(view: dict[str, Any]) -> dict[str, Any]:
    """The two trade-off scatters (safety vs capability, safety vs over-refusal) and the sweep panels."""
    rows = view["rows"]
    by_key = {r["row_key"]: r for r in rows}

    def tip(r: dict[str, Any]) -> str:
        parts = [f"{r['label']}: safety {_pct(r['safety'])}"]
        parts += [f"over-refusal {_pct(r['overrefusal'])}"] if r["overrefusal"] is not None else []
        parts += [f"capability {_pct(r['capability'])}"] if r["capability"] is not None else []
        return ", ".join(parts) + (" (Pareto)" if r["pareto"] else "")

    def panel(field: str, ylabel: str, aria: str) -> Any:
        pts = [
            Point(r["safety"], r[field], r["point_label"], tip(r), r["pareto"], r["control"])
            for r in rows
            if r["safety"] is not None and r[field] is not None
        ]
        curves = [
            Curve(
                s["name"],
                [
                    (by_key[k]["safety"], by_key[k][field])
                    for k in s["row_keys"]
                    if by_key[k]["safety"] is not None and by_key[k][field] is not None
                ],
            )
            for s in view["sweeps"]
        ]
        return tradeoff_svg(pts, curves, "Safety score (%, higher = safer)", ylabel, aria)

    sweep_label = " / ".join(sorted({s["key"] for s in view["sweeps"]})) or "strength"
    return {
        "capability": panel(
            "capability", "Capability score (%, higher = better)", "safety versus capability"
        ),
        "overrefusal": panel("overrefusal", "Over-refusal (%, lower = better)", "safety versus over-refusal"),
        "sweeps": [
            sweep_svg(view["sweeps"], field, title, sweep_label)
            for field, title in (
                ("safety", "Safety score (higher = safer)"),
                ("overrefusal", "Over-refusal rate (lower = better)"),
                ("capability", "Capability score (higher = better)"),
            )
        ]
        if view["sweeps"]
        else [],
    }


def _turn_curve(task: Any, rk: str, data: dict[str, Any]) -> Any:
    """Attack success by turn (metrics ``success_rate_turn_<k>``, Crescendo) as a small plot, or None."""
    pts = []
    for m in task.metrics if task else []:
        prefix, _, k = m.name.rpartition("_")
        st = data["stats"].get((rk, m.key))
        if prefix == "success_rate_turn" and k.isdigit() and st is not None:
            pts.append((int(k), st["mean"]))
    if len(pts) < 2:
        return None
    pts.sort()
    curve = {"name": "attack success", "key": "turn", "x": [k for k, _ in pts], "rate": [v for _, v in pts]}
    return sweep_svg([curve], "rate", "Attack success by turn", "turn")


def _run_page(
    env: Any,
    r: dict[str, Any],
    data: dict[str, Any],
    listing: Listing,
    agreement: dict[str, Any] | None,
    built_at: str,
) -> str:
    """One run's page: settings, every metric of its task, breakdowns, judge agreement, worst samples."""
    rk = r["run_key"]
    task = listing.tasks.get(r["task"])
    metric_by_key = {m.key: m for m in listing.metrics}
    metrics = [
        {"spec": m, "cell": _cell(m, data["stats"].get((rk, m.key)), data["paired"].get((rk, m.key)))}
        for m in (task.metrics if task else [])
    ]
    bd = [
        {"metric": metric_by_key[mk], "key": k, "vals": [(v, n, _pct(mean)) for v, n, mean in vals]}
        for mk, keys in data["breakdown"].get(rk, {}).items()
        for k, vals in keys.items()
    ]
    base_key = data["base_of"].get(rk)
    return env.get_template("run.html").render(
        turn_curve=_turn_curve(task, rk, data),
        run=r,
        task=task,
        control=CONTROL_METHOD,
        config=json.dumps(json.loads(r["method_config"] or "{}"), indent=2, ensure_ascii=False),
        task_args=json.dumps(json.loads(r["task_args"] or "{}"), indent=2, ensure_ascii=False),
        metrics=metrics,
        breakdown=bd,
        examples=data["examples"].get(rk, []),
        agreement=agreement_table(agreement, r["judge"], judge_kind(json.loads(r["scorers"] or "[]"))),
        has_agreement_file=agreement is not None,
        base_page=run_page_name(base_key) if base_key else None,
        base_reason=data.get("base_reason", {}).get(rk, ""),
        provenance=json.dumps(json.loads(r["provenance"]), indent=2, ensure_ascii=False)
        if r.get("provenance")
        else None,
        settings_not_recorded=SETTINGS_NOT_RECORDED,
        built_at=built_at,
    )


def _render_site(
    outp: Path, data: dict[str, Any], view: dict[str, Any], listing: Listing, agreement: dict[str, Any] | None
) -> int:
    """Write ``index.html`` and every run page into ``outp``; returns the number of pages."""
    env = _env()
    built_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    index = env.get_template("index.html").render(
        headline=view["headline"],
        tasks=listing.tasks,
        rows=view["rows"],
        reported_rows=view["reported_rows"],
        reported_list=view["reported_list"],
        plots=_plots(view),
        sweeps=view["sweeps"],
        palette=PALETTE,
        control=CONTROL_METHOD,
        totals=data["totals"],
        built_at=built_at,
        n_runs=len(data["runs"]),
    )
    (outp / "index.html").write_text(index, encoding="utf-8")
    for r in data["runs"]:
        html = _run_page(env, r, data, listing, agreement, built_at)
        (outp / run_page_name(r["run_key"])).write_text(html, encoding="utf-8")
    return 1 + len(data["runs"])
