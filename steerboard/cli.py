"""The ``steerboard`` command line: ``model fetch``, ``run``, ``ingest``, ``build``, ``judge``, ``sae``, ``submit``.

Each command group lives next to the code it drives and exposes ``add_parser(subparsers)``; this module
only wires them together (imports stay lazy so ``--help`` is fast).
"""

from __future__ import annotations

import argparse
import importlib
import os
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


DEBUG_ENV = "STEERBOARD_DEBUG"
"""Set to 1 (or pass ``--debug``) to see the traceback of an error instead of its one-line message."""


def add_command_group(
    subparsers: argparse._SubParsersAction, name: str, help: str  # type: ignore[type-arg]
) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Add the command ``name`` whose sub-command is required (stored as ``args.<name>_command``).

    Returns the action that adds the sub-commands.
    """
    group = subparsers.add_parser(name, help=help)
    sub = group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    sub.required = True
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerboard",
        description="Evaluate safety steering/editing methods with Inspect and build a static leaderboard.",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help=f"show the traceback of an error (also {DEBUG_ENV}=1); accepted anywhere on the command line",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help="give up on a storage request (s3://, gs://, ...) unanswered for this long (default 30; also "
        "STEERBOARD_NET_TIMEOUT); accepted anywhere on the command line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def _is_user_error(ex: BaseException) -> bool:
    """Errors whose message says all there is to say (bad input, a missing file, a busy database)."""
    return isinstance(ex, (ValueError, FileNotFoundError)) or bool(getattr(ex, "user_error", False))


def _error_line(ex: BaseException) -> str:
    """An error as one line (the first line of its message; a list of problems keeps its lines)."""
    text = str(ex).strip() or type(ex).__name__
    from steerboard.runner.plan import SuiteInvalid

    if isinstance(ex, SuiteInvalid):
        return text
    first = text.splitlines()[0]
    if _is_user_error(ex):
        return first
    return f"{type(ex).__name__}: {first}"


def main(argv: Sequence[str] | None = None) -> int:
    rc = _main(argv)
    _stop_torch_thread(rc)
    return rc


def _stop_torch_thread(rc: int) -> None:
    """Stop the torch thread before the interpreter finalises (a daemon thread inside a torch kernel then
    aborts the process, exit 134); if it is stuck in a long job (a model load, a fit), exit ``rc`` at once."""
    from steerboard import torch_thread

    if torch_thread.shutdown(timeout=10.0):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _take_timeout(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], float | None]:
    """``--timeout SECONDS`` (accepted anywhere, like ``--debug``): the bound on every storage request."""
    out: list[str] = []
    timeout: float | None = None
    it = iter(argv)
    for a in it:
        if a == "--timeout" or a.startswith("--timeout="):
            raw = a.partition("=")[2] if "=" in a else next(it, "")
            try:
                timeout = float(raw)
            except ValueError:
                parser.error(f"--timeout {raw!r}: give seconds (a positive number)")
            continue
        out.append(a)
    return out, timeout


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    argv, timeout = _take_timeout(argv, parser)
    args = parser.parse_args(argv)
    try:
        if timeout is not None:
            from steerboard import storage

            storage.set_net_timeout(timeout)
        if getattr(args, "torch_thread", True):
            # everything heavy on the one torch thread (one OpenMP team; see steerboard.torch_thread)
            from steerboard import torch_thread

            rc = torch_thread.call(args.func, args)
        else:  # a command that drives Inspect: its providers submit to the torch thread themselves
            rc = args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"steerboard {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as ex:  # noqa: BLE001 - one clear line for the user; the traceback with --debug
        if debug:
            raise
        user_error = _is_user_error(ex)
        hint = "" if user_error else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
        print(f"steerboard {args.command}: error: {_error_line(ex)}{hint}", file=sys.stderr)
        return 2 if user_error else 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
