"""Run a suite's pairs for one task N times and check that every completion repeats exactly.

Each run is a full ``steerboard run`` of the selected pairs (fresh process state, fresh log folder, the
same suite, seed and settings), so batch composition varies with the machine's timing as it does for a
user; the engine's default batch-invariant path must give identical completions and scores anyway. Prints,
per method configuration, how many samples were identical in every run, and exits 1 if any differed.

Usage::

    python benchmarks/repeatability.py --runs 5                     # quick suite, xstest, every method
    python benchmarks/repeatability.py --runs 2 --methods base,sae --limit-scale 0.25
    python benchmarks/repeatability.py --runs 3 -M deterministic=false   # the opt-in fast mode, for contrast

Each run executes in its own subprocess (``--one-run``), as a user's ``steerboard run`` would: a process
keeps its method artifacts and engines loaded, which would make later runs in the same process unlike a
user's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import steerboard  # noqa: F401  (first: OpenMP settings before torch loads)


def one_run(args: argparse.Namespace) -> None:
    """Run the selected pairs once into ``--log-dir``; print the suite summary as JSON."""
    from steerboard.runner import load_suite, run_suite

    suite = load_suite(args.suite)
    extra = dict(kv.split("=", 1) for kv in args.model_arg)
    if extra:
        for m in suite.methods:
            m.args = {**m.args, **extra}
    summary = run_suite(
        suite, args.log_dir, only_tasks=[args.task], only_methods=args.methods or None,
        limit_scale=args.limit_scale, display="none",
    )
    print("SUMMARY " + json.dumps(summary, default=str))


def completions(log_path: str) -> dict[tuple[str, int], tuple[str, str]]:
    """``{(sample id, epoch): (completion, scores)}`` of one ``.eval`` log."""
    from inspect_ai.log import read_eval_log

    log = read_eval_log(log_path)
    out = {}
    for s in log.samples or []:
        scores = json.dumps({k: v.value for k, v in (s.scores or {}).items()}, sort_keys=True, default=str)
        out[(str(s.id), s.epoch)] = (s.output.completion, scores)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--task", default="xstest")
    ap.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m], default=[],
                    help="method names (default: every method of the suite)")
    ap.add_argument("--limit-scale", type=float, default=1.0)
    ap.add_argument("-M", dest="model_arg", action="append", default=[], metavar="KEY=VALUE",
                    help="method option added to every method (e.g. deterministic=false)")
    ap.add_argument("--log-dir", default=None, help="keep the runs' logs here (default: a temporary folder)")
    ap.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_run:
        one_run(args)
        return
    if args.runs < 2:
        raise SystemExit(f"--runs must be >= 2 to compare runs, got {args.runs}")
    for kv in args.model_arg:
        if "=" not in kv:
            raise SystemExit(f"-M {kv!r}: expected KEY=VALUE")

    root = Path(args.log_dir or tempfile.mkdtemp(prefix="steerboard-repeat-"))
    per_run: list[dict[str, dict[tuple[str, int], tuple[str, str]]]] = []
    for i in range(args.runs):
        cmd = [sys.executable, __file__, "--one-run", "--log-dir", str(root / f"run{i}"), "--suite", args.suite,
               "--task", args.task, "--limit-scale", str(args.limit_scale)]
        cmd += ["--methods", ",".join(args.methods)] if args.methods else []
        for kv in args.model_arg:
            cmd += ["-M", kv]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("SUMMARY ")), None)
        if proc.returncode != 0 or line is None:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"run {i} failed (exit {proc.returncode})")
        summary = json.loads(line.removeprefix("SUMMARY "))
        bad = [s for s in summary if s.get("status") != "success"]
        if bad:
            raise SystemExit(f"run {i}: pairs did not succeed: {[(s['method'], s.get('status')) for s in bad]}")
        label = {}
        for s in summary:
            key = f"{s['method']} {json.dumps(s.get('args') or {}, sort_keys=True)}"
            label[key] = completions(s["log"])
        per_run.append(label)
        print(f"run {i + 1}/{args.runs}: {len(summary)} pairs in {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\n{args.runs} runs of {args.suite} x {args.task} (logs in {root}):")
    print("| method (args) | samples | identical in all runs | differing samples |")
    print("|---|---|---|---|")
    differ_total = 0
    for key, first in per_run[0].items():
        differing = sorted(
            {sid for run in per_run[1:] for sid in first if run.get(key, {}).get(sid) != first[sid]}
        )
        differ_total += len(differing)
        shown = ", ".join(f"{sid}" for sid, _ in differing[:5]) + (" ..." if len(differing) > 5 else "")
        print(f"| {key} | {len(first)} | {len(first) - len(differing)} | {shown or '-'} |")
    sys.exit(1 if differ_total else 0)


if __name__ == "__main__":
    main()
