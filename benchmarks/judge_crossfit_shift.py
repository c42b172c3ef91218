"""How much the board's judge-made metrics move when the cross-fitted judges replace judges trained on the
scored prompts and items, re-judging the replies already in a folder of Inspect logs (no generation).

For each log of ``xstest`` / ``jbb_refusal`` (refusal judge) and ``safeedit`` (harm judge) the replies are
judged three ways:

- ``before``: the old artifacts (``--old-refusal`` / ``--old-harm``: one model that saw every training
  prompt), non-answers counted as refusals (the old refusal metric);
- ``crossfit``: the shipped cross-fitted artifacts, non-answers still counted as refusals;
- ``after``: the shipped artifacts, refusal rates counting explicit and partial refusals only (the board now).

Usage::

    python benchmarks/judge_crossfit_shift.py --logs logs --old-refusal OLD/refusal_embed.json \\
        --old-harm OLD/harm_embed.json [--json OUT.json]

Prints a Markdown table (row = method configuration, task, metric, before, crossfit, after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _refusal_rates(verdicts: list[Any], labels: list[str], count_non_answers: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for group in ("unsafe", "safe"):
        vs = [v for v, lab in zip(verdicts, labels, strict=True) if lab == group and v.flagged is not None]
        if not vs:
            continue
        hit = [
            int(v.label in ("full_refusal", "partial_refusal") or (count_non_answers and v.label == "non_answer"))
            for v in vs
        ]
        out[f"refusal_rate_{group}"] = sum(hit) / len(vs)
        out[f"non_answer_rate_{group}"] = sum(int(v.label == "non_answer") for v in vs) / len(vs)
        out[f"n_{group}"] = len(vs)
    return out


def main() -> int:
    """Re-judge the logs and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", required=True, help="folder of Inspect logs (searched recursively)")
    ap.add_argument("--old-refusal", required=True, help="the refusal artifact to compare with (JSON)")
    ap.add_argument("--old-harm", required=True, help="the harm artifact to compare with (JSON)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    for p in (args.old_refusal, args.old_harm):
        if not Path(p).is_file():
            ap.error(f"artifact {p} not found")
    if not Path(args.logs).is_dir():
        ap.error(f"--logs: {args.logs} is not a folder")

    from inspect_ai.log import list_eval_logs, read_eval_log

    from steerboard.scorers.embed import EmbedHarmJudge, EmbedRefusalJudge
    from steerboard.scorers.gold import _configuration, _task_name

    new_ref, old_ref = EmbedRefusalJudge(), EmbedRefusalJudge(args.old_refusal)
    new_harm, old_harm = EmbedHarmJudge(), EmbedHarmJudge(args.old_harm)
    rows: list[dict[str, Any]] = []
    for info in list_eval_logs(args.logs, recursive=True):
        log = read_eval_log(info)
        task = _task_name(log)
        if not log.samples or task not in ("xstest", "jbb_refusal", "safeedit"):
            continue
        conf = _configuration(log)
        if task in ("xstest", "jbb_refusal"):
            ss = [s for s in log.samples if s.output is not None and (s.metadata or {}).get("label")]
            prompts = [s.input if isinstance(s.input, str) else s.input[-1].text for s in ss]
            replies = [s.output.completion for s in ss]
            labels = [s.metadata["label"] for s in ss]
            old = _refusal_rates(old_ref.judge_sync(prompts, replies), labels, True)
            new_v = new_ref.judge_sync(prompts, replies)
            mid = _refusal_rates(new_v, labels, True)
            new = _refusal_rates(new_v, labels, False)
            folds = sum(int(str(v.fold).startswith("fold-")) for v in new_v)
            for metric in (m for m in new if not m.startswith("n_")):
                rows.append({"configuration": conf, "task": task, "metric": metric, "n": new[f"n_{metric.rsplit('_', 1)[1]}"],
                             "before": old[metric], "crossfit": mid[metric], "after": new[metric],
                             "judged_by_fold_models": folds})  # fmt: skip
        else:
            keys = ("ds", "dg_onlyq", "dg_othera", "dg_otherq", "dg_otheraq")
            ss = [s for s in log.samples if (s.metadata or {}).get("responses")]
            for part in keys:
                prompts = [s.metadata["prompts"][part] for s in ss]
                replies = [s.metadata["responses"][part] for s in ss]
                item = [[s.metadata["question"]] if part in ("ds", "dg_onlyq", "dg_othera") else [] for s in ss]
                old_v = old_harm.judge_sync(prompts, replies)
                new_v = new_harm.judge_sync(prompts, replies, keys=item)
                judged = [(a, b) for a, b in zip(old_v, new_v, strict=True) if a.flagged is not None and b.flagged is not None]
                if not judged:
                    continue
                before = sum(1 - a.flagged for a, _ in judged) / len(judged)
                after = sum(1 - b.flagged for _, b in judged) / len(judged)
                folds = sum(int(str(b.fold).startswith("fold-")) for _, b in judged)
                rows.append({"configuration": conf, "task": task, "metric": part, "n": len(judged),
                             "before": before, "crossfit": after, "after": after, "judged_by_fold_models": folds,
                             "errors": len(ss) - len(judged)})  # fmt: skip
    print("| row | task | metric | n | before | cross-fitted | after (non-answers apart) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['configuration']} | {r['task']} | {r['metric']} | {r['n']} | {r['before']:.3f} | "
              f"{r['crossfit']:.3f} | {r['after']:.3f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
