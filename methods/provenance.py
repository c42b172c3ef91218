"""Puts what ran into every eval log: ``eval.metadata["steerboard"]`` (see :meth:`Method.provenance`).

A steerboard provider records its method's provenance (resolved configuration, artifact sha256s, fit/edit
statistics, runtime) here once it is prepared; :class:`ProvenanceHooks`, an Inspect hook registered through
steerboard's ``inspect_ai`` entry point, copies it into the eval spec of each task that uses that provider
when the task starts. The spec is the header Inspect writes at the end of the task, so ``inspect eval`` on the
command line, ``inspect_ai.eval()`` and ``steerboard run`` all get it. Inspect's own model arguments could not
carry it: the provider receives a copy of them and the header is built from the caller's.

Imports nothing heavy (loaded at Inspect start-up).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from inspect_ai.hooks import Hooks, TaskStart, hooks

METADATA_KEY = "steerboard"

_RECORDS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _args_key(model_args: dict[str, Any] | None) -> str:
    return json.dumps(model_args or {}, sort_keys=True, default=str)


def record(model: str, model_args: dict[str, Any] | None, provenance: Any) -> None:
    """Remember ``provenance`` for the provider ``model`` (``"<method>/<model>"``) built with ``model_args``.

    ``provenance`` is the record itself or an async callable that returns it (awaited at task start)."""
    with _LOCK:
        _RECORDS[(model, _args_key(model_args))] = provenance


def lookup(model: str, model_args: dict[str, Any] | None) -> Any:
    """The recorded provenance of ``model`` (``"<provider>/<model>"``) with ``model_args``.

    Records are filed under ``<method name>/<model>``; a method registered under another provider name is
    matched by model and arguments when exactly one record fits.
    """
    args = _args_key(model_args)
    with _LOCK:
        hit = _RECORDS.get((model, args))
        if hit is not None:
            return hit
        _, _, name = model.partition("/")
        fits = [p for (m, a), p in _RECORDS.items() if a == args and m.partition("/")[2] == name]
        return fits[0] if len(fits) == 1 else None


def clear() -> None:
    """Forget every recorded provider (tests)."""
    with _LOCK:
        _RECORDS.clear()


@hooks(name="steerboard_provenance", description="Records steerboard's resolved method settings in the eval log.")
class ProvenanceHooks(Hooks):
    """Adds ``eval.metadata["steerboard"]`` to each task run by a steerboard provider."""

    async def on_task_start(self, data: TaskStart) -> None:
        prov = lookup(data.spec.model, data.spec.model_args)
        if prov is None:
            return
        if callable(prov):  # a provider's record, made once its engine is ready (loads weights on first use)
            prov = await prov()
        # Deliberately written into the spec Inspect logs (its header), merged with the task's own metadata.
        data.spec.metadata = {**(data.spec.metadata or {}), METADATA_KEY: prov}
