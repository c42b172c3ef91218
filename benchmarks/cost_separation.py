"""Do the cost measures separate methods on the embedded model? (issue targets for capability and side effects)

Runs, through Inspect and the method providers, on SmolLM2-135M-Instruct:

* ``base/`` on MMLU cloze (``--mmlu`` questions, shuffled, seed 0) and TruthfulQA MC1/MC2 (answer-string
  log-likelihoods, ``--tqa`` questions): accuracy / MC2 with 95 % intervals against chance (MMLU: 0.25;
  MC2: each question's fraction of true answers, paired);
* ``side_effects`` for ``sae/`` at strengths 15, 30 and the preset (45), gated ``sae/`` (``gate=both``),
  ``actadd/`` and ``base/``: ``kl_benign`` and ``ce_delta_text`` with 95 % bootstrap intervals, and whether
  KL rises with strength and the gated row sits below the ungated one;
* ``actadd/`` and ``sae/`` (presets) against ``base/`` on the same questions and passages: paired tests (exact
  McNemar on MMLU cloze and MC1, Wilcoxon signed-rank on MC2 and on per-passage cross-entropy).

Prints a Markdown report (and writes it with ``--out``); the numbers in ``docs/cost.md`` come from::

    STEERBOARD_THREADS=1 .venv/bin/python benchmarks/cost_separation.py --mmlu 1000 --tqa 300 --side-limit 40

The machine is shared, so wall-clock times printed here are indicative only.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", {}),
    "sae s=15": ("sae", {"strengths": "15"}),
    "sae s=30": ("sae", {"strengths": "30"}),
    "sae preset (45)": ("sae", {}),
    "sae preset, gate=both": ("sae", {"gate": "both"}),
    "actadd preset": ("actadd", {}),
}


def run_eval(method: str, model_args: dict[str, Any], task: str, task_args: dict[str, Any], limit: int | None,
             log_dir: str) -> Any:
    from inspect_ai import eval as inspect_eval

    t0 = time.perf_counter()
    (log,) = inspect_eval(
        f"steerboard/{task}", model=f"{method}/smollm2-135m", model_args=model_args, task_args=task_args,
        limit=limit, log_dir=log_dir, display="none", max_connections=32,
    )
    if log.status != "success":
        raise SystemExit(f"{method} {model_args} {task}: {log.status}: {log.error}")
    print(f"  {method} {model_args} {task}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return log


def per_sample(log: Any, scorer: str) -> dict[str, Any]:
    """sample id -> (value, score metadata), skipping unscored (NaN) samples."""
    out = {}
    for s in log.samples:
        sc = s.scores.get(scorer)
        if sc is None:
            continue
        v = sc.value
        v = 1.0 if v == "C" else 0.0 if v == "I" else float(v)
        if not math.isnan(v):
            out[str(s.id)] = (v, sc.metadata or {})
    return out


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def mcnemar(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int, float]:
    """Exact McNemar test on paired 0/1 outcomes: (a right & b wrong, a wrong & b right, two-sided p)."""
    from scipy.stats import binomtest

    ids = sorted(set(a) & set(b))
    n10 = sum(1 for i in ids if a[i][0] == 1 and b[i][0] == 0)
    n01 = sum(1 for i in ids if a[i][0] == 0 and b[i][0] == 1)
    p = binomtest(n10, n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
    return n10, n01, float(p)


def wilcoxon(diffs: list[float]) -> float:
    from scipy.stats import wilcoxon as w

    nz = [d for d in diffs if d != 0]
    return float(w(nz).pvalue) if len(nz) >= 2 else 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmlu", type=int, default=600, help="MMLU questions (shuffled, seed 0)")
    ap.add_argument("--tqa", type=int, default=300, help="TruthfulQA questions (shuffled, seed 0)")
    ap.add_argument("--side-limit", type=int, default=None, help="side_effects samples (default: all 156)")
    ap.add_argument("--template", choices=("plain", "chat"), default="plain", help="MMLU/TruthfulQA -T template")
    ap.add_argument("--no-side", action="store_true", help="skip the side-effects runs (capability only)")
    ap.add_argument("--no-capability", action="store_true", help="skip MMLU and TruthfulQA (side effects only)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)

    from steerboard.scorers.loglik import bootstrap_ci

    log_dir = tempfile.mkdtemp(prefix="cost_sep_")
    shuffled = {"shuffle": True, "seed": 0, "template": args.template}
    lines: list[str] = []
    t_start = time.perf_counter()

    # ---- side effects for every configuration
    side: dict[str, dict[str, dict[str, Any]]] = {}
    for label, (method, margs) in ({} if args.no_side else CONFIGS).items():
        slog = run_eval(method, margs, "side_effects", {"reply_tokens": 48}, args.side_limit, log_dir)
        side[label] = {"kl": per_sample(slog, "kl_benign"), "ce": per_sample(slog, "ce_delta_text")}

    lines.append("\n### Side effects (lower is better; 95 % bootstrap intervals)\n")
    lines.append("| configuration | kl_benign (nats/token) | 95 % interval | ce_delta_text (nats/token) | 95 % interval |")
    lines.append("|---|---|---|---|---|")
    means: dict[str, float] = {}
    for label, d in side.items() if side else ():
        kl = [v for v, _ in d["kl"].values()]
        ce = [v for v, _ in d["ce"].values()]
        means[label] = sum(kl) / len(kl)
        klo, khi = bootstrap_ci(kl)
        clo, chi = bootstrap_ci(ce)
        lines.append(f"| {label} | {means[label]:.4f} | [{klo:.4f}, {khi:.4f}] | {sum(ce) / len(ce):.4f} | "
                     f"[{clo:.4f}, {chi:.4f}] |")
    if side:
        mono = means["sae s=15"] < means["sae s=30"] < means["sae preset (45)"]
        gated = means["sae preset, gate=both"] < means["sae preset (45)"]
        lines.append(f"\nkl_benign rises over strengths 15 < 30 < 45: **{mono}**; gated (both) below ungated: "
                     f"**{gated}**.")

    print("\n".join(lines), flush=True)
    if args.no_capability:
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
        return 0
    # ---- capability: base and actadd on the same questions
    cap: dict[str, dict[str, dict[str, Any]]] = {}
    for label in ("base", "actadd preset", "sae preset (45)"):
        method, margs = CONFIGS[label]
        mlog = run_eval(method, margs, "mmlu", {**shuffled, "format": "cloze"}, args.mmlu, log_dir)
        tlog = run_eval(method, margs, "truthfulqa", shuffled, args.tqa, log_dir)
        cap[label] = {
            "mmlu": per_sample(mlog, "mmlu_cloze"),
            "mc1": per_sample(tlog, "truthfulqa_mc1"),
            "mc2": per_sample(tlog, "truthfulqa_mc2"),
        }

    lines.append("### Capability of `base/` against chance (95 % intervals)\n")
    lines.append("| metric | n | value | 95 % interval | chance | excludes chance |")
    lines.append("|---|---|---|---|---|---|")
    b = cap["base"]
    k, n = int(sum(v for v, _ in b["mmlu"].values())), len(b["mmlu"])
    lo, hi = wilson(k, n)
    lines.append(f"| MMLU cloze accuracy (Wilson) | {n} | {k / n:.3f} | [{lo:.3f}, {hi:.3f}] | 0.250 | {lo > 0.25} |")
    mc1 = b["mc1"]
    c1 = sum(m["chance"] for _, m in mc1.values()) / len(mc1)
    k1 = int(sum(v for v, _ in mc1.values()))
    lo1, hi1 = wilson(k1, len(mc1))
    lines.append(f"| TruthfulQA MC1 (Wilson) | {len(mc1)} | {k1 / len(mc1):.3f} | [{lo1:.3f}, {hi1:.3f}] | {c1:.3f} "
                 f"| {lo1 > c1 or hi1 < c1} |")
    mc2 = b["mc2"]
    v2 = [v for v, _ in mc2.values()]
    ch2 = [m["chance"] for _, m in mc2.values()]
    d2 = [v - c for v, c in zip(v2, ch2, strict=True)]
    dlo, dhi = bootstrap_ci(d2)
    mean2, chance2 = sum(v2) / len(v2), sum(ch2) / len(ch2)
    lines.append(f"| TruthfulQA MC2 (bootstrap of MC2 - chance, paired) | {len(v2)} | {mean2:.3f} | "
                 f"[{chance2 + dlo:.3f}, {chance2 + dhi:.3f}] | {chance2:.3f} | {dlo > 0 or dhi < 0} |")

    for label in ("actadd preset", "sae preset (45)"):
        lines += paired_rows(label, b, cap[label], side.get(label))
    lines.append(f"\nTotal wall time {time.perf_counter() - t_start:.0f} s (shared 2-core machine; logs in {log_dir}).")
    report = "\n".join(lines)
    print(report)  # the side-effects table again, then the rest
    if args.out:
        args.out.write_text(report + "\n")
    return 0


def paired_rows(label: str, b: dict[str, Any], a: dict[str, Any], side: dict[str, Any] | None) -> list[str]:
    """The paired comparison of one configuration with ``base/`` on the same questions and passages."""
    name = label.split()[0]
    lines = [f"\n### `{name}/` (preset) against `base/`, paired on the same items\n",
             f"| metric | n | base | {name} | test | p |", "|---|---|---|---|---|---|"]
    for key, title in (("mmlu", "MMLU cloze accuracy"), ("mc1", "TruthfulQA MC1")):
        ids = sorted(set(b[key]) & set(a[key]))
        n10, n01, p = mcnemar(b[key], a[key])
        bm = sum(b[key][i][0] for i in ids) / len(ids)
        am = sum(a[key][i][0] for i in ids) / len(ids)
        lines.append(f"| {title} | {len(ids)} | {bm:.3f} | {am:.3f} | exact McNemar ({n10} base-only, "
                     f"{n01} {name}-only right) | {p:.3g} |")
    ids = sorted(set(b["mc2"]) & set(a["mc2"]))
    diffs = [a["mc2"][i][0] - b["mc2"][i][0] for i in ids]
    lines.append(f"| TruthfulQA MC2 | {len(ids)} | {sum(b['mc2'][i][0] for i in ids) / len(ids):.3f} | "
                 f"{sum(a['mc2'][i][0] for i in ids) / len(ids):.3f} | Wilcoxon signed-rank | {wilcoxon(diffs):.3g} |")
    if side is None:
        return lines
    ce_a = side["ce"]
    ce_diffs = [v for v, _ in ce_a.values()]  # per passage: CE(method) - CE(base), the same tokens
    ce_base = [m["ce_base"] for _, m in ce_a.values()]
    lines.append(f"| WikiText-2 cross-entropy (nats/token) | {len(ce_diffs)} | {sum(ce_base) / len(ce_base):.3f} | "
                 f"{(sum(ce_base) + sum(ce_diffs)) / len(ce_base):.3f} | Wilcoxon signed-rank | {wilcoxon(ce_diffs):.3g} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
