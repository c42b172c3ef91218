"""How fast bad options fail, and that they fail before any model work (target: under 5 s each).

Times, as subprocesses (median of ``--repeats``), from a fresh interpreter to the error:

- ``inspect eval tasks/xstest.py --model dpo/smollm2-135m -T subset=foo`` (Inspect builds the model before
  the task: the provider must not train DPO there);
- ``steerboard run --method dpo --task xstest -T subset=foo`` (the suite path);
- ``steerboard run --suite BAD.yaml --dry-run`` for a suite with bad ``-M`` and ``-T`` values on several pairs.

Each must exit non-zero, name the bad option, and leave the artifact cache (where DPO adapters and fitted
directions go) unchanged. A baseline line times ``import inspect_ai`` alone, which every path needs (the
tasks are Inspect tasks). Run: ``.venv/bin/python benchmarks/fail_fast.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TASKS = Path(__file__).resolve().parents[1] / "tasks"

BAD_SUITE = """\
name: bad
methods:
  - {name: base}
  - {name: sae, args: {strengths: lots}}
  - {name: dpo, args: {beta: -1}}
tasks:
  - {name: xstest, limit: 2, args: {subset: foo}}
  - {name: jbb_refusal, limit: 2}
  - {name: gsm8k, limit: 2, args: {fewshot: 99}}
"""


def _artifacts() -> set[str]:
    from steerboard.paths import cache_dir

    root = cache_dir("artifacts")
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


def _time(cmd: list[str], needle: str, cwd: str) -> float:
    before = _artifacts()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, "STEERBOARD_DEBUG": ""})
    seconds = time.perf_counter() - t0
    if proc.returncode == 0 or needle not in proc.stderr + proc.stdout:
        raise SystemExit(f"{' '.join(cmd)}: expected a failure naming {needle!r}; got rc {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    if _artifacts() != before:
        raise SystemExit(f"{' '.join(cmd)}: the artifact cache changed (model work ran)")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "bad.yaml"
        suite.write_text(BAD_SUITE)
        cases = {
            "inspect eval dpo/ -T subset=foo": (
                [str(BIN / "inspect"), "eval", os.path.relpath(TASKS / "xstest.py", tmp), "--model",
                 "dpo/smollm2-135m", "-T", "subset=foo", "--log-dir", str(Path(tmp) / "logs")],
                "subset='foo'",
            ),
            "steerboard run dpo/ -T subset=foo": (
                [str(BIN / "steerboard"), "run", "--method", "dpo", "--task", "xstest", "-T", "subset=foo",
                 "--log-dir", str(Path(tmp) / "logs")],
                "subset='foo'",
            ),
            "steerboard run --suite bad.yaml --dry-run": (
                [str(BIN / "steerboard"), "run", "--suite", str(suite), "--dry-run"],
                "4 problem(s)",
            ),
        }
        base = []
        for _ in range(args.repeats):  # the floor: every path imports Inspect to build its tasks
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import inspect_ai"], check=True)
            base.append(time.perf_counter() - t0)
        label = "baseline: import inspect_ai"
        print(f"{label:<45} median {statistics.median(base):5.2f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in base)})")
        for name, (cmd, needle) in cases.items():
            times = [_time(cmd, needle, tmp) for _ in range(args.repeats)]
            print(f"{name:<45} median {statistics.median(times):5.2f} s  (runs: "
                  f"{', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
