"""The Ray executor: a suite's pairs on Ray actors, on a Ray cluster.

Each method configuration runs on one actor: a long-lived worker process that runs that configuration's tasks
one after another through :func:`steerboard.runner.pair.run_pair` (as the local executor runs each pair), so the
model and the fitted method (SAE, direction, adapter, edits) load once per configuration in that process, not
once per task. Configurations with the same ``num_cpus``/``num_gpus`` requests share a pool of actors, as many as
the cluster holds at once: an actor that finished a configuration takes the next one waiting, keeping its
imports and the shared model loaded. Requests come from :mod:`steerboard.runner.ray_requests`. A pair whose
worker dies is retried (Ray restarts the actor and re-sends the call; Inspect's eval-set resume skips what
already finished); a pair that keeps failing is reported with its error; a pair whose log is already complete
is skipped by Inspect's eval set and not run again.

Ray is an optional extra (``pip install 'steerboard[ray]'``), imported only here and only when asked for.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from steerboard.runner.plan import (
    Pair,
    RunSettings,
    SuiteInvalid,
    plan_pairs,
    select_runs,
    validate_runs,
)
from steerboard.runner.ray_requests import check_capacity, config_resources, default_num_cpus, pool_size
from steerboard.runner.suite import MethodRun, Suite, TaskRun

RAY_INSTALL = "pip install 'steerboard[ray]'"
_FORWARD_ENV = ("AWS_", "GOOGLE_", "AZURE_", "STEERBOARD_", "HF_")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as ex:
        raise ImportError(f"--executor ray needs Ray: {RAY_INSTALL}") from ex
    return ray


def connect(address: str | None) -> Any:
    """Connect to (or, without an address, start) a Ray cluster; a failure names ``--ray-address``."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address="local", logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    except Exception as ex:  # noqa: BLE001 - any connection failure becomes one line naming the setting
        msg = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise ValueError(
            f"cannot connect to the Ray cluster at --ray-address {address or '(local)'}: {msg[:200]} "
            "(start one with `ray start --head`, or fix --ray-address)"
        ) from ex
    return ray


def _check_reachable(address: str) -> None:
    """A TCP connect to ``host:port`` (plain or ``ray://``) with a short timeout: Ray itself keeps retrying an
    unreachable address for a minute or more before it gives up."""
    import socket

    hostport = address.removeprefix("ray://")
    if address == "auto" or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as ex:
        raise ValueError(
            f"cannot reach the Ray cluster at --ray-address {address} ({type(ex).__name__}: {ex}); start one "
            "with `ray start --head`, or fix --ray-address"
        ) from None


class _ConfigWorker:
    """Ray actor body: runs method configurations' pairs, one configuration at a time, in its own process.

    The model and the fitted method stay loaded in the process (Inspect memoizes the model provider, the
    provider caches the engine), so a configuration's weights load once however many tasks it runs, and the
    next configuration on the same actor reuses the engine when it shares the model (methods that change
    weights load their own copy, as they do in the local executor).
    """

    def __init__(self, threads: int, env: dict[str, str]) -> None:
        t0 = time.time()
        # the storage and steerboard settings of the driver's shell: set here rather than through a Ray
        # runtime_env, which would have Ray start a dedicated worker process for the actor
        os.environ.update(env)
        # torch's threads follow the CPUs the actor holds (Engine.load reads STEERBOARD_THREADS; without it,
        # every actor would take all of the node's cores)
        os.environ["STEERBOARD_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
        # the heavy imports once, while the driver is still submitting, not inside the first pair's time
        import inspect_ai  # noqa: F401
        import transformers  # noqa: F401

        import steerboard.runner.pair  # noqa: F401

        self.started = t0
        self.import_seconds = time.time() - t0

    def run_pair(self, pair: Pair, settings: RunSettings) -> dict[str, Any]:
        """Run one pair (already validated by the driver) with :func:`steerboard.runner.pair.run_pair`; its
        summary entry comes back with this worker's timing (``worker``)."""
        from steerboard.runner.pair import run_pair

        t0 = time.time()
        timing = {"pid": os.getpid(), "actor_started": self.started, "import_seconds": round(self.import_seconds, 2),
                  "pair_started": t0}
        # the driver checked every pair's options before any actor got work; checking again here would build
        # each task twice per pair (a dataset read: ~0.9 s for MMLU)
        out = pair.entry()
        try:
            run_pair(pair, settings, out)
        except KeyboardInterrupt:
            if out["status"] in ("not started", "running"):
                out["status"] = "cancelled"
        except Exception as ex:  # noqa: BLE001 - reported with the pair, not raised through Ray
            out = _error_entry(pair.method, pair.task, f"{type(ex).__name__}: {str(ex)[:300]}")
        import torch

        timing["pair_seconds"] = round(time.time() - t0, 2)
        timing["torch_threads"] = torch.get_num_threads()
        out["worker"] = timing
        return out


def _error_entry(method: MethodRun, task: TaskRun, error: str) -> dict[str, Any]:
    """The summary entry of a pair that failed outside its eval (its worker raised, or died too often)."""
    return {"method": method.name, "args": method.args, "task": task.name, "status": "error", "error": error}


def _print_progress(
    entry: dict[str, Any], pair: str, results: list[dict[str, Any] | None], running: int, failed: int
) -> None:
    """Pairs done / running / failed to stderr, and why a finished pair failed."""
    done = sum(r is not None for r in results)
    print(f"steerboard run [ray]: {done}/{len(results)} done, {running} running, {failed} failed", file=sys.stderr)
    if entry.get("status") != "success":
        print(f"steerboard run [ray]: {pair} failed after {entry['attempts']} attempts: "
              f"{entry.get('error') or 'see its log in ' + str(entry.get('log'))}", file=sys.stderr)


def _start_pools(
    ray: Any, suite: Suite, pairs: list[Pair], resources: dict[str, float] | None, retries: int,
    settings: RunSettings,
) -> tuple[dict[str, list[int]], dict[tuple[float, float], Any], dict[int, Any], dict[int, tuple[float, float]]]:
    """Start the actor pools: configurations with the same CPU/GPU request share one pool.

    Returns each configuration's pair indices, the configurations waiting per pool, the actors and each
    actor's pool.
    """
    queues: dict[str, list[int]] = {}
    requests: dict[str, dict[str, float]] = {}
    cpus = default_num_cpus(ray)
    for i, pair in enumerate(pairs):
        m = pair.method
        queues.setdefault(m.slug, []).append(i)
        if m.slug not in requests:
            res = config_resources(suite, m, resources, settings.model, settings.generate)[0]
            requests[m.slug] = {"num_cpus": cpus, **res}
    check_capacity(ray, requests)
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV)}
    waiting: dict[tuple[float, float], deque[str]] = {}
    for slug, res in requests.items():
        waiting.setdefault((res["num_cpus"], res.get("num_gpus", 0.0)), deque()).append(slug)
    actors: dict[int, Any] = {}
    group_of: dict[int, tuple[float, float]] = {}
    for group, slugs in waiting.items():
        mems = [requests[s].get("memory") for s in slugs]
        res = {"num_cpus": group[0], "num_gpus": group[1], "memory": max((x for x in mems if x), default=0)}
        cls = ray.remote(_ConfigWorker).options(
            num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], memory=int(res["memory"]) or None,
            max_restarts=retries, max_task_retries=retries,
        )
        for _ in range(pool_size(ray, res, len(slugs))):
            a = len(actors)
            actors[a], group_of[a] = cls.remote(max(1, int(res["num_cpus"])), env), group
    return queues, waiting, actors, group_of


def _release(ray: Any, actors: dict[int, Any]) -> None:
    """Kill every actor still held (their resources go back to the cluster)."""
    for x in actors.values():
        ray.kill(x)


def _check_pairs_or_release(
    ray: Any, suite: Suite, runs: list[tuple[MethodRun, TaskRun]], actors: dict[int, Any], settings: RunSettings
) -> None:
    """Check every pair's options (:func:`steerboard.runner.plan.validate_runs`) once, while the actors start
    (their imports take the other cores); on a problem, release the actors and raise.

    Raises:
        SuiteInvalid: every problem found, one a line; nothing was run.
    """
    try:
        validate_runs(suite, runs, settings)
    except SuiteInvalid:
        _release(ray, actors)
        raise


def _pair_entry(ray: Any, ref: Any, pair: Pair) -> dict[str, Any]:
    """A finished pair's summary, or an error entry when its worker died more often than Ray retries."""
    try:
        return ray.get(ref)  # type: ignore[no-any-return]
    except Exception as ex:  # noqa: BLE001 - the worker died more often than Ray retries
        text = str(ex).strip()
        return _error_entry(pair.method, pair.task,
                            f"{type(ex).__name__}: {text.splitlines()[0][:300] if text else ''}")


def run_suite_ray(
    suite: Suite,
    log_dir: str | Path,
    *,
    ray_address: str | None = None,
    resources: dict[str, float] | None = None,
    retries: int = 1,
    progress: bool = True,
    model: str | None = None,
    limit_scale: float = 1.0,
    only_methods: list[str] | None = None,
    only_tasks: list[str] | None = None,
    display: str | None = None,
    generate: dict[str, Any] | None = None,
    model_roles: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run a suite's pairs on a Ray cluster: each method configuration on one actor, its tasks in order.

    Configurations whose requests have the same ``num_cpus`` and ``num_gpus`` share a pool of actors (as many
    as the cluster holds at once, each asking for the largest ``memory`` among them); an actor runs one
    configuration's pairs, then takes the next configuration waiting for its pool, so a process starts, imports
    and loads the shared model once per actor rather than once per configuration.

    Args:
        suite: The parsed suite.
        log_dir: Root log folder or fsspec URL, shared by every worker (several hosts: a bucket or shared disk).
        ray_address: Ray cluster address (None: start a local one).
        resources: Requests from the command line, over the suite's ``resources:`` (``ray_requests``).
        retries: Times a pair is retried after its worker died or its eval failed.
        progress: Print pairs done / running / failed to stderr as they change.
        model, limit_scale, only_methods, only_tasks, display, generate, model_roles: as for ``run_suite``.

    Returns:
        One summary dict per pair, in the suite's order (as :func:`steerboard.runner.local.run_suite` returns),
        with the worker's timing (``worker``: pid, import seconds, pair start and seconds).
    """
    ray = connect(ray_address)
    settings = RunSettings.for_suite(suite, model=model, generate=generate, model_roles=model_roles, display=display)
    runs = select_runs(suite, only_methods, only_tasks)
    pairs = plan_pairs(suite, runs, log_dir, limit_scale, settings.generate)
    queues, waiting, actors, group_of = _start_pools(ray, suite, pairs, resources, retries, settings)
    results: list[dict[str, Any] | None] = [None] * len(pairs)
    attempts = [0] * len(pairs)
    running: dict[Any, tuple[int, int]] = {}

    def submit(i: int, a: int) -> None:
        attempts[i] += 1
        running[actors[a].run_pair.remote(pairs[i], settings)] = (i, a)

    def next_config(a: int) -> None:
        """Give actor ``a`` the next configuration waiting for its pool, or release it when none is left."""
        group = group_of[a]
        if waiting[group]:
            submit(queues[waiting[group].popleft()].pop(0), a)
        else:  # free its resources for an actor of another pool still waiting for them
            ray.kill(actors.pop(a))

    _check_pairs_or_release(ray, suite, runs, actors, settings)
    for a in list(actors):
        next_config(a)
    failed = 0
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        i, a = running.pop(ready[0])
        entry = _pair_entry(ray, ready[0], pairs[i])
        if entry.get("status") != "success" and attempts[i] <= retries:
            submit(i, a)  # eval-set resume keeps what finished
            continue
        entry["attempts"] = attempts[i]
        results[i] = entry
        failed += entry.get("status") != "success"
        if queues[pairs[i].method.slug]:
            submit(queues[pairs[i].method.slug].pop(0), a)
        else:
            next_config(a)
        if progress:
            _print_progress(entry, pairs[i].name, results, len(running), failed)
    _release(ray, actors)
    return [r for r in results if r is not None]
