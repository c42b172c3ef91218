"""Where a suite's pairs run: ``local`` (one after another in this process, :mod:`steerboard.runner.local`) or
``ray`` (on Ray actors, :mod:`steerboard.runner.ray_executor`); both run each pair with
:func:`steerboard.runner.pair.run_pair`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from steerboard.runner.suite import Suite

EXECUTORS = ("local", "ray")


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
    from steerboard.runner.ray_executor import connect

    connect(ray_address)


def run_with_executor(
    executor: str, suite: Suite, log_dir: str | Path, *, ray_address: str | None = None,
    resources: dict[str, float] | None = None, **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run a suite with the chosen executor: ``local`` (and any dry run) is
    :func:`steerboard.runner.local.run_suite` itself; ``ray`` is :func:`steerboard.runner.ray_executor.run_suite_ray`
    (``summary_path`` is left to the caller, which writes a Ray run's summary through fsspec), each pair's
    ``seconds`` defaulting to the whole run's."""
    from steerboard.runner.local import run_suite

    if executor == "local" or kwargs.get("dry_run"):
        return run_suite(suite, log_dir, **kwargs)
    from steerboard.runner.ray_executor import run_suite_ray

    kwargs.pop("dry_run", None)
    kwargs.pop("summary_path", None)
    t0 = time.perf_counter()
    out = run_suite_ray(suite, log_dir, ray_address=ray_address, resources=resources, **kwargs)
    for e in out:
        e.setdefault("seconds", round(time.perf_counter() - t0, 1))
    return out
