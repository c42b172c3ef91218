"""Throughput of ``sae/`` and ``actadd/`` relative to ``base/`` (and, with ``--refusal``, their effect).

Throughput: the same prompts go through the shared engine with each method's intervention (what the
providers do), interleaved over ``--repeats`` rounds so machine noise hits every method alike; the
script prints the median generated tokens/second of each and its ratio to ``base/`` (target >= 0.90).

``--refusal`` also measures, on the embedded model, XSTest refusal (``--n-unsafe`` unsafe and
``--n-safe`` safe prompts, greedy, ``--max-tokens`` tokens, the project's refusal judge) for base,
each method unconditional and gated (``gate=probe``), plus an MMLU-subset accuracy (answer-letter
log-probabilities, ``--n-mmlu`` test questions) beside it.

Run::

    python benchmarks/steering_throughput.py                       # throughput only
    python benchmarks/steering_throughput.py --refusal --judge strmatch --json out.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import statistics
import time
from importlib import resources
from typing import Any


def _task_data(rel: str) -> bytes:
    data = resources.files("steerboard.tasks").joinpath("data", *rel.split("/")).read_bytes()
    return gzip.decompress(data) if rel.endswith(".gz") else data


def xstest(n_unsafe: int, n_safe: int) -> tuple[list[str], list[str]]:
    """The first ``n`` unsafe and safe XSTest prompts, spread over prompt types (every k-th row)."""
    rows = list(csv.DictReader(io.StringIO(_task_data("xstest/xstest_prompts.csv").decode("utf-8-sig"))))
    unsafe = [r["prompt"] for r in rows if r["label"] == "unsafe"]
    safe = [r["prompt"] for r in rows if r["label"] == "safe"]
    return unsafe[:: max(1, len(unsafe) // n_unsafe)][:n_unsafe], safe[:: max(1, len(safe) // n_safe)][:n_safe]


def mmlu(n: int) -> list[dict[str, Any]]:
    lines = _task_data("mmlu/test.jsonl.gz").decode().split("\n")
    rows = [json.loads(x) for x in lines if x.strip()]
    return rows[:: max(1, len(rows) // n)][:n]


def mmlu_accuracy(engine: Any, intervention: Any, rows: list[dict[str, Any]], batch: int = 16) -> float:
    """Zero-shot accuracy from the next-token log-probabilities of the answer letters."""
    import torch

    letters = ["A", "B", "C", "D"]
    ids = [engine.tokenizer(" " + x, add_special_tokens=False)["input_ids"][-1] for x in letters]
    seqs = []
    for r in rows:
        q = r["question"] + "\n" + "\n".join(f"{let}. {c}" for let, c in zip(letters, r["choices"]))
        msgs = [{"role": "user", "content": q + "\nAnswer with the letter of the correct option."}]
        seqs.append(engine.chat_ids(msgs) + engine.tokenizer("The answer is", add_special_tokens=False)["input_ids"])
    correct = 0
    for b in range(0, len(seqs), batch):
        out = engine.forward(seqs[b : b + batch], intervention=intervention)
        logits = out.logits[:, -1, :][:, ids]
        pred = torch.argmax(logits, dim=-1).tolist()
        correct += sum(int(p == r["answer"]) for p, r in zip(pred, rows[b : b + batch]))
    return correct / len(rows)


METHODS: dict[str, tuple[str, dict[str, str]]] = {
    "base": ("base", {}),
    "sae": ("sae", {}),
    "sae+gate": ("sae", {"gate": "probe"}),
    "actadd": ("actadd", {}),
    "actadd+gate": ("actadd", {"gate": "probe"}),
    "sae+both": ("sae", {"gate": "both"}),
    "actadd+both": ("actadd", {"gate": "both"}),
}


def make_method(name: str, model: str, extra: dict[str, str]) -> Any:
    """A Method for a benchmark entry (its shipped preset, plus ``extra`` -M options)."""
    from steerboard.methods.actadd import ActAddConfig, ActAddMethod
    from steerboard.methods.base import BaseMethod, MethodConfig
    from steerboard.methods.sae import SAEConfig, SAEMethod

    kind, opts = METHODS[name]
    mine = {k.split(".", 1)[1]: v for k, v in extra.items() if k.startswith(kind + ".")}
    shared = {k: v for k, v in extra.items() if "." not in k}
    opts = {**opts, **shared, **mine} if kind != "base" else {}
    if kind == "sae":
        return SAEMethod(SAEConfig.from_dict(opts), model)
    if kind == "actadd":
        return ActAddMethod(ActAddConfig.from_dict(opts), model)
    return BaseMethod(MethodConfig(), model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per throughput round")
    ap.add_argument("--tokens", type=int, default=48, help="max new tokens per throughput request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refusal", action="store_true", help="also measure XSTest refusal and MMLU")
    ap.add_argument("--n-unsafe", type=int, default=50)
    ap.add_argument("--n-safe", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--n-mmlu", type=int, default=100)
    ap.add_argument("--judge", default="embed")
    ap.add_argument("--methods", default="base,sae,sae+gate,actadd,actadd+gate", help="comma-separated methods")
    ap.add_argument("-M", action="append", default=[], help="extra -M key=value for the steering methods (e.g. gate_threshold=0.9; sae.features=12 for one kind)")
    ap.add_argument("--skip-throughput", action="store_true", help="only the --refusal measurements")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    from steerboard._runtime_env import configure_openmp

    configure_openmp()  # before torch loads (libgomp reads its wait setting once)

    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods import fitdata
    from steerboard.methods.steering import judge_refusal_flags

    engine = Engine.load(args.model)
    want = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in want if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; valid: {', '.join(METHODS)}")
    extra = dict(kv.split("=", 1) for kv in args.M)
    ms = {k: make_method(k, args.model, extra) for k in want}
    for m in ms.values():
        m.prepare(engine)
    results: dict[str, Any] = {"model": args.model, "throughput": {}, "refusal": {}}

    # ---- throughput (dev prompts: harmful + benign, so a gate sees both kinds)
    if args.skip_throughput:
        ms_tp: dict[str, Any] = {}
    else:
        if "base" not in ms:
            raise SystemExit("throughput ratios need base in --methods (or pass --skip-throughput)")
        ms_tp = ms
    prompts = (fitdata.harmful_prompts("dev")[: args.prompts // 2] + fitdata.benign_prompts("dev"))[: args.prompts]
    reqs = [GenerationRequest(input_ids=engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.tokens)
            for p in prompts]
    if ms_tp:
        engine.generate(reqs[:4])  # warm-up
    tps: dict[str, list[float]] = {k: [] for k in ms_tp}
    for _ in range(args.repeats if ms_tp else 0):
        for name, m in ms_tp.items():
            t0 = time.perf_counter()
            # a text-classifier gate scores each prompt first, as the provider does: timed too
            run_reqs = m.with_gate_meta(reqs, prompts) if hasattr(m, "with_gate_meta") else reqs
            outs = engine.generate(run_reqs, intervention=m.intervention())
            dt = time.perf_counter() - t0
            tps[name].append(sum(len(o.token_ids) for o in outs) / dt)
    base_tps = statistics.median(tps["base"]) if ms_tp else float("nan")
    for name, xs in tps.items():
        med = statistics.median(xs)
        results["throughput"][name] = {"tokens_per_s": round(med, 1), "ratio_to_base": round(med / base_tps, 3), "runs": [round(x, 1) for x in xs]}
        print(f"throughput {name:12s} {med:8.1f} tok/s  ratio {med / base_tps:.3f}")

    # ---- refusal + MMLU
    if args.refusal:
        unsafe, safe = xstest(args.n_unsafe, args.n_safe)
        rows = mmlu(args.n_mmlu)
        all_p = unsafe + safe
        rq = [GenerationRequest(input_ids=engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.max_tokens)
              for p in all_p]
        for name, m in ms.items():
            if getattr(m, "classifier_gate", None) is not None:
                print(f"refusal {name}: skipped (the text-classifier gates are measured by conditional_steering.py)")
                continue
            outs = [o.text for o in engine.generate(rq, intervention=m.intervention(), progress=True)]
            flags = judge_refusal_flags(all_p, outs, judge=args.judge)
            fu = [f for f in flags[: len(unsafe)] if f is not None]
            fs = [f for f in flags[len(unsafe) :] if f is not None]
            acc = mmlu_accuracy(engine, m.intervention(), rows)
            results["refusal"][name] = {
                "xstest_unsafe_refusal": round(sum(fu) / len(fu), 3), "xstest_safe_refusal": round(sum(fs) / len(fs), 3),
                "judge_errors": sum(f is None for f in flags), "mmlu_acc": round(acc, 3),
                "n_unsafe": len(unsafe), "n_safe": len(safe), "n_mmlu": len(rows), "judge": args.judge,
                "examples": [[p, o[:160]] for p, o in list(zip(all_p, outs))[:: max(1, len(all_p) // 4)]],
            }
            r = results["refusal"][name]
            print(f"refusal {name:12s} unsafe {r['xstest_unsafe_refusal']:.2f}  safe {r['xstest_safe_refusal']:.2f}  "
                  f"mmlu {acc:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
