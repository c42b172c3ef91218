"""``steerboard ingest``, ``steerboard build`` and ``steerboard submit check``.

Public build (the project's own runs plus a submissions folder with one sub-folder per method author)::

    steerboard ingest --logs logs/ --db results.duckdb                 # the project's runs (source "steerboard")
    steerboard ingest --submissions submissions/ --db results.duckdb   # submissions/<author>/*.eval
    steerboard build --db results.duckdb --out site/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from steerboard.cli import add_command_group

GOLD_HELP = (
    "the judges' agreement with the gold set, from `steerboard judge gold agree --out` (default: the shipped "
    "steerboard/scorers/data/gold_agreement.json; without one, no gold-set check is shown)"
)


def _listing(path: str | None):  # -> Listing (imported lazily)
    from steerboard.leaderboard.listing import resolve_listing

    return resolve_listing(path)


def _ingest(args: argparse.Namespace) -> int:
    import warnings

    from steerboard.leaderboard.ingest import ingest_logs, ingest_submissions

    if not args.logs and not args.submissions:
        raise ValueError("nothing to ingest: give --logs DIR (repeatable) and/or --submissions DIR")
    try:
        listing = _listing(args.listing)
    except FileNotFoundError:
        if args.listing:
            raise
        listing = None  # worst samples are then the first samples; metrics are computed at build time anyway
        print(
            "steerboard ingest: no task listing yet; keeping the first samples of each run as examples",
            file=sys.stderr,
        )
    rc = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each skipped file is printed below, once
        if args.logs:
            s = ingest_logs(
                args.logs,
                args.db,
                submitter=args.submitter,
                listing=listing,
                workers=args.workers,
                progress=not args.quiet,
            )
            print("\n".join(s.lines()))
            rc |= 1 if s.skipped and args.strict else 0
        if args.submissions:
            for who, s in ingest_submissions(
                args.submissions, args.db, listing=listing, workers=args.workers, progress=not args.quiet
            ).items():
                print(f"[{who}] " + "\n".join(s.lines()))
                rc |= 1 if s.skipped and args.strict else 0
    return rc


def _build(args: argparse.Namespace) -> int:
    from steerboard.leaderboard.build import build_site

    b = build_site(
        args.db, args.out, listing=_listing(args.listing), agreement_path=args.agreement,
        gold_agreement_path=args.gold_agreement,
    )  # fmt: skip
    from steerboard.storage import join

    print(f"wrote {join(b.out, 'index.html')}: {b.rows} rows, {b.runs} runs, {b.pages} pages")
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.json:
        import json

        from steerboard.leaderboard.report import results_json

        rows = results_json(args.db, _listing(args.listing), gold_agreement_path=args.gold_agreement)
        text = json.dumps(rows, indent=1, ensure_ascii=False, allow_nan=False)
        text += "\n"
    else:
        from steerboard.leaderboard.report import results_markdown

        text = results_markdown(args.db, _listing(args.listing), with_ci=args.ci)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from steerboard.leaderboard.submit import STANDARD_JUDGES, check_submission

    judges = frozenset(args.judges.split(",")) if args.judges else STANDARD_JUDGES
    required = args.tasks.split(",") if args.tasks else None
    rep = check_submission(args.dir, _listing(args.listing), required=required, judges=judges)
    print("\n".join(rep.lines()))
    return 0 if rep.ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``ingest``, ``build``, ``report`` and ``submit`` to the ``steerboard`` CLI."""
    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    p = sub.add_parser("ingest", help="load Inspect logs into a DuckDB results database (idempotent)")
    p.add_argument(
        "--logs",
        action="append",
        default=[],
        metavar="DIR_OR_FILE",
        help="log file or folder, local or an fsspec URL such as s3://bucket/logs; repeatable",
    )
    p.add_argument(
        "--submissions", metavar="DIR", help="submissions folder: one sub-folder of logs per author"
    )
    p.add_argument("--submitter", default="steerboard", help="source name for --logs (default: steerboard)")
    p.add_argument("--db", default="results.duckdb", help="results database (default: results.duckdb)")
    p.add_argument("--listing", help="task listing YAML (default: the project's tasks/listing.yaml)")
    p.add_argument("--workers", type=int, default=workers, help=f"reader processes (default: {workers})")
    p.add_argument("--strict", action="store_true", help="exit 1 when any log was skipped")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_ingest)

    b = sub.add_parser("build", help="render the static leaderboard site from a results database")
    b.add_argument("--db", default="results.duckdb", help="results database (default: results.duckdb)")
    b.add_argument("--out", default="site", help="output folder or fsspec URL such as s3://bucket/site (default: site/)")
    b.add_argument("--listing", help="task listing YAML (default: the project's tasks/listing.yaml)")
    b.add_argument(
        "--agreement", help="judge agreement JSON (default: steerboard.scorers artifacts/agreement.json)"
    )
    b.add_argument("--gold-agreement", metavar="PATH", help=GOLD_HELP)
    b.set_defaults(func=_build)

    r = sub.add_parser(
        "report", help="the leaderboard's rows as a Markdown table or JSON (the numbers the site shows)"
    )
    r.add_argument("--db", default="results.duckdb", help="results database (default: results.duckdb)")
    r.add_argument("--listing", help="task listing YAML (default: the project's tasks/listing.yaml)")
    r.add_argument("--ci", action="store_true", help="add each metric's 95 %% interval and its paired change")
    r.add_argument(
        "--json", action="store_true",
        help="print the board as JSON: one object per row with its axes, missing metrics and per-metric "
        "value, n, delta, ci, p, p_adj and mde, and its judges' agreement with the gold set (docs/contract.md)",
    )
    r.add_argument("--gold-agreement", metavar="PATH", help=GOLD_HELP + "; read by --json")
    r.add_argument("--out", help="write the table to this file (default: print it)")
    r.set_defaults(func=_report)

    ssub = add_command_group(sub, "submit", "method submissions (Inspect logs, not code)")
    check_help = "validate a submission (a run folder, or a method's run under logs/) before it is ingested; " \
        "exit 1 on problems"
    c = ssub.add_parser(
        "check", help=check_help, description=check_help[0].upper() + check_help[1:] + ".",
    )
    c.add_argument(
        "dir", metavar="DIR|METHOD",
        help="a folder of .eval/.json logs (e.g. the run folder `steerboard run --suite submission` wrote), "
        "or the name of an installed method: its one run under logs/ is checked. Logs beside the submission that "
        "are not part of it (an earlier --limit try, other methods' runs) are left out with a note",
    )
    c.add_argument("--listing", help="task listing YAML (default: the project's tasks/listing.yaml)")
    c.add_argument("--tasks", help="comma-separated required tasks (default: every listed task)")
    c.add_argument("--judges", help="comma-separated accepted judges (default: the standard ones)")
    c.set_defaults(func=_check)
