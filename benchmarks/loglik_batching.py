"""Log-likelihood scoring: one question per engine call vs concurrent questions batched, side by side.

What the quick suite's MMLU cloze and TruthfulQA tasks ask the engine, built the way the tasks build it (MMLU:
the subject header, question and ``Answer:``, each option's text; TruthfulQA: the six-pair QA primer as a
shared prefix, every true and false answer). Each workload is scored twice per repeat, the two ways alternating:

* ``single``: one question per ``Engine.score_groups`` call, as a float32 engine (or a GPU) scores them;
* ``batched``: ``--batch`` questions per call, as the provider's ``LoglikBatcher`` groups the questions that
  Inspect's concurrent samples ask together on a batch-invariant engine (the CPU default).

It prints seconds per question (medians of ``--repeats``), the ratio, and whether every score is the same bits
both ways (it must be: the engine's batches are invariant); then the batched way's token rate against the
forward-pass bound measured in the same run: the tokens each question needs computed (its prompt after any shared
prefix, plus every answer; a shared prefix once per workload) per second, over the tokens per second of one plain
batched forward pass of ``--batch`` sequences of the workload's median per-question length (no KV cache, no
scoring): the rate scoring would reach if it cost nothing beyond the model's own forward pass.

Usage::

    python benchmarks/loglik_batching.py                          # 64 questions each, batches of 32, 3 repeats
    STEERBOARD_THREADS=1 python benchmarks/loglik_batching.py --n 128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from steerboard._runtime_env import configure_openmp

configure_openmp()  # first: OpenMP settings before torch loads


def _workloads(engine, n: int) -> dict[str, tuple[list, int]]:
    """``{name: (groups, prefix_len)}`` for MMLU cloze and TruthfulQA, ``n`` questions each (shuffled, seed 0)."""
    from steerboard.engine import GenerationRequest
    from steerboard.methods.provider import _shared_prefix_len
    from steerboard.scorers.loglik import answer_texts
    from steerboard.tasks.mmlu import cloze_prompt, mmlu
    from steerboard.tasks.truthfulqa import QA_PRIMER, qa_prompt, truthfulqa

    tok = engine.tokenizer
    mm = []
    for s in list(mmlu(fewshot=0, format="cloze", shuffle=True, seed=0).dataset)[:n]:
        record = {"question": s.metadata["question"], "choices": [str(c) for c in s.choices]}
        text = cloze_prompt(record, s.metadata["subject"])
        ids = engine.plain_ids([{"role": "user", "content": text}])
        mm.append((GenerationRequest(input_ids=ids), [tok(c, add_special_tokens=False)["input_ids"]
                                                      for c in answer_texts(record["choices"], "plain")]))
    tq = []
    prefix_len = 0
    for s in list(truthfulqa(shuffle=True, seed=0).dataset)[:n]:
        answers = list(dict.fromkeys([*s.metadata["mc1_options"], *s.metadata["mc2_options"]]))
        msgs = [{"role": "user", "content": qa_prompt(str(s.input), "plain")}]
        ids = engine.plain_ids(msgs)
        prefix_len = _shared_prefix_len(engine.plain_ids, msgs, ids, QA_PRIMER)
        tq.append((GenerationRequest(input_ids=ids), [tok(a, add_special_tokens=False)["input_ids"]
                                                      for a in answer_texts(answers, "plain")]))
    return {"mmlu cloze": (mm, 0), "truthfulqa": (tq, prefix_len)}


def forward_rate(engine, length: int, batch: int, repeats: int) -> float:
    """Tokens/s of one plain batched forward pass over ``batch`` sequences of ``length`` tokens (median of repeats)."""
    import torch

    seqs = [[100 + (7 * i + j) % 5000 for j in range(length)] for i in range(batch)]
    times = []
    with torch.inference_mode():
        engine.forward(seqs)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            engine.forward(seqs)
            times.append(time.perf_counter() - t)
    return batch * length / statistics.median(times)


def needed_tokens(groups: list, prefix_len: int) -> tuple[int, list[int]]:
    """(tokens the workload needs computed: the shared prefix once, each prompt's rest and every answer; the
    per-question counts without the prefix)."""
    per = [len(req.input_ids) - prefix_len + sum(len(c) for c in conts) for req, conts in groups]
    return prefix_len + sum(per), per


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="questions per workload")
    ap.add_argument("--batch", type=int, default=32, help="questions per call in the batched way")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from steerboard.engine import Engine

    engine = Engine.load("smollm2-135m")
    if not engine.invariant_batches:
        raise SystemExit("this engine's batches are not invariant (float32 matmuls or a GPU): the provider scores "
                         "one question per call there, so there is nothing to compare")
    for name, (groups, prefix_len) in _workloads(engine, args.n).items():
        engine.score_groups(groups[:2], prefix_len=prefix_len)  # warm-up (and the shared prefix's cache)
        times: dict[str, list[float]] = {"single": [], "batched": []}
        scores: dict[str, list] = {}
        for _ in range(args.repeats):
            for way in ("single", "batched"):
                size = 1 if way == "single" else args.batch
                t = time.perf_counter()
                out = []
                for i in range(0, len(groups), size):
                    out += engine.score_groups(groups[i : i + size], prefix_len=prefix_len)
                times[way].append(time.perf_counter() - t)
                scores[way] = [[s.logprobs for s in q] for q in out]
        single, batched = (statistics.median(times[w]) / len(groups) for w in ("single", "batched"))
        print(f"{name}: {len(groups)} questions, {sum(len(c) for _, c in groups)} continuations: single "
              f"{single * 1000:.0f} ms/question, batched ({args.batch} a call) {batched * 1000:.0f} ms/question "
              f"(medians of {args.repeats}); single/batched = {single / batched:.2f}; same bits both ways: "
              f"{scores['single'] == scores['batched']}", flush=True)
        total, per = needed_tokens(groups, prefix_len)
        rate = total / (batched * len(groups))
        bound = forward_rate(engine, int(statistics.median(per)), args.batch, args.repeats)
        print(f"  {total} tokens needed: batched {rate:.0f} tok/s; plain forward of {args.batch} x "
              f"{int(statistics.median(per))} tokens {bound:.0f} tok/s; batched / bound = {rate / bound:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
