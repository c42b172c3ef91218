"""Refusal under ``actadd/``'s two direction sources, paired on the same XSTest prompts.

``responses`` (the shipped preset: contrastive activation addition on a refusal-minus-compliance reply
contrast) against ``prompts`` (Arditi et al. 2024's harmful-minus-harmless prompt direction) at the same
layer and coefficient, both added at every position, and the unsteered model. Greedy decoding; refusal by
the ``embed`` refusal judge (``--judge strmatch`` for the string-match one).

    python benchmarks/actadd_sources.py --n 40 --max-tokens 32
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from importlib import resources


def main() -> None:
    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods.actadd import ActAddConfig, ActAddMethod
    from steerboard.scorers.judges import judge_refusals

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="XSTest unsafe and as many safe prompts (seeded sample)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--judge", default="embed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coefficients", default="", help="extra coefficients for the prompts source, comma separated")
    args = ap.parse_args()
    raw = resources.files("steerboard.tasks").joinpath("data", "xstest", "xstest_prompts.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    rng = random.Random(args.seed)
    sets = {lab: rng.sample([r["prompt"] for r in rows if r["label"].strip() == lab], args.n) for lab in ("unsafe", "safe")}
    prompts = sets["unsafe"] + sets["safe"]
    eng = Engine.load("smollm2-135m")
    reqs = [GenerationRequest(input_ids=eng.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.max_tokens)
            for p in prompts]
    configs: dict[str, dict[str, str] | None] = {"base": None, "responses (preset)": {}, "prompts": {"source": "prompts"}}
    for c in filter(None, args.coefficients.split(",")):
        configs[f"prompts coef {c}"] = {"source": "prompts", "coefficient": c}
    res = {}
    for name, opts in configs.items():
        iv = None
        if opts is not None:
            m = ActAddMethod(ActAddConfig.from_dict(opts), "smollm2-135m")
            m.prepare(eng)
            iv = m.intervention()
            r = m.resolved
            name = f"{name}: layer {r.layer}, coef {r.coefficient}"
        outs = [o.text for o in eng.generate(reqs, intervention=iv)]
        flags = [v.flagged for v in judge_refusals(prompts, outs, judge=args.judge)]
        u, s = flags[: args.n], flags[args.n :]
        rate = lambda xs: sum(x or 0 for x in xs) / len(xs)  # noqa: E731
        res[name] = {"unsafe_refusal": round(rate(u), 3), "safe_refusal": round(rate(s), 3), "sample": outs[0][:100]}
        print(f"{name:45s} unsafe refusal {rate(u):.3f}  safe refusal {rate(s):.3f}", flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
