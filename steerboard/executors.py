"""Where a suite's (method configuration, task) pairs run: ``local`` (one after another in this process) or
``ray`` (on Ray actors, on a Ray cluster).

With ``ray``, each method configuration runs on one actor: a long-lived worker process that runs that
configuration's tasks one after another through :func:`steerboard.run.run_suite`, so the model and the fitted
method (SAE, direction, adapter, edits) load once per configuration in that process, not once per task.
Configurations with the same ``num_cpus``/``num_gpus`` requests share a pool of actors, as many as the cluster
holds at once: an actor that finished a configuration takes the next one waiting, keeping its imports and the
shared model loaded. Requests come from the suite's ``resources:`` (suite and method level), ``--ray-resources``
and, for ``memory``, the configuration's estimate (:mod:`steerboard.resources`). A pair whose worker dies is
retried (Ray restarts the actor and re-sends the call; Inspect's eval-set resume skips what already finished);
a pair that keeps failing is reported with its error; a pair whose log is already complete is skipped by
Inspect's eval set and not run again.

Ray is an optional extra (``pip install 'steerboard[ray]'``), imported only here and only when asked for.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'steerboard[ray]'"
MAX_DEFAULT_CPUS = 4.0
_FORWARD_ENV = ("AWS_", "GOOGLE_", "AZURE_", "STEERBOARD_", "HF_")


def parse_resources(text: str | None) -> dict[str, float]:
    """``"num_cpus=1,num_gpus=0.5,memory=8GiB"`` -> a dict of Ray actor resource requests (memory in bytes).

    Raises:
        ValueError: an unknown key or a value that is not a non-negative number (or size, for ``memory``).
    """
    from steerboard.resources import parse_resources_text

    return parse_resources_text(text, "--ray-resources")


def config_resources(
    suite: Any, method: Any, cli: dict[str, float] | None = None, model: str | None = None
) -> tuple[dict[str, float], Any]:
    """What one method configuration's actor requests, and the memory estimate behind a default ``memory``.

    The suite's ``resources:``, then the method entry's, then ``--ray-resources`` (each overriding the one
    before, key by key); without ``num_cpus`` the executor asks for :func:`default_num_cpus`. Without a
    ``memory`` request the estimate (:func:`steerboard.resources.estimate_memory`, on ``cuda`` when a GPU is
    requested) is asked for; when the model's config is not on disk there is no estimate and no memory request.

    Returns:
        (requests, estimate or None).
    """
    from steerboard.resources import context_tokens_for, estimate_memory, merge_resources

    res = merge_resources(suite.resources, method.resources, cli)
    try:
        estimate = estimate_memory(
            method.name, method.args, model or suite.model, device="cuda" if res.get("num_gpus") else "cpu",
            max_connections=suite.max_connections, context_tokens=context_tokens_for(suite, method),
        )
    except ValueError:  # invalid method options: the pair's own validation reports them, with the pair
        estimate = None
    if "memory" not in res and estimate is not None:
        res["memory"] = estimate.total
    return res, estimate


def resource_plan(
    suite: Any, cli: dict[str, float] | None = None, model: str | None = None,
    only_methods: list[str] | None = None, only_tasks: list[str] | None = None,
) -> list[str]:
    """One line per method configuration: what its Ray actor would request and the memory estimate's parts
    (``steerboard run --executor ray --dry-run``). Needs no Ray and loads no weights."""
    from steerboard.resources import format_bytes

    lines = []
    seen: set[str] = set()
    for m, t in suite.runs():
        if m.slug in seen or (only_methods and m.name not in only_methods) or (only_tasks and t.name not in only_tasks):
            continue
        seen.add(m.slug)
        res, est = config_resources(suite, m, cli, model)
        req = ", ".join(
            [f"{k}={format_bytes(v) if k == 'memory' else f'{v:g}'}" for k, v in res.items()]
            + ([] if "num_cpus" in res else [f"num_cpus=auto (the node's CPUs, at most {MAX_DEFAULT_CPUS:g})"])
        )
        note = f"estimate {est.describe()} [{est.params:,} params, {est.dtype} on {est.device}]" if est else (
            "no memory estimate: the model's config is not on disk (steerboard model fetch, or a local dir)"
        )
        lines.append(f"{m.slug:<22} requests {req}; {note}")
    return lines


def check_executor(name: str, ray_address: str | None = None) -> None:
    """Validate the executor choice before any model work (Ray is imported and connected here).

    Raises:
        ValueError: unknown executor, ``--ray-address`` without ``--executor ray``, or an unreachable address.
        ImportError: Ray is not installed (with the install command).
    """
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name != "ray":
        if ray_address:
            raise ValueError("--ray-address needs --executor ray")
        return
    _connect(ray_address)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as ex:
        raise ImportError(f"--executor ray needs Ray: {RAY_INSTALL}") from ex
    return ray


def _connect(address: str | None) -> Any:
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

        import steerboard.run  # noqa: F401

        self.started = t0
        self.import_seconds = time.time() - t0

    def run_pair(self, suite: Any, log_dir: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Run a one-pair suite (already validated by the driver) as :func:`steerboard.run.run_suite` does."""
        from steerboard.run import _plan, _run_interruptibly

        t0 = time.time()
        timing = {"pid": os.getpid(), "actor_started": self.started, "import_seconds": round(self.import_seconds, 2),
                  "pair_started": t0}
        try:
            # the driver checked every pair's options before any actor got work; checking again here would
            # build each task twice per pair (a dataset read: ~0.9 s for MMLU)
            out = _plan(suite.runs(), str(log_dir).rstrip("/"), kwargs.get("limit_scale", 1.0))
            roles = {**suite.model_roles, **(kwargs.get("model_roles") or {})}
            _run_interruptibly(out, suite.runs(), suite, kwargs.get("model") or suite.model, kwargs.get("display"),
                               kwargs.get("generate"), roles, None)
            out = out[0]
        except Exception as ex:  # noqa: BLE001 - reported with the pair, not raised through Ray
            m, t = suite.methods[0], suite.tasks[0]
            out = {"method": m.name, "args": m.args, "task": t.name, "status": "error",
                   "error": f"{type(ex).__name__}: {str(ex)[:300]}"}
        import torch

        timing["pair_seconds"] = round(time.time() - t0, 2)
        timing["torch_threads"] = torch.get_num_threads()
        out["worker"] = timing
        return out


def _check_capacity(ray: Any, requests: dict[str, dict[str, float]]) -> None:
    """A configuration asking for more than any live node has would wait forever: say so before any work.

    Raises:
        ValueError: naming the configuration, the request, the largest node's amount and the setting to change.
    """
    from steerboard.resources import format_bytes

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    for slug, res in requests.items():
        for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
            want = float(res.get(key) or 0)
            have = max(float(n.get(ray_key, 0)) for n in nodes)
            if want > have:
                show = format_bytes if key == "memory" else (lambda x: f"{x:g}")
                raise ValueError(
                    f"configuration {slug} asks for {key}={show(want)} but the largest node of the Ray cluster has "
                    f"{show(have)}; set resources.{key} in the suite or --ray-resources {key}=... (memory: bytes "
                    "or a size such as 8GiB)"
                )


def default_num_cpus(ray: Any) -> float:
    """CPUs an actor asks for when neither the suite nor the command line says: the largest node's CPUs, at
    most :data:`MAX_DEFAULT_CPUS`. On a small machine one configuration then uses every core, as the local
    executor does (two actors of one thread each on two cores were no faster and loaded the model twice);
    on a large node several configurations run side by side."""
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(1.0, min(MAX_DEFAULT_CPUS, max(cpus, default=1.0)))


def _pool_size(ray: Any, res: dict[str, float], n: int) -> int:
    """How many actors with requests ``res`` the live nodes hold at once (at least 1, at most ``n``)."""
    fit = 0
    for node in (x.get("Resources", {}) for x in ray.nodes() if x.get("Alive")):
        k = n
        for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
            want = float(res.get(key) or 0)
            if want:
                k = min(k, int(float(node.get(ray_key, 0)) // want))
        fit += k
    return max(1, min(n, fit))


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
    ray: Any, suite: Any, pairs: list[tuple[Any, Any]], resources: dict[str, float] | None, retries: int,
    model: str | None,
) -> tuple[dict[str, list[int]], dict[tuple[float, float], Any], dict[int, Any], dict[int, tuple[float, float]]]:
    """Start the actor pools: configurations with the same CPU/GPU request share one pool.

    Returns each configuration's pair indices, the configurations waiting per pool, the actors and each
    actor's pool.
    """
    from collections import deque

    queues: dict[str, list[int]] = {}
    requests: dict[str, dict[str, float]] = {}
    cpus = default_num_cpus(ray)
    for i, (m, _t) in enumerate(pairs):
        queues.setdefault(m.slug, []).append(i)
        if m.slug not in requests:
            requests[m.slug] = {"num_cpus": cpus, **config_resources(suite, m, resources, model)[0]}
    _check_capacity(ray, requests)
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
        for _ in range(_pool_size(ray, res, len(slugs))):
            a = len(actors)
            actors[a], group_of[a] = cls.remote(max(1, int(res["num_cpus"])), env), group
    return queues, waiting, actors, group_of


def _release(ray: Any, actors: dict[int, Any]) -> None:
    """Kill every actor still held (their resources go back to the cluster)."""
    for x in actors.values():
        ray.kill(x)


def _check_pairs_or_release(ray: Any, suite: Any, pairs: list[Any], actors: dict[int, Any], kwargs: dict[str, Any]) -> None:
    """Check every pair's options (:func:`steerboard.run.check_runs`) once, while the actors start (their imports
    take the other cores); on a problem, release the actors and raise.

    Raises:
        SuiteInvalid: every problem found, one a line; nothing was run.
    """
    from steerboard.run import SuiteInvalid, check_runs

    model_name = kwargs.get("model") or suite.model
    roles = {**suite.model_roles, **(kwargs.get("model_roles") or {})}
    problems = check_runs(suite, pairs, model_name, generate=kwargs.get("generate"), model_roles=roles)
    if problems:
        _release(ray, actors)
        raise SuiteInvalid(
            f"suite {suite.name!r}: {len(problems)} problem(s), nothing was run:\n  - " + "\n  - ".join(problems)
        )


def _pair_entry(ray: Any, ref: Any, m: Any, t: Any) -> dict[str, Any]:
    """A finished pair's summary, or an error entry when its worker died more often than Ray retries."""
    try:
        return ray.get(ref)
    except Exception as ex:  # noqa: BLE001 - the worker died more often than Ray retries
        return {"method": m.name, "args": m.args, "task": t.name, "status": "error",
                "error": f"{type(ex).__name__}: {str(ex).strip().splitlines()[0][:300] if str(ex).strip() else ''}"}


def run_suite_ray(
    suite: Any,
    log_dir: str | Path,
    *,
    ray_address: str | None = None,
    resources: dict[str, float] | None = None,
    retries: int = 1,
    progress: bool = True,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run a suite's pairs on a Ray cluster: each method configuration on one actor, its tasks in order.

    Configurations whose requests have the same ``num_cpus`` and ``num_gpus`` share a pool of actors (as many
    as the cluster holds at once, each asking for the largest ``memory`` among them); an actor runs one
    configuration's pairs, then takes the next configuration waiting for its pool, so a process starts, imports
    and loads the shared model once per actor rather than once per configuration.

    Args:
        suite: The parsed suite (:class:`steerboard.run.Suite`).
        log_dir: Root log folder or fsspec URL, shared by every worker (on a multi-host cluster: a bucket or a
            shared file system).
        ray_address: Ray cluster address (None: start a local one).
        resources: Requests from the command line, over the suite's ``resources:`` (see :func:`config_resources`).
        retries: Times a pair is retried after its worker died or its eval failed.
        progress: Print pairs done / running / failed to stderr as they change.
        **kwargs: Passed to :func:`steerboard.run.run_suite` for each pair (``model``, ``limit_scale``,
            ``only_methods``, ``only_tasks``, ``display``).

    Returns:
        One summary dict per pair, in the suite's order (as :func:`steerboard.run.run_suite` returns), with the
        worker's timing (``worker``: pid, import seconds, pair start and seconds).
    """
    from steerboard.run import select_runs

    ray = _connect(ray_address)
    pairs = select_runs(suite, kwargs.pop("only_methods", None), kwargs.pop("only_tasks", None))
    kwargs.pop("summary_path", None)
    queues, waiting, actors, group_of = _start_pools(ray, suite, pairs, resources, retries, kwargs.get("model"))
    results: list[dict[str, Any] | None] = [None] * len(pairs)
    attempts = [0] * len(pairs)
    running: dict[Any, tuple[int, int]] = {}

    def submit(i: int, a: int) -> None:
        m, t = pairs[i]
        sub = dataclasses.replace(suite, methods=[m], tasks=[t])
        attempts[i] += 1
        running[actors[a].run_pair.remote(sub, str(log_dir), kwargs)] = (i, a)

    def next_config(a: int) -> None:
        """Give actor ``a`` the next configuration waiting for its pool, or release it when none is left."""
        group = group_of[a]
        if waiting[group]:
            submit(queues[waiting[group].popleft()].pop(0), a)
        else:  # free its resources for an actor of another pool still waiting for them
            ray.kill(actors.pop(a))

    _check_pairs_or_release(ray, suite, pairs, actors, kwargs)
    for a in list(actors):
        next_config(a)
    failed = 0
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        i, a = running.pop(ready[0])
        m, t = pairs[i]
        entry = _pair_entry(ray, ready[0], m, t)
        if entry.get("status") != "success" and attempts[i] <= retries:
            submit(i, a)  # eval-set resume keeps what finished
            continue
        entry["attempts"] = attempts[i]
        results[i] = entry
        failed += entry.get("status") != "success"
        if queues[m.slug]:
            submit(queues[m.slug].pop(0), a)
        else:
            next_config(a)
        if progress:
            _print_progress(entry, f"{m.slug} x {t.name}", results, len(running), failed)
    _release(ray, actors)
    return [r for r in results if r is not None]


def run_with_executor(
    executor: str, suite: Any, log_dir: str | Path, *, ray_address: str | None = None,
    resources: dict[str, float] | None = None, **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run a suite with the chosen executor (``local`` is :func:`steerboard.run.run_suite` itself)."""
    from steerboard.run import run_suite

    if executor == "local" or kwargs.get("dry_run"):
        return run_suite(suite, log_dir, **kwargs)
    kwargs.pop("dry_run", None)
    t0 = time.perf_counter()
    out = run_suite_ray(suite, log_dir, ray_address=ray_address, resources=resources, **kwargs)
    for e in out:
        e.setdefault("seconds", round(time.perf_counter() - t0, 1))
    return out
