"""One pair, run: :func:`run_pair`, what the local executor calls for each pair and a Ray actor for the pair it
is given.

A pair is one Inspect ``eval_set`` call into the pair's own log folder, so an interrupted pair resumes and a
finished one is skipped (eval_set skips finished logs). On a local folder the pair holds a lock file while it
runs, so two steerboard runs never write one pair at once; a log left ``started`` by a killed run is resumed from
and then removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from steerboard.runner.plan import Pair, RunSettings, pair_logs
from steerboard.runner.suite import build_task


def run_pair(pair: Pair, settings: RunSettings, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one pair and record how it went in its summary entry.

    Args:
        pair: the pair (method configuration, task, limit, log folder, generate config).
        settings: what every pair of the run shares (model, connections, model roles, display).
        entry: the summary entry to update in place (default: a new ``pair.entry()``); the caller's copy shows
            ``running`` while the eval runs, so an interrupted caller can mark it ``cancelled``.

    Returns:
        The entry: ``status`` (``success``, ``error`` or ``cancelled``), ``seconds``, ``log``, ``samples``,
        ``metrics``, ``error`` (its first line), and ``stale_logs``/``replaced_stale_logs`` when it resumed
        from a killed run's log. A KeyboardInterrupt propagates (the entry then still says ``running``).
    """
    entry = pair.entry() if entry is None else entry
    if "://" in pair.log_dir:  # an fsspec URL: no local lock file, and no stale-log clean-up
        from steerboard import storage

        storage.share_aws_data_loader()  # Inspect's S3 reads and flushes reuse parsed botocore data
        _eval_pair(pair, settings, entry, remote=True)
        return entry
    from filelock import FileLock, Timeout

    pair_dir = Path(pair.log_dir)
    pair_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(pair_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        entry["status"] = "error"
        entry["error"] = f"another steerboard run is writing {pair_dir} (lock {lock.lock_file})"
        return entry
    try:
        _eval_pair(pair, settings, entry, remote=False)
    finally:
        # removed while still held (filelock retries on an unlinked inode), so no run leaves a .lock behind
        with contextlib.suppress(OSError):
            os.unlink(lock.lock_file)
        lock.release()
    return entry


def _eval_pair(pair: Pair, settings: RunSettings, entry: dict[str, Any], *, remote: bool) -> None:
    """The pair's ``eval_set`` call (the caller holds the pair's lock), its log read into ``entry``."""
    from inspect_ai import eval_set

    pair_dir = Path(pair.log_dir)
    # holding the pair's lock, no other steerboard run writes here: a 'started' log is a killed run's
    stale = [] if remote else [log.location for log in pair_logs(pair_dir, pair.task, pair.limit) if log.status == "started"]
    if stale:
        entry["stale_logs"] = stale
    entry["status"] = "running"
    t0 = time.perf_counter()
    try:
        ok, logs = eval_set(
            tasks=[build_task(pair.task)],
            log_dir=pair.log_dir,
            model=f"{pair.method.name}/{settings.model}",
            model_args=pair.method.args,
            model_roles=settings.model_roles or None,
            limit=pair.limit,
            max_connections=settings.max_connections,
            display=settings.display,  # type: ignore[arg-type]
            retry_attempts=1,
            log_dir_allow_dirty=True,
            **pair.generate,
        )
    finally:
        entry["seconds"] = round(time.perf_counter() - t0, 1)
    log = logs[0] if logs else None
    if log is None:
        # eval_set swallows the KeyboardInterrupt of a cancelled eval and returns no logs: read the newest log of
        # this pair from disk to tell a Ctrl-C (status 'cancelled') from a failure
        written = [x for x in pair_logs(pair_dir, pair.task, pair.limit) if x.location not in stale]
        log = written[0] if written else None
    record_log(entry, log, ok)
    if entry["status"] == "success" and stale:
        entry["replaced_stale_logs"] = _remove_stale(stale)


def record_log(entry: dict[str, Any], log: Any, ok: bool) -> None:
    """Write a finished pair's log into its summary ``entry``: location, status, first error line, samples and
    numeric metrics."""
    entry["log"] = log.location if log else None
    if log is not None and log.status == "cancelled":
        entry["status"] = "cancelled"
    else:
        entry["status"] = "success" if ok and log is not None and log.status == "success" else "error"
    if log is not None and log.error is not None:
        entry["error"] = str(log.error.message).splitlines()[0] if log.error.message else "error"
    if log is not None and log.results:
        entry["samples"] = log.results.completed_samples
        entry["metrics"] = {
            f"{s.name}/{k}": round(v.value, 4)
            for s in log.results.scores for k, v in s.metrics.items()
            if isinstance(v.value, (int, float))
        }


def _remove_stale(locations: list[str]) -> list[str]:
    """Delete logs still ``started`` after their pair finished (a killed run's; eval_set resumed from them)."""
    from inspect_ai.log import read_eval_log

    removed = []
    for loc in locations:
        try:
            if read_eval_log(loc, header_only=True).status == "started":
                Path(loc.removeprefix("file://")).unlink()
                removed.append(loc)
        except (OSError, ValueError):
            continue
        except Exception:  # noqa: BLE001 - an unreadable stale log is left for ingest to skip
            continue
    return removed
