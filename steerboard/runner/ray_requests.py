"""What a suite's method configurations ask a Ray cluster for: each configuration's actor requests
(``num_cpus``, ``num_gpus``, ``memory``), the memory estimate behind a default ``memory`` request, and whether a
cluster can hold them. Needs no Ray (the cluster is passed in) and loads no weights.

Requests come from the suite's ``resources:`` (suite and method level), ``--ray-resources`` and, for ``memory``,
the configuration's estimate (:func:`steerboard.resources.estimate_memory`), whose KV-cache allowance follows the
longest completion the configuration's tasks ask for: their generate configs as the eval gets them
(:func:`steerboard.runner.suite.generate_config`, command-line overrides included).
"""

from __future__ import annotations

from typing import Any

from steerboard.runner.suite import MethodRun, Suite, generate_config

MAX_DEFAULT_CPUS = 4.0


def parse_resources(text: str | None) -> dict[str, float]:
    """``"num_cpus=1,num_gpus=0.5,memory=8GiB"`` -> a dict of Ray actor resource requests (memory in bytes).

    Raises:
        ValueError: an unknown key or a value that is not a non-negative number (or size, for ``memory``).
    """
    from steerboard.resources import parse_resources_text

    return parse_resources_text(text, "--ray-resources")


def config_resources(
    suite: Suite, method: MethodRun, cli: dict[str, float] | None = None, model: str | None = None,
    generate: dict[str, Any] | None = None,
) -> tuple[dict[str, float], Any]:
    """What one method configuration's actor requests, and the memory estimate behind a default ``memory``.

    The suite's ``resources:``, then the method entry's, then ``--ray-resources`` (each overriding the one
    before, key by key); without ``num_cpus`` the executor asks for :func:`default_num_cpus`. Without a
    ``memory`` request the estimate (:func:`steerboard.resources.estimate_memory`, on ``cuda`` when a GPU is
    requested) is asked for, its KV-cache allowance from the configuration's tasks' generate configs (the suite's
    ``generate``, each task's ``config`` and ``generate``, the command line's overrides, merged by
    :func:`steerboard.runner.suite.generate_config` as for the eval); when the model's config is not on disk
    there is no estimate and no memory request.

    Returns:
        (requests, estimate or None).
    """
    from steerboard.resources import context_tokens_for, estimate_memory, merge_resources

    res = merge_resources(suite.resources, method.resources, cli)
    configs = [generate_config(suite.generate, t.config, generate) for m, t in suite.runs() if m is method]
    try:
        estimate = estimate_memory(
            method.name, method.args, model or suite.model, device="cuda" if res.get("num_gpus") else "cpu",
            max_connections=suite.max_connections, context_tokens=context_tokens_for(configs),
        )
    except ValueError:  # invalid method options: the pair's own validation reports them, with the pair
        estimate = None
    if "memory" not in res and estimate is not None:
        res["memory"] = estimate.total
    return res, estimate


def resource_plan(
    suite: Suite, cli: dict[str, float] | None = None, model: str | None = None,
    only_methods: list[str] | None = None, only_tasks: list[str] | None = None,
    generate: dict[str, Any] | None = None,
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
        res, est = config_resources(suite, m, cli, model, generate)
        req = ", ".join(
            [f"{k}={format_bytes(v) if k == 'memory' else f'{v:g}'}" for k, v in res.items()]
            + ([] if "num_cpus" in res else [f"num_cpus=auto (the node's CPUs, at most {MAX_DEFAULT_CPUS:g})"])
        )
        note = f"estimate {est.describe()} [{est.params:,} params, {est.dtype} on {est.device}]" if est else (
            "no memory estimate: the model's config is not on disk (steerboard model fetch, or a local dir)"
        )
        lines.append(f"{m.slug:<22} requests {req}; {note}")
    return lines


def check_capacity(ray: Any, requests: dict[str, dict[str, float]]) -> None:
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


def pool_size(ray: Any, res: dict[str, float], n: int) -> int:
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
