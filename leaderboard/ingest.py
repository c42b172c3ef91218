"""Inspect logs -> DuckDB (``steerboard ingest``).

Tables (schema version :data:`SCHEMA_VERSION`, stored in ``meta``):

- ``runs``: one row per log (``run_key`` = the log's ``eval_id``): task, task version, task args, model string,
  method (provider name = model string up to the first ``/``), model, method config (``eval.model_args`` as
  canonical JSON), judge, created, status, sample counts, the log's own metric values, submitter, log path,
  explicitly passed task args, sample set (hash of the sample ids and epochs), generation settings
  (:func:`generation_of`), and from the log's ``eval.metadata["steerboard"]``: settings key, precision, short
  config and the whole record (NULL when absent).
- ``samples``: one row per (run, sample id, epoch): input, target, metadata (JSON), error.
- ``sample_tags``: scalar metadata values of each sample (key, value as text), for filters and breakdowns.
- ``scores``: one row per (run, sample, scorer, value key): the value as a float (dict values per key; scalar
  values such as "C"/"I" under key ``""``), the answer (judge label), and the sample's ``judge_error`` flag.
- ``examples``: full prompt/response text for a few samples per run (the worst ones on the run's headline
  metrics), shown on run pages.
- ``ingest_files``: every file seen, with its outcome; views ``v_runs`` and ``v_current_runs`` are what the
  site reads.

Row keys. A leaderboard row is one resolved configuration: ``settings_key`` from the log's
``eval.metadata["steerboard"]`` (a hash of the resolved options, precision included, the model and every
artifact's sha256; see ``Method.provenance``), so ``sae/`` and ``sae/ -M preset=<default>`` share a row and
another preset or precision does not. A log without that metadata (for example from another harness) is keyed on its
raw ``-M`` arguments, never merged with a recorded configuration, and shown as "settings not recorded".

Like for like. ``v_current_runs`` keeps the latest successful run per row, task, task arguments (judge, subset,
protocol, format, ...), sample set and generation settings; its ``on_board`` flag picks the one a leaderboard
cell shows (the run with the fewest explicitly passed task arguments, then the generation settings most rows of
the task ran with, then the most samples, then the latest). Deltas are taken only against a ``base/`` run of the
same model, precision, task arguments, judge, sample set and generation settings (:func:`choose_bases`); a run
without one gets the reason instead.

Ingestion is idempotent (a log whose ``eval_id`` is already stored is skipped) and fault tolerant (a corrupted,
partial or unreadable log is skipped with a warning and counted; the rest still lands).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steerboard.leaderboard.listing import Listing, MetricSpec
from steerboard.methods.base import MethodDeclarations, method_declarations
from steerboard.storage import json_safe

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
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
        scorers VARCHAR, ingested_at TIMESTAMPTZ, task_args_passed VARCHAR, sample_set VARCHAR,
        settings_key VARCHAR, precision VARCHAR, config_short VARCHAR, provenance VARCHAR, generation VARCHAR)""",
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
    # content_hash: an object store's ETag/hash of a remote log (local files are matched on size and mtime)
    "ALTER TABLE ingest_files ADD COLUMN IF NOT EXISTS content_hash VARCHAR",
    # row_variant: a task protocol that changes what is measured (SafeEdit's per_instance editing, where the
    # method edits the model for each item) makes its own leaderboard row instead of replacing the standard run.
    # row_key: the resolved settings when the log records them, else the raw -M arguments (marked unrecorded).
    """CREATE OR REPLACE VIEW v_runs AS
        SELECT *, md5(concat_ws('|', submitter, model, method,
                                coalesce('settings:' || settings_key, 'unrecorded:' || method_config))
                      || CASE WHEN row_variant = '' THEN '' ELSE '|' || row_variant END) AS row_key,
               settings_key IS NOT NULL AS settings_recorded
        FROM (SELECT *, coalesce('protocol=' || nullif(json_extract_string(task_args, '$.protocol'), 'standard'), '')
                        AS row_variant FROM runs)""",
    # generation: the generation settings that change a reply (max_tokens, temperature, seed, ...), so a re-run
    # with other settings is its own run, never the replacement of this one; on_board prefers the settings most
    # rows of the task ran with (a one-off re-run of the control does not move every other row's change)
    """CREATE OR REPLACE VIEW v_current_runs AS
        WITH latest AS (
            SELECT * EXCLUDE (rn) FROM (
                SELECT *, row_number() OVER (PARTITION BY row_key, task, task_args, sample_set, generation
                                             ORDER BY created DESC, run_key) AS rn
                FROM v_runs WHERE status = 'success') WHERE rn = 1),
        popular AS (
            SELECT task, task_args, generation, count(DISTINCT row_key) AS gen_rows
            FROM latest GROUP BY ALL)
        SELECT * EXCLUDE (board_rn, gen_rows), board_rn = 1 AS on_board FROM (
          SELECT l.*, p.gen_rows, row_number() OVER (PARTITION BY l.row_key, l.task ORDER BY
                                         coalesce(len(json_keys(l.task_args_passed)), 0) ASC,
                                         p.gen_rows DESC, l.n_samples DESC, l.created DESC, l.run_key) AS board_rn
          FROM latest l JOIN popular p ON p.task = l.task AND p.task_args = l.task_args
                                       AND p.generation IS NOT DISTINCT FROM l.generation)""",
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


# one encoder for every sample (json.dumps with options builds a new encoder per call)
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode
_LOG_JSON_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}")


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
    replaced: int = 0  # stored runs replaced by a copy with more samples
    problems: list[tuple[str, str]] = field(default_factory=list)
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # logs whose samples disagree with results

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"files seen: {self.files_seen}; runs added: {self.runs_added} ({self.samples_added} samples); "
            f"already present: {self.already_present}; skipped: {self.skipped}"
            + (f"; replaced by a more complete copy: {self.replaced}" if self.replaced else "")
        ]
        out += [f"  skipped {p}: {why}" for p, why in self.problems]
        out += [f"  sample count mismatch in {p}: {why}" for p, why in self.mismatches]
        return out


class DatabaseLocked(RuntimeError):
    """Another process held the results database's lock for longer than the wait allows."""

    user_error = True  # the CLI prints the message alone, without a traceback


LOCK_WAIT_S = 60.0
"""How long ``connect`` waits for another process's lock on the database (``STEERBOARD_DB_LOCK_WAIT``)."""


def _lock_holder(message: str) -> str:
    m = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", message)
    return f"PID {m.group(2)} ({m.group(1)})" if m else "another process"


def _connect_waiting(db: str | Path, read_only: bool, wait_s: float | None) -> Any:
    """``duckdb.connect``, waiting (bounded, with one message) while another process holds the file's lock."""
    import os
    import sys
    import time

    import duckdb

    if wait_s is None:
        wait_s = float(os.environ.get("STEERBOARD_DB_LOCK_WAIT", LOCK_WAIT_S))
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as ex:
            if "lock" not in str(ex).lower():
                raise
            holder = _lock_holder(str(ex))
            if time.monotonic() >= deadline:
                raise DatabaseLocked(
                    f"{db} is locked by {holder}; waited {wait_s:.0f} s (STEERBOARD_DB_LOCK_WAIT); "
                    "retry when that process has finished"
                ) from None
            if not told:
                print(f"steerboard: {db} is locked by {holder}; waiting up to {wait_s:.0f} s", file=sys.stderr)
                told = True
            time.sleep(0.25)


def connect(db: str | Path, read_only: bool = False, lock_wait_s: float | None = None) -> Any:
    """Open (and create or check the schema of) a results database.

    While another process writes the file, waits up to ``lock_wait_s`` (default :data:`LOCK_WAIT_S`, or
    ``$STEERBOARD_DB_LOCK_WAIT``) for its lock.

    Raises:
        SchemaError: when the file holds another schema version.
        DatabaseLocked: another process kept the lock for longer than the wait (the message names it).
    """
    if read_only:
        if not Path(db).exists():
            raise FileNotFoundError(f"results database not found: {db} (run `steerboard ingest` first)")
        con = _connect_waiting(db, True, lock_wait_s)
    else:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        con = _connect_waiting(db, False, lock_wait_s)
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
        if "://" not in s:
            # local folder: a plain walk (list_eval_logs costs ~3 s CPU per 1,000 local files), same rule as
            # Inspect's: every .eval file, and .json files named like Inspect logs (timestamp first)
            out += sorted(
                str(f)
                for f in p.rglob("*")
                if f.is_file()
                and (f.suffix == ".eval" or (f.suffix == ".json" and _LOG_JSON_NAME.match(f.name)))
            )
            continue
        if s.startswith("file://"):
            infos = list_eval_logs(s, formats=["eval", "json"], recursive=True)
            out += sorted(i.name.removeprefix("file://") for i in infos)
            continue
        from steerboard.storage import find_logs

        out += [r.url for r in find_logs(s)]
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


_VALUE_TO_FLOAT: Any = None


def _to_float(v: Any) -> float | None:
    """A score value as a float ("C"/"I" and the other Inspect value strings via ``value_to_float``)."""
    global _VALUE_TO_FLOAT
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        f = float(v)
        return None if math.isnan(f) else f
    if _VALUE_TO_FLOAT is None:
        from inspect_ai.scorer import value_to_float

        _VALUE_TO_FLOAT = value_to_float()
    try:
        f = _VALUE_TO_FLOAT(v)
    except Exception:  # noqa: BLE001 - anything unconvertible is stored as NULL
        return None
    return None if f is None or (isinstance(f, float) and math.isnan(f)) else float(f)


def _judge_of(spec: Any, summaries: Sequence[dict[str, Any]]) -> str | None:
    judge = (spec.task_args or {}).get("judge")
    if judge:
        return str(judge)
    for s in summaries[:50]:
        for sc in (s.get("scores") or {}).values():
            md = sc.get("metadata") or {}
            if md.get("judge"):
                return str(md["judge"])
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("type") == "text"
        )
    return "" if content is None else str(content)


def _input_text(inp: Any) -> str:
    if isinstance(inp, str):
        return inp
    if isinstance(inp, list):
        return "\n".join(_content_text(m.get("content")) if isinstance(m, dict) else str(m) for m in inp)
    return json.dumps(inp, default=str)


def task_name(task: str) -> str:
    """A log's task name without its registry prefix (``steerboard/xstest`` -> ``xstest``), as every launcher
    names it: ``inspect eval tasks/xstest.py`` logs ``xstest``, ``steerboard run`` and ``inspect eval
    steerboard/xstest`` log ``steerboard/xstest``."""
    return task.split("/")[-1]


#: Generation settings that change a reply; a control must share them with the run it is compared with.
GENERATION_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop_seqs", "system_message")


def generation_of(hdr: Any) -> dict[str, Any]:
    """The generation settings a run was given: the task's own config (``plan.config``) overridden by the
    eval's (``eval.model_generate_config``), keeping only :data:`GENERATION_KEYS` that are set."""
    out: dict[str, Any] = {}
    for cfg in (getattr(getattr(hdr, "plan", None), "config", None), getattr(hdr.eval, "model_generate_config", None)):
        if cfg is None:
            continue
        for k in GENERATION_KEYS:
            v = getattr(cfg, k, None)
            if v is not None:
                out[k] = v
    return out


def _bad_keys(run_task: str, listing: Listing | None) -> list[tuple[MetricSpec, float]]:
    """(metric, the per-sample value that counts against the method) for the task's headline metrics."""
    if listing is None or run_task not in listing.tasks:
        return []
    return [(m, 0.0 if m.higher_is_better else 1.0) for m in listing.tasks[run_task].metrics if m.headline]


class _Reader:
    """Sample summaries and full samples of one log as plain dicts.

    Finished local ``.eval`` logs are zip files whose ``summaries.json`` holds the sample summaries Inspect
    wrote (already thinned) and ``samples/<id>_epoch_<n>.json`` each sample; reading those members directly
    skips re-validating every record with pydantic, which measured 0.11 s of the 0.13 s per 1,000-sample log
    and alone would exceed the ingest budget (1,000 logs in 60 s). Any other log (``.json``, remote, in
    progress) goes through Inspect's reader (``read_eval_log_sample_summaries`` / ``read_eval_log_sample``).
    The header is always read and validated by Inspect first.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.zip: Any = None
        if path.endswith(".eval") and "://" not in path:
            import zipfile

            import inspect_ai.log  # noqa: F401 - installs Inspect's zstd support into zipfile

            try:
                z = zipfile.ZipFile(path)
                if "summaries.json" in set(z.namelist()):
                    self.zip = z
                else:
                    z.close()
            except Exception:  # noqa: BLE001 - fall back to Inspect's reader
                self.zip = None

    def summaries(self) -> list[dict[str, Any]]:
        if self.zip is not None:
            data = json.loads(self.zip.read("summaries.json"))
            if isinstance(data, list):
                return data
        from inspect_ai.log import read_eval_log_sample_summaries

        return [
            s.model_dump(mode="json", exclude_none=True) for s in read_eval_log_sample_summaries(self.path)
        ]

    def sample(self, sid: Any, epoch: int) -> tuple[str, str]:
        """(prompt, response) text of one sample."""
        if self.zip is not None:
            try:
                d = json.loads(self.zip.read(f"samples/{sid}_epoch_{epoch}.json"))
                msgs = [m for m in d.get("messages") or [] if isinstance(m, dict)]
                response = _content_text((d.get("output") or {}).get("completion"))
                if msgs and msgs[-1].get("role") == "assistant":
                    msgs = msgs[:-1]
                if len(msgs) > 1:
                    prompt = "\n".join(f"[{m.get('role')}] {_content_text(m.get('content'))}" for m in msgs)
                else:
                    prompt = _content_text(msgs[0].get("content")) if msgs else _input_text(d.get("input"))
                return prompt, response
            except KeyError:
                pass
        from inspect_ai.log import read_eval_log_sample

        full = read_eval_log_sample(self.path, id=sid, epoch=epoch, exclude_fields={"events", "store"})
        fm = list(full.messages)
        if fm and fm[-1].role == "assistant":
            fm = fm[:-1]
        prompt = "\n".join(f"[{m.role}] {m.text}" for m in fm) if len(fm) > 1 else (fm[0].text if fm else "")
        return prompt, (full.output.completion if full.output else "")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def read_log(path: str, listing: Listing | None) -> dict[str, Any]:
    """Read one log into row batches (runs in a worker process).

    The header comes from Inspect's reader (``read_eval_log(header_only=True)``), the samples from the log's
    sample summaries (see :class:`_Reader`). ``samples_df`` reads the same summaries but validates and
    extracts every record through JSONPath columns: 0.44 s per 1,000-sample log, 440 s for the benchmark.

    Returns:
        ``{"ok": True, "run": {...}, "samples": {...columns...}, ...}`` or ``{"ok": False, "error": str}``.
    """
    from inspect_ai.log import read_eval_log

    try:
        hdr = read_eval_log(path, header_only=True)
    except Exception as ex:  # noqa: BLE001 - any unreadable log is reported and skipped
        return {"ok": False, "error": f"unreadable log ({type(ex).__name__}: {str(ex)[:200]})"}
    spec = hdr.eval
    if hdr.status != "success":
        return {
            "ok": False,
            "error": f"partial log (status {hdr.status!r}, not 'success')",
            "eval_id": spec.eval_id,
        }
    reader = _Reader(path)
    try:
        d = _read_rows(path, hdr, reader, listing)
        expected = hdr.results.completed_samples if hdr.results else None
        if expected is not None and d["run"]["n_samples"] != expected:
            d["mismatch"] = (
                f"sample summaries list {d['run']['n_samples']} samples, the results {expected} completed"
            )
        return d
    except Exception as ex:  # noqa: BLE001
        return {"ok": False, "error": f"unreadable samples ({type(ex).__name__}: {str(ex)[:200]})"}
    finally:
        reader.close()


def _sample_key(s: dict[str, Any]) -> str:
    return f"{s.get('id')}#{int(s.get('epoch') or 1)}"


def _score_items(val: Any) -> tuple[list[tuple[str, float | None]], int]:
    """A score value as ``(key, number)`` items, and 1 when it records a judge error."""
    if isinstance(val, dict):
        jerr = 1 if _to_float(val.get("judge_error")) == 1.0 else 0
        return [(str(k), float(v) if type(v) is int else _to_float(v)) for k, v in val.items()], jerr
    if isinstance(val, list):
        return [(str(i), _to_float(v)) for i, v in enumerate(val)], 0
    return [("", _to_float(val))], 0


def _add_sample(
    s: dict[str, Any], cols: dict[str, dict[str, list[Any]]], scorers: set[str]
) -> tuple[dict[str, str], dict[tuple[str, str], float | None], dict[str, int]]:
    """Append one sample summary's rows (sample, tags, scores); returns its tags, values and judge errors."""
    s_cols, t_cols, v_cols = cols["samples"], cols["sample_tags"], cols["scores"]
    sid, epoch = s.get("id"), int(s.get("epoch") or 1)
    sk = f"{sid}#{epoch}"
    meta = s.get("metadata") or {}
    target = s.get("target")
    s_cols["sample_key"].append(sk)
    s_cols["sample_id"].append(str(sid))
    s_cols["epoch"].append(epoch)
    s_cols["input"].append(_input_text(s.get("input"))[:MAX_INPUT])
    s_cols["target"].append(target if isinstance(target, str) else json.dumps(target)[:MAX_INPUT])
    s_cols["metadata"].append(_ENCODE(meta))
    err = s.get("error")
    s_cols["error"].append(err if err is None or isinstance(err, str) else str(err))
    tags: dict[str, str] = {}
    for k, v in meta.items():
        tv = v if type(v) is str and len(v) <= 80 else tag_text(v)
        if tv is not None:
            tags[str(k)] = tv
            t_cols["sample_key"].append(sk)
            t_cols["key"].append(str(k))
            t_cols["value"].append(tv)
    sample_vals: dict[tuple[str, str], float | None] = {}
    sample_err: dict[str, int] = {}
    for scorer, sc in (s.get("scores") or {}).items():
        scorers.add(scorer)
        items, jerr = _score_items(sc.get("value"))
        sample_err[scorer] = jerr
        answer = sc.get("answer")
        answer = answer if isinstance(answer, str) else None
        for k, f in items:
            sample_vals[(scorer, k)] = f
            v_cols["sample_key"].append(sk)
            v_cols["scorer"].append(scorer)
            v_cols["key"].append(k)
            v_cols["value"].append(f)
            v_cols["answer"].append(answer)
            v_cols["judge_error"].append(jerr)
    return tags, sample_vals, sample_err


def _add_examples(
    chosen: dict[str, tuple[dict[str, Any], list[str]]], reader: _Reader, e_cols: dict[str, list[Any]]
) -> None:
    """Append the full prompt, response and verdicts of the chosen samples."""
    for sk, (s, reasons) in chosen.items():
        try:
            prompt, response = reader.sample(s.get("id"), int(s.get("epoch") or 1))
        except Exception as ex:  # noqa: BLE001 - a damaged sample entry must not lose the run
            prompt, response = _input_text(s.get("input")), f"(unreadable: {ex})"
        verdicts = {
            name: {
                "value": sc.get("value"),
                "answer": sc.get("answer"),
                "explanation": (sc.get("explanation") or "")[:500],
            }
            for name, sc in (s.get("scores") or {}).items()
        }
        e_cols["sample_key"].append(sk)
        e_cols["prompt"].append(prompt[:MAX_TEXT])
        e_cols["response"].append((response or "")[:MAX_TEXT])
        e_cols["verdicts"].append(json.dumps(verdicts, default=str, ensure_ascii=False))
        e_cols["reason"].append("; ".join(reasons) if reasons else "first samples")


def _run_row(
    path: str, hdr: Any, summaries: list[dict[str, Any]], n_judge_err: int, scorers: set[str]
) -> dict[str, Any]:
    """The run's row of the ``runs`` table (without submitter and ingest time)."""
    spec = hdr.eval
    method, _, model = spec.model.partition("/")
    log_metrics: dict[str, dict[str, float]] = {}
    if hdr.results is not None:
        for es in hdr.results.scores:
            log_metrics.setdefault(es.name, {}).update({k: m.value for k, m in es.metrics.items()})
    created = datetime.fromisoformat(spec.created) if isinstance(spec.created, str) else spec.created
    prov = provenance_of(spec)
    sample_keys = sorted(_sample_key(s) for s in summaries)
    return {
        "run_key": spec.eval_id,
        "log_path": path,
        "task": task_name(spec.task),
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
        "log_metrics": canonical_json(json_safe(log_metrics)),  # NaN (a group with nothing judged) as null
        "scorers": canonical_json(sorted(scorers)),
        "task_args_passed": canonical_json(getattr(spec, "task_args_passed", None) or {}),
        "sample_set": hashlib.md5(_ENCODE(sample_keys).encode()).hexdigest()[:16],
        "settings_key": prov.get("settings_key") if prov else None,
        "precision": precision_text(prov),
        "config_short": short_config(prov) if prov else None,
        "provenance": canonical_json(prov) if prov else None,
        "generation": canonical_json(generation_of(hdr)),
    }


def _read_rows(path: str, hdr: Any, reader: _Reader, listing: Listing | None) -> dict[str, Any]:
    spec = hdr.eval
    summaries = reader.summaries()
    # run_key is the same on every row: added as a constant column when the Arrow tables are built
    cols: dict[str, dict[str, list[Any]]] = {
        t: {c: [] for c in cs if c != "run_key"} for t, cs in _COLS.items()
    }
    n_judge_err = 0
    bad = _bad_keys(task_name(spec.task), listing)
    candidates: dict[str, list[tuple[dict[str, Any], MetricSpec]]] = {m.key: [] for m, _ in bad}
    scorers: set[str] = set()
    for s in summaries:
        tags, sample_vals, sample_err = _add_sample(s, cols, scorers)
        n_judge_err += sum(sample_err.values())
        for m, bad_value in bad:
            lst = candidates[m.key]
            if len(lst) >= EXAMPLES_PER_METRIC or sample_err.get(m.scorer, 0):
                continue
            if any(tags.get(k) != tag_text(v) for k, v in m.sample_filter):
                continue
            if sample_vals.get((m.scorer, m.sample_value or "")) == bad_value:
                lst.append((s, m))
    # full text for the worst samples (a handful per run)
    chosen: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for lst in candidates.values():
        for s, m in lst:
            sk = _sample_key(s)
            if sk not in chosen and len(chosen) >= MAX_EXAMPLES:
                continue
            chosen.setdefault(sk, (s, []))[1].append(m.title)
    if not chosen and summaries:
        chosen = {_sample_key(s): (s, []) for s in summaries[:2]}
    _add_examples(chosen, reader, cols["examples"])
    return {"ok": True, "run": _run_row(path, hdr, summaries, n_judge_err, scorers), **cols}


PROVENANCE_KEY = "steerboard"
"""Key of steerboard's record in ``eval.metadata`` (written by ``steerboard.methods.provenance``)."""

SETTINGS_NOT_RECORDED = "settings not recorded"

SHORT_CONFIG_CHARS = 90


def provenance_of(spec: Any) -> dict[str, Any] | None:
    """The log's ``eval.metadata["steerboard"]`` if it is a usable record (has a ``settings_key``), else None."""
    md = getattr(spec, "metadata", None) or {}
    prov = md.get(PROVENANCE_KEY) if isinstance(md, dict) else None
    if not isinstance(prov, dict) or not isinstance(prov.get("settings_key"), str):
        return None
    return prov


def precision_text(prov: dict[str, Any] | None) -> str | None:
    """``"float32"`` (parameters and matmuls alike) or ``"float32 params, bfloat16 matmuls"``; None if unrecorded."""
    if not prov:
        return None
    r = prov.get("resolved") or {}
    dtype, mm = r.get("dtype"), r.get("matmul_dtype")
    if dtype is None and mm is None:
        return None
    if dtype == mm or mm is None:
        return str(dtype)
    return f"{dtype} params, {mm} matmuls"


def run_declarations(run: dict[str, Any]) -> MethodDeclarations:
    """What the method of a run (a row of the ``runs`` table, or a dict with its ``method`` and ``provenance``)
    declares: recorded in its log, else declared by the installed method of that name, else the options every
    method shares (:func:`steerboard.methods.base.method_declarations`)."""
    prov = run.get("provenance")
    if isinstance(prov, str):
        return _declarations_of_text(run.get("method"), prov)
    return method_declarations(run.get("method"), prov if isinstance(prov, dict) else None)


@functools.lru_cache(maxsize=1024)
def _declarations_of_text(method: str | None, prov_text: str) -> MethodDeclarations:
    """:func:`run_declarations` of a ``runs`` row, whose provenance is JSON text (read once per text: a build
    asks for every run several times)."""
    try:
        prov = json.loads(prov_text)
    except json.JSONDecodeError:
        prov = None
    return method_declarations(method, prov if isinstance(prov, dict) else None)


def is_control(run: dict[str, Any]) -> bool:
    """Whether a run is of the control method (its method declares ``is_control``; ``base/``)."""
    return run_declarations(run).control


def short_config(prov: dict[str, Any], declarations: MethodDeclarations | None = None) -> str:
    """A row's short readable config: the preset (if any) and the resolved options that define the method,
    cut to :data:`SHORT_CONFIG_CHARS` characters (the run page shows everything).

    What is left out is what the method declares (``declarations``; default: those of the record's method, see
    :func:`steerboard.methods.base.method_declarations`): runtime, precision and detail options, and an opt-in
    option at its default (``deterministic``: only the fast mode is worth a label)."""
    decl = declarations or method_declarations(prov.get("method"), prov)
    r = dict(prov.get("resolved") or {})
    parts = []
    if r.get("preset"):
        parts.append(f"preset={r.pop('preset')}")
    for k, v in r.items():
        if k in decl.unlabelled or k == "preset" or v is None or decl.quiet(k, v):
            continue
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if len(text) > 24:
            text = text[:21] + "..."
        parts.append(f"{k}={text}")
    out = ", ".join(parts) or "(defaults)"
    return out if len(out) <= SHORT_CONFIG_CHARS else out[: SHORT_CONFIG_CHARS - 3] + "..."


def control_task_args(task_args: Any) -> Any:
    """The task arguments a control run is matched on: the run's own, less ``protocol``.

    The protocol is how a method is applied to each item (SafeEdit's ``per_instance``: the method edits the model
    for that item before answering it), so it makes a row of its own (``row_variant``), not another measurement:
    the control has no edit to apply, and its standard run answers the same items unedited, which is the paper's
    before-edit comparison. Every other argument must still match.
    """
    if not task_args:
        return task_args
    try:
        args = json.loads(task_args) if isinstance(task_args, str) else dict(task_args)
    except (TypeError, ValueError):
        return task_args
    if not isinstance(args, dict):
        return task_args
    args.pop("protocol", None)
    return json.dumps(args, sort_keys=True)


def base_match_key(run: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a ``base/`` run must share with a run for a delta: model, precision, task, task arguments (less the
    editing protocol, :func:`control_task_args`), judge, sample set and generation settings (None when the run's
    precision is not recorded: nothing can be shown to match)."""
    if run.get("precision") is None:
        return None
    return (
        run.get("model"), run.get("precision"), run.get("task"), control_task_args(run.get("task_args")),
        run.get("judge"), run.get("sample_set"), run.get("generation"),
    )


def choose_bases(runs: Sequence[dict[str, Any]]) -> dict[str, tuple[str | None, str]]:
    """For every run not of the control method (:func:`is_control`: ``base/``), the control run its deltas are
    taken against, or why there is none.

    Args:
        runs: current runs (rows of ``v_current_runs``).

    Returns:
        ``{run_key: (base run_key or None, reason)}``; the reason is ``""`` when a base was found.
    """
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    same_model_task: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    control = [is_control(r) for r in runs]
    for r, c in zip(runs, control):
        if not c:
            continue
        same_model_task.setdefault((r.get("model"), r.get("task")), []).append(r)
        k = base_match_key(r)
        if k is not None:
            by_key.setdefault(k, []).append(r)
    out: dict[str, tuple[str | None, str]] = {}
    for r, c in zip(runs, control):
        if c:
            continue
        k = base_match_key(r)
        cands = by_key.get(k, []) if k is not None else []
        if cands:
            best = max(cands, key=lambda b: (b.get("submitter") == r.get("submitter"), str(b.get("created"))))
            out[r["run_key"]] = (best["run_key"], "")
            continue
        others = same_model_task.get((r.get("model"), r.get("task")), [])
        if not others:
            why = "no base/ run of this model on this task"
        elif k is None:
            why = f"{SETTINGS_NOT_RECORDED}: precision unknown, so no base/ run can be shown to match"
        else:
            diffs = set()
            for b in others:
                if b.get("precision") != r.get("precision"):
                    diffs.add("precision")
                if b.get("judge") != r.get("judge"):
                    diffs.add("judge")
                if control_task_args(b.get("task_args")) != control_task_args(r.get("task_args")):
                    diffs.add("task arguments")
                if b.get("sample_set") != r.get("sample_set"):
                    diffs.add("samples")
                if b.get("generation") != r.get("generation"):
                    diffs.add("generation settings")
            why = ("no base/ run with the same model, precision, task arguments, judge, samples and generation "
                   "settings (base runs differ in " + (", ".join(sorted(diffs)) or "settings") + ")")
        out[r["run_key"]] = (None, why)
    return out


def _read_job(args: tuple[str, Listing | None]) -> tuple[str, dict[str, Any]]:
    """Read one log and turn its row batches into Arrow tables (cheap to send back from a worker process)."""
    import pyarrow as pa

    path, listing = args
    try:
        d = read_log(path, listing)
        if d["ok"]:
            types = _arrow_types()
            rk = d["run"]["run_key"]
            for table, cols in _COLS.items():
                t = types.get(table, {})
                n = len(d[table][cols[1]])
                d[table] = pa.table(
                    {
                        c: pa.array([rk] * n if c == "run_key" else d[table][c], type=t.get(c, pa.string()))
                        for c in cols
                    }
                )
        return path, d
    except Exception as ex:  # noqa: BLE001 - last-resort guard: one bad log never stops the batch
        return path, {"ok": False, "error": f"{type(ex).__name__}: {str(ex)[:200]}"}


def _delete_run(con: Any, run_key: str) -> None:
    """Remove one run and its rows (before a more complete copy of it is inserted)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("runs", *_COLS):
            con.execute(f"DELETE FROM {table} WHERE run_key = ?", [run_key])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _flush(con: Any, batch: list[dict[str, Any]], submitter: str) -> None:
    import pyarrow as pa

    if not batch:
        return
    now = datetime.now(timezone.utc)
    run_cols = [
        "run_key", "submitter", "log_path", "task", "task_version", "task_id", "task_args", "model_string",
        "method", "model", "method_config", "judge", "created", "status", "total_samples", "completed_samples",
        "n_samples", "n_judge_errors", "log_metrics", "scorers", "ingested_at", "task_args_passed", "sample_set",
        "settings_key", "precision", "config_short", "provenance", "generation",
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
            arrow = pa.concat_tables([d[table] for d in batch])  # noqa: F841 - read by DuckDB's replacement scan
            con.execute(f"INSERT INTO {table} SELECT {', '.join(cols)} FROM arrow")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _new_paths(con: Any, paths: list[str], remote: dict[str, Any], summary: IngestSummary) -> list[str]:
    """The paths not already ingested as they are now (same size and mtime, or same content hash)."""
    seen_files = {
        (r[0], r[1], r[2]) if r[3] is None else (r[0], r[1], r[3])
        for r in con.execute(
            "SELECT path, size, mtime, content_hash FROM ingest_files WHERE outcome = 'added'"
        ).fetchall()
    }
    todo: list[str] = []
    for p in paths:
        if p in remote:
            if (p, remote[p].size, remote[p].content_hash) in seen_files:
                summary.already_present += 1
                continue
            todo.append(p)
            continue
        st = Path(p).stat() if "://" not in p else None
        if st is not None and (p, st.st_size, st.st_mtime) in seen_files:
            summary.already_present += 1
            continue
        todo.append(p)
    return todo


def _file_identity(
    path: str, d: dict[str, Any], url_of: dict[str, str], remote: dict[str, Any]
) -> tuple[str, Any, Any, str | None]:
    """(path, size, mtime, content hash) of a read log; a staged remote log gets back its URL."""
    if path in url_of:
        path = url_of[path]
        if d.get("ok"):
            d["run"]["log_path"] = path
        return path, remote[path].size, None, remote[path].content_hash
    st = Path(path).stat() if "://" not in path else None
    size, mtime = (st.st_size, st.st_mtime) if st else (None, None)
    return path, size, mtime, None


def _store_results(
    con: Any,
    results: Iterable[tuple[str, dict[str, Any]]],
    ident: Callable[[str, dict[str, Any]], tuple[str, Any, Any, str | None]],
    known: dict[str, int],
    summary: IngestSummary,
    submitter: str,
    batch_size: int,
    now: datetime,
) -> list[tuple[Any, ...]]:
    """Insert the read runs in batches (a more complete copy replaces a stored run); returns the file rows."""
    file_rows: list[tuple[Any, ...]] = []
    batch: list[dict[str, Any]] = []
    for path, d in results:
        path, size, mtime, chash = ident(path, d)
        if not d["ok"]:
            summary.skipped += 1
            summary.problems.append((path, d["error"]))
            warnings.warn(f"steerboard ingest: skipped {path}: {d['error']}", stacklevel=3)
            file_rows.append((path, size, mtime, d.get("eval_id"), "skipped", d["error"], now, chash))
            continue
        rk = d["run"]["run_key"]
        if d.get("mismatch"):
            summary.mismatches.append((path, d["mismatch"]))
            warnings.warn(f"steerboard ingest: {path}: {d['mismatch']}", stacklevel=3)
        if rk in known:
            if d["run"]["n_samples"] <= known[rk]:
                summary.already_present += 1
                file_rows.append((path, size, mtime, rk, "added", "already present", now, chash))
                continue
            # a more complete copy of a stored run (e.g. after a log with a short summary) replaces it
            _flush(con, batch, submitter)
            batch = []
            _delete_run(con, rk)
            summary.replaced += 1
            summary.runs_added -= 1
            warnings.warn(
                f"steerboard ingest: {path} replaces run {rk}: {d['run']['n_samples']} samples, the "
                f"stored copy had {known[rk]}", stacklevel=3,
            )
        known[rk] = d["run"]["n_samples"]
        batch.append(d)
        summary.runs_added += 1
        summary.samples_added += d["samples"].num_rows
        file_rows.append((path, size, mtime, rk, "added", None, now, chash))
        if len(batch) >= batch_size:
            _flush(con, batch, submitter)
            batch = []
    _flush(con, batch, submitter)
    return file_rows


def _in_order(ex: Any, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    """``fn`` over ``items`` on the executor ``ex``, results in the order of ``items``.

    Unlike ``Executor.map``, which submits every item before returning, this submits items as ``items``
    produces them (e.g. as downloads arrive) and hands back each finished result at the head of the queue
    meanwhile, so the caller stores results while later items are still being produced.
    """
    from collections import deque

    pending: deque[Any] = deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            while pending and pending[0].done():
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()


def _stage_remote(todo: Sequence[str], remote: dict[str, Any]) -> tuple[Any, Iterator[tuple[str, str]]]:
    """(scratch folder or None, iterator of ``(url, local path)`` as downloads arrive) for the remote logs in
    ``todo``: they are fetched into a scratch folder and read there (the fast local reader); reading starts on
    the first ones while later ones are still in transit; rows keep the URL as their log path."""
    import tempfile

    from steerboard import storage

    stage = tempfile.TemporaryDirectory(prefix="steerboard-ingest-") if any(p in remote for p in todo) else None
    arrivals = storage.download_iter([p for p in todo if p in remote], stage.name) if stage else iter(())
    return stage, arrivals


def _insert_file_rows(con: Any, file_rows: list[tuple[Any, ...]]) -> None:
    """Record each log file seen (path, size, mtime, run key, outcome, message, time, content hash)."""
    if file_rows:
        import pyarrow as pa

        names = ["path", "size", "mtime", "run_key", "outcome", "message", "ingested_at", "content_hash"]
        files_tbl = pa.table({n: [r[i] for r in file_rows] for i, n in enumerate(names)})  # noqa: F841
        con.execute(f"INSERT INTO ingest_files SELECT {', '.join(names)} FROM files_tbl")


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

    from steerboard import storage

    # remote locations (fsspec URLs): one listing each, with size and content hash (ETag) per object
    remote = {r.url: r for loc in locations if storage.is_url(loc) for r in storage.find_logs(str(loc))}
    paths = discover_logs([loc for loc in locations if not storage.is_url(loc)]) + sorted(remote)
    summary = IngestSummary(files_seen=len(paths))
    con = connect(db)
    try:
        known = dict(con.execute("SELECT run_key, n_samples FROM runs").fetchall())
        todo = _new_paths(con, paths, remote, summary)
        now = datetime.now(timezone.utc)
        stage, arrivals = _stage_remote(todo, remote)
        url_of: dict[str, str] = {}

        def ready() -> Iterator[tuple[str, Listing | None]]:
            """Reader jobs in ``todo`` order, a remote log's once it has arrived."""
            for p in todo:
                if p in remote:
                    url, lp = next(arrivals)
                    url_of[lp] = url
                    p = lp
                yield p, listing

        if workers > 1 and len(todo) > 1:
            # fork the readers while no DuckDB connection (and its threads) is open in this process, and
            # before the download threads start (a fork start method launches every worker at the first task)
            con.close()
            ex: ProcessPoolExecutor | None = ProcessPoolExecutor(max_workers=workers)
            ex.submit(int).result()
            results: Iterable[tuple[str, dict[str, Any]]] = _in_order(ex, _read_job, ready())
            con = connect(db)
        else:
            ex = None
            results = map(_read_job, ready())
        try:
            file_rows = _store_results(
                con,
                tqdm(results, total=len(todo), disable=not progress, desc="ingesting logs"),
                lambda path, d: _file_identity(path, d, url_of, remote),
                known, summary, submitter, batch_size, now,
            )  # fmt: skip
        finally:
            if ex is not None:
                ex.shutdown(cancel_futures=True)
            if stage is not None:
                arrivals.close()
                stage.cleanup()
        _insert_file_rows(con, file_rows)
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
        out[sub.name] = ingest_logs(
            [sub], db, submitter=sub.name, listing=listing, workers=workers, progress=progress
        )
    return out
