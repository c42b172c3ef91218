"""Inspect logs -> DuckDB (``steerboard ingest``).

Tables (schema version :data:`SCHEMA_VERSION`, stored in ``meta``):

- ``runs``: one row per log (``run_key`` = the log's ``eval_id``): task, task version, task args, model string,
  method (provider name = model string up to the first ``/``), model, method config (``eval.model_args`` as
  canonical JSON), judge, created, status, sample counts, the log's own metric values, submitter, log path.
- ``samples``: one row per (run, sample id, epoch): input, target, metadata (JSON), error.
- ``sample_tags``: scalar metadata values of each sample (key, value as text), for filters and breakdowns.
- ``scores``: one row per (run, sample, scorer, value key): the value as a float (dict values per key; scalar
  values such as "C"/"I" under key ``""``), the answer (judge label), and the sample's ``judge_error`` flag.
- ``examples``: full prompt/response text for a few samples per run (the worst ones on the run's headline
  metrics), shown on run pages.
- ``ingest_files``: every file seen, with its outcome; views ``v_runs`` and ``v_current_runs`` (the latest
  successful run per submitter, model, method, config and task) are what the site reads.

Ingestion is idempotent (a log whose ``eval_id`` is already stored is skipped) and fault tolerant (a corrupted,
partial or unreadable log is skipped with a warning and counted; the rest still lands).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steerboard.leaderboard.listing import Listing, MetricSpec

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_TEXT = 4000  # characters kept of prompts/responses shown on run pages
MAX_INPUT = 1000  # characters kept of each sample's input in ``samples``
EXAMPLES_PER_METRIC = 2
MAX_EXAMPLES = 6
STANDARD_SUBMITTER = "steerboard"

_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_key VARCHAR PRIMARY KEY, submitter VARCHAR, log_path VARCHAR, task VARCHAR, task_version VARCHAR,
        task_id VARCHAR, task_args VARCHAR, model_string VARCHAR, method VARCHAR, model VARCHAR,
        method_config VARCHAR, judge VARCHAR, created TIMESTAMPTZ, status VARCHAR, total_samples INTEGER,
        completed_samples INTEGER, n_samples INTEGER, n_judge_errors INTEGER, log_metrics VARCHAR,
        scorers VARCHAR, ingested_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS samples (
        run_key VARCHAR, sample_key VARCHAR, sample_id VARCHAR, epoch INTEGER, input VARCHAR, target VARCHAR,
        metadata VARCHAR, error VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS sample_tags (run_key VARCHAR, sample_key VARCHAR, key VARCHAR, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS scores (
        run_key VARCHAR, sample_key VARCHAR, scorer VARCHAR, key VARCHAR, value DOUBLE, answer VARCHAR,
        judge_error TINYINT)""",
    """CREATE TABLE IF NOT EXISTS examples (
        run_key VARCHAR, sample_key VARCHAR, prompt VARCHAR, response VARCHAR, verdicts VARCHAR, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ingest_files (
        path VARCHAR, size BIGINT, mtime DOUBLE, run_key VARCHAR, outcome VARCHAR, message VARCHAR,
        ingested_at TIMESTAMPTZ)""",
    """CREATE OR REPLACE VIEW v_runs AS
        SELECT *, md5(concat_ws('|', submitter, model, method, method_config)) AS row_key FROM runs""",
    """CREATE OR REPLACE VIEW v_current_runs AS
        SELECT * EXCLUDE (rn) FROM (
          SELECT *, row_number() OVER (PARTITION BY submitter, model, method, method_config, task
                                       ORDER BY created DESC, run_key) AS rn
          FROM v_runs WHERE status = 'success') WHERE rn = 1""",
]

_COLS = {
    "samples": ["run_key", "sample_key", "sample_id", "epoch", "input", "target", "metadata", "error"],
    "sample_tags": ["run_key", "sample_key", "key", "value"],
    "scores": ["run_key", "sample_key", "scorer", "key", "value", "answer", "judge_error"],
    "examples": ["run_key", "sample_key", "prompt", "response", "verdicts", "reason"],
}


def _arrow_types() -> dict[str, dict[str, Any]]:
    import pyarrow as pa

    return {
        "samples": {"epoch": pa.int32()},
        "scores": {"value": pa.float64(), "judge_error": pa.int8()},
    }


class SchemaError(RuntimeError):
    """The database was written by an incompatible schema version."""


@dataclass
class IngestSummary:
    """What one ingest call did."""

    files_seen: int = 0
    runs_added: int = 0
    samples_added: int = 0
    already_present: int = 0
    skipped: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"files seen: {self.files_seen}; runs added: {self.runs_added} ({self.samples_added} samples); "
            f"already present: {self.already_present}; skipped: {self.skipped}"
        ]
        out += [f"  skipped {p}: {why}" for p, why in self.problems]
        return out


def connect(db: str | Path, read_only: bool = False) -> Any:
    """Open (and create or check the schema of) a results database.

    Raises:
        SchemaError: when the file holds another schema version.
    """
    import duckdb

    if read_only:
        if not Path(db).exists():
            raise FileNotFoundError(f"results database not found: {db} (run `steerboard ingest` first)")
        con = duckdb.connect(str(db), read_only=True)
    else:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(db))
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchone()[0]
    if has_meta:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None and int(row[0]) != SCHEMA_VERSION:
            con.close()
            raise SchemaError(
                f"{db}: schema version {row[0]}, this steerboard writes version {SCHEMA_VERSION}; "
                "re-ingest the logs into a new database"
            )
    if not read_only:
        for stmt in _DDL:
            con.execute(stmt)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )
    return con


def discover_logs(locations: Iterable[str | Path]) -> list[str]:
    """Expand files and directories (local or any fsspec location Inspect reads) into log files.

    Raises:
        FileNotFoundError: naming a location that does not exist.
    """
    from inspect_ai.log import list_eval_logs

    out: list[str] = []
    for loc in locations:
        s = str(loc)
        p = Path(s)
        if "://" not in s and not p.exists():
            raise FileNotFoundError(f"log location not found: {s}")
        if "://" not in s and p.is_file():
            out.append(str(p))
            continue
        infos = list_eval_logs(s, formats=["eval", "json"], recursive=True)
        out += sorted(i.name.removeprefix("file://") for i in infos)
    return out


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys (so equal configs compare equal)."""
    return json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)


def tag_text(v: Any) -> str | None:
    """Text form of a scalar metadata value (filters compare against this), or None for non-scalars."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        s = str(v)
        return s if len(s) <= 80 else None
    return None


def _to_float(v: Any) -> float | None:
    from inspect_ai.scorer import value_to_float

    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        f = value_to_float()(v)
    except Exception:  # noqa: BLE001 - anything unconvertible is stored as NULL
        return None
    return None if f is None or (isinstance(f, float) and math.isnan(f)) else float(f)


def _judge_of(spec: Any, summaries: Sequence[Any]) -> str | None:
    judge = (spec.task_args or {}).get("judge")
    if judge:
        return str(judge)
    for s in summaries[:50]:
        for sc in (s.scores or {}).values():
            if sc.metadata and sc.metadata.get("judge"):
                return str(sc.metadata["judge"])
    return None


def _message_text(m: Any) -> str:
    return f"[{m.role}] {m.text}"


def _bad_keys(run_task: str, listing: Listing | None) -> list[tuple[MetricSpec, float]]:
    """(metric, the per-sample value that counts against the method) for the task's headline metrics."""
    if listing is None or run_task not in listing.tasks:
        return []
    return [(m, 0.0 if m.higher_is_better else 1.0) for m in listing.tasks[run_task].metrics if m.headline]


def read_log(path: str, listing: Listing | None) -> dict[str, Any]:
    """Read one log into row batches (runs in a worker process).

    Reading goes through Inspect's log reader: the header (``header_only``) and the sample summaries.
    ``samples_df`` reads the same summaries but extracts each record through JSONPath columns, measured at
    0.44 s per 1,000-sample log against 0.04 s here, which would alone blow the 60 s benchmark budget.

    Returns:
        ``{"ok": True, "run": {...}, "samples": {...columns...}, ...}`` or ``{"ok": False, "error": str}``.
    """
    from inspect_ai.log import read_eval_log, read_eval_log_sample, read_eval_log_sample_summaries

    try:
        hdr = read_eval_log(path, header_only=True)
    except Exception as ex:  # noqa: BLE001 - any unreadable log is reported and skipped
        return {"ok": False, "error": f"unreadable log ({type(ex).__name__}: {str(ex)[:200]})"}
    spec = hdr.eval
    if hdr.status != "success":
        return {"ok": False, "error": f"partial log (status {hdr.status!r}, not 'success')", "eval_id": spec.eval_id}
    try:
        summaries = read_eval_log_sample_summaries(path)
    except Exception as ex:  # noqa: BLE001
        return {"ok": False, "error": f"unreadable samples ({type(ex).__name__}: {str(ex)[:200]})"}
    run_key = spec.eval_id
    method, _, model = spec.model.partition("/")
    cols: dict[str, dict[str, list[Any]]] = {t: {c: [] for c in cs} for t, cs in _COLS.items()}
    s_cols, t_cols, v_cols = cols["samples"], cols["sample_tags"], cols["scores"]
    n_judge_err = 0
    bad = _bad_keys(spec.task, listing)
    candidates: dict[str, list[tuple[Any, Any]]] = {m.key: [] for m, _ in bad}
    scorers: set[str] = set()
    for s in summaries:
        sk = f"{s.id}#{s.epoch}"
        meta = s.metadata or {}
        inp = s.input if isinstance(s.input, str) else json.dumps(s.input, default=str)
        s_cols["run_key"].append(run_key)
        s_cols["sample_key"].append(sk)
        s_cols["sample_id"].append(str(s.id))
        s_cols["epoch"].append(int(s.epoch))
        s_cols["input"].append(inp[:MAX_INPUT])
        s_cols["target"].append(s.target if isinstance(s.target, str) else json.dumps(s.target)[:MAX_INPUT])
        s_cols["metadata"].append(json.dumps(meta, default=str, ensure_ascii=False))
        s_cols["error"].append(s.error)
        tags: dict[str, str] = {}
        for k, v in meta.items():
            tv = tag_text(v)
            if tv is not None:
                tags[str(k)] = tv
                t_cols["run_key"].append(run_key)
                t_cols["sample_key"].append(sk)
                t_cols["key"].append(str(k))
                t_cols["value"].append(tv)
        sample_vals: dict[tuple[str, str], float | None] = {}
        sample_err: dict[str, int] = {}
        for scorer, sc in (s.scores or {}).items():
            scorers.add(scorer)
            val = sc.value
            jerr = 0
            if isinstance(val, dict):
                jerr = 1 if _to_float(val.get("judge_error")) == 1.0 else 0
                items = [(str(k), _to_float(v)) for k, v in val.items()]
            elif isinstance(val, list):
                items = [(str(i), _to_float(v)) for i, v in enumerate(val)]
            else:
                items = [("", _to_float(val))]
            n_judge_err += jerr
            sample_err[scorer] = jerr
            answer = sc.answer if isinstance(sc.answer, str) else None
            for k, f in items:
                sample_vals[(scorer, k)] = f
                v_cols["run_key"].append(run_key)
                v_cols["sample_key"].append(sk)
                v_cols["scorer"].append(scorer)
                v_cols["key"].append(k)
                v_cols["value"].append(f)
                v_cols["answer"].append(answer)
                v_cols["judge_error"].append(jerr)
        for m, bad_value in bad:
            lst = candidates[m.key]
            if len(lst) >= EXAMPLES_PER_METRIC or sample_err.get(m.scorer, 0):
                continue
            if any(tags.get(k) != tag_text(v) for k, v in m.sample_filter):
                continue
            if sample_vals.get((m.scorer, m.sample_value or "")) == bad_value:
                lst.append((s, m))
    # full text for the worst samples (a handful per run; each read is a separate zip member)
    chosen: dict[str, tuple[Any, list[str]]] = {}
    for lst in candidates.values():
        for s, m in lst:
            sk = f"{s.id}#{s.epoch}"
            if sk not in chosen and len(chosen) >= MAX_EXAMPLES:
                continue
            chosen.setdefault(sk, (s, []))[1].append(m.title)
    if not chosen and summaries:
        chosen = {f"{s.id}#{s.epoch}": (s, []) for s in summaries[:2]}
    e_cols = cols["examples"]
    for sk, (s, reasons) in chosen.items():
        try:
            full = read_eval_log_sample(path, id=s.id, epoch=s.epoch, exclude_fields={"events", "store"})
            msgs = list(full.messages)
            if msgs and msgs[-1].role == "assistant":
                msgs = msgs[:-1]
            prompt = "\n".join(_message_text(m) for m in msgs) if len(msgs) > 1 else (msgs[0].text if msgs else "")
            response = full.output.completion if full.output else ""
        except Exception as ex:  # noqa: BLE001 - a damaged sample entry must not lose the run
            prompt, response = (s.input if isinstance(s.input, str) else str(s.input)), f"(unreadable: {ex})"
        verdicts = {
            name: {"value": sc.value, "answer": sc.answer, "explanation": (sc.explanation or "")[:500]}
            for name, sc in (s.scores or {}).items()
        }
        e_cols["run_key"].append(run_key)
        e_cols["sample_key"].append(sk)
        e_cols["prompt"].append(prompt[:MAX_TEXT])
        e_cols["response"].append((response or "")[:MAX_TEXT])
        e_cols["verdicts"].append(json.dumps(verdicts, default=str, ensure_ascii=False))
        e_cols["reason"].append("; ".join(reasons) if reasons else "first samples")
    log_metrics: dict[str, dict[str, float]] = {}
    if hdr.results is not None:
        for es in hdr.results.scores:
            log_metrics.setdefault(es.name, {}).update({k: m.value for k, m in es.metrics.items()})
    created = datetime.fromisoformat(spec.created) if isinstance(spec.created, str) else spec.created
    run = {
        "run_key": run_key,
        "log_path": path,
        "task": spec.task.split("/")[-1],
        "task_version": str(spec.task_version),
        "task_id": spec.task_id,
        "task_args": canonical_json(spec.task_args or {}),
        "model_string": spec.model,
        "method": method,
        "model": model,
        "method_config": canonical_json(spec.model_args or {}),
        "judge": _judge_of(spec, summaries),
        "created": created,
        "status": hdr.status,
        "total_samples": hdr.results.total_samples if hdr.results else len(summaries),
        "completed_samples": hdr.results.completed_samples if hdr.results else len(summaries),
        "n_samples": len(summaries),
        "n_judge_errors": n_judge_err,
        "log_metrics": canonical_json(log_metrics),
        "scorers": canonical_json(sorted(scorers)),
    }
    return {"ok": True, "run": run, **cols}


def _read_job(args: tuple[str, Listing | None]) -> tuple[str, dict[str, Any]]:
    path, listing = args
    try:
        return path, read_log(path, listing)
    except Exception as ex:  # noqa: BLE001 - last-resort guard: one bad log never stops the batch
        return path, {"ok": False, "error": f"{type(ex).__name__}: {str(ex)[:200]}"}


def _flush(con: Any, batch: list[dict[str, Any]], submitter: str) -> None:
    import pyarrow as pa

    if not batch:
        return
    _TYPES = _arrow_types()
    now = datetime.now(timezone.utc)
    run_cols = [
        "run_key", "submitter", "log_path", "task", "task_version", "task_id", "task_args", "model_string",
        "method", "model", "method_config", "judge", "created", "status", "total_samples", "completed_samples",
        "n_samples", "n_judge_errors", "log_metrics", "scorers", "ingested_at",
    ]  # fmt: skip
    runs = {c: [] for c in run_cols}
    for d in batch:
        r = dict(d["run"], submitter=submitter, ingested_at=now)
        for c in run_cols:
            runs[c].append(r[c])
    con.execute("BEGIN TRANSACTION")
    try:
        runs_tbl = pa.table(runs)  # noqa: F841 - read by DuckDB's replacement scan
        con.execute(f"INSERT INTO runs SELECT {', '.join(run_cols)} FROM runs_tbl")
        for table, cols in _COLS.items():
            merged: dict[str, list[Any]] = {c: [] for c in cols}
            for d in batch:
                for c in cols:
                    merged[c].extend(d[table][c])
            types = _TYPES.get(table, {})
            arrow = pa.table(  # noqa: F841
                {c: pa.array(merged[c], type=types.get(c, pa.string())) for c in cols}
            )
            con.execute(f"INSERT INTO {table} SELECT {', '.join(cols)} FROM arrow")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def ingest_logs(
    locations: Sequence[str | Path],
    db: str | Path,
    submitter: str = STANDARD_SUBMITTER,
    listing: Listing | None = None,
    workers: int = 1,
    progress: bool = True,
    batch_size: int = 50,
) -> IngestSummary:
    """Ingest every log under ``locations`` into ``db``.

    Args:
        locations: Log files or directories (local or remote, as Inspect's reader accepts).
        db: DuckDB file (created when missing).
        submitter: Who submitted these logs (the project's own runs are ``"steerboard"``).
        listing: Task listing, used to pick the worst samples kept with full text (None: first samples).
        workers: Reader processes (1 = in this process).
        progress: Show a progress bar.
        batch_size: Logs per insert transaction.

    Returns:
        What was added and what was skipped (and why).
    """
    from tqdm import tqdm

    paths = discover_logs(locations)
    summary = IngestSummary(files_seen=len(paths))
    con = connect(db)
    try:
        known = set(r[0] for r in con.execute("SELECT run_key FROM runs").fetchall())
        todo: list[str] = []
        seen_files = {
            (r[0], r[1], r[2])
            for r in con.execute("SELECT path, size, mtime FROM ingest_files WHERE outcome = 'added'").fetchall()
        }
        file_rows: list[tuple[Any, ...]] = []
        now = datetime.now(timezone.utc)
        for p in paths:
            st = Path(p).stat() if "://" not in p else None
            if st is not None and (p, st.st_size, st.st_mtime) in seen_files:
                summary.already_present += 1
                continue
            todo.append(p)
        jobs = [(p, listing) for p in todo]
        if workers > 1 and len(jobs) > 1:
            ex: ProcessPoolExecutor | None = ProcessPoolExecutor(max_workers=workers)
            results: Iterable[tuple[str, dict[str, Any]]] = ex.map(_read_job, jobs, chunksize=4)
        else:
            ex = None
            results = map(_read_job, jobs)
        batch: list[dict[str, Any]] = []
        try:
            for path, d in tqdm(results, total=len(jobs), disable=not progress, desc="ingesting logs"):
                st = Path(path).stat() if "://" not in path else None
                size, mtime = (st.st_size, st.st_mtime) if st else (None, None)
                if not d["ok"]:
                    summary.skipped += 1
                    summary.problems.append((path, d["error"]))
                    warnings.warn(f"steerboard ingest: skipped {path}: {d['error']}", stacklevel=2)
                    file_rows.append((path, size, mtime, d.get("eval_id"), "skipped", d["error"], now))
                    continue
                rk = d["run"]["run_key"]
                if rk in known:
                    summary.already_present += 1
                    file_rows.append((path, size, mtime, rk, "added", "already present", now))
                    continue
                known.add(rk)
                batch.append(d)
                summary.runs_added += 1
                summary.samples_added += len(d["samples"]["run_key"])
                file_rows.append((path, size, mtime, rk, "added", None, now))
                if len(batch) >= batch_size:
                    _flush(con, batch, submitter)
                    batch = []
            _flush(con, batch, submitter)
        finally:
            if ex is not None:
                ex.shutdown(cancel_futures=True)
        if file_rows:
            con.executemany("INSERT INTO ingest_files VALUES (?, ?, ?, ?, ?, ?, ?)", file_rows)
    finally:
        con.close()
    return summary


def ingest_submissions(
    folder: str | Path,
    db: str | Path,
    listing: Listing | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, IngestSummary]:
    """Ingest a submissions folder: one sub-folder per method author, named after them.

    Raises:
        FileNotFoundError: when ``folder`` does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {root}")
    out: dict[str, IngestSummary] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out[sub.name] = ingest_logs([sub], db, submitter=sub.name, listing=listing, workers=workers, progress=progress)
    return out
