"""Ctrl-C at random moments of a two-method suite: every interrupt must exit 130 after its summary, with no
native abort, and the re-run must finish with no duplicate samples.

Each try starts ``steerboard run`` on a small two-method suite (``base`` and ``sae`` with its preset, on the embedded model, two
tasks, ``--limit``-sized), sends SIGINT after a delay drawn uniformly from the length of an uninterrupted run
(measured first, so interrupts land in model loads, method preparation, generation, scoring and the gaps
between pairs), and records the exit code, the suite summary and whether the process aborted. It then re-runs
the same command to completion and checks every pair's finished log: as many samples as the limit, each sample
id once, and no log left ``started``.

Usage::

    python benchmarks/interrupts.py --n 20 [--seed 0] [--limit 2] [--model smollm2-135m] [--json out.json]

Prints one line per try and a closing tally; exits 1 if any try went wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

STEERBOARD = [sys.executable, "-m", "steerboard.cli"]


def write_suite(folder: Path, model: str, limit: int) -> Path:
    suite = {
        "name": "interrupts",
        "model": model,
        "max_connections": 4,
        "methods": ["base", "sae"],
        "tasks": [
            {"name": "xstest", "limit": limit, "args": {"judge": "strmatch"}, "config": {"max_tokens": 16}},
            {"name": "jbb_refusal", "limit": limit, "args": {"judge": "strmatch"}, "config": {"max_tokens": 16}},
        ],
    }
    path = folder / "interrupts.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run(suite: Path, logs: Path, interrupt_after: float | None) -> dict[str, Any]:
    """One ``steerboard run``; SIGINT after ``interrupt_after`` seconds (None: run to the end)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*STEERBOARD, "run", "--suite", str(suite), "--log-dir", str(logs), "--display", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    sent = False
    if interrupt_after is not None:
        try:
            proc.wait(timeout=interrupt_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            sent = True
    out, err = proc.communicate(timeout=900)
    summary_file = logs / "suite-interrupts-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    return {
        "rc": proc.returncode, "seconds": round(time.monotonic() - t0, 1), "sent": sent,
        "aborted": "terminate called" in err or proc.returncode in (-6, 134),
        "statuses": [s["status"] for s in summary] if summary else None,
        "stderr_tail": err.strip().splitlines()[-3:],
    }


def duplicate_check(logs: Path, limit: int) -> list[str]:
    """Problems with the finished logs under ``logs``: a pair without exactly one finished log of ``limit``
    distinct samples, or a log left ``started``."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    problems: list[str] = []
    finished: Counter[str] = Counter()
    for info in list_eval_logs(str(logs)):
        log = read_eval_log(info)
        pair = str(Path(log.location.removeprefix("file://")).parent.relative_to(logs))
        if log.status == "started":
            problems.append(f"{pair}: a log left 'started'")
        if log.status != "success":
            continue
        finished[pair] += 1
        ids = [(s.id, s.epoch) for s in log.samples or []]
        if len(ids) != len(set(ids)):
            problems.append(f"{pair}: duplicate samples ({len(ids)} samples, {len(set(ids))} distinct)")
        if len(ids) != limit:
            problems.append(f"{pair}: {len(ids)} samples, expected {limit}")
    for pair, n in finished.items():
        if n != 1:
            problems.append(f"{pair}: {n} finished logs")
    if len(finished) != 4:
        problems.append(f"{len(finished)} finished pairs, expected 4")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="interrupts (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=2, help="samples per task (default 2)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", help="write every try's record here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sb-interrupts-") as tmp:
        root = Path(tmp)
        suite = write_suite(root, args.model, args.limit)
        timing = run(suite, root / "timing", None)
        if timing["rc"] != 0:
            print(f"the uninterrupted run failed (rc {timing['rc']}): {timing['stderr_tail']}", file=sys.stderr)
            return 1
        span = timing["seconds"]
        print(f"uninterrupted run: {span:.1f} s; interrupting {args.n} times at U(0.3, {span:.1f}) s")
        for i in range(args.n):
            logs = root / f"try{i}"
            delay = rng.uniform(0.3, span)
            first = run(suite, logs, delay)
            again = run(suite, logs, None)
            problems = duplicate_check(logs, args.limit)
            # a signal that reaches a process already past its last pair (exiting) finds a finished suite
            finished = first["rc"] == 0 and first["statuses"] is not None and set(first["statuses"]) == {"success"}
            ok_first = (first["rc"] == 130 and not first["aborted"] and first["statuses"] is not None
                        and "cancelled" in first["statuses"]) or finished
            ok = ok_first and again["rc"] == 0 and not again["aborted"] and not problems
            rec = {"try": i, "delay": round(delay, 2), "first": first, "rerun": again, "problems": problems, "ok": ok}
            records.append(rec)
            print(f"try {i:>2}  SIGINT at {delay:5.1f} s  rc {first['rc']:>4}  aborted {first['aborted']!s:<5}  "
                  f"summary {first['statuses']}  re-run rc {again['rc']}  duplicates/problems: "
                  f"{'; '.join(problems) or 'none'}  {'ok' if ok else 'FAILED'}", flush=True)
    interrupted = [r for r in records if r["first"]["rc"] != 0]
    print(f"\n{len(interrupted)} of {args.n} tries interrupted a running suite (the rest had finished its pairs "
          "when the signal came); "
          f"exit 130: {sum(r['first']['rc'] == 130 for r in interrupted)}/{len(interrupted)}; native aborts: "
          f"{sum(r['first']['aborted'] for r in records)}; re-runs with duplicate or missing samples: "
          f"{sum(bool(r['problems']) for r in records)}/{args.n}")
    if args.json:
        Path(args.json).write_text(json.dumps({"uninterrupted_seconds": span, "tries": records}, indent=2))
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
