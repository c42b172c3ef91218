"""Benchmark: steerboard's shared engine (``base/``) vs Inspect's built-in ``hf/`` provider.

Same chat prompts, same local model directory (the embedded SmolLM2-135M-Instruct), greedy, 64 new
tokens, the same ``max_connections``; all run through ``inspect_ai.eval``, interleaved, for each
setting -- each provider run in a fresh subprocess of this script, as a user runs one ``inspect eval``
(in one process, whichever provider ran first would leave its torch thread team behind and libgomp
then throttles every later one; see ``steerboard/torch_thread.py``). Rows: Inspect ``hf/`` as it loads the model by default (float32);
``base/`` as it runs by default (on a CPU with native bfloat16 -- AMX / AVX512-BF16 -- its linear
layers run in bfloat16 with the residual stream, norms, attention and output head in float32, see
``steerboard/precision.py``); ``base/`` forced to exact float32 (equal precision to ``hf/``); and with
``--hf-bf16`` the whole ``hf/`` model in bfloat16; with ``--nondeterministic`` ``base/`` with
``-M deterministic=false`` (float32 ``sdpa`` attention instead of the batch-invariant float64 one). Prints output tokens/s, the ratio to ``hf/``, how
many greedy texts equal ``hf/``'s, and the share of the forward-pass bound (tokens/s of a plain
batched float32 forward pass of the same model).

Usage::

    python benchmarks/engine_vs_inspect_hf.py                 # 128 prompts, connections 16 and 64
    python benchmarks/engine_vs_inspect_hf.py --samples 64 --connections 16 --repeats 1

Model loading is excluded (both providers are created before timing); output tokens are counted by
re-tokenizing each completion with the model's tokenizer, so both sides are counted the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# before anything loads torch: the OpenMP wait policy (a short spin, see steerboard/_runtime_env.py), which
# libgomp reads once at load. Both providers run under it.
from steerboard._runtime_env import configure_openmp  # noqa: E402

configure_openmp()


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


CONFIGS = ("hf", "base", "base-fp32", "base-fullhead", "base-nondet", "base-f64attn", "hf-bf16")


def make_model(config: str, model_dir: str, conn: int):
    """The Inspect model for one benchmark configuration (loads weights)."""
    import torch
    from inspect_ai.model import get_model

    if config == "hf":
        return get_model(f"hf/{model_dir}", do_sample=False, batch_size=conn)
    if config == "hf-bf16":
        return get_model(f"hf/{model_dir}", do_sample=False, batch_size=conn, dtype=torch.bfloat16)
    if config == "base":
        return get_model("base/smollm2-135m")
    if config == "base-fp32":
        return get_model("base/smollm2-135m", matmul_dtype="float32")
    if config == "base-fullhead":
        return get_model("base/smollm2-135m", head_screen=False)
    if config == "base-nondet":
        return get_model("base/smollm2-135m", deterministic=False)
    if config == "base-f64attn":  # the float64 decode attention (run_worker sets STEERBOARD_DECODE_ATTENTION)
        return get_model("base/smollm2-135m")
    raise ValueError(f"unknown config {config!r}; valid: {', '.join(CONFIGS)}")


def worker(args: argparse.Namespace) -> None:
    """Run one configuration once and write {"secs", "texts"} as JSON to ``args.out``."""
    from steerboard.models import resolve_model

    model_dir = resolve_model("smollm2-135m")
    model = make_model(args.worker, model_dir, args.worker_conn)
    if hasattr(model.api, "engine"):
        # steerboard providers load weights and fit the method on first use; load them here so that, as for
        # hf/ (which loads in its constructor), only generation is timed
        _ = model.api.engine
    prompts = load_prompts(args.samples)
    secs, texts = run_eval(model, prompts, args.worker_conn, args.new_tokens, args.log_dir)
    Path(args.out).write_text(json.dumps({"secs": secs, "texts": texts}))


def run_worker(config: str, conn: int, args: argparse.Namespace) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, __file__, "--worker", config, "--worker-conn", str(conn), "--out", str(out),
            "--samples", str(args.samples), "--new-tokens", str(args.new_tokens), "--log-dir", args.log_dir,
        ]
        env = dict(os.environ)
        if config == "base-f64attn":
            env["STEERBOARD_DECODE_ATTENTION"] = "float64"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{config} at {conn} connections failed:\n{proc.stderr[-3000:]}")
        data = json.loads(out.read_text())
    return data["secs"], data["texts"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=1, help="runs per provider and setting (median reported)")
    ap.add_argument("--log-dir", default="benchmarks/out/engine_logs")
    ap.add_argument("--hf-bf16", action="store_true", help="also run hf/ with the whole model in bfloat16")
    ap.add_argument("--full-head", action="store_true",
                    help="also run base/ with its output head fully in float32 (-M head_screen=false)")
    ap.add_argument("--nondeterministic", action="store_true",
                    help="also run base/ with -M deterministic=false (float32 sdpa attention, not batch-invariant)")
    ap.add_argument("--f64-attention", action="store_true",
                    help="also run base/ with the float64 decode attention (STEERBOARD_DECODE_ATTENTION=float64)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["base-fp32"], help="leave these configs out")
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-conn", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from transformers import AutoTokenizer

    from steerboard.engine import Engine
    from steerboard.models import resolve_model

    model_dir = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_prompts(args.samples)

    print(f"model: {model_dir}\nprompts: {len(prompts)}, greedy, {args.new_tokens} new tokens, torch threads: "
          f"{__import__('torch').get_num_threads()}, OpenMP: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    bound = forward_bound(model_dir, prompts, max(args.connections), args.new_tokens)
    print(f"forward-pass bound (batch {max(args.connections)}, one plain forward): {bound:.0f} tok/s\n")

    default_mm = Engine.load(model_dir, matmul_dtype="auto").matmul_dtype
    print(f"base/ default matmul dtype on this machine: {default_mm}\n")
    # (label, config); the first is the reference every ratio and text match is taken against
    configs = [("hf/ (default, float32)", "hf"), (f"base/ (default, {default_mm} matmuls)", "base")]
    if default_mm != "float32" and "base-fp32" not in args.skip:
        configs.append(("base/ -M matmul_dtype=float32", "base-fp32"))
    if args.full_head and default_mm != "float32":
        configs.append(("base/ -M head_screen=false", "base-fullhead"))
    if args.nondeterministic:
        configs.append(("base/ -M deterministic=false", "base-nondet"))
    if args.f64_attention:
        configs.append(("base/ float64 decode attention", "base-f64attn"))
    if args.hf_bf16:
        configs.append(("hf/ dtype=bfloat16 (whole model)", "hf-bf16"))
    table = []
    for conn in args.connections:
        res: dict[str, list[float]] = {label: [] for label, _ in configs}
        texts: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for label, config in configs:  # interleaved, so drift in machine load hits every config alike
                secs, out = run_worker(config, conn, args)
                ntok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in out)
                res[label].append(ntok / secs)
                texts[label] = out
                print(f"  {conn:>3} connections  {label:<36} {ntok / secs:7.0f} tok/s", flush=True)
        ref_label = configs[0][0]
        ref = statistics.median(res[ref_label])
        for label, _ in configs:
            rate = statistics.median(res[label])
            match = sum(a.strip() == b.strip() for a, b in zip(texts[label], texts[ref_label]))
            table.append((conn, label, rate, rate / ref, match, rate / bound))
    w = max(len(label) for label, _ in configs)
    print(f"\n{'max_conn':>8}  {'provider':<{w}} {'tok/s':>7} {'vs hf/':>7} {'greedy = hf/':>13} {'of bound':>9}")
    for conn, label, rate, ratio, match, frac in table:
        print(f"{conn:>8}  {label:<{w}} {rate:>7.0f} {ratio:>7.2f} {f'{match}/{len(prompts)}':>13} {frac:>9.2f}")


if __name__ == "__main__":
    main()
