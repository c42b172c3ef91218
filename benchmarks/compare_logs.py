"""Compare two folders of suite logs sample by sample: completions and scores of every (configuration, task,
task arguments, sample id, epoch) both folders hold.

Used to check that a refactor changed no sample (the same suite before and after, on one machine) and that a
subset run (``--limit-scale``) reproduces the full run's samples (batch invariance). A sample's "completion" is
its output text; for multi-part tasks, what they record instead (SafeEdit's replies, Crescendo's turns).

Usage::

    python benchmarks/compare_logs.py LOGS_A LOGS_B [--show 10]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any


def _completion(sample: Any) -> str | None:
    md = sample.metadata or {}
    if sample.output is not None and sample.output.completion:
        return sample.output.completion
    if md.get("responses"):
        return json.dumps(md["responses"], sort_keys=True)
    if md.get("crescendo"):
        return json.dumps([t.get("response") for t in md["crescendo"].get("turns", [])])
    return None


def index(folder: str) -> dict[tuple[Any, ...], tuple[str | None, str]]:
    """``{(model, settings key, task, task args, sample id, epoch): (completion, scores as JSON)}``."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    out: dict[tuple[Any, ...], tuple[str | None, str]] = {}
    for info in list_eval_logs(folder, recursive=True):
        log = read_eval_log(info)
        sb = (log.eval.metadata or {}).get("steerboard") or {}
        run = (str(log.eval.model), sb.get("settings_key"), str(log.eval.task).split("/")[-1],
               json.dumps(log.eval.task_args or {}, sort_keys=True))  # fmt: skip
        for s in log.samples or []:
            scores = {k: v.value for k, v in (s.scores or {}).items()}
            out[run + (s.id, s.epoch)] = (_completion(s), json.dumps(scores, sort_keys=True, default=str))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="first log folder (searched recursively)")
    ap.add_argument("b", help="second log folder")
    ap.add_argument("--show", type=int, default=10, help="list at most this many differing samples")
    args = ap.parse_args()
    a, b = index(args.a), index(args.b)
    common = sorted(set(a) & set(b), key=str)
    counts: Counter[tuple[str, bool, bool]] = Counter()
    differ = []
    for k in common:
        counts[(k[2], a[k][0] == b[k][0], a[k][1] == b[k][1])] += 1
        if a[k] != b[k]:
            differ.append(k)
    print(f"samples in both: {len(common)} (of {len(a)} and {len(b)}); differing: {len(differ)}")
    for (task, same_c, same_s), n in sorted(counts.items()):
        print(f"  {task:14s} completion {'same' if same_c else 'DIFF'}  scores {'same' if same_s else 'DIFF'}: {n}")
    for k in differ[: args.show]:
        print(f"  differs: {k[0]}@{k[1]} {k[2]} sample {k[4]!r} epoch {k[5]}")


if __name__ == "__main__":
    main()
