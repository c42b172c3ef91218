"""DuckDB -> static site (``steerboard build``).

The site is plain HTML rendered with Jinja2 (autoescaping on: every string that comes from a log is escaped),
plots are inline SVG drawn here, and the only script is a small inline sorter/filter that reorders existing
table rows (it never writes HTML). Nothing is fetched from the network.

How the numbers are formed:

- Per (run, metric): the per-sample values of the listing's ``sample_value`` key (or the scalar value, "C" = 1,
  "I" = 0) over samples matching ``sample_filter``, dropping samples whose judge failed (``judge_error`` = 1).
  Rate = mean; 95 % CI = Wilson score interval (0/1 values) or normal approximation (other values).
- Change vs ``base/``: against the current ``base/`` run of the same model and task (same submitter preferred,
  then the same judge), on the samples both runs scored: difference of means in points, and McNemar's exact test
  (the two-sided sign test on discordant pairs).
- Safety score: mean over the row's *safety*-axis headline metrics, each oriented so that higher is safer
  (``1 - rate`` where lower is better). Capability score: mean over its *capability*- and *overrefusal*-axis
  headline metrics, oriented the same way (so ``1 - over-refusal`` counts as helpfulness on benign prompts).
- Pareto frontier: rows not dominated on (safety score, capability score) among rows that have both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

from steerboard.leaderboard.ingest import SCHEMA_VERSION, SchemaError, canonical_json, tag_text
from steerboard.leaderboard.listing import Listing, MetricSpec
from steerboard.leaderboard.plots import scatter_svg, sweep_svg
from steerboard.leaderboard.stats import mean_ci, sign_test, wilson

SWEEP_KEYS = (
    "strength", "strengths", "coefficient", "alpha", "clamp", "clamp_value", "multiplier", "scale", "coeff",
)
MAX_BREAKDOWN_VALUES = 20


@dataclass
class BuildSummary:
    """What one build wrote."""

    out: Path
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


def agreement_for(
    agreement: dict[str, Any] | None, judge: str | None, kind: str | None = None
) -> list[tuple[str, str]]:
    """Flatten the agreement entry for ``judge`` into (name, value) pairs.

    The judges' file groups backends by judge family (``{"refusal": {"protocol", "backends": {name: ...}}}``);
    the entry is looked up under ``kind`` first, then by key at any depth.
    """
    if not agreement or not judge:
        return []
    if kind and isinstance(agreement.get(kind), dict):
        section = agreement[kind]
        backends = section.get("backends") if isinstance(section.get("backends"), dict) else section
        if isinstance(backends, dict) and isinstance(backends.get(judge), dict):
            out = [("protocol", str(section["protocol"])[:400])] if section.get("protocol") else []
            return out + agreement_for({judge: backends[judge]}, judge)

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

    entry = find(agreement)
    if entry is None:
        return []
    out: list[tuple[str, str]] = []

    def flat(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                flat(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, float):
            out.append((prefix, f"{v:.3f}"))
        else:
            out.append((prefix, str(v)[:200]))

    flat("", entry)
    return out[:40]


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


def _oriented(m: MetricSpec, v: float) -> float:
    return v if m.higher_is_better else 1.0 - v


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


def _pareto(points: list[tuple[float, float, Any]]) -> set[Any]:
    front = set()
    for s, c, k in points:
        dominated = any((s2 >= s and c2 >= c) and (s2 > s or c2 > c) for s2, c2, k2 in points if k2 != k)
        if not dominated:
            front.add(k)
    return front


def _sweep_key(cfg: dict[str, Any]) -> str | None:
    for k in SWEEP_KEYS:
        if k in cfg and isinstance(cfg[k], int | float) and not isinstance(cfg[k], bool):
            return k
    return None


def collect(db: str | Path, listing: Listing) -> dict[str, Any]:
    """Query the database and compute everything the pages show.

    Raises:
        FileNotFoundError: when ``db`` does not exist.
        SchemaError: when it holds another schema version.
    """
    import duckdb

    if not Path(db).exists():
        raise FileNotFoundError(f"results database not found: {db} (run `steerboard ingest` first)")
    con = duckdb.connect()
    con.execute("ATTACH ? AS r (READ_ONLY)", [str(db)])
    ver = con.execute("SELECT value FROM r.meta WHERE key = 'schema_version'").fetchone()
    if ver is None or int(ver[0]) != SCHEMA_VERSION:
        raise SchemaError(
            f"{db}: schema version {ver and ver[0]}, expected {SCHEMA_VERSION}; re-ingest the logs"
        )
    # timestamps as text: fetching TIMESTAMPTZ into Python would need pytz
    con.execute(
        "CREATE TEMP TABLE cur AS SELECT * REPLACE (strftime(created, '%Y-%m-%d %H:%M:%S UTC') AS created, "
        "CAST(ingested_at AS VARCHAR) AS ingested_at) FROM r.v_current_runs"
    )
    cur = con.execute("SELECT * FROM cur ORDER BY model, method, method_config, task")
    names = [d[0] for d in cur.description]
    run_list: list[dict[str, Any]] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    metric_by_key = {m.key: m for m in listing.metrics}

    con.execute("CREATE TEMP TABLE sv (run_key VARCHAR, metric_key VARCHAR, sample_key VARCHAR, v DOUBLE)")
    for m in listing.metrics:
        sql, params = _sv_sql(m)
        con.execute(sql, params)
    agg = con.execute(
        "SELECT run_key, metric_key, count(*) AS n, sum(v) AS s, avg(v) AS mean, var_samp(v) AS var, "
        "bool_and(v = 0 OR v = 1) AS binary FROM sv GROUP BY ALL"
    ).fetchall()
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for rk, mk, n, s, mean, var, binary in agg:
        lo, hi = wilson(s, n) if binary else mean_ci(mean, var, n)
        stats[(rk, mk)] = {"n": n, "mean": mean, "lo": lo, "hi": hi, "binary": binary}

    # pair every non-base run with the base run of the same model and task
    bases: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in run_list:
        if r["method"] == "base":
            bases[(r["model"], r["task"])].append(r)
    pairs = []
    for r in run_list:
        if r["method"] == "base":
            continue
        cands = bases.get((r["model"], r["task"]), [])
        if cands:
            best = max(
                cands,
                key=lambda b: (b["submitter"] == r["submitter"], b["judge"] == r["judge"], b["created"]),
            )
            pairs.append((r["run_key"], best["run_key"]))
    base_of = dict(pairs)
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

    # per-category breakdown of headline metrics
    breakdown: dict[str, dict[str, dict[str, list[tuple[str, int, float]]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    rows_bd = con.execute(
        "SELECT sv.run_key, sv.metric_key, t.key, t.value, count(*) AS n, avg(sv.v) AS mean "
        "FROM sv JOIN r.sample_tags t ON t.run_key = sv.run_key AND t.sample_key = sv.sample_key "
        "GROUP BY ALL ORDER BY 1, 2, 3, 4"
    ).fetchall()
    tmp: dict[tuple[str, str, str], list[tuple[str, int, float]]] = defaultdict(list)
    for rk, mk, k, v, n, mean in rows_bd:
        tmp[(rk, mk, k)].append((v, n, mean))
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
    totals = con.execute(
        "SELECT (SELECT count(*) FROM r.runs), (SELECT count(*) FROM r.samples), "
        "(SELECT count(DISTINCT path) FROM r.ingest_files WHERE outcome = 'skipped' "
        "AND path NOT IN (SELECT path FROM r.ingest_files WHERE outcome = 'added'))"
    ).fetchone()
    con.close()
    return {
        "runs": run_list,
        "stats": stats,
        "paired": paired,
        "base_of": base_of,
        "breakdown": breakdown,
        "examples": examples,
        "totals": totals,
    }


def _cell(m: MetricSpec, st: dict[str, Any] | None, pr: dict[str, Any] | None) -> dict[str, Any]:
    if st is None:
        return {"sort": "", "value": "", "ci": "", "delta": "", "sig": False, "better": None, "n": 0}
    cell = {
        "sort": f"{st['mean']:.6f}",
        "value": _pct(st["mean"]),
        "ci": f"[{_pct(st['lo'])}, {_pct(st['hi'])}]",
        "n": st["n"],
        "delta": "",
        "p": "",
        "sig": False,
        "better": None,
    }
    if pr is not None and pr["n"] > 0:
        d = 100 * pr["diff"]
        cell["delta"] = f"{d:+.1f}"
        cell["p"] = f"{pr['p']:.3g}"
        cell["sig"] = pr["p"] < 0.05
        cell["better"] = (d > 0) == m.higher_is_better if d != 0 else None
        cell["n_paired"] = pr["n"]
    return cell


def assemble(data: dict[str, Any], listing: Listing, reported: dict[str, Any]) -> dict[str, Any]:
    """Turn query results into rows/columns/plots for the templates.

    Columns are the listing's headline metrics that at least one run measured (all of them on an empty board),
    so a laptop screen is not filled with empty columns; reported numbers for other tasks stay in the
    reported-numbers table.
    """
    measured = {mk for _, mk in data["stats"]}
    headline = [m for m in listing.headline if m.key in measured] or listing.headline
    rows_by_key: dict[str, dict[str, Any]] = {}
    for r in data["runs"]:
        row = rows_by_key.setdefault(
            r["row_key"],
            {
                "row_key": r["row_key"],
                "submitter": r["submitter"],
                "model": r["model"],
                "method": r["method"],
                "config": r["method_config"] + (f" {r['row_variant']}" if r.get("row_variant") else ""),
                "config_obj": json.loads(r["method_config"] or "{}"),
                "variant": r.get("row_variant") or "",
                "runs": {},
                "reported": False,
            },
        )
        row["runs"][r["task"]] = r
    rows = list(rows_by_key.values())
    for row in rows:
        cells = []
        safety, capability, overref = [], [], []
        for m in headline:
            r = row["runs"].get(m.task)
            st = data["stats"].get((r["run_key"], m.key)) if r else None
            pr = data["paired"].get((r["run_key"], m.key)) if r else None
            c = _cell(m, st, pr)
            c["page"] = run_page_name(r["run_key"]) if r else None
            cells.append(c)
            if st is not None:
                o = _oriented(m, st["mean"])
                (safety if m.axis == "safety" else capability).append(o)
                if m.axis == "overrefusal":
                    overref.append(st["mean"])
        row["cells"] = cells
        cfg = row["config_obj"] if isinstance(row["config_obj"], dict) else {}
        row["config_text"] = (
            ", ".join(
                f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                for k, v in cfg.items()
            )
            or "(defaults)"
        ) + (f"; task {row['variant']}" if row["variant"] else "")
        row["safety"] = sum(safety) / len(safety) if safety else None
        row["capability"] = sum(capability) / len(capability) if capability else None
        row["overrefusal"] = sum(overref) / len(overref) if overref else None
        row["n_safety"], row["n_capability"] = len(safety), len(capability)
        row["label"] = f"{row['method']}/{row['model']} {row['config']}" + (
            f" ({row['submitter']})" if row["submitter"] != "steerboard" else ""
        )
    pts = [
        (r["safety"], r["capability"], r["row_key"])
        for r in rows
        if r["safety"] is not None and r["capability"] is not None
    ]
    front = _pareto(pts)
    for r in rows:
        r["pareto"] = r["row_key"] in front

    def cfg_key(cfg: Any) -> list[tuple[str, int, float, str]]:
        items = cfg.items() if isinstance(cfg, dict) else []
        return [
            (str(k), 0, float(v), "")
            if isinstance(v, int | float) and not isinstance(v, bool)
            else (str(k), 1, 0.0, str(v))
            for k, v in sorted(items)
        ]

    rows.sort(
        key=lambda r: (
            r["model"],
            r["method"] != "base",
            r["method"],
            cfg_key(r["config_obj"]),
            r["variant"],
            r["submitter"],
        )
    )

    # reported rows (matched to columns by task + axis)
    col_index = {(m.task, m.axis): i for i, m in reversed(list(enumerate(headline)))}
    rep_rows = []
    rep_list = []
    for rr in reported["rows"]:
        paper = reported["papers"].get(rr.get("paper"), {})
        cells: list[dict[str, Any]] = [
            {
                "sort": "",
                "value": "",
                "ci": "",
                "delta": "",
                "sig": False,
                "better": None,
                "n": 0,
                "page": None,
            }
            for _ in headline
        ]
        if not rr.get("values"):
            rep_list.append(
                {
                    "paper": paper.get("citation", rr.get("paper")),
                    "url": paper.get("url", ""),
                    "model": rr.get("model"),
                    "setting": rr.get("setting"),
                    "task": "",
                    "axis": "",
                    "text": "(no numbers transcribed)",
                    "source": rr.get("source"),
                }
            )
        for v in rr.get("values") or []:
            rep_list.append(
                {
                    "paper": paper.get("citation", rr.get("paper")),
                    "url": paper.get("url", ""),
                    "model": rr.get("model"),
                    "setting": rr.get("setting"),
                    "task": v.get("task"),
                    "axis": v.get("axis"),
                    "text": v.get("text"),
                    "source": rr.get("source"),
                }
            )
            i = col_index.get((v.get("task"), v.get("axis")))
            if i is None:
                continue
            if v.get("kind") == "delta":
                lo, hi = v.get("low"), v.get("high")
                cells[i]["delta"] = f"{lo:+g}" if lo == hi else f"{lo:+g}..{hi:+g}"
                cells[i]["reported_delta"] = True
            else:
                cells[i]["value"] = f"{100 * float(v['value']):.2f}"
                cells[i]["sort"] = f"{float(v['value']):.6f}"
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
                "cells": cells,
            }
        )

    # strength sweeps: same submitter/model/method and config except one numeric strength-like key
    groups: dict[tuple[str, ...], list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for r in rows:
        k = _sweep_key(r["config_obj"])
        if k is None:
            continue
        rest = {a: b for a, b in r["config_obj"].items() if a != k}
        groups[(r["submitter"], r["model"], r["method"], k, canonical_json(rest))].append(
            (float(r["config_obj"][k]), r)
        )
    sweeps = []
    for (sub, model, method, key, rest), pts2 in sorted(groups.items()):
        if len({x for x, _ in pts2}) < 2:
            continue
        pts2.sort(key=lambda t: t[0])
        name = (
            f"{method}/{model} {key}"
            + ("" if rest == "{}" else f" {rest}")
            + ("" if sub == "steerboard" else f" ({sub})")
        )
        sweeps.append(
            {
                "name": name,
                "key": key,
                "x": [x for x, _ in pts2],
                "safety": [r["safety"] for _, r in pts2],
                "overrefusal": [r["overrefusal"] for _, r in pts2],
                "capability": [r["capability"] for _, r in pts2],
            }
        )
    return {
        "headline": headline,
        "rows": rows,
        "reported_rows": rep_rows,
        "reported_list": rep_list,
        "sweeps": sweeps,
    }


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


def build_site(
    db: str | Path,
    out: str | Path,
    listing: Listing,
    agreement_path: str | Path | None = None,
    reported_path: str | Path | None = None,
) -> BuildSummary:
    """Render the leaderboard from ``db`` into ``out`` (``index.html`` plus one page per run).

    Args:
        db: Results database written by :func:`steerboard.leaderboard.ingest.ingest_logs`.
        out: Output folder (its ``index.html`` and ``run-*.html`` pages are replaced).
        listing: Task listing (columns, directions, axes, per-sample values).
        agreement_path: Judge agreement JSON (default: the judges' shipped ``agreement.json`` if present).
        reported_path: Reported-numbers YAML (default: the shipped ``data/reported.yaml``).

    Returns:
        Counts of what was written.
    """
    data = collect(db, listing)
    reported = load_reported(reported_path)
    view = assemble(data, listing, reported)
    agreement = load_agreement(agreement_path)
    env = _env()
    outp = Path(out)
    if outp.exists():
        for old in outp.glob("run-*.html"):
            old.unlink()
    outp.mkdir(parents=True, exist_ok=True)
    headline = view["headline"]
    built_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scatter = scatter_svg(
        [
            (r["safety"], r["capability"], r["label"], r["pareto"], r["method"] == "base")
            for r in view["rows"]
            if r["safety"] is not None and r["capability"] is not None
        ]
    )
    sweep_label = " / ".join(sorted({s["key"] for s in view["sweeps"]})) or "strength"
    sweeps_svg = (
        [
            sweep_svg(view["sweeps"], field, title, key_label)
            for field, title, key_label in (
                ("safety", "Safety score (higher = safer)", sweep_label),
                ("overrefusal", "Over-refusal rate (lower = better)", sweep_label),
                ("capability", "Capability score (higher = better)", sweep_label),
            )
        ]
        if view["sweeps"]
        else []
    )
    index = env.get_template("index.html").render(
        headline=headline,
        tasks=listing.tasks,
        rows=view["rows"],
        reported_rows=view["reported_rows"],
        reported_list=view["reported_list"],
        scatter=scatter,
        sweeps=view["sweeps"],
        sweeps_svg=sweeps_svg,
        totals=data["totals"],
        built_at=built_at,
        n_runs=len(data["runs"]),
    )
    (outp / "index.html").write_text(index, encoding="utf-8")
    page_t = env.get_template("run.html")
    metric_by_key = {m.key: m for m in listing.metrics}
    pages = 1
    for r in data["runs"]:
        rk = r["run_key"]
        task = listing.tasks.get(r["task"])
        metrics = []
        for m in task.metrics if task else []:
            st = data["stats"].get((rk, m.key))
            pr = data["paired"].get((rk, m.key))
            metrics.append({"spec": m, "cell": _cell(m, st, pr)})
        bd = []
        for mk, keys in data["breakdown"].get(rk, {}).items():
            m = metric_by_key[mk]
            for k, vals in keys.items():
                bd.append({"metric": m, "key": k, "vals": [(v, n, _pct(mean)) for v, n, mean in vals]})
        base_key = data["base_of"].get(rk)
        html = page_t.render(
            run=r,
            task=task,
            config=json.dumps(json.loads(r["method_config"] or "{}"), indent=2, ensure_ascii=False),
            task_args=json.dumps(json.loads(r["task_args"] or "{}"), indent=2, ensure_ascii=False),
            metrics=metrics,
            breakdown=bd,
            examples=data["examples"].get(rk, []),
            agreement=agreement_for(agreement, r["judge"], judge_kind(json.loads(r["scorers"] or "[]"))),
            has_agreement_file=agreement is not None,
            base_page=run_page_name(base_key) if base_key else None,
            built_at=built_at,
        )
        (outp / run_page_name(rk)).write_text(html, encoding="utf-8")
        pages += 1
    return BuildSummary(out=outp, rows=len(view["rows"]), runs=len(data["runs"]), pages=pages)
