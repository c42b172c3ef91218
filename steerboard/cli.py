"""The ``steerboard`` command line: ``model fetch``, ``run``, ``ingest``, ``build``, ``judge``, ``sae``, ``submit``.

Each command group lives next to the code it drives and exposes ``add_parser(subparsers)``; this module
only wires them together (imports stay lazy so ``--help`` is fast).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module, what it adds). Each module defines add_parser(subparsers) and sets a ``func`` default; commands
# that drive Inspect also set ``torch_thread=False`` (see main).
COMMAND_MODULES: list[str] = [
    "steerboard.models_cli",
    "steerboard.methods.sae_cli",
    "steerboard.run_cli",
    "steerboard.leaderboard.cli",
    "steerboard.scorers.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerboard",
        description="Evaluate safety steering/editing methods with Inspect and build a static leaderboard.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "torch_thread", True):
            # everything heavy on the one torch thread (one OpenMP team; see steerboard.torch_thread)
            from steerboard import torch_thread

            rc = torch_thread.call(args.func, args)
        else:  # a command that drives Inspect: its providers submit to the torch thread themselves
            rc = args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as ex:  # ImportError: a missing optional extra (named)
        print(f"steerboard {args.command}: error: {ex}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
