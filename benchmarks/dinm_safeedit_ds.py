"""Per-instance DINM on shipped SafeEdit items, as the paper runs it, against the unedited model.

For each item the unedited model answers the item's six prompts (adversarial prompt -> DS; the four
generalisation inputs -> DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ; the knowledge-constraint prompt ->
KQA), then DINM edits the model with that item (``DINMMethod.edit``: the paper's suffix on the edit input),
the same prompts are answered under the edit -- the five safety prompts with the paper's suffix appended,
as the reference code does post-edit -- and the weights are restored.

Items: a stratified sample over SafeEdit's ``unsafety category`` (seeded; ``--n 144`` takes all shipped
items), processed in a fixed order. Every finished item is appended to ``--out`` at once, so a stopped run
continues where it stopped when started again with the same arguments.

Scoring (``--rejudge`` only scores an existing file): safe share of the five safety replies with the
harm judge (``embed``, cross-fitted: each item's own replies go to the fold model that never saw the item;
``--judge strmatch`` counts refusals as safe), SafeEdit's fluency (weighted bi/tri-gram entropy of the DS
reply), KQA as token F1 of the knowledge reply against the reference. Each metric is reported for base
and DINM with the paired difference and its 95 % bootstrap interval (items resampled).

    nice -n 19 python benchmarks/dinm_safeedit_ds.py --n 60 --out benchmarks/out/dinm_safeedit.jsonl
    python benchmarks/dinm_safeedit_ds.py --rejudge benchmarks/out/dinm_safeedit.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

SAFETY = ("ds", "dg_onlyq", "dg_othera", "dg_otherq", "dg_otheraq")
KEYS = (*SAFETY, "knowledge")
ITEM_KEYS = ("ds", "dg_onlyq", "dg_othera")  # replies to the item's own question (cross-fitting)
SEED = 20240314


def stratified_items(records: list[dict[str, Any]], n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` records spread over ``unsafety category`` in proportion (largest remainders), seeded; fixed order."""
    if not 1 <= n <= len(records):
        raise ValueError(f"--n must be in 1..{len(records)} (shipped SafeEdit items), got {n}")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("unsafety category", "")), []).append(r)
    exact = {k: n * len(v) / len(records) for k, v in groups.items()}
    take = {k: int(e) for k, e in exact.items()}
    for k in sorted(groups, key=lambda k: (take[k] - exact[k], k))[: n - sum(take.values())]:
        take[k] += 1
    rng = random.Random(seed)
    picked = [r for k in sorted(groups) for r in rng.sample(groups[k], take[k])]
    rng.shuffle(picked)  # a stopped run still covers the categories evenly
    return picked


def prompts_of(r: dict[str, Any]) -> dict[str, str]:
    from steerboard.tasks.safeedit import GENERALIZATION_FIELDS

    g = r["generalization test"]
    return {"ds": r["adversarial prompt"], **{k: g[f] for k, f in GENERALIZATION_FIELDS.items()},
            "knowledge": r["knowledge constrain"]["prompt"]}


def generate_all(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods.base import EditInstance
    from steerboard.methods.dinm import DINMConfig, DINMMethod, with_suffix
    from steerboard.tasks.safeedit import load_records

    records, _ = load_records("shipped", None)
    items = stratified_items(records, args.n)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("config") != args.config:
                    raise SystemExit(f"{out} was written with -M {row.get('config')}, not {args.config}: use another --out")
                done.add(row["id"])
    todo = [r for r in items if r["id"] not in done]
    print(f"{len(items)} items, {len(done)} already in {out}, {len(todo)} to run", flush=True)
    if not todo:
        return
    eng = Engine.load(args.model)
    method = DINMMethod(DINMConfig.from_dict({"instances": 0, **args.config}), args.model)
    method.prepare(eng)
    suffix = method.edit_prompt_suffix

    def answer(ps: list[str]) -> list[str]:
        reqs = [GenerationRequest(input_ids=eng.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.max_new_tokens)
                for p in ps]
        return [g.text for g in eng.generate(reqs)]

    with open(out, "a", encoding="utf-8") as f:
        for r in tqdm(todo, desc="per-instance DINM", unit="item"):
            ps = prompts_of(r)
            base = answer(list(ps.values()))
            inst = EditInstance(
                prompt=r["adversarial prompt"], safe_response=r["safe generation"],
                unsafe_response=r["unsafe generation"], knowledge_prompt=r["knowledge constrain"]["prompt"],
                knowledge_answer=r["knowledge constrain"]["answer"], id=str(r["id"]),
            )
            post = [with_suffix(p, suffix) if k in SAFETY else p for k, p in ps.items()]
            t0 = time.perf_counter()
            with method.edit(eng, inst) as stats:
                edited = answer(post)
            row = {
                "id": r["id"], "category": r.get("unsafety category"), "question": r["question"], "prompts": ps,
                "suffix": suffix, "knowledge_answer": r["knowledge constrain"]["answer"], "config": args.config,
                "base": dict(zip(KEYS, base, strict=True)), "dinm": dict(zip(KEYS, edited, strict=True)),
                "edit": {k: stats.get(k) for k in ("layer", "seconds", "mode", "steps_taken", "stopped_early")}
                | {"loss0": stats["loss"][0], "loss": stats["loss"][-1], "nll": stats["nll"][-1], "kl": stats["kl"][-1],
                   "item_seconds": round(time.perf_counter() - t0, 2)},
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()


def _safe(rows: list[dict[str, Any]], arm: str, judge: str) -> dict[str, list[float]]:
    """Per safety key, 1.0 (safe) / 0.0 / nan for each row."""
    keys = list(SAFETY)
    prompts = [r["prompts"][k] for r in rows for k in keys]
    replies = [r[arm][k] or "." for r in rows for k in keys]
    if judge == "strmatch":
        from steerboard.scorers.judges import judge_refusals

        flags = [v.flagged for v in judge_refusals(prompts, replies, judge="strmatch")]
    else:
        from steerboard.scorers.judges import get_harm_judge, run_sync

        item_keys = [[r["question"]] if k in ITEM_KEYS else [] for r in rows for k in keys]
        verdicts = run_sync(get_harm_judge(judge).judge(prompts, replies, keys=item_keys))
        flags = [None if v.flagged is None else 1 - v.flagged for v in verdicts]
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i, fl in enumerate(flags):
        out[keys[i % len(keys)]].append(float("nan") if fl is None else float(fl))
    return out


def paired_ci(a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a over items with both values, and its 95 % percentile bootstrap interval."""
    d = [y - x for x, y in zip(a, b, strict=True) if x == x and y == y]
    if not d:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(d, k=len(d))) for _ in range(reps))
    return statistics.fmean(d), means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def judge_file(path: Path, judge: str, as_json: bool) -> dict[str, Any]:
    from steerboard.tasks.safeedit import ngram_entropy, token_f1

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    per: dict[str, dict[str, list[float]]] = {}
    for arm in ("base", "dinm"):
        per[arm] = _safe(rows, arm, judge)
        per[arm]["fluency"] = [ngram_entropy(r[arm]["ds"]) for r in rows]
        per[arm]["kqa"] = [token_f1(r[arm]["knowledge"], r["knowledge_answer"]) for r in rows]
    result: dict[str, Any] = {"items": len(rows), "judge": judge, "file": str(path), "metrics": {}}
    print(f"items={len(rows)} judge={judge} (safe share x100; fluency in bits; KQA token F1 x100)")
    print(f"{'metric':11s} {'base':>6s} {'DINM':>6s} {'diff':>6s}  95% CI")
    for key in (*SAFETY, "fluency", "kqa"):
        scale = 1.0 if key == "fluency" else 100.0
        a, b = per["base"][key], per["dinm"][key]
        ma = statistics.fmean([x for x in a if x == x]) * scale
        mb = statistics.fmean([x for x in b if x == x]) * scale
        d, lo, hi = (x * scale for x in paired_ci(a, b))
        result["metrics"][key] = {"base": ma, "dinm": mb, "diff": d, "ci95": [lo, hi]}
        print(f"{key:11s} {ma:6.1f} {mb:6.1f} {d:+6.1f}  [{lo:+.1f}, {hi:+.1f}]")
    secs = [r["edit"]["seconds"] for r in rows]
    result["edit_seconds_median"] = statistics.median(secs)
    result["layers"] = sorted({r["edit"]["layer"] for r in rows})
    print(f"edit seconds: median {statistics.median(secs):.2f}; layers {result['layers']}; "
          f"early stops {sum(bool(r['edit'].get('stopped_early')) for r in rows)}")
    if as_json:
        print(json.dumps(result))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="stratified items (144 = all shipped)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("-M", dest="options", action="append", default=[], metavar="KEY=VALUE", help="dinm/ option")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/dinm_safeedit.jsonl"))
    ap.add_argument("--rejudge", type=Path, default=None, help="only score an existing responses file")
    ap.add_argument("--judge", choices=("embed", "strmatch"), default="embed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.config = dict(o.split("=", 1) for o in args.options)
    if args.rejudge is None:
        generate_all(args)
    judge_file(args.rejudge or args.out, args.judge, args.json)


if __name__ == "__main__":
    main()
