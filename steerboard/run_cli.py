"""``steerboard run``: run a suite (or an ad-hoc method x task grid) through Inspect, resumably."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _kv(items: list[str] | None, flag: str, parse: bool = True) -> dict[str, Any]:
    """``key=value`` items -> dict; values read as YAML, or kept as typed with ``parse=False``."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = (yaml.safe_load(v) if v.strip() else "") if parse else v
    return out


def generate_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """GenerateConfig keys from ``--max-tokens``, ``--temperature`` and ``--generate key=value``."""
    gen = _kv(args.generate, "--generate")
    if args.max_tokens is not None:
        if args.max_tokens < 1:
            raise ValueError(f"--max-tokens {args.max_tokens}: must be a positive integer")
        gen["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        if args.temperature < 0:
            raise ValueError(f"--temperature {args.temperature}: must be >= 0")
        gen["temperature"] = args.temperature
    return gen


def _print_summary(summary: list[dict[str, Any]], dry_run: bool) -> None:
    from steerboard.runner.estimate import format_duration
    from steerboard.runner.summary import results_table

    for s in summary:
        line = f"{s['status']:>11}  {s['method']:<8} {json.dumps(s['args'], sort_keys=True):<40} {s['task']:<12}"
        if "seconds" in s:
            line += f" {s['seconds']:>7.1f}s"
        if "estimated_seconds" in s:
            line += f"  ~{format_duration(s['estimated_seconds'])}"
        if s.get("resumes"):
            line += f"  (from a '{s['resumes']}' log)"
        if s.get("error"):
            line += f"  {s['error']}"
        if s.get("replaced_stale_logs"):
            line += f"  (replaced {len(s['replaced_stale_logs'])} log(s) left 'started' by a killed run)"
        print(line)
    estimated = [s["estimated_seconds"] for s in summary if "estimated_seconds" in s]
    if dry_run and estimated:
        source = next(s["estimate_from"] for s in summary if "estimate_from" in s)
        missing = sum(s["status"] != "done" and "estimated_seconds" not in s for s in summary)
        print(f"estimated time on this machine: {format_duration(sum(estimated))} for {len(estimated)} pair(s)"
              + (f" ({missing} without a rate)" if missing else "")
              + f", from {source}; model loads and method fits not included")
    if not dry_run and any(s.get("metrics") for s in summary):
        print()
        print(results_table(summary))


def typed_sweep(method: str, sweep: dict[str, Any]) -> dict[str, list[Any]]:
    """``--sweep KEY=V1,V2`` values typed by the method's config fields, with the parser ``-M`` values get.

    ``--sweep strength=15,30,45`` on a float field gives ``[15.0, 30.0, 45.0]``, so the runs' settings are
    numbers (as a suite file's would be) and the leaderboard draws them as one curve.

    Raises:
        ValueError: an unknown method, a key the method has no option for, or a value its field cannot take
            (one line, naming what is valid); nothing is loaded.
    """
    import typing

    from steerboard.methods.provider import method_class
    from steerboard.methods.registry import method_entry_points, unknown_method_message

    entry_points = method_entry_points()
    if method not in entry_points:
        raise ValueError(unknown_method_message(method))
    config_class = method_class(entry_points[method]).config_class
    valid = config_class.valid_keys()
    hints = typing.get_type_hints(config_class)
    out: dict[str, list[Any]] = {}
    for key, raw in sweep.items():
        if key not in valid:
            raise ValueError(f"--sweep {key}=...: method {method} has no option {key!r}; valid: {', '.join(valid)}")
        values = [v.strip() for v in raw.split(",") if v.strip()] if isinstance(raw, str) else list(raw)
        if not values:
            raise ValueError(f"--sweep {key}={raw}: give one or more comma-separated values")
        out[key] = [_sweep_value(v, hints[key], key, raw) for v in values]
    return out


def _sweep_value(text: Any, tp: Any, key: str, raw: str) -> Any:
    """One sweep value parsed by its field's type, as a suite file would hold it.

    A list field (``strengths: list[float]``) takes one element per run, kept as that element (the method
    reads a single value as a one-element list), since commas already separate the sweep's values. A whole
    number for a float field stays an integer (``15``, as YAML reads it), so a sweep run from the command line
    and the same run from a suite file share one configuration.
    """
    import types
    import typing

    import yaml

    from steerboard.methods.base import _coerce

    inner = tp
    if typing.get_origin(inner) in (typing.Union, types.UnionType):
        (inner, *_) = [a for a in typing.get_args(inner) if a is not type(None)] or [inner]
    if typing.get_origin(inner) in (list, tuple):
        (inner, *_) = typing.get_args(inner) or (typing.Any,)
    try:
        value = _coerce(text, inner, key)
        _coerce(value, tp, key)  # the whole field takes it (e.g. Optional, Literal)
    except ValueError as ex:
        raise ValueError(f"--sweep {key}={raw}: {str(ex).removeprefix('-M ')}") from None
    if isinstance(value, float) and isinstance(text, str):
        read = yaml.safe_load(text)
        if isinstance(read, int) and not isinstance(read, bool) and read == value:
            return read
    return value


def _suite_from_args(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The suite the command line asks for (a named suite, optionally with other methods, or an ad-hoc grid),
    and the notes on gated tasks dropped from it."""
    from steerboard.runner.suite import (
        drop_gated_tasks,
        load_suite,
        parse_suite,
        read_suite_yaml,
        replace_methods,
        set_task_args,
        suite_path,
    )

    sweep = _kv(args.sweep, "--sweep", parse=False)
    # -M values stay text: the method's config parses them by field type (MethodConfig.from_dict); sweep
    # values are typed here by the same parser, so each run's settings hold numbers, not their spelling
    methods = [
        {"name": m, "args": _kv(args.M, "-M", parse=False), "sweep": typed_sweep(m, sweep)}
        for m in args.method or []
    ]
    if (args.M or args.sweep) and not args.method:
        raise ValueError("-M and --sweep set options of --method NAME; give --method too")
    notes: list[str] = []
    if args.suite:
        if args.task:
            raise ValueError("give either --suite or --task (an ad-hoc grid), not both; --only-task selects suite tasks")
        if args.method:  # the suite's tasks for the given method(s), e.g. --suite submission --method mymethod
            path = suite_path(args.suite)
            suite = parse_suite(replace_methods(read_suite_yaml(path), methods), path.name)
        else:
            suite = load_suite(args.suite)
        set_task_args(suite, _kv(args.T, "-T"))
        notes = drop_gated_tasks(suite)
    elif args.method and args.task:
        data = {
            "name": "adhoc",
            "model": args.model or "smollm2-135m",
            "methods": methods,
            "tasks": [{"name": t, "limit": args.limit, "args": _kv(args.T, "-T")} for t in args.task],
        }
        suite = parse_suite(data, "command line")
    else:
        raise ValueError("give --suite NAME|FILE [--method NAME], or --method NAME --task NAME (repeatable)")
    return suite, notes


def _run(args: argparse.Namespace) -> int:
    suite, notes = _suite_from_args(args)
    for note in notes:
        print(f"steerboard run: {note}", file=sys.stderr)
    roles = {k: str(v) for k, v in _kv(args.model_role, "--model-role").items()}
    from steerboard import storage
    from steerboard.runner.executor import check_executor, run_with_executor
    from steerboard.runner.ray_requests import parse_resources, resource_plan

    # executor, Ray address, bucket, credentials: all checked before any model work
    resources = parse_resources(args.ray_resources)
    if not args.dry_run:
        check_executor(args.executor, args.ray_address)
    if storage.is_url(args.log_dir) and not args.dry_run:
        storage.check_writable(args.log_dir, "cannot write logs to")
    local_dir = not storage.is_url(args.log_dir) and args.executor == "local"
    summary_path = Path(args.log_dir) / f"suite-{suite.name}-summary.json" if local_dir and not args.dry_run else None
    generate = generate_overrides(args)  # over the suite's and the tasks': for the evals and the memory estimate
    summary = run_with_executor(
        args.executor,
        suite,
        args.log_dir,
        ray_address=args.ray_address,
        resources=resources,
        model=args.model,
        limit_scale=args.limit_scale,
        only_methods=args.only_method,
        only_tasks=args.only_task,
        display=args.display,
        dry_run=args.dry_run,
        generate=generate,
        model_roles=roles,
        summary_path=summary_path,
    )
    if summary_path is None and not args.dry_run:  # a bucket, or a Ray run: the summary goes through fsspec
        storage.write_text(
            storage.join(args.log_dir, f"suite-{suite.name}-summary.json"), storage.dumps_json(summary, indent=2)
        )
    _print_summary(summary, args.dry_run)
    if args.dry_run and args.executor == "ray":  # what each configuration's actor would ask the cluster for
        print()
        for line in resource_plan(suite, resources, args.model, args.only_method, args.only_task, generate):
            print(f"ray actor  {line}")
    return _exit_code(summary, args.dry_run)


def _exit_at_once_on_sigint() -> None:
    """After an interrupted suite, a further Ctrl-C while the process shuts down (joining threads) exits 130 at
    once instead of raising KeyboardInterrupt outside every handler (which would end the process by SIGINT)."""
    import os
    import signal
    import threading

    def abort(signum: int, frame: Any) -> None:
        print("steerboard run: second interrupt: aborted at once; re-run the same command to resume",
              file=sys.stderr, flush=True)
        os._exit(130)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, abort)


def _exit_code(summary: list[dict[str, Any]], dry_run: bool) -> int:
    """Say how the run ended: 0 (all done or a valid dry run), 130 (interrupted) or 1 (a run failed)."""
    if dry_run:
        done = sum(s["status"] == "done" for s in summary)
        resume = sum(s["status"] == "to resume" for s in summary)
        print(f"steerboard run --dry-run: {len(summary)} pairs valid: {done} done, {resume} to resume, "
              f"{len(summary) - done - resume} to run")
        return 0
    cancelled = [s for s in summary if s["status"] == "cancelled"]
    if cancelled:
        left = sum(s["status"] == "not started" for s in summary)
        print(f"steerboard run: interrupted: {len(cancelled)} run cancelled, {left} not started; re-run the same "
              "command to resume (finished runs are skipped)", file=sys.stderr)
        _exit_at_once_on_sigint()
        return 130
    failed = [s for s in summary if s["status"] != "success"]
    if failed:
        print(f"steerboard run: {len(failed)} of {len(summary)} runs failed; re-run the same command to retry "
              "(finished runs are skipped)", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a suite of methods x tasks through Inspect (resumable)",
        description="Run a suite (quick, full, or a YAML file) or an ad-hoc grid. Finished (method, task) "
        "pairs are skipped, so an interrupted run resumes where it stopped.",
    )
    p.add_argument("--suite", help="suite name (quick, full) or path to a suite YAML")
    p.add_argument("--log-dir", default="logs", help="root log folder (default: logs)")
    p.add_argument("--model", help="override the suite's model: alias, local dir or HF id")
    p.add_argument("--method", action="append",
                   help="method name (repeatable); with --suite it replaces the suite's methods")
    p.add_argument("--task", action="append", help="ad-hoc: task name (repeatable)")
    p.add_argument("-M", action="append", metavar="KEY=VALUE", help="option of --method")
    p.add_argument("-T", action="append", metavar="KEY=VALUE",
                   help="ad-hoc: task option; with --suite TASK.KEY=VALUE (e.g. wildguard.data_file=PATH)")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help="ad-hoc: expand a method option into one run per value (a strength sweep)")
    p.add_argument("--limit", type=int, help="ad-hoc: samples per task")
    p.add_argument("--limit-scale", type=float, default=1.0, help="multiply every task limit (default 1)")
    p.add_argument("--only-method", action="append", help="run only these methods of the suite")
    p.add_argument("--only-task", action="append", help="run only these tasks of the suite")
    p.add_argument("--max-tokens", type=int, default=None, help="cap every completion at N tokens")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (0: greedy)")
    p.add_argument("--generate", action="append", metavar="KEY=VALUE",
                   help="any Inspect GenerateConfig key, e.g. --generate seed=1 --generate top_p=0.9 (repeatable; "
                   "applied over the suite's generate and the tasks' config)")
    p.add_argument("--model-role", action="append", metavar="ROLE=MODEL",
                   help="Inspect model role, e.g. grader=openai/gpt-4o-mini for -T judge=model (repeatable)")
    p.add_argument("--display", default=None, help="Inspect display: full, rich, plain, none")
    p.add_argument("--dry-run", action="store_true",
                   help="validate every pair and list which are done and which would run, without running them")
    p.add_argument("--executor", default="local",
                   help="local (default: pairs one after another here) or ray (one Ray actor per method config)")
    p.add_argument("--ray-address", help="Ray cluster address for --executor ray (default: start a local one)")
    p.add_argument("--ray-resources", metavar="num_cpus=N,num_gpus=N,memory=SIZE",
                   help="resources each Ray actor requests, over the suite's resources: (default: num_cpus=1, "
                   "memory=the configuration's estimate; memory in bytes or e.g. 8GiB)")
    # not on the torch thread: Inspect's event loop runs here and waits on work it submits there
    p.set_defaults(func=_run, torch_thread=False)
