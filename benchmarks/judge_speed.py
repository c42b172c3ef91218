"""Benchmark: how long the offline refusal judge (``embed``) takes to label 1,000 responses.

Target: 1,000 responses in at most 60 s on the 2-core CPU machine. The responses are the first ``--n`` of
the shipped human-labelled refusal data (XSTest completions first, then jailbreak-evaluation responses),
so encoding cost is that of real model replies, and their prompts are in the judge's training data: every
reply goes through the cross-fit lookup to the fold model that never saw its prompt (the output counts the
verdicts per model, ``folds_used``). The encoder load (once per
process) is timed separately; the labelling time is the median of ``--repeats`` runs over the same 1,000
pairs on a fresh judge (the encoder stays loaded, as it does inside an eval). The 1-minute load average before
and after the timed runs is reported: other jobs on the machine slow the judge.

Usage::

    python benchmarks/judge_speed.py              # ~1-2 minutes on 2 cores
    python benchmarks/judge_speed.py --n 200 --repeats 1
    python benchmarks/judge_speed.py --n 400 --compare OTHER.json   # side by side with another artifact
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

TARGET_S = 60.0


def _cpu_name() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo`` where lscpu is missing)."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> int:
    """Run the benchmark and print a JSON summary (exit 1 when over the target)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="responses to label (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    ap.add_argument(
        "--compare",
        default=None,
        metavar="ARTIFACT",
        help="another refusal artifact to time in alternation with the shipped one (ratio of medians)",
    )
    args = ap.parse_args()
    if args.n < 1 or args.repeats < 1:
        ap.error("--n and --repeats must be at least 1")
    if args.compare and not os.path.isfile(args.compare):
        ap.error(f"--compare: artifact {args.compare} not found")

    from steerboard.scorers.embed import EmbedRefusalJudge, get_encoder
    from steerboard.scorers.training import load_refusal_examples

    ex = load_refusal_examples()
    if args.n > len(ex):
        ap.error(f"--n is at most {len(ex)} (the shipped labelled responses)")
    ex = ex[: args.n]
    prompts = [e.prompt for e in ex]
    responses = [e.response for e in ex]

    t0 = time.perf_counter()
    get_encoder()
    load_s = time.perf_counter() - t0

    load_before = os.getloadavg()[0]  # other jobs on the machine slow the judge: report them
    times = []
    cpu: list[float] = []
    other: list[float] = []
    for _ in range(args.repeats):
        judge = EmbedRefusalJudge()  # fresh judge: classifier read from disk each time
        t0, c0 = time.perf_counter(), time.process_time()
        verdicts = judge.judge_sync(prompts, responses)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # CPU seconds of all threads: less sensitive to other jobs
        if args.compare:  # alternate, so both see the same machine load
            t0 = time.perf_counter()
            EmbedRefusalJudge(args.compare).judge_sync(prompts, responses)
            other.append(time.perf_counter() - t0)
    assert len(verdicts) == len(responses)
    from collections import Counter

    folds_used = dict(sorted(Counter(str(v.fold) for v in verdicts).items()))
    med = statistics.median(times)
    out = {
        "n": len(responses),
        "mean_response_chars": round(sum(map(len, responses)) / len(responses)),
        "encoder_load_s": round(load_s, 2),
        "label_s_runs": [round(t, 2) for t in times],
        "label_s_median": round(med, 2),
        "per_1000_s": round(med * 1000 / len(responses), 2),
        "label_cpu_s_runs": [round(t, 2) for t in cpu],
        "target_per_1000_s": TARGET_S,
        "meets_target": med * 1000 / len(responses) <= TARGET_S,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "folds_used": folds_used,
    }
    if args.compare:
        out["compare"] = {
            "artifact": args.compare,
            "label_s_runs": [round(t, 2) for t in other],
            "ratio_shipped_over_compare": round(med / statistics.median(other), 3),
        }
    print(json.dumps(out, indent=1))
    return 0 if out["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
