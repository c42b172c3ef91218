"""TruthfulQA MC1/MC2 of the embedded model: the engine's scores against a plain transformers forward.

The quick suite finds ``base/`` *below* chance on TruthfulQA MC2. This checks that the finding belongs to the
model, not to the engine: the same prompts (the six-pair QA primer, ``Q: ...\\nA:``) and answer strings are
scored (1) by ``Engine.score_groups`` as the task scores them (bfloat16 linear layers, cached primer, packed
answers, batches) and (2) by ``AutoModelForCausalLM`` in float32, one prompt + answer per forward, no cache.
It prints, for the first ``--n`` questions of the task's shuffled order (seed 0, as the suite runs them):
MC1 and MC2 both ways, chance (MC1: mean 1/answers; MC2: mean share of true answers), a paired bootstrap
interval of MC2 - chance for the reference, how many MC1 picks agree, and the largest log-likelihood gap.

Usage::

    python benchmarks/truthfulqa_reference.py              # 100 questions
    python benchmarks/truthfulqa_reference.py --n 300      # the quick suite's 300 (about 10 minutes)
"""

from __future__ import annotations

import argparse
import statistics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="questions")
    args = ap.parse_args()

    from steerboard._runtime_env import configure_openmp

    configure_openmp()  # before torch loads (libgomp reads its wait setting once)

    import torch
    from transformers import AutoModelForCausalLM

    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods.provider import _shared_prefix_len
    from steerboard.models import resolve_model
    from steerboard.scorers.loglik import answer_texts, bootstrap_ci, mc1_correct, mc2_mass
    from steerboard.tasks.truthfulqa import QA_PRIMER, qa_prompt, truthfulqa

    engine = Engine.load("smollm2-135m")
    tok = engine.tokenizer
    ref = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m"), torch_dtype=torch.float32).eval()
    questions = list(truthfulqa(shuffle=True, seed=0).dataset)[: args.n]
    rows = []
    gap = 0.0
    for s in questions:
        answers = list(dict.fromkeys([*s.metadata["mc1_options"], *s.metadata["mc2_options"]]))
        msgs = [{"role": "user", "content": qa_prompt(str(s.input), "plain")}]
        ids = engine.plain_ids(msgs)
        conts = [tok(a, add_special_tokens=False)["input_ids"] for a in answer_texts(answers, "plain")]
        prefix_len = _shared_prefix_len(engine.plain_ids, msgs, ids, QA_PRIMER)
        ours = [sum(x.logprobs) for x in engine.score_groups([(GenerationRequest(input_ids=ids), conts)],
                                                             prefix_len=prefix_len)[0]]
        theirs = []
        with torch.no_grad():
            for c in conts:
                logits = ref(torch.tensor([ids + c])).logits[0, len(ids) - 1 : -1].float()
                lp = torch.log_softmax(logits, dim=-1)
                theirs.append(float(lp[torch.arange(len(c)), torch.tensor(c)].sum()))
        gap = max(gap, max(abs(a - b) for a, b in zip(ours, theirs)))
        by = dict(zip(answers, zip(ours, theirs)))
        row = {}
        for way, k in (("engine", 0), ("transformers", 1)):
            l1 = [by[a][k] for a in s.metadata["mc1_options"]]
            l2 = [by[a][k] for a in s.metadata["mc2_options"]]
            row[way] = (mc1_correct(l1, s.metadata["mc1_labels"]), mc2_mass(l2, s.metadata["mc2_labels"]))
        row["chance"] = (1 / len(s.metadata["mc1_labels"]), sum(s.metadata["mc2_labels"]) / len(s.metadata["mc2_labels"]))
        rows.append(row)
    n = len(rows)
    for way in ("engine", "transformers"):
        mc1 = sum(r[way][0] for r in rows) / n
        mc2 = statistics.mean(r[way][1] for r in rows)
        print(f"{way:>12}: MC1 {mc1:.3f}, MC2 {mc2:.4f} ({n} questions)")
    c1, c2 = (statistics.mean(r["chance"][i] for r in rows) for i in (0, 1))
    lo, hi = bootstrap_ci([r["transformers"][1] - r["chance"][1] for r in rows])
    print(f"      chance: MC1 {c1:.3f}, MC2 {c2:.4f}; transformers MC2 - chance {statistics.mean(r['transformers'][1] - r['chance'][1] for r in rows):+.4f}, "
          f"95 % bootstrap interval [{lo:+.4f}, {hi:+.4f}]")
    print(f"MC1 picks equal both ways on {sum(r['engine'][0] == r['transformers'][0] for r in rows)}/{n}; "
          f"largest |log-likelihood gap| over all answers {gap:.4f} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
