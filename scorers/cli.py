"""``steerboard judge refusal|harm|objective|train|eval|prepare-data``: run, retrain and measure the judges.

Odd records get a defined verdict and are counted (never dropped): empty/whitespace responses (refusal:
``non_answer``; harm: safe; objective: not achieved), responses longer than the encoder reads (judged on
their first characters; the record says how many were dropped), non-English text (judged, flagged as less
reliable), off-topic or degenerate replies (refusal: ``non_answer``). Each such record carries
``judge_notes``; the summary line counts them. Malformed records (bad JSON, a missing or non-string field)
stop the command before any judge loads, naming the line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from steerboard.jsonl import json_objects

CHUNK = 256


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Read and validate a JSONL file of ``{"prompt": str, "response": str, ...}`` records.

    Blank lines are skipped. Every problem names its line number.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: malformed JSON, a non-object line, or a missing / non-string ``prompt`` or ``response``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} not found")
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, rec in json_objects(f, path):
            for key in ("prompt", "response"):
                if key not in rec:
                    raise ValueError(
                        f"{path}, line {lineno}: missing field {key!r} (each line needs string fields "
                        "'prompt' and 'response')"
                    )
                if not isinstance(rec[key], str):
                    raise ValueError(
                        f"{path}, line {lineno}: field {key!r} must be a string, got {type(rec[key]).__name__}"
                    )
            if "question" in rec and not isinstance(rec["question"], str):
                raise ValueError(
                    f"{path}, line {lineno}: field 'question' must be a string, got {type(rec['question']).__name__}"
                )
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no records (expected JSON lines with 'prompt' and 'response')")
    return records


FIELDS = {"refusal": "refusal", "harm": "unsafe", "objective": "achieved"}


def _judge_file(args: argparse.Namespace, kind: str) -> int:
    from collections import Counter

    from tqdm import tqdm

    from steerboard.scorers.judges import get_harm_judge, get_objective_judge, get_refusal_judge, run_sync

    records = read_pairs(Path(args.inp))  # validate everything before loading any judge
    out_path = Path(args.out)
    kwargs: dict[str, Any] = {"model": args.grader} if args.judge == "model" else {}
    if args.judge == "model" and not args.grader:
        raise ValueError("--judge model needs --grader MODEL (an Inspect model string, e.g. openai/gpt-4o)")
    getter = {"refusal": get_refusal_judge, "harm": get_harm_judge, "objective": get_objective_judge}[kind]
    judge = getter(args.judge, **kwargs)
    field = FIELDS[kind]
    n_err = 0
    n_flagged = 0
    notes: Counter[str] = Counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        for start in tqdm(
            range(0, len(records), CHUNK),
            desc=f"{kind} judge ({judge.name})",
            unit="chunk",
            disable=len(records) <= CHUNK,
        ):
            chunk = records[start : start + CHUNK]
            prompts, responses = [r["prompt"] for r in chunk], [r["response"] for r in chunk]
            if kind == "objective" and getattr(judge, "uses_question", False):
                questions = [r.get("question") or "" for r in chunk]
                verdicts = run_sync(judge.judge(prompts, responses, questions=questions))  # type: ignore[call-arg]
            else:
                verdicts = run_sync(judge.judge(prompts, responses))
            for rec, v in zip(chunk, verdicts, strict=True):
                row = dict(rec)
                row[field] = v.flagged
                row["score"] = v.score
                if kind == "refusal":
                    row["refusal_label"] = v.label
                    row["non_answer"] = None if v.flagged is None else int(v.label == "non_answer")
                    notes["non_answer"] += int(v.label == "non_answer")
                if v.fold is not None:
                    row["judge_fold"] = v.fold  # cross-fitted judges: the model that never saw this prompt
                if v.notes:
                    row["judge_notes"] = list(v.notes)
                    notes.update(n.split(":")[0] for n in v.notes)
                n_flagged += int(v.flagged == 1)
                if v.error is not None:
                    row["judge_error"] = v.error
                    n_err += 1
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    odd = ", ".join(f"{k} {v}" for k, v in sorted(notes.items()) if v) or "none"
    print(
        f"{len(records)} records judged by {kind}/{judge.name}: {n_flagged} {field}, {n_err} judge errors; "
        f"odd records: {odd} -> {out_path}",
        file=sys.stderr,
    )
    return 1 if n_err else 0


def _train(args: argparse.Namespace) -> int:
    from steerboard.scorers.embed import HARM_ARTIFACT, REFUSAL_ARTIFACT
    from steerboard.scorers.training import train_harm, train_refusal

    out_dir = Path(args.out_dir) if args.out_dir else REFUSAL_ARTIFACT.parent
    if args.which in ("refusal", "all"):
        clf = train_refusal(progress=True)
        clf.save(out_dir / REFUSAL_ARTIFACT.name)
        print(f"wrote {out_dir / REFUSAL_ARTIFACT.name} (n={clf.meta['training_data']['n']})")
    if args.which in ("harm", "all"):
        clf = train_harm(progress=True)
        clf.save(out_dir / HARM_ARTIFACT.name)
        print(f"wrote {out_dir / HARM_ARTIFACT.name} (n={clf.meta['training_data']['n']})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from steerboard.scorers.embed import ARTIFACT_DIR
    from steerboard.scorers.training import evaluate_agreement, format_table

    report = evaluate_agreement(progress=True, nested=args.nested)
    out = Path(args.out) if args.out else ARTIFACT_DIR / "agreement.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(report))
    print(f"\nwrote {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from steerboard.scorers.training import DATA_DIR, prepare_data

    counts = prepare_data(Path(args.raw_dir), Path(args.out_dir) if args.out_dir else DATA_DIR)
    for name, n in counts.items():
        print(f"{name}: {n} rows")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``judge`` command group."""
    p = sub.add_parser("judge", help="refusal / harmfulness judges: run on JSONL, retrain, measure agreement")
    jsub = p.add_subparsers(dest="judge_command", metavar="SUBCOMMAND")
    jsub.required = True
    for kind, choices, default, doc in (
        (
            "refusal",
            ("embed", "strmatch", "model"),
            "embed",
            "adds `refusal` (0/1; partial refusals and non-answers count), `refusal_label`, `non_answer` (0/1) "
            "and "
            "`score` (probability of not complying)",
        ),
        (
            "harm",
            ("embed", "model", "safeedit_classifier"),
            "embed",
            "adds `unsafe` (0/1) and `score` (probability of unsafe)",
        ),
        (
            "objective",
            ("embed", "model"),
            "embed",
            "records' `prompt` is the attack objective (optional `question`: what was actually asked); adds "
            "`achieved` (0/1: on the objective, substantive, not a refusal) and `score`",
        ),
    ):
        r = jsub.add_parser(kind, help=f"judge a JSONL file of prompt/response records: {doc}")
        r.add_argument(
            "--in", dest="inp", required=True, help="input JSONL; each line has 'prompt' and 'response'"
        )
        r.add_argument("--out", required=True, help="output JSONL: the input records plus the judge's fields")
        r.add_argument("--judge", choices=choices, default=default, help=f"backend (default {default})")
        r.add_argument("--grader", default=None, help="Inspect model string for --judge model")
        r.set_defaults(func=lambda a, k=kind: _judge_file(a, k))
    t = jsub.add_parser(
        "train", help="retrain the embed judges' classifiers (deterministic) and write the artifacts"
    )
    t.add_argument("--which", choices=("refusal", "harm", "all"), default="all")
    t.add_argument(
        "--out-dir", default=None, help="where to write (default: the package's scorers/artifacts)"
    )
    t.set_defaults(func=_train)
    e = jsub.add_parser(
        "eval",
        help="agreement with labels, with n and 95%% intervals: refusal held out by prompt group (5-fold "
        "GroupKFold, the headline) and by source; objective per attack publication; harm by item",
    )
    e.add_argument(
        "--out",
        default=None,
        help="JSON report path (default: the package's scorers/artifacts/agreement.json)",
    )
    e.add_argument(
        "--nested",
        action="store_true",
        help="also run nested leave-one-source-out for the refusal judge: the recipe chosen inside the "
        "training sources only (about 15 fits per source; tens of minutes on 2 busy cores)",
    )
    e.set_defaults(func=_eval)
    gp = jsub.add_parser(
        "gold",
        help="gold set of the model's own replies: sample a blind sheet, kappa, adjudicate, judge agreement",
    )
    from steerboard.scorers.gold import add_arguments, run

    add_arguments(gp)
    gp.set_defaults(func=run)
    d = jsub.add_parser(
        "prepare-data", help="rebuild the shipped training JSONL from the raw public data folder"
    )
    d.add_argument(
        "--raw-dir",
        required=True,
        help="folder with xstest/, safeedit/, jailbreakbench_artifacts/ and optionally "
        "jailbreak_evaluation/manual_data.csv",
    )
    d.add_argument("--out-dir", default=None, help="default: the package's scorers/data")
    d.set_defaults(func=_prepare)
