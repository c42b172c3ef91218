"""Build the DPO/SFT preference pairs (``methods/data/dpo/pairs.jsonl.gz``), deterministically.

Two halves of equal size:

* **harmful prompts** (StrongREJECT and HarmBench-val fit prompts, team-written short harmful questions,
  PKU-SafeRLHF prompts; a third of the StrongREJECT ones wrapped in a team-written attack template):
  *chosen* = a team-written refusal, *rejected* = the embedded model's **own sampled completion** that the
  harm judge (``judge_harm(..., judge="embed")``) calls unsafe -- on-policy;
* **benign prompts** (GSM8K train with its reference solution, MMLU dev with the keyed option, team-written
  harmless prompts that sound harmful with the embedded model's own greedy answer when the refusal judge
  calls it compliance and the harm judge safe): *chosen* = that helpful answer, *rejected* = a team-written
  refusal (a needless one).

Every prompt is checked against every evaluation set before anything is generated: the evaluation hash
index (``fitdata.is_eval_text``), the substring check against every string of the shipped evaluation
files (``editdata.eval_strings``), and a near-duplicate check by sentence-embedding cosine similarity
(all-MiniLM-L6-v2, ``--near-dup`` threshold) against the same strings. Each pair carries ``source``
(dataset and row), ``stratum`` (what ``max_pairs`` stratifies by), ``licence`` and ``split``
(``heldout`` for a deterministic tenth of each stratum, used for held-out preference accuracy).

Stages (the sampling stage is resumable: rerun the same command and it continues)::

    nice -n 10 python benchmarks/build_pairs.py sample --work build/pairs   # generate + judge (slow on CPU)
    python benchmarks/build_pairs.py build --work build/pairs             # write methods/data/dpo/pairs.jsonl.gz

``--model`` and ``--harmful``/``--benign`` make a small run (tests use the tiny model).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PKU_FILE = "pku_saferlhf_pairs/pku_seferlhf_realign_dpo_5k.json.gz"
LICENCES = {
    "strongreject": "MIT (StrongREJECT, vendored in methods/data)",
    "harmbench-val": "MIT (HarmBench, vendored in methods/data)",
    "pku-saferlhf": "CC-BY-NC-4.0 (PKU-SafeRLHF via xinykou/safety_realignment @ 5a80593; prompt only)",
    "team": "steerboard team (this repository's licence)",
    "gsm8k-train": "MIT (openai/grade-school-math)",
    "mmlu-dev": "MIT (hendrycks/test)",
    "model": "SmolLM2-135M-Instruct output (Apache-2.0 model)",
}
SEED = 20261207
HELDOUT_PERCENT = 10


def _h(text: str, salt: str = "") -> int:
    return int(hashlib.sha256((salt + text).encode()).hexdigest()[:12], 16)


def _pick(items: list[str], key: str) -> str:
    return items[_h(key, "pick:") % len(items)]


def refusals() -> list[str]:
    """Team-written refusals (chosen for harmful prompts, rejected for benign ones)."""
    from steerboard.methods.editdata import SAFE_RESPONSES
    from steerboard.methods.fitdata import refusal_responses

    return list(dict.fromkeys([*SAFE_RESPONSES, *refusal_responses()]))


# ------------------------------------------------------------------------------------------ candidates


def harmful_candidates(data_dir: Path) -> list[dict[str, str]]:
    """Harmful prompts (before the evaluation-overlap filter), each with source and licence."""
    from steerboard.methods import fitdata
    from steerboard.methods.editdata import ATTACK_TEMPLATES

    out: list[dict[str, str]] = []
    sr = set()
    with open(fitdata.DATA_DIR / "strongreject_dataset.csv", newline="") as f:
        sr = {fitdata.normalize(r["forbidden_prompt"]) for r in csv.DictReader(f)}
    for i, p in enumerate(fitdata.harmful_prompts("all")):
        kind = "strongreject" if fitdata.normalize(p) in sr else "harmbench-val"
        out.append({"prompt": p, "source": f"{kind}:{fitdata.text_hash(p)}", "stratum": "harmful:" + kind, "lic": kind})
        if kind == "strongreject" and _h(p, "wrap:") % 3 == 0:
            t = ATTACK_TEMPLATES[i % len(ATTACK_TEMPLATES)]
            out.append({"prompt": t.format(q=p), "source": f"{kind}:{fitdata.text_hash(p)}+team-attack-template",
                        "stratum": "harmful:attack-wrapped", "lic": kind})
    for p in fitdata._team()["gate_harmful_prompts"]:
        out.append({"prompt": p, "source": "team-written harmful question", "stratum": "harmful:team", "lic": "team"})
    with gzip.open(data_dir / PKU_FILE, "rt", encoding="utf-8") as f:
        rows = json.load(f)
    for p in dict.fromkeys(r["prompt"] for r in rows):
        out.append({"prompt": p, "source": f"pku-saferlhf:{fitdata.text_hash(p)}", "stratum": "harmful:pku-saferlhf",
                    "lic": "pku-saferlhf"})
    return out


def _gsm8k_answer(ans: str) -> str:
    from steerboard.methods.editdata import _gsm8k_answer

    return _gsm8k_answer(ans)


def benign_candidates(data_dir: Path, n_gsm8k: int) -> list[dict[str, str]]:
    """Benign prompts; those with a reference answer carry it as ``answer``."""
    from steerboard.methods import fitdata

    out: list[dict[str, str]] = []
    with gzip.open(data_dir / "gsm8k" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        gsm = [json.loads(line) for line in f if line.strip()]
    idx = sorted(range(len(gsm)), key=lambda j: _h(str(j), "gsm:"))[:n_gsm8k]
    for j in sorted(idx):
        out.append({"prompt": gsm[j]["question"], "answer": _gsm8k_answer(gsm[j]["answer"]),
                    "source": f"gsm8k-train:{j}", "stratum": "benign:gsm8k-train", "lic": "gsm8k-train"})
    letters = "ABCD"
    for path in sorted((data_dir / "mmlu" / "dev").glob("*_dev.csv")):
        subject = path.name.removesuffix("_dev.csv")
        with open(path, newline="", encoding="utf-8") as f:
            for k, row in enumerate(csv.DictReader(f)):
                choices = "\n".join(f"({letters[c]}) {row[f'choice{c}']}" for c in range(4))
                a = int(row["answer"])
                out.append({"prompt": f"{row['question']}\n{choices}\nAnswer with the letter of the correct option.",
                            "answer": f"The answer is ({letters[a]}) {row[f'choice{a}']}.",
                            "source": f"mmlu-dev:{subject}:{k}", "stratum": "benign:mmlu-dev", "lic": "mmlu-dev"})
    from steerboard.methods.editdata import BENIGN_QA

    for q, a in BENIGN_QA:
        out.append({"prompt": q, "answer": a, "source": "team-written benign", "stratum": "benign:team-answered",
                    "lic": "team"})
    for p in fitdata.gate_benign_prompts("all"):  # answered by the model (on-policy chosen)
        out.append({"prompt": p, "source": "team-written benign (model answer)", "stratum": "benign:team-sensitive",
                    "lic": "team"})
    return out


NEAR_DUP_SOURCES = ("xstest", "jailbreakbench_artifacts", "harmbench", "multiturn", "safeedit")
"""Evaluation sets whose prompts the near-duplicate check embeds (the safety sets; MMLU, GSM8K and
TruthfulQA test questions are matched by hash and substring only -- their dev/train splits are the
benchmarks' own disjoint splits), plus PHTest's prompts (``phtest/``), which a false-refusal task reads."""
NEAR_DUP_CHARS = 200


def near_dup_texts(data_dir: Path) -> list[str]:
    """Normalised prompts of the evaluation sets the embedding check compares against."""
    from steerboard.methods import fitdata

    saved = list(fitdata.EVAL_SOURCES)
    try:
        fitdata.EVAL_SOURCES[:] = [s for s in saved if s[0].split("/")[0] in NEAR_DUP_SOURCES]
        texts = {fitdata.normalize(t) for t in fitdata.eval_texts(data_dir)}
    finally:
        fitdata.EVAL_SOURCES[:] = saved
    ph = data_dir / "phtest" / "dataset_v0.1.csv.gz"
    if ph.exists():
        with gzip.open(ph, "rt", encoding="utf-8", newline="") as f:
            texts |= {fitdata.normalize(r["Request"]) for r in csv.DictReader(f)}
    return sorted(t for t in texts if t)


def overlap_filter(cands: list[dict[str, str]], threshold: float, work: Path, data_dir: Path) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Drop candidates equal to, containing, or (embedding cosine >= threshold) near an evaluation prompt."""
    import numpy as np

    from steerboard.methods.editdata import eval_strings
    from steerboard.methods.fitdata import is_eval_text, normalize
    from steerboard.scorers.embed import encode

    ev = sorted(eval_strings())
    seen: set[str] = set()
    kept: list[dict[str, str]] = []
    dropped = {"duplicate": 0, "eval_hash": 0, "eval_substring": 0, "near_duplicate": 0}
    for c in cands:
        n = normalize(c["prompt"])
        if not n or n in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(n)
        if is_eval_text(c["prompt"]):
            dropped["eval_hash"] += 1
        elif any(t in n for t in ev):
            dropped["eval_substring"] += 1
        else:
            kept.append(c)
    nd = [t[:NEAR_DUP_CHARS] for t in near_dup_texts(data_dir)]
    cache = work / f"eval_emb_{hashlib.sha256(chr(10).join(nd).encode()).hexdigest()[:12]}.npy"
    if cache.exists():
        e = np.load(cache)
    else:
        e = np.asarray(encode(nd, batch_size=128, progress=True), dtype=np.float32)
        np.save(cache, e)
    q = np.asarray(encode([normalize(c["prompt"])[:NEAR_DUP_CHARS] for c in kept], batch_size=128), dtype=np.float32)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    best = np.concatenate([(q[i : i + 256] @ e.T).max(1) for i in range(0, len(q), 256)]) if len(q) else np.zeros(0)
    out = []
    for c, s in zip(kept, best, strict=True):
        if s >= threshold:
            dropped["near_duplicate"] += 1
        else:
            out.append(c | {"max_eval_cosine": round(float(s), 4)})
    return out, dropped


# ---------------------------------------------------------------------------------------------- stages


def _done(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["key"]] = r
    return out


def sample(args: argparse.Namespace) -> None:
    """Generate and judge the model's own answers (resumable): harmful prompts sampled, sensitive-benign greedy."""
    from steerboard.engine import Engine, GenerationRequest
    from steerboard.scorers.judges import judge_harm, judge_refusals

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    cands_file = work / "candidates.json"
    if cands_file.exists():
        cands = json.loads(cands_file.read_text())
    else:
        raw = harmful_candidates(args.data) + benign_candidates(args.data, args.gsm8k)
        kept, dropped = overlap_filter(raw, args.near_dup, work, args.data)
        rng = random.Random(SEED)
        rng.shuffle(kept)
        cands = {"candidates": kept, "dropped": dropped, "near_dup_threshold": args.near_dup}
        cands_file.write_text(json.dumps(cands, ensure_ascii=False))
        print(f"candidates kept {len(kept)}, dropped {dropped}", flush=True)
    kept = cands["candidates"]
    out = work / "samples.jsonl"
    done = _done(out)
    eng = Engine.load(args.model)
    harmful = [c for c in kept if c["stratum"].startswith("harmful:")]
    sensitive = [c for c in kept if c["stratum"] == "benign:team-sensitive"][: args.sensitive]
    jobs: list[tuple[str, dict[str, str], int]] = []  # (key, candidate, try)
    for c in sensitive:
        jobs.append(("g:" + c["prompt"], c, -1))
    for t in range(args.tries):
        for c in harmful:
            jobs.append((f"s{t}:" + c["prompt"], c, t))
    n_unsafe = sum(1 for r in done.values() if r["kind"] == "sample" and r["harm"] == "unsafe")
    unsafe_prompts = {r["prompt"] for r in done.values() if r["kind"] == "sample" and r["harm"] == "unsafe"}
    todo = [j for j in jobs if j[0] not in done]
    t0 = time.perf_counter()
    with open(out, "a", encoding="utf-8") as f:
        i = 0
        while i < len(todo):
            if n_unsafe >= args.harmful and all(j[2] >= 0 for j in todo[i:]):
                break
            batch = []
            while i < len(todo) and len(batch) < args.batch:
                j = todo[i]
                i += 1
                if j[2] >= 0 and (j[1]["prompt"] in unsafe_prompts or n_unsafe >= args.harmful):
                    continue  # already has an unsafe sample, or enough of them
                batch.append(j)
            if not batch:
                continue
            reqs = [
                GenerationRequest(
                    input_ids=eng.chat_ids([{"role": "user", "content": c["prompt"]}])[-args.max_prompt_tokens :],
                    max_new_tokens=args.max_new_tokens,
                    temperature=0.0 if t < 0 else args.temperature, top_p=None if t < 0 else args.top_p,
                    seed=None if t < 0 else _h(f"{t}:{c['prompt']}", "seed:") % (2**31),
                )
                for _, c, t in batch
            ]
            texts = [g.text.strip() for g in eng.generate(reqs)]
            ps = [c["prompt"] for _, c, _ in batch]
            harm = judge_harm(ps, [x or "." for x in texts], judge="embed")
            ref = judge_refusals(ps, [x or "." for x in texts], judge="embed")
            for (key, c, t), text, hv, rv in zip(batch, texts, harm, ref, strict=True):
                row = {"key": key, "kind": "greedy" if t < 0 else "sample", "try": t, "prompt": c["prompt"],
                       "text": text, "harm": hv.label, "harm_score": hv.score, "refusal": rv.label,
                       "seed": None if t < 0 else _h(f"{t}:{c['prompt']}", "seed:") % (2**31)}
                if t >= 0:
                    if hv.label == "unsafe" and text:
                        n_unsafe += 1
                        unsafe_prompts.add(c["prompt"])
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            print(f"{i}/{len(todo)} jobs, {n_unsafe} unsafe samples, {time.perf_counter() - t0:.0f}s", flush=True)
    meta = {"model": args.model, "engine_source": str(eng.source), "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "top_p": args.top_p, "tries": args.tries, "seed": SEED}
    (work / "sample_meta.json").write_text(json.dumps(meta, indent=1))


def _split(c: dict[str, str]) -> str:
    return "heldout" if _h(c["prompt"], "heldout:") % 100 < HELDOUT_PERCENT else "train"


def build(args: argparse.Namespace) -> Path:
    """Assemble balanced pairs from the candidates and the judged samples; write the pairs file."""
    work: Path = args.work
    cands = json.loads((work / "candidates.json").read_text())
    done = _done(work / "samples.jsonl")
    meta = json.loads((work / "sample_meta.json").read_text())
    refs = refusals()
    harmful: list[dict[str, Any]] = []
    by_prompt: dict[str, dict[str, Any]] = {}
    for r in done.values():  # first unsafe sample of each prompt (lowest try)
        if r["kind"] == "sample" and r["harm"] == "unsafe" and r["text"]:
            if r["prompt"] not in by_prompt or r["try"] < by_prompt[r["prompt"]]["try"]:
                by_prompt[r["prompt"]] = r
    for c in cands["candidates"]:
        r = by_prompt.get(c["prompt"])
        if c["stratum"].startswith("harmful:") and r is not None:
            harmful.append({
                "prompt": c["prompt"], "chosen": _pick(refs, "chosen:" + c["prompt"]), "rejected": r["text"],
                "source": c["source"], "stratum": c["stratum"],
                "provenance": {"chosen": "team-written refusal",
                               "rejected": f"{meta['model']} sample (T={meta['temperature']}, top_p={meta['top_p']}, "
                                           f"seed={r['seed']}, {meta['max_new_tokens']} tokens), harm judge embed: "
                                           f"unsafe (p={r['harm_score']:.3f})"},
                "licence": {"prompt": LICENCES[c["lic"]], "chosen": LICENCES["team"], "rejected": LICENCES["model"]},
            })
    benign: list[dict[str, Any]] = []
    for c in cands["candidates"]:
        if not c["stratum"].startswith("benign:"):
            continue
        if "answer" in c:
            chosen, prov, lic = c["answer"], "reference answer of the source", LICENCES[c["lic"]]
        else:
            g = done.get("g:" + c["prompt"])
            if g is None or g["refusal"] != "compliance" or g["harm"] != "safe" or not g["text"]:
                continue
            chosen, prov, lic = g["text"], f"{meta['model']} greedy answer (refusal judge: compliance, harm judge: safe)", LICENCES["model"]
        benign.append({
            "prompt": c["prompt"], "chosen": chosen, "rejected": _pick(refs, "rejected:" + c["prompt"]),
            "source": c["source"], "stratum": c["stratum"],
            "provenance": {"chosen": prov, "rejected": "team-written refusal (needless)"},
            "licence": {"prompt": LICENCES[c["lic"]], "chosen": lic, "rejected": LICENCES["team"]},
        })
    # balance: as many benign pairs as harmful ones, keeping every on-policy/team benign pair first
    n = min(len(harmful), len(benign), args.harmful)
    harmful = stratified(harmful, n, SEED)
    benign = stratified(benign, n, SEED)
    pairs = [p | {"split": _split(p)} for p in harmful + benign]
    pairs.sort(key=lambda p: _h(p["prompt"], "order:"))
    dest: Path = args.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(filename="", mode="wb", fileobj=open(dest, "wb"), mtime=0) as f:  # noqa: SIM115
        f.write("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs).encode())
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p["stratum"]] = counts.get(p["stratum"], 0) + 1
    summary = {"pairs": len(pairs), "harmful": len(harmful), "benign": len(benign), "strata": counts,
               "heldout": sum(p["split"] == "heldout" for p in pairs), "dropped_candidates": cands["dropped"],
               "near_dup_threshold": cands["near_dup_threshold"], "sampling": meta,
               "sha256": hashlib.sha256(dest.read_bytes()).hexdigest()}
    dest.with_name(dest.name.removesuffix(".jsonl.gz") + ".meta.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return dest


def stratified(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ``n`` rows, proportional to each ``stratum``'s size (largest remainders)."""
    from steerboard.methods.dpo import stratified_sample

    return stratified_sample(rows, n, seed)


def main(argv: list[str] | None = None) -> int:
    from steerboard.methods.editdata import DPO_FILE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("sample", "build", "all"))
    ap.add_argument("--work", type=Path, default=Path("build/pairs"), help="working folder (resumable state)")
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    ap.add_argument("--dest", type=Path, default=DPO_FILE)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--harmful", type=int, default=560, help="harmful pairs wanted (benign: as many)")
    ap.add_argument("--sensitive", type=int, default=160, help="team sensitive-benign prompts answered by the model")
    ap.add_argument("--gsm8k", type=int, default=300)
    ap.add_argument("--tries", type=int, default=2, help="samples per harmful prompt until one is judged unsafe")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--near-dup", type=float, default=0.9, help="embedding cosine at or above which a prompt is dropped")
    args = ap.parse_args(argv)
    if args.stage in ("sample", "all"):
        sample(args)
    if args.stage in ("build", "all"):
        build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
