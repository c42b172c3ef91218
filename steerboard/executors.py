"""Where a suite's (method configuration, task) pairs run: ``local`` (one after another in this process) or
``ray`` (one Ray actor per method configuration, on a Ray cluster).

With ``ray``, each method configuration gets one actor: a long-lived worker process that runs that
configuration's tasks one after another through :func:`steerboard.run.run_suite`, so the model and the fitted
method (SAE, direction, adapter, edits) load once per configuration in that process, not once per task.
Different configurations run in parallel, as far as the cluster's resources allow (each actor asks for
``num_cpus``/``num_gpus``/``memory``). A pair whose worker dies is retried (Ray restarts the actor and re-sends
the call; Inspect's eval-set resume skips what already finished); a pair that keeps failing is reported with its
error; a pair whose log is already complete is skipped by Inspect's eval set and not run again.

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
DEFAULT_NUM_CPUS = 1.0
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
    before, key by key); ``num_cpus`` defaults to :data:`DEFAULT_NUM_CPUS`. Without a ``memory`` request the
    estimate (:func:`steerboard.resources.estimate_memory`, on ``cuda`` when a GPU is requested) is asked for;
    when the model's config is not on disk there is no estimate and no memory request.

    Returns:
        (requests, estimate or None).
    """
    from steerboard.resources import context_tokens_for, estimate_memory, merge_resources

    res = merge_resources({"num_cpus": DEFAULT_NUM_CPUS}, suite.resources, method.resources, cli)
    estimate = estimate_memory(
        method.name, method.args, model or suite.model, device="cuda" if res.get("num_gpus") else "cpu",
        max_connections=suite.max_connections, context_tokens=context_tokens_for(suite, method),
    )
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
            f"{k}={format_bytes(v) if k == 'memory' else f'{v:g}'}" for k, v in res.items()
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
    """Ray actor body: runs the pairs of one method configuration in its own process."""

    def __init__(self, torch_threads: int | None) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)

    def run_pair(self, suite: Any, log_dir: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        from steerboard.run import run_suite

        try:
            out = run_suite(suite, log_dir, **kwargs)
            return out[0]
        except Exception as ex:  # noqa: BLE001 - reported with the pair, not raised through Ray
            m, t = suite.methods[0], suite.tasks[0]
            return {"method": m.name, "args": m.args, "task": t.name, "status": "error",
                    "error": f"{type(ex).__name__}: {str(ex)[:300]}"}


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


def _start_actors(
    ray: Any, suite: Any, pairs: list[tuple[Any, Any]], resources: dict[str, float] | None, retries: int,
    model: str | None = None,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """One actor per method configuration (by slug), with that configuration's requests (suite, method entry,
    command line, memory estimate), and the queue of pair indices each runs in order."""
    # workers see the storage settings of this shell (endpoint, region, credentials) and steerboard's own
    # settings, so a log dir URL resolves there as it does here
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV)}
    queues: dict[str, list[int]] = {}
    requests: dict[str, dict[str, float]] = {}
    for i, (m, _t) in enumerate(pairs):
        queues.setdefault(m.slug, []).append(i)
        if m.slug not in requests:
            requests[m.slug] = config_resources(suite, m, resources, model)[0]
    _check_capacity(ray, requests)
    actors: dict[str, Any] = {}
    for slug, res in requests.items():
        cpus = res["num_cpus"]
        actor_cls = ray.remote(_ConfigWorker).options(
            num_cpus=cpus, num_gpus=res.get("num_gpus", 0), memory=int(res["memory"]) if res.get("memory") else None,
            max_restarts=retries, max_task_retries=retries, runtime_env={"env_vars": env} if env else None,
        )
        actors[slug] = actor_cls.remote(max(1, int(cpus)))
    return actors, queues


def _print_progress(
    entry: dict[str, Any], pair: str, results: list[dict[str, Any] | None], running: int, failed: int
) -> None:
    """Pairs done / running / failed to stderr, and why a finished pair failed."""
    done = sum(r is not None for r in results)
    print(f"steerboard run [ray]: {done}/{len(results)} done, {running} running, {failed} failed", file=sys.stderr)
    if entry.get("status") != "success":
        print(f"steerboard run [ray]: {pair} failed after {entry['attempts']} attempts: "
              f"{entry.get('error') or 'see its log in ' + str(entry.get('log'))}", file=sys.stderr)


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
    """Run a suite's pairs on a Ray cluster, one actor per method configuration.

    Args:
        suite: The parsed suite (:class:`steerboard.run.Suite`).
        log_dir: Root log folder or fsspec URL, shared by every worker (on a multi-host cluster: a bucket or a
            shared file system).
        ray_address: Ray cluster address (None: start a local one).
        resources: Per-actor requests (``num_cpus``, ``num_gpus``, ``memory`` in bytes); default 1 CPU.
        retries: Times a pair is retried after its worker died or its eval failed.
        progress: Print pairs done / running / failed to stderr as they change.
        **kwargs: Passed to :func:`steerboard.run.run_suite` for each pair (``model``, ``limit_scale``,
            ``only_methods``, ``only_tasks``, ``display``).

    Returns:
        One summary dict per pair, in the suite's order (as :func:`steerboard.run.run_suite` returns).
    """
    ray = _connect(ray_address)
    only_m, only_t = kwargs.pop("only_methods", None), kwargs.pop("only_tasks", None)
    pairs = [
        (m, t) for m, t in suite.runs()
        if (not only_m or m.name in only_m) and (not only_t or t.name in only_t)
    ]
    actors, queues = _start_actors(ray, suite, pairs, resources, retries, kwargs.get("model"))
    results: list[dict[str, Any] | None] = [None] * len(pairs)
    attempts = [0] * len(pairs)
    running: dict[Any, int] = {}

    def submit(i: int) -> None:
        m, t = pairs[i]
        sub = dataclasses.replace(suite, methods=[m], tasks=[t])
        attempts[i] += 1
        running[actors[m.slug].run_pair.remote(sub, str(log_dir), kwargs)] = i

    # each actor runs its configuration's pairs one at a time (in suite order); actors run side by side
    for q in queues.values():
        submit(q.pop(0))
    failed = 0
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ready[0])
        m, t = pairs[i]
        try:
            entry = ray.get(ready[0])
        except Exception as ex:  # noqa: BLE001 - the worker died more often than Ray retries
            entry = {"method": m.name, "args": m.args, "task": t.name, "status": "error",
                     "error": f"{type(ex).__name__}: {str(ex).strip().splitlines()[0][:300] if str(ex).strip() else ''}"}
        if entry.get("status") != "success" and attempts[i] <= retries:
            submit(i)  # eval-set resume keeps what finished
            continue
        entry["attempts"] = attempts[i]
        results[i] = entry
        failed += entry.get("status") != "success"
        if queues[m.slug]:
            submit(queues[m.slug].pop(0))
        else:  # its configuration is finished: free its resources for an actor still waiting for them
            ray.kill(actors.pop(m.slug))
        if progress:
            _print_progress(entry, f"{m.slug} x {t.name}", results, len(running), failed)
    for a in actors.values():
        ray.kill(a)
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
