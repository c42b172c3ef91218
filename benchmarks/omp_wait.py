"""Benchmark: decode-step time of the embedded model under OpenMP wait settings and thread layouts.

Why it matters: torch's CPU kernels run on OpenMP (libgomp). A decode step is ~1,500 short kernels;
how OpenMP's idle threads wait between them decides a large share of the step time on 2 cores.
Each setting runs in a fresh subprocess (libgomp reads its environment once, at load):

* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once; what ``make`` exports for a shared machine);
* ``spin10k``: ``GOMP_SPINCOUNT=10000`` (steerboard's default, set where an engine is about to be created);
* ``default``: libgomp's own default (spin up to 300,000 iterations).

and under three conditions: ``alone`` (one thread team), ``2 teams`` (a second thread has run a
parallel torch op -- libgomp then throttles every wait, which is why steerboard runs all torch work on
one thread), ``busy`` (another process spinning on one core). Prints the median batch-16 decode step.

Usage::

    python benchmarks/omp_wait.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

SETTINGS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "default": {},
}
CONDITIONS = ("alone", "2 teams", "busy")

CHILD = r"""
import json, sys, threading, time
import torch
from steerboard.engine import Engine, new_kv_cache
cond = sys.argv[1]
eng = Engine.load("smollm2-135m")
m = eng.model
if cond == "2 teams":  # another live thread has run one parallel op: its thread team stays alive
    ran = threading.Event()
    def other():
        torch.randn(512, 512) @ torch.randn(512, 512)
        ran.set()
        time.sleep(3600)
    threading.Thread(target=other, daemon=True).start()
    ran.wait()
ids = torch.randint(100, 1000, (16, 60))
times = []
with torch.inference_mode():
    out = m(input_ids=ids, past_key_values=new_kv_cache(m.config), use_cache=True, logits_to_keep=1)
    cache, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(40):
        t0 = time.perf_counter()
        out = m(input_ids=tok, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t0)
print(json.dumps(sorted(times[5:])))
"""


def measure(setting: str, cond: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(SETTINGS[setting])
    # torch loads before the engine in the child, so steerboard's default (steerboard/_runtime_env.py) is not set
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if cond == "busy" else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, cond], env=env, capture_output=True, text=True, check=True
        )
    finally:
        if busy is not None:
            busy.kill()
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1])) * 1000


def main() -> None:
    rows = {s: {c: measure(s, c) for c in CONDITIONS} for s in SETTINGS}
    print("median batch-16 decode step of the embedded model (ms), bfloat16 matmuls where the CPU has them")
    print(f"{'setting':<10}" + "".join(f"{c:>10}" for c in CONDITIONS))
    for s, r in rows.items():
        print(f"{s:<10}" + "".join(f"{r[c]:>10.1f}" for c in CONDITIONS))
    base = rows["spin10k"]["alone"]
    print(f"\npassive / spin10k (alone): {rows['passive']['alone'] / base:.2f}x slower; "
          f"spin10k with 2 teams / alone: {rows['spin10k']['2 teams'] / base:.2f}x")


if __name__ == "__main__":
    main()
