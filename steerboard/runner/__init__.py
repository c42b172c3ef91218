"""The suite runner behind ``steerboard run``: suites of methods x tasks through Inspect's eval-set machinery.

A suite (:mod:`~steerboard.runner.suite`) becomes (method configuration, task) pairs; every pair's options are
validated before the first one runs; each pair is one Inspect ``eval_set`` call into its own log folder, so an
interrupted run resumes and a re-run runs only what is missing. One road, whichever executor::

    suite.load_suite / parse_suite           -> Suite
    plan.select_runs                         -> (MethodRun, TaskRun) pairs  (--only-method, --only-task)
    plan.validate_runs (check_runs)          -> every problem at once, before any model work (SuiteInvalid)
    plan.plan_pairs                          -> Pair: limit, log folder, generate config (suite.generate_config)
    pair.run_pair(pair, settings)            -> the pair's summary entry
        local.run_suite / run_pairs          ... one pair after another in this process (Ctrl-C stops the suite)
        ray_executor.run_suite_ray           ... each method configuration on a Ray actor (its request:
                                                 ray_requests.config_resources, from the same generate configs)
    summary.finish_summary, results_table    -> the summary JSON and the printed table

Modules:

* :mod:`~steerboard.runner.suite`: the suite file (:class:`Suite`, :class:`MethodRun`, :class:`TaskRun`,
  :func:`parse_suite`, :func:`load_suite`, gated tasks, :func:`build_task`) and :func:`generate_config`, the one
  place a pair's generation settings are merged (suite ``generate``, task ``config``, command-line overrides);
  the eval, the validation, the time estimate and the Ray memory estimate all read it.
* :mod:`~steerboard.runner.plan`: :func:`select_runs`, :func:`check_runs` / :func:`validate_runs`,
  :class:`Pair` and :func:`plan_pairs`, :class:`RunSettings` (what every pair of a run shares), the logs a pair
  already has (:func:`pair_logs`, :func:`pair_state`).
* :mod:`~steerboard.runner.pair`: :func:`run_pair`, the public per-pair interface both executors call.
* :mod:`~steerboard.runner.local`: :func:`run_suite`, the local executor and the dry run.
* :mod:`~steerboard.runner.ray_executor` and :mod:`~steerboard.runner.ray_requests`: the Ray executor, and what
  each configuration's actor requests (memory estimate included; no Ray needed for that).
* :mod:`~steerboard.runner.executor`: :func:`check_executor`, :func:`run_with_executor`.
* :mod:`~steerboard.runner.estimate` and :mod:`~steerboard.runner.summary`: time estimates; the summary.

Heavy dependencies (Inspect, torch, Ray) are imported inside the functions that need them.
"""

from __future__ import annotations

from steerboard.runner.executor import EXECUTORS, check_executor, run_with_executor
from steerboard.runner.local import run_suite
from steerboard.runner.pair import run_pair
from steerboard.runner.plan import (
    Pair,
    RunSettings,
    SuiteInvalid,
    check_runs,
    plan_pairs,
    select_runs,
    validate_runs,
)
from steerboard.runner.suite import (
    MethodRun,
    Suite,
    TaskRun,
    generate_config,
    load_suite,
    parse_suite,
)

__all__ = [
    "EXECUTORS", "MethodRun", "Pair", "RunSettings", "Suite", "SuiteInvalid", "TaskRun", "check_executor",
    "check_runs", "generate_config", "load_suite", "parse_suite", "plan_pairs", "run_pair", "run_suite",
    "run_with_executor", "select_runs", "validate_runs",
]
