"""Benchmark: steerboard's shared engine (``base/``) vs Inspect's built-in ``hf/`` provider.

Same chat prompts, same local model directory (the embedded SmolLM2-135M-Instruct), greedy, 64 new
tokens, the same ``max_connections``; both run through ``inspect_ai.eval`` in this one process, one
after the other, for each setting. Prints output tokens/s for each, the ratio, how many greedy
texts match, and the forward-pass bound (tokens/s of a plain batched forward pass of the same model).

Usage::

    python benchmarks/engine_vs_inspect_hf.py                 # 128 prompts, connections 16 and 64
    python benchmarks/engine_vs_inspect_hf.py --samples 64 --connections 16 --repeats 1

Model loading is excluded (both providers are created before timing); output tokens are counted by
re-tokenizing each completion with the model's tokenizer, so both sides are counted the same way.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_prompts(n: int) -> list[str]:
    """XSTest prompts shipped with the xstest task (safe and unsafe mixed), repeated if needed."""
    candidates = []
    try:
        candidates.append(Path(str(resources.files("steerboard.tasks"))) / "data" / "xstest" / "xstest_prompts.csv")
    except ModuleNotFoundError:  # pragma: no cover
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest" / "xstest_prompts.csv")
    for path in candidates:
        if path.is_file():
            with open(path, newline="") as fh:
                prompts = [row["prompt"] for row in csv.DictReader(fh)]
            break
    else:
        raise SystemExit(f"no XSTest prompts found in {candidates}")
    prompts = prompts[::3] + prompts[1::3] + prompts[2::3]  # interleave types
    return (prompts * (n // len(prompts) + 1))[:n]


def forward_bound(model_dir: str, prompts: list[str], batch: int, new_tokens: int) -> float:
    """Tokens/s of one plain batched forward pass over prompt + ``new_tokens`` positions."""
    import torch

    from steerboard.engine import Engine

    eng = Engine.load(model_dir)
    seqs = [eng.chat_ids([{"role": "user", "content": p}]) + [eng.tokenizer.eos_token_id] * new_tokens for p in prompts[:batch]]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.inference_mode():
            eng.forward(seqs)
        times.append(time.perf_counter() - t0)
    return sum(len(s) for s in seqs) / statistics.median(times)


def run_eval(model, prompts: list[str], connections: int, new_tokens: int, log_dir: str) -> tuple[float, list[str]]:
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.solver import generate

    task = Task(dataset=[Sample(input=p, id=i) for i, p in enumerate(prompts)], solver=generate(), name="bench")
    t0 = time.perf_counter()
    logs = eval(
        task,
        model=model,
        max_connections=connections,
        max_tokens=new_tokens,
        temperature=0.0,
        log_dir=log_dir,
        display="none",
        log_samples=True,
    )
    secs = time.perf_counter() - t0
    log = logs[0]
    if log.status != "success":
        raise RuntimeError(f"eval failed: {log.error}")
    texts = [""] * len(prompts)
    for s in log.samples or []:
        texts[int(s.id)] = s.output.completion
    return secs, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=1, help="runs per provider and setting (median reported)")
    ap.add_argument("--log-dir", default="benchmarks/out/engine_logs")
    args = ap.parse_args()

    from inspect_ai.model import get_model
    from transformers import AutoTokenizer

    from steerboard.models import resolve_model

    model_dir = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_prompts(args.samples)

    print(f"model: {model_dir}\nprompts: {len(prompts)}, greedy, {args.new_tokens} new tokens, torch threads: "
          f"{__import__('torch').get_num_threads()}")
    bound = forward_bound(model_dir, prompts, max(args.connections), args.new_tokens)
    print(f"forward-pass bound (batch {max(args.connections)}, one plain forward): {bound:.0f} tok/s\n")

    ours = get_model("base/smollm2-135m")
    rows = []
    for conn in args.connections:
        hf = get_model(f"hf/{model_dir}", do_sample=False, batch_size=conn)
        res: dict[str, list[float]] = {"base": [], "hf": []}
        texts: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, model in (("hf", hf), ("base", ours)):
                secs, out = run_eval(model, prompts, conn, args.new_tokens, args.log_dir)
                ntok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in out)
                res[name].append(ntok / secs)
                texts[name] = out
        match = sum(a.strip() == b.strip() for a, b in zip(texts["base"], texts["hf"]))
        b, h = statistics.median(res["base"]), statistics.median(res["hf"])
        rows.append((conn, h, b, b / h, match, b / bound))
        del hf
    print(f"{'max_conn':>8} {'hf/ tok/s':>10} {'base/ tok/s':>12} {'ratio':>7} {'greedy texts equal':>19} {'base/bound':>11}")
    for conn, h, b, r, m, frac in rows:
        print(f"{conn:>8} {h:>10.0f} {b:>12.0f} {r:>7.2f} {f'{m}/{len(prompts)}':>19} {frac:>11.2f}")


if __name__ == "__main__":
    main()
