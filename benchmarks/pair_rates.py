"""Measure seconds per sample of every submission-suite task on this machine; write ``steerboard/suites/rates.json``.

``steerboard run --dry-run`` (and the start of every ``steerboard run``) estimates each pair's time as its
sample count times its task's seconds per sample: from the finished logs under ``--log-dir`` when they hold
enough samples of the task, else from the reference rates this script writes. It runs ``base/`` on the
embedded model over every task of the submission suite, with the suite's task options and generation settings
and a small limit each, in one ``steerboard run`` (so one model load, as in a real suite), and divides each
pair's time by its samples.

Usage::

    python benchmarks/pair_rates.py [--scale 1] [--write]      # --write updates steerboard/suites/rates.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RATES = ROOT / "steerboard" / "suites" / "rates.json"
LIMITS = {"side_effects": 24, "xstest": 24, "phtest": 24, "jbb_refusal": 24, "crescendo": 10, "safeedit": 10,
          "mmlu": 60, "truthfulqa": 60, "gsm8k": 10}
"""Samples per task: enough that the model load weighs little, few enough to finish in minutes."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every limit")
    ap.add_argument("--write", action="store_true", help="write steerboard/suites/rates.json")
    ap.add_argument("--only", action="append", metavar="TASK",
                    help="measure only these tasks (repeatable); --write then updates only their rates")
    args = ap.parse_args()
    from steerboard.runner.estimate import MIN_RATE_SAMPLES, measured_rates

    suite = yaml.safe_load((ROOT / "steerboard" / "suites" / "submission.yaml").read_text())
    tasks = [dict(t, limit=max(MIN_RATE_SAMPLES, round(LIMITS[t["name"]] * args.scale)))
             for t in suite["tasks"] if t["name"] in LIMITS  # wildguard: gated data
             and (not args.only or t["name"] in args.only)]
    # the first pair also pays the model load: a cheap one first
    tasks.sort(key=lambda t: t["name"] != "side_effects")
    calib = {**suite, "name": "rates", "tasks": tasks}
    with tempfile.TemporaryDirectory(prefix="sb-rates-") as tmp:
        path = Path(tmp) / "rates.yaml"
        path.write_text(yaml.safe_dump(calib))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "steerboard.cli", "run", "--suite", str(path), "--log-dir",
                               str(Path(tmp) / "logs"), "--display", "none"], text=True)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(f"the calibration run failed (rc {proc.returncode})", file=sys.stderr)
            return 1
        rates = measured_rates(Path(tmp) / "logs")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    record = {
        "machine": f"{platform.node() or 'dev machine'}: {os.cpu_count()} CPUs, {platform.machine()}, "
                   f"load average {load:.1f} when measured" if load is not None else platform.node(),
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": "python benchmarks/pair_rates.py --write",
        "model": suite["model"], "method": "base",
        "tasks": {t: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for t, r in rates.items()},
    }
    if "xstest" in rates:  # WildGuard (gated data) is the same kind of task: prompts answered and judged
        record["tasks"]["wildguard"] = {**record["tasks"]["xstest"], "as": "xstest"}
    if args.only and RATES.is_file():  # the other tasks keep their recorded rates (each says when it was taken)
        old = json.loads(RATES.read_text())
        for r in record["tasks"].values():
            r["measured"], r["machine"] = record["measured"], record["machine"]
        record = {**old, "tasks": {**old.get("tasks", {}), **record["tasks"]}}
    print(json.dumps(record, indent=2))
    print(f"calibration run: {wall:.0f} s")
    if args.write:
        RATES.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {RATES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
