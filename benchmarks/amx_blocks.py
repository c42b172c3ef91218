"""oneDNN capped below AMX vs AMX with fixed row blocks: speed and batch invariance, side by side.

Each configuration runs in its own subprocess (oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once, at its first use),
the configurations interleaved, ``--repeats`` times; prints medians. Per run: prefill tok/s (the prompts,
batched, ``max_new_tokens=1``: prompt tokens / s) and generation tok/s (``--tokens`` greedy tokens each,
batched: generated tokens / s, prefill included, as ``benchmarks/batch_vs_single.py --timing-repeats``) and,
with ``--lone K``, the same for the first K prompts run one by one.
With ``--identical N`` each configuration also runs ``benchmarks/batch_vs_single.py --n N --tokens 48
--settings auto`` once (prompts batched vs one by one).

Configurations: ``cap`` = ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``; ``amxB`` = ``ONEDNN_MAX_CPU_ISA=ALL``
with ``STEERBOARD_AMX_BLOCK_ROWS=B`` (the rows per oneDNN call inside ``precision.batch_invariant``), the same
in decode steps; ``amxBdD``: ``D`` rows per call in generation's decode steps (``precision.decode_blocks``).

Usage::

    python benchmarks/amx_blocks.py --n 32 --tokens 32 --repeats 3 --identical 32
    python benchmarks/amx_blocks.py --configs cap,amx16,amx32,amx64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _env(config: str) -> dict[str, str]:
    env = dict(os.environ)
    if config == "cap":
        env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"
        env.pop("STEERBOARD_AMX_BLOCK_ROWS", None)
        env.pop("STEERBOARD_AMX_DECODE_BLOCK_ROWS", None)
    elif config.startswith("amx"):
        env["ONEDNN_MAX_CPU_ISA"] = "ALL"
        rows, _, decode = config[3:].partition("d")
        env["STEERBOARD_AMX_BLOCK_ROWS"] = rows or "64"
        env["STEERBOARD_AMX_DECODE_BLOCK_ROWS"] = decode or rows or "64"
    else:
        raise SystemExit(
            f"unknown config {config!r}: cap, amxB (B = rows per block, 0 = no blocks) or amxBdD (D rows per "
            "block in decode steps)"
        )
    return env


def child(args: argparse.Namespace) -> None:
    from engine_vs_inspect_hf import load_prompts

    import steerboard  # noqa: F401  (first: OpenMP settings before torch loads)
    from steerboard import precision
    from steerboard.engine import Engine, GenerationRequest

    eng = Engine.load("smollm2-135m")
    ids = [eng.chat_ids([{"role": "user", "content": p}]) for p in load_prompts(args.n)]
    eng.generate([GenerationRequest(i, max_new_tokens=4) for i in ids[:8]])  # warm-up
    t0 = time.perf_counter()
    eng.generate([GenerationRequest(i, max_new_tokens=1) for i in ids])
    t1 = time.perf_counter()
    out = eng.generate([GenerationRequest(i, max_new_tokens=args.tokens) for i in ids])
    t2 = time.perf_counter()
    lone = [eng.generate([GenerationRequest(i, max_new_tokens=args.tokens)])[0] for i in ids[: args.lone]]
    t3 = time.perf_counter()
    print(json.dumps({
        "blocks": precision.row_blocks_needed(), "matmul_dtype": eng.matmul_dtype,
        "prefill": sum(map(len, ids)) / (t1 - t0),
        "generate": sum(len(o.token_ids) for o in out) / (t2 - t1),
        "lone": sum(len(o.token_ids) for o in lone) / (t3 - t2) if lone else 0.0,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="cap,amx64")
    ap.add_argument("--n", type=int, default=32, help="prompts (XSTest)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lone", type=int, default=0, help="also time this many prompts one by one (tok/s)")
    ap.add_argument("--identical", type=int, default=0, help="also run batch_vs_single.py with this many prompts")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for c in configs:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(args.n), "--tokens", str(args.tokens),
                   "--lone", str(args.lone)]
            res = subprocess.run(cmd, env=_env(c), capture_output=True, text=True, cwd=HERE, check=True)
            runs[c].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1} {c}: {runs[c][-1]}", flush=True)
    for c, rs in runs.items() if args.repeats else []:
        pre = [x["prefill"] for x in rs]
        gen = [x["generate"] for x in rs]
        print(f"{c}: blocks={rs[0]['blocks']} prefill median {statistics.median(pre):.0f} tok/s "
              f"(runs {', '.join(f'{x:.0f}' for x in pre)}); generate median {statistics.median(gen):.0f} tok/s "
              f"(runs {', '.join(f'{x:.0f}' for x in gen)})"
              + (f"; one by one median {statistics.median(x['lone'] for x in rs):.0f} tok/s" if args.lone else ""))
    for c in configs if args.identical else []:
        cmd = [sys.executable, str(HERE / "batch_vs_single.py"), "--n", str(args.identical), "--tokens", "48",
               "--settings", "auto"]
        res = subprocess.run(cmd, env=_env(c), capture_output=True, text=True, cwd=HERE, check=True)
        print(f"{c}: " + " | ".join(line for line in res.stdout.splitlines() if line.strip()))


if __name__ == "__main__":
    main()
