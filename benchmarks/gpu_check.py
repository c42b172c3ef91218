"""GPU check: the quick suite's method configurations on a CUDA GPU against CPU float32 greedy output.

For each method configuration (``base``, ``prompt``, ``sae``, ``actadd``, ``dinm``, ``dpo`` with a few training
pairs) the script sends the same XSTest prompts through the method's Inspect model provider (the path a suite
run takes) greedily for ``--tokens`` new tokens, on

* CPU, float32 (``-M device=cpu -M dtype=float32 -M matmul_dtype=float32``): the reference;
* the device under test in bfloat16 (``dtype=bfloat16``, what ``dtype=auto`` loads on CUDA) and in float32.

It prints, per configuration and device/dtype, generated tokens per second (after a warm-up request that loads
the model and fits the method) and how many prompts' first ``--tokens`` greedy tokens equal the CPU float32
ones (compared as decoded text).

Without a CUDA GPU it prints one line saying so and exits 0. ``--device cpu`` runs the same logic with the CPU as
the device under test (a dry run of the script, used by its test)::

    python benchmarks/gpu_check.py                                   # on a machine with a GPU
    python benchmarks/gpu_check.py --device cpu --model DIR --methods base,prompt --prompts 2 --tokens 4
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
import time
from typing import Any

# the quick suite's method configurations (steerboard/suites/quick.yaml), dpo with a few pairs
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", {}),
    "prompt": ("prompt", {}),
    "sae": ("sae", {}),
    "actadd": ("actadd", {}),
    "dinm": ("dinm", {}),
    "dpo": ("dpo", {"max_pairs": 8}),
}


def xstest_prompts(n: int) -> list[str]:
    """``n`` XSTest prompts spread over the file (safe and unsafe alike)."""
    from importlib import resources

    text = resources.files("steerboard.tasks").joinpath("data", "xstest", "xstest_prompts.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"))))
    return [r["prompt"] for r in rows[:: max(1, len(rows) // n)][:n]]


async def _generate(model: Any, prompts: list[str], tokens: int) -> tuple[list[str], float, int]:
    """(completions, seconds, generated tokens) for the prompts sent at once, after one warm-up request."""
    from inspect_ai.model import GenerateConfig

    config = GenerateConfig(max_tokens=tokens, temperature=0.0)
    await model.generate(prompts[0], config=config)  # loads the weights and fits the method
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(model.generate(p, config=config) for p in prompts))
    seconds = time.perf_counter() - t0
    n_tokens = sum((o.usage.output_tokens if o.usage else 0) for o in outs)
    return [o.completion for o in outs], seconds, n_tokens


def run_config(method: str, args: dict[str, Any], model: str, device: str, dtype: str, prompts: list[str],
               tokens: int) -> tuple[list[str], float]:
    """Completions and tokens/s of one method configuration on one device and dtype."""
    from inspect_ai.model import get_model

    opts = {**args, "device": device, "dtype": dtype}
    if dtype == "float32":
        opts["matmul_dtype"] = "float32"  # no bfloat16 linear layers: the float32 reference is float32 throughout
    m = get_model(f"{method}/{model}", memoize=False, **opts)
    texts, seconds, n_tokens = asyncio.run(_generate(m, prompts, tokens))
    return texts, n_tokens / seconds if seconds > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="device under test: cuda (default) or cpu (a dry run)")
    ap.add_argument("--model", default="smollm2-135m", help="model alias or local directory")
    ap.add_argument("--methods", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--prompts", type=int, default=8, help="XSTest prompts")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens compared per prompt")
    ap.add_argument("--dpo-pairs", type=int, default=8, help="DPO training pairs (max_pairs)")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in CONFIGS]
    if bad:
        print(f"gpu_check: unknown method configuration(s) {', '.join(bad)}; valid: {', '.join(CONFIGS)}",
              file=sys.stderr)
        return 2
    if a.device not in ("cuda", "cpu"):
        print(f"gpu_check: --device {a.device!r}: valid: cuda, cpu", file=sys.stderr)
        return 2
    from steerboard._runtime_env import configure_openmp

    configure_openmp()  # before torch loads (libgomp reads its wait setting once)

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU available (torch.cuda.is_available() is False); nothing was run")
        return 0
    prompts = xstest_prompts(a.prompts)
    name = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    print(f"gpu_check: {a.model}, {len(prompts)} XSTest prompts, {a.tokens} greedy tokens; device under test: "
          f"{a.device} ({name}); reference: cpu float32")
    print(f"{'configuration':<14} {'device':<6} {'dtype':<9} {'tokens/s':>9}  equal to cpu float32")
    for key in methods:
        method, margs = CONFIGS[key]
        if key == "dpo":
            margs = {**margs, "max_pairs": a.dpo_pairs}
        ref, ref_tps = run_config(method, margs, a.model, "cpu", "float32", prompts, a.tokens)
        print(f"{key:<14} {'cpu':<6} {'float32':<9} {ref_tps:>9.1f}  (reference)", flush=True)
        for dtype in ("bfloat16", "float32"):
            texts, tps = run_config(method, margs, a.model, a.device, dtype, prompts, a.tokens)
            same = sum(x == y for x, y in zip(texts, ref))
            print(f"{key:<14} {a.device:<6} {dtype:<9} {tps:>9.1f}  {same}/{len(prompts)} prompts", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
