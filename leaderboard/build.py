"""DuckDB -> static site (``steerboard build``).

The site is plain HTML rendered with Jinja2 (autoescaping on: every string that comes from a log is escaped),
plots are inline SVG drawn in :mod:`steerboard.leaderboard.plots`, and the only script is a small inline
sorter/filter that reorders existing table rows (it never writes HTML). Nothing is fetched from the network.
Pages are rendered into a temporary folder and moved into place only when all of them rendered.

How the numbers are formed (``docs/leaderboard.md`` has the long form):

- Per (run, metric): the per-sample values of the listing's ``sample_value`` key (or the scalar value, "C" = 1,
  "I" = 0) over samples matching ``sample_filter``, dropping samples whose judge failed (``judge_error`` = 1).
  Rate = mean; 95 % CI = Wilson score interval (0/1 values) or a seeded bootstrap of the mean (other values). A run with
  no sample under a metric shows "n/a" there.
- Change vs the control (runs of a method that declares ``is_control``: ``base/``), only against a control run of
  the same model, precision, judge, task arguments, sample set and generation settings (the control pairs with
  itself): the per-sample pairs are the DuckDB view ``v_paired``; the change with Newcombe's paired interval
  (0/1 values) or a seeded paired bootstrap, exact McNemar or Wilcoxon signed-rank p, Holm-adjusted per row,
  and the minimum detectable effect at 80 % power (:func:`_paired_stats`).
- Three axes per row over the fixed metric sets of ``listing.axes`` (:func:`_score_axis`): safety and
  over-refusal as the mean paired change, capability as the mean retention (above-chance accuracy retention
  while the control's interval excludes chance, ``exp(-ΔCE)`` for a cost in nats); ``partial (k of n)`` and no
  score when the row lacks a metric of the set; intervals from a paired bootstrap over items.
- Pareto badge: among rows of the same model with all three axis scores.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

from steerboard.leaderboard import judge_check
from steerboard.leaderboard.ingest import (
    SCHEMA_VERSION,
    SETTINGS_NOT_RECORDED,
    SchemaError,
    canonical_json,
    choose_bases,
    is_control,
    run_declarations,
    tag_text,
)
from steerboard.leaderboard.listing import CONTROL_METHOD, Listing, MetricSpec
from steerboard.leaderboard.plots import PALETTE, Curve, Point, sweep_svg, tradeoff_svg
from steerboard.leaderboard.stats import (
    holm,
    mde_binary_paired,
    mde_continuous_paired,
    mean_ci,
    newcombe_paired,
    paired_bootstrap_ci,
    seed_of,
    sign_test,
    sign_test_critical,
    wilcoxon_signed_rank,
    wilson,
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
    # per-item values of the non-0/1 metrics: their interval is a seeded bootstrap of the mean
    items = {
        (rk, mk): vals
        for rk, mk, vals in con.execute(
            "SELECT run_key, metric_key, list(v ORDER BY sample_key) FROM sv GROUP BY ALL "
            "HAVING NOT bool_and(v = 0 OR v = 1) OR list_contains(?, metric_key)",
            [sorted(continuous)],
        ).fetchall()
    }
    for rk, mk, n, s, mean, var, binary, _unit_range in agg:
        binary = bool(binary) and mk not in continuous
        if binary:
            lo, hi = wilson(s, n)
        else:
            vals = items[(rk, mk)]
            lo, hi = paired_bootstrap_ci([(vals, vals)], lambda g: g[0][0], seed_of(rk, mk, "value"))
            if math.isnan(lo):
                lo, hi = mean_ci(mean, var, n)
        se = math.sqrt(mean * (1 - mean) / n) if binary else math.sqrt(var / n) if var and n > 1 else 0.0
        stats[(rk, mk)] = {"n": n, "mean": mean, "lo": lo, "hi": hi, "se": se, "binary": binary}
    # a metric is a rate when every value of every run lies in 0-1 (decided per metric, not per run)
    outside = {mk for _, mk, *_rest, unit_range in agg if not unit_range}
    for (_, mk), st in stats.items():
        st["unit_range"] = mk not in outside
    return stats


def _paired_stats(
    con: Any, run_list: list[dict[str, Any]], listing: Listing
) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, str], dict[str, Any]]]:
    """Pair every run with a like-for-like control run and compute each metric's paired change.

    A control run (:func:`~steerboard.leaderboard.ingest.is_control`) pairs with itself, so its changes are
    0 by construction; every other run pairs with a control run of the same model, precision, task arguments,
    judge, sample set and generation settings (:func:`~steerboard.leaderboard.ingest.choose_bases`). The
    per-sample pairs are the DuckDB view ``v_paired`` (method value ``a``, control value ``b`` on the same
    sample); per (run, metric): n, the change ``mean(a) - mean(b)``, its 95 % interval (Newcombe's for 0/1
    values, a seeded paired bootstrap otherwise), the paired p-value (exact McNemar for 0/1 values, Wilcoxon
    signed-rank otherwise) and the minimum detectable effect at 80 % power.

    Returns:
        ``(base_of, base_reason, paired)``.
    """
    import pandas as pd

    base_choice = choose_bases(run_list)
    pairs = [(rk, bk) for rk, (bk, _) in base_choice.items() if bk is not None]
    pairs += [(r["run_key"], r["run_key"]) for r in run_list if is_control(r)]
    base_reason = {rk: why for rk, (bk, why) in base_choice.items() if bk is None}
    pairs_df = pd.DataFrame(pairs, columns=["run_key", "base_key"])  # noqa: F841 - read by DuckDB
    con.execute("CREATE TEMP TABLE pairs_map AS SELECT * FROM pairs_df")
    con.execute(
        "CREATE TEMP VIEW v_paired AS SELECT p.run_key, p.base_key, a.metric_key, a.sample_key, a.v AS a, b.v AS b "
        "FROM pairs_map p JOIN sv a ON a.run_key = p.run_key "
        "JOIN sv b ON b.run_key = p.base_key AND b.metric_key = a.metric_key AND b.sample_key = a.sample_key"
    )
    continuous = {m.key for m in listing.metrics if m.unit != "rate"}
    pair_of = dict(pairs)
    paired: dict[tuple[str, str], dict[str, Any]] = {}
    rows = con.execute(
        "SELECT run_key, metric_key, count(*) AS n, avg(a) AS mean_a, avg(b) AS mean_b, avg(a - b) AS diff, "
        "stddev_samp(a - b) AS sd, bool_and((a = 0 OR a = 1) AND (b = 0 OR b = 1)) AS binary, "
        "count(*) FILTER (a = 1 AND b = 1) AS n11, count(*) FILTER (a = 1 AND b = 0) AS n10, "
        "count(*) FILTER (a = 0 AND b = 1) AS n01, count(*) FILTER (a = 0 AND b = 0) AS n00, "
        # per-item values only where the bootstrap needs them (0/1 pairs are resampled from their cell counts)
        "CASE WHEN bool_and((a = 0 OR a = 1) AND (b = 0 OR b = 1)) AND NOT list_contains(?, metric_key) "
        "THEN NULL ELSE list(a ORDER BY sample_key) END AS av, "
        "CASE WHEN bool_and((a = 0 OR a = 1) AND (b = 0 OR b = 1)) AND NOT list_contains(?, metric_key) "
        "THEN NULL ELSE list(b ORDER BY sample_key) END AS bv "
        "FROM v_paired GROUP BY run_key, metric_key",
        [sorted(continuous), sorted(continuous)],
    ).fetchall()
    for rk, mk, n, mean_a, mean_b, diff, sd, binary, n11, n10, n01, n00, av, bv in rows:
        binary = bool(binary) and mk not in continuous
        same = pair_of.get(rk) == rk
        if binary:
            ci = (0.0, 0.0) if same else newcombe_paired(n11, n10, n01, n00)
            p = sign_test(n10, n01)
            mde = mde_binary_paired(n)
        else:
            d = [x - y for x, y in zip(av, bv, strict=True)]
            p = wilcoxon_signed_rank(d)
            ci = (0.0, 0.0) if same else paired_bootstrap_ci(
                [(av, bv)], lambda g: g[0][0] - g[0][1], seed_of(rk, mk)
            )
            # the control against itself has no spread of differences: no MDE to state for a continuous metric
            mde = None if same else mde_continuous_paired(sd if sd is not None else float("nan"), n)
        if av is None:  # 0/1 pairs: the items in cell order (what the bootstrap resamples)
            cells = (int(n11), int(n10), int(n01), int(n00))
            av = [1.0] * (cells[0] + cells[1]) + [0.0] * (cells[2] + cells[3])
            bv = [1.0] * cells[0] + [0.0] * cells[1] + [1.0] * cells[2] + [0.0] * cells[3]
        paired[(rk, mk)] = {
            "n": n, "mean_a": mean_a, "mean_b": mean_b, "diff": diff, "ci": ci, "p": p, "binary": binary,
            "up": int(n10) if binary else sum(x > y for x, y in zip(av, bv, strict=True)),
            "down": int(n01) if binary else sum(x < y for x, y in zip(av, bv, strict=True)),
            "mde": mde, "too_small": n < sign_test_critical(), "a": av, "b": bv, "self": same,
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
        base_of, base_reason, paired = _paired_stats(con, run_list, listing)
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
        "defaults": _defaults(run_list),
        "stats": stats,
        "paired": paired,
        "base_of": base_of,
        "base_reason": base_reason,
        "breakdown": breakdown,
        "examples": examples,
        "totals": totals,
    }


NO_SAMPLES = "n/a"
#: tasks scored by log-likelihood (no generation): their max_tokens is not a setting of the comparison
_NO_GENERATION_TASKS = {"mmlu", "truthfulqa", "side_effects"}
ALPHA_FLAG = 0.05
AXIS_TITLES = {"safety": "safety", "overrefusal": "over-refusal", "capability": "capability"}


def _fmt_delta(m: MetricSpec, d: float) -> str:
    return f"{100 * d:+.1f}" if m.unit == "rate" else f"{d:+.3f}"


def _cell(
    m: MetricSpec, st: dict[str, Any] | None, pr: dict[str, Any] | None, p_adj: float | None = None
) -> dict[str, Any]:
    """One metric cell; every key is always present so templates never meet a missing field.

    ``st`` is None when the run scored no sample for the metric (e.g. ``-T subset=unsafe`` leaves the
    safe-prompt metric empty): the cell then reads ``n/a``. ``pr`` is the paired change versus the control
    (None: no like-for-like control); ``p_adj`` its Holm-adjusted p-value.
    """
    cell: dict[str, Any] = {
        "sort": "",
        "value": NO_SAMPLES,
        "ci": "",
        "n": 0,
        "delta": "",
        "delta_ci": "",
        "p": "",
        "p_adj": "",
        "sig": False,
        "better": None,
        "n_paired": 0,
        "too_small": False,
        "mde": "",
        "control": False,
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
        d = pr["diff"]
        cell["delta"] = _fmt_delta(m, d)
        lo, hi = pr["ci"]
        if not (math.isnan(lo) or math.isnan(hi)):
            cell["delta_ci"] = f"[{_fmt_delta(m, lo)}, {_fmt_delta(m, hi)}]"
        cell["p"] = f"{pr['p']:.3g}"
        cell["p_adj"] = f"{p_adj:.3g}" if p_adj is not None else ""
        cell["sig"] = p_adj is not None and p_adj < ALPHA_FLAG and not pr["too_small"]
        cell["better"] = (d > 0) == m.higher_is_better if d != 0 else None
        cell["n_paired"] = pr["n"]
        cell["too_small"] = pr["too_small"]
        cell["control"] = pr["self"]
        if pr["mde"] is not None:
            cell["mde"] = f"{100 * pr['mde']:.1f} pts" if m.unit == "rate" else f"{pr['mde']:.3f}"
        else:
            cell["mde"] = "none (n too small)" if pr["n"] < sign_test_critical() else "n/a"
    return cell


def short_config(cfg: Any, max_len: int = 26, sweep_keys: Sequence[str] = ()) -> str:
    """A short label for a method configuration (``k=v`` pairs, the method's strength-like options -- its declared
    ``sweep_keys`` -- first, cut to ``max_len``)."""
    if not isinstance(cfg, dict) or not cfg:
        return ""
    keys = sorted(cfg, key=lambda k: (k not in sweep_keys, str(k)))
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


def _resolved(r: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved settings a run's log records (``eval.metadata["steerboard"]["resolved"]``), if any."""
    if not r.get("provenance"):
        return None
    try:
        res = json.loads(r["provenance"]).get("resolved")
    except (json.JSONDecodeError, AttributeError):
        return None
    return res if isinstance(res, dict) else None


def _new_row(r: dict[str, Any]) -> dict[str, Any]:
    cfg = json.loads(r["method_config"] or "{}")
    decl = run_declarations(r)
    return {
        "row_key": r["row_key"],
        "submitter": r["submitter"],
        "model_string": r["model_string"],
        "settings_key": r.get("settings_key"),
        "model": public_text(r["model"]),
        "method": r["method"],
        "config": public_text(r["method_config"] + (f" {r['row_variant']}" if r.get("row_variant") else "")),
        "config_obj": cfg,
        "resolved": _resolved(r),
        "variant": r.get("row_variant") or "",
        "control": decl.control,
        # what the method declares about its options: strength-like ones, and those that never split a sweep
        "sweep_keys": list(decl.sweep),
        "not_sweep": sorted(decl.not_sweep_settings),
        "runs": {},
        "reported": False,
        "settings_recorded": bool(r.get("settings_recorded")),
        "config_short": public_text(r.get("config_short") or SETTINGS_NOT_RECORDED),
        "precision": r.get("precision") or "",
        "config_page": run_page_name(r["run_key"]),
    }


def _contribution(axis: str, m: MetricSpec, ma: Any, mb: Any) -> Any:
    """A metric's contribution to ``axis`` from the method's mean ``ma`` and the control's mean ``mb`` on the
    same items (numbers, or numpy arrays of bootstrap resamples).

    - safety: the change in the safer direction (``mean(a) - mean(b)``, negated for lower-is-better metrics);
    - over-refusal: the change in over-refusal (positive = more benign prompts refused);
    - capability: above-chance retention ``(mean(a) - chance) / (mean(b) - chance)`` for accuracies, the
      perplexity ratio ``exp(-(mean(a) - mean(b)))`` for a cost in nats.
    """
    import numpy as np

    ma, mb = np.asarray(ma, dtype=float), np.asarray(mb, dtype=float)
    if axis == "capability":
        if m.unit == "nats":
            return np.exp(-(ma - mb))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ma - m.chance) / (mb - m.chance)
    d = ma - mb
    if axis == "safety":
        return d if m.higher_is_better else -d
    return -d if m.higher_is_better else d


def _above_chance(m: MetricSpec, base_st: dict[str, Any] | None) -> bool:
    """Whether the control's 95 % interval of accuracy metric ``m`` lies above its chance level."""
    if m.unit != "rate" or m.chance is None:
        return True
    return base_st is not None and (base_st["lo"] > m.chance if m.higher_is_better else base_st["hi"] < m.chance)


def _score_axis(row: dict[str, Any], axis: str, listing: Listing, data: dict[str, Any]) -> dict[str, Any]:
    """One row's score on one axis over the axis' fixed metric set (``listing.axes``).

    Returns:
        ``{"score", "lo", "hi", "status", "missing", "no_control", "outside", "k", "n"}``: ``score`` is None
        unless the row covers every metric of the set with a like-for-like control; ``status`` is ``"ok"``,
        ``"partial"``, ``"no control"``, ``"below chance"`` (no capability metric above chance on the control)
        or ``"n too small"`` (every metric's paired n below what an exact test can call significant: shown
        greyed, not ranked).
    """

    specs = listing.axis_metrics(axis)
    missing, no_control, outside, parts = [], [], [], []
    for m in specs:
        r = row["runs"].get(m.task)
        st = data["stats"].get((r["run_key"], m.key)) if r else None
        if st is None:
            missing.append(m.key)
            continue
        pr = data["paired"].get((r["run_key"], m.key))
        if pr is None or pr["n"] == 0:
            no_control.append(m.key)
            continue
        base_key = data["base_of"].get(r["run_key"])
        if axis == "capability" and not _above_chance(m, data["stats"].get((base_key, m.key))):
            outside.append(m.key)
            continue
        parts.append((m, pr))
    out: dict[str, Any] = {
        "score": None, "lo": None, "hi": None, "status": "ok", "missing": missing, "no_control": no_control,
        "outside": outside, "k": len(specs) - len(missing), "n": len(specs),
    }
    if missing:
        out["status"] = "partial"
        return out
    if no_control:
        out["status"] = "no control"
        return out
    if not parts:
        out["status"] = "below chance"
        return out
    vals = [float(_contribution(axis, m, pr["mean_a"], pr["mean_b"])) for m, pr in parts]
    out["score"] = sum(vals) / len(vals)
    if all(pr["self"] for _, pr in parts):
        out["lo"] = out["hi"] = out["score"]  # the control against itself: exact by construction
    else:
        def stat(groups: list[Any]) -> Any:
            return sum(_contribution(axis, m, a, b) for (m, _), (a, b) in zip(parts, groups, strict=True)) / len(parts)

        out["lo"], out["hi"] = paired_bootstrap_ci(
            [(pr["a"], pr["b"]) for _, pr in parts], stat, seed_of(row["row_key"], axis)
        )
    if all(pr["too_small"] for _, pr in parts):
        out["status"] = "n too small"
    return out


def _holm_row(row: dict[str, Any], data: dict[str, Any]) -> None:
    """Holm-adjust the paired p-values of every metric of one row (the family is the row: one method's claims
    against its control), into ``data["p_adj"]``."""
    keys = [
        (r["run_key"], mk)
        for r in row["runs"].values()
        for (rk, mk) in data["paired_by_run"].get(r["run_key"], [])
        if rk == r["run_key"] and not data["paired"][(rk, mk)]["self"]
    ]
    adj = holm([data["paired"][k]["p"] for k in keys])
    data["p_adj"].update(zip(keys, adj, strict=True))


def _score_row(row: dict[str, Any], headline: list[MetricSpec], data: dict[str, Any], listing: Listing) -> None:
    """Cells, the three axis scores with intervals, and the covered metrics of one row."""
    cells = []
    covered = []
    for m in headline:
        r = row["runs"].get(m.task)
        st = data["stats"].get((r["run_key"], m.key)) if r else None
        pr = data["paired"].get((r["run_key"], m.key)) if r else None
        c = _cell(m, st, pr, data["p_adj"].get((r["run_key"], m.key)) if r else None)
        if r is None:
            c["value"] = ""  # task not run for this row (n/a is for a run with no samples)
        c["page"] = run_page_name(r["run_key"]) if r else None
        cells.append(c)
        if st is not None:
            covered.append(m.key)
    row["cells"] = cells
    row["coverage"] = tuple(covered)
    row["compared"] = any(
        data["paired"].get((r["run_key"], mk)) for r in row["runs"].values() for mk in (m.key for m in listing.metrics)
    )
    for axis in ("safety", "overrefusal", "capability"):
        a = _score_axis(row, axis, listing, data)
        row[axis + "_axis"] = a
        ranked = a["status"] == "ok"
        row[axis] = a["score"] if ranked else None
        row[axis + "_ci"] = {"score": a["score"], "lo": a["lo"], "hi": a["hi"]} if ranked else None
    maxes = sorted({
        str(json.loads(r.get("generation") or "{}").get("max_tokens", "default")) for r in row["runs"].values()
        if r["task"] not in _NO_GENERATION_TASKS
    })
    row["gen_text"] = f"max_tokens={'/'.join(maxes)}" if maxes else ""
    cfg = row["config_obj"] if isinstance(row["config_obj"], dict) else {}
    row["config_text"] = public_text(_config_text(cfg, row["variant"]))
    short = short_config(cfg, sweep_keys=row.get("sweep_keys", ()))
    row["short"] = public_text(" ".join(x for x in (short, row["variant"].replace("protocol=", "")) if x))
    row["label"] = f"{row['method']}/{row['model']} {row['config']}" + (
        f" ({row['submitter']})" if row["submitter"] != "steerboard" else ""
    )
    row["point_label"] = (row["method"] + (" " + row["short"] if row["short"] else "")).strip()


def build_rows(data: dict[str, Any], headline: list[MetricSpec], listing: Listing) -> list[dict[str, Any]]:
    """One row per resolved configuration (``row_key``), scored on the headline metrics and the axis sets.

    Default order: rows compared with a like-for-like control first (rows of another provider or model without
    one never outrank them), then by model, then safety change (highest first), then capability retained;
    rows without a safety score last.
    """
    rows_by_key: dict[str, dict[str, Any]] = {}
    for r in data["runs"]:
        if not r.get("on_board", True):
            continue  # a current run under other task arguments: its own page, not this row's cell
        rows_by_key.setdefault(r["row_key"], _new_row(r))["runs"][r["task"]] = r
    rows = list(rows_by_key.values())
    data.setdefault("p_adj", {})
    by_run: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rk, mk in data["paired"]:
        by_run[rk].append((rk, mk))
    data["paired_by_run"] = by_run
    for row in rows:
        _holm_row(row, data)
    for r in data["runs"]:  # runs not on the board: their own family
        if not r.get("on_board", True):
            keys = [k for k in by_run.get(r["run_key"], []) if not data["paired"][k]["self"]]
            data["p_adj"].update(zip(keys, holm([data["paired"][k]["p"] for k in keys]), strict=True))
    for row in rows:
        _score_row(row, headline, data, listing)
    rows.sort(
        key=lambda r: (
            not r["compared"],
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

    Only rows with all three axis scores (each covering its full metric set against a like-for-like control)
    take part, compared with the other such rows of the same model, on safety change (higher), over-refusal
    change (lower) and capability retained (higher); a row needs at least one peer to get the badge.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        r["pareto"] = False
        r["peers"] = 0
        if all(r[a] is not None for a in ("safety", "overrefusal", "capability")):
            groups[r["model"]].append(r)
    for members in groups.values():
        if len(members) < 2:
            continue
        front = _pareto([(r["safety"], -r["overrefusal"], r["capability"], r["row_key"]) for r in members])
        for r in members:
            r["pareto"] = r["row_key"] in front
            r["peers"] = len(members) - 1


def _sweep_value(v: Any) -> float | None:
    """A sweep coordinate: a number, a numeric string (``--sweep strengths=15`` typed as text) or a list of one
    number; None for anything else."""
    if isinstance(v, list | tuple) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _sweep_key(cfg: dict[str, Any], sweep_keys: Sequence[str]) -> str | None:
    """The first of a method's strength-like options (in declaration order) that ``cfg`` sets to a number."""
    for k in sweep_keys:
        if k in cfg and _sweep_value(cfg[k]) is not None:
            return k
    return None


def find_sweeps(rows: list[dict[str, Any]], listing: Listing) -> list[dict[str, Any]]:
    """Strength sweeps: rows of one source/model/method whose settings differ only in one strength-like key.

    Strength-like keys are the options the method declares as sweep axes (``sweep_field``), first declared
    first; options of the engine and runtime options never tell two points apart. The settings are the resolved ones the log records (so the preset's own strength joins the points given
    with ``--sweep``), else the raw ``-M`` arguments; a value may be a number or numeric text. A group with one
    strength value is not a sweep. Each sweep lists its points in strength order and, per axis-set metric that
    every point covers against a control, the paired change (oriented as on its axis) at each point.
    """
    groups: dict[tuple[str, ...], list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for r in rows:
        keys, not_sweep = r.get("sweep_keys") or (), set(r.get("not_sweep") or ())
        cfg = r["resolved"] if isinstance(r.get("resolved"), dict) else r["config_obj"]
        cfg = {k: v for k, v in (cfg or {}).items() if k not in not_sweep}
        k = _sweep_key(cfg, keys) or _sweep_key(r["config_obj"] if isinstance(r["config_obj"], dict) else {}, keys)
        if k is None:
            continue
        x = _sweep_value(cfg.get(k, r["config_obj"].get(k) if isinstance(r["config_obj"], dict) else None))
        if x is None:
            continue
        # settings derived from the strength (the SAE's strength_units) move with it: not part of the rest
        stem = k.rstrip("s")
        rest = {a: b for a, b in cfg.items() if a != k and not a.startswith(stem)}
        groups[(r["submitter"], r["model"], r["method"], k, canonical_json(rest), r["variant"])].append((x, r))
    axis_keys = [(axis, m) for axis in ("safety", "overrefusal", "capability") for m in listing.axis_metrics(axis)]
    sweeps = []
    for (sub, model, method, key, _rest, variant), pts in sorted(groups.items(), key=lambda g: g[0]):
        if len({x for x, _ in pts}) < 2:
            continue
        pts.sort(key=lambda t: t[0])
        metrics = []
        for axis, m in axis_keys:
            ys = []
            for _, r in pts:
                run = r["runs"].get(m.task)
                pr = r["_paired"].get(m.key) if run else None
                ys.append(pr)
            if any(y is None for y in ys):
                continue
            metrics.append({"axis": axis, "spec": m, "y": ys})
        name = (
            f"{method}/{model} {key}"
            + (f" {variant}" if variant else "")
            + ("" if sub == "steerboard" else f" ({sub})")
        )
        sweeps.append(
            {
                "name": public_text(name),
                "key": key,
                "x": [x for x, _ in pts],
                "row_keys": [r["row_key"] for _, r in pts],
                "metrics": metrics,
                "safety": [r["safety"] for _, r in pts],
                "overrefusal": [r["overrefusal"] for _, r in pts],
                "capability": [r["capability"] for _, r in pts],
            }
        )
    return sweeps


def _attach_paired(rows: list[dict[str, Any]], data: dict[str, Any], listing: Listing) -> None:
    """Each row's oriented paired change per axis-set metric (for the sweep curves), under ``_paired``."""
    import numpy as np

    for row in rows:
        row["_paired"] = {}
        for axis in ("safety", "overrefusal", "capability"):
            for m in listing.axis_metrics(axis):
                r = row["runs"].get(m.task)
                pr = data["paired"].get((r["run_key"], m.key)) if r else None
                if pr is None or pr["n"] == 0:
                    continue
                v = float(_contribution(axis, m, np.float64(pr["mean_a"]), np.float64(pr["mean_b"])))
                if math.isfinite(v):
                    row["_paired"][m.key] = v


def assemble(data: dict[str, Any], listing: Listing, reported: dict[str, Any]) -> dict[str, Any]:
    """Turn query results into rows/columns/plots for the templates.

    Columns are the listing's headline metrics that at least one run measured (all of them on an empty board),
    so a laptop screen is not filled with empty columns; reported numbers for other tasks stay in the
    reported-numbers table.
    """
    measured = {mk for _, mk in data["stats"]}
    headline = [m for m in listing.headline if m.key in measured] or listing.headline
    rows = build_rows(data, headline, listing)
    mark_pareto(rows)
    _attach_paired(rows, data, listing)
    rep_rows, rep_list = reported_rows(reported, headline)
    return {
        "headline": headline,
        "rows": rows,
        "reported_rows": rep_rows,
        "reported_list": rep_list,
        "sweeps": find_sweeps(rows, listing),
        "axes": {a: listing.axis_metrics(a) for a in ("safety", "overrefusal", "capability")},
    }


# an absolute POSIX path's folders: a "/" not inside a word, a relative path or a URL ("://"), then folders
_ABS_PATH = re.compile(r"(?<![\w.:~-])(?<!:/)(?:/[^/\s\"'<>`,;()\[\]{}|]+)+/(?=[^/\s\"'<>`,;()\[\]{}|])")


def public_text(text: Any) -> Any:
    """``text`` with every absolute local path cut to its last component (``/home/u/x/model`` -> ``…/model``),
    so a published page never shows the machine's folders; anything not a string is returned as is."""
    if not isinstance(text, str) or "/" not in text:
        return text
    return _ABS_PATH.sub("\u2026/", text)


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
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,  # every template is HTML: strings from logs are always escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # every value printed (log paths, model directories, provenance records) loses its local folders
        finalize=lambda v: v if isinstance(v, Markup) else public_text(v),
    )
    env.filters["pct"] = _pct
    env.filters["signed"] = _signed
    env.filters["signed0"] = lambda x: "" if x is None else f"{round(100 * x):+d}"
    env.filters["pct0"] = lambda x: "" if x is None else f"{100 * x:.0f}"
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
    gold_agreement_path: str | Path | None = None,
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
        gold_agreement_path: The judges' agreement with the gold set (``steerboard judge gold agree --out``;
            default: the shipped ``steerboard/scorers/data/gold_agreement.json``; none shipped: the judges page
            says there is no gold-set check and no row is flagged).

    Returns:
        Counts of what was written.
    """
    from steerboard import storage

    remote = storage.is_url(out)
    if remote:  # fsspec URL (s3://...): fail on a missing bucket or credentials before rendering anything
        storage.check_writable(str(out), "cannot publish the site to")
    gold = judge_check.load_gold_agreement(gold_agreement_path)  # a bad file fails before anything is written
    data = collect(db, listing)
    reported = load_reported(reported_path)
    view = assemble(data, listing, reported)
    judge_check.attach(view["rows"], gold, listing)
    view["gold"] = judge_check.judges_view(gold, view["rows"])
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
    """The two trade-off scatters on the paired axes and the sweeps' dose-response panels.

    Scatters: safety change versus capability retained, and safety change versus over-refusal change, one
    point per row with both axis scores (a partial row, or one the sample cannot rank, has no point); a sweep
    is a line through those of its points that have both. Dose-response: per axis-set metric that every point
    of a sweep covers, the paired change (retention for capability) against the strength.
    """
    rows = view["rows"]
    by_key = {r["row_key"]: r for r in rows}

    def tip(r: dict[str, Any]) -> str:
        parts = [f"{r['label']}: safety {_signed(r['safety'])} pts"]
        parts += [f"over-refusal {_signed(r['overrefusal'])} pts"] if r["overrefusal"] is not None else []
        parts += [f"capability retained {_pct(r['capability'])} %"] if r["capability"] is not None else []
        return ", ".join(parts) + (" (Pareto)" if r["pareto"] else "")

    def panel(field: str, ylabel: str, aria: str) -> Any:
        pts = [
            Point(r["safety"], r[field], public_text(r["point_label"]), public_text(tip(r)), r["pareto"], r["control"])
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
        return tradeoff_svg(pts, curves, "Safety change vs control (points, higher = safer)", ylabel, aria)

    sweep_label = " / ".join(sorted({s["key"] for s in view["sweeps"]})) or "strength"
    dose = []
    seen: dict[str, list[dict[str, Any]]] = {}
    for s in view["sweeps"]:
        for entry in s["metrics"]:
            seen.setdefault(entry["spec"].key, []).append(
                {"name": s["name"], "key": s["key"], "x": s["x"], "val": entry["y"], "axis": entry["axis"],
                 "spec": entry["spec"]}
            )
    for _, curves in seen.items():
        m, axis = curves[0]["spec"], curves[0]["axis"]
        what = "retained (%)" if axis == "capability" else (
            "change, pts (higher = safer)" if axis == "safety" else "change, pts (lower = better)")
        dose.append(sweep_svg(curves, "val", f"{m.title}: {what}", sweep_label,
                              ylabel="%" if axis == "capability" else "points"))
    return {
        "capability": panel(
            "capability", "Capability retained (%, control = 100)", "safety versus capability"
        ),
        "overrefusal": panel(
            "overrefusal", "Over-refusal change (points, lower = better)", "safety versus over-refusal"
        ),
        "sweeps": dose,
    }


def _signed(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}"


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
    axis_of = {k: a for a, ks in listing.axes.items() for k in ks}
    metrics = [
        {
            "spec": m,
            "cell": _cell(m, data["stats"].get((rk, m.key)), data["paired"].get((rk, m.key)),
                          data.get("p_adj", {}).get((rk, m.key))),
            "in_axis": axis_of.get(m.key),
        }
        for m in (task.metrics if task else [])
    ]
    bd = [
        {"metric": metric_by_key[mk], "key": k, "vals": [(v, n, _pct(mean)) for v, n, mean in vals]}
        for mk, keys in data["breakdown"].get(rk, {}).items()
        for k, vals in keys.items()
    ]
    base_key = data["base_of"].get(rk)
    if base_key == rk:
        base_key = None  # the control itself
    prov = json.loads(r["provenance"]) if r.get("provenance") else None
    return env.get_template("run.html").render(
        turn_curve=_turn_curve(task, rk, data),
        run=r,
        task=task,
        control=CONTROL_METHOD,
        is_control=is_control(r),
        config=json.dumps(json.loads(r["method_config"] or "{}"), indent=2, ensure_ascii=False),
        task_args=json.dumps(json.loads(r["task_args"] or "{}"), indent=2, ensure_ascii=False),
        generation=json.loads(r.get("generation") or "{}"),
        changed=_changed_settings(r, prov, data.get("defaults", {})),
        metrics=metrics,
        breakdown=bd,
        examples=data["examples"].get(rk, []),
        agreement=agreement_table(agreement, r["judge"], judge_kind(json.loads(r["scorers"] or "[]"))),
        has_agreement_file=agreement is not None,
        base_page=run_page_name(base_key) if base_key else None,
        base_reason=data.get("base_reason", {}).get(rk, ""),
        provenance=json.dumps(prov, indent=2, ensure_ascii=False) if prov else None,
        log_name=Path(str(r["log_path"]).split("://")[-1]).name,
        settings_not_recorded=SETTINGS_NOT_RECORDED,
        built_at=built_at,
    )


def _defaults(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (method, model): the resolved settings of a run given no ``-M`` option (the method's defaults)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        res = _resolved(r)
        if res is not None and (r["method_config"] or "{}") == "{}":
            out.setdefault((r["method"], r["model"]), res)
    return out


def _changed_settings(
    r: dict[str, Any], prov: dict[str, Any] | None, defaults: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """What a run page opens with: the settings that differ from the method's defaults.

    Returns:
        ``{"rows": [(key, value, default)], "basis": str}``; the defaults are the resolved settings of a run of
        the same method and model given no ``-M`` option; without one, the options the run was given.
    """
    given = json.loads(r["method_config"] or "{}")
    res = (prov or {}).get("resolved") if isinstance((prov or {}).get("resolved"), dict) else None
    base = defaults.get((r["method"], r["model"]))

    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    if res is not None and base is not None:
        keys = [k for k in res if k not in base or res[k] != base[k]] + [k for k in base if k not in res]
        rows = [(k, text(res.get(k, "(unset)")), text(base.get(k, "(unset)"))) for k in keys]
        return {"rows": rows, "basis": "the resolved settings of this method's run with no -M option"}
    rows = [(k, text(v), "") for k, v in given.items()]
    return {"rows": rows, "basis": "the -M options this run was given (no run of this method with its defaults "
                                   "is on the board to compare the resolved settings with)"}


def _render_site(
    outp: Path, data: dict[str, Any], view: dict[str, Any], listing: Listing, agreement: dict[str, Any] | None
) -> int:
    """Write ``index.html``, ``judges.html`` and every run page into ``outp``; returns the number of pages."""
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
        axes=view["axes"],
        palette=PALETTE,
        control=CONTROL_METHOD,
        totals=data["totals"],
        built_at=built_at,
        n_runs=len(data["runs"]),
        gold=view.get("gold"),
        not_in_gold=judge_check.NOT_IN_GOLD,
    )
    (outp / "index.html").write_text(index, encoding="utf-8")
    judges = env.get_template("judges.html").render(
        gold=view.get("gold"), decides=judge_check.DECIDES, not_in_gold=judge_check.NOT_IN_GOLD,
        built_at=built_at,
    )  # fmt: skip
    (outp / "judges.html").write_text(judges, encoding="utf-8")
    for r in data["runs"]:
        html = _run_page(env, r, data, listing, agreement, built_at)
        (outp / run_page_name(r["run_key"])).write_text(html, encoding="utf-8")
    return 2 + len(data["runs"])
