"""The one place steerboard reaches into Inspect's private modules (``inspect_ai.*._*``).

Inspect offers no public API for what is here. Everything else in the package uses Inspect's public API
only; ``tests/test_architecture.py`` fails on a private Inspect import anywhere but this module, and
``tests/test_inspect_private.py`` checks each name below against the installed Inspect, so an Inspect upgrade
that moves or changes one fails there, loudly, instead of somewhere at run time.

* :class:`PrerequisiteError`: the exception class ``inspect eval`` prints as its message alone (no
  traceback). Public equivalent: none. Without it a user error still stops the run, with a traceback.
* :func:`active_model`: the model Inspect has made active, or None. The public ``get_model()`` returns the
  active model too, but without one it builds the model named by ``INSPECT_EVAL_MODEL`` (weights and all) or
  raises; a task checking what its provider can do must neither build a model nor fail outside an eval.
* :data:`MODEL_INFO_LOOKUP_API_KEY`: the ``api_key`` Inspect passes when it builds a provider only to read
  its model info; the provider skips loading weights then. Public equivalent: none.
"""

from __future__ import annotations

from typing import Any

try:
    from inspect_ai._util.error import PrerequisiteError
except ImportError:  # pragma: no cover - an Inspect without it: the error prints with a traceback

    class PrerequisiteError(Exception):  # type: ignore[no-redef]
        """Stand-in when Inspect has no ``PrerequisiteError``."""


try:
    from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY
except ImportError:  # pragma: no cover - tests/test_inspect_private.py fails on this path
    MODEL_INFO_LOOKUP_API_KEY = "__model_info_lookup__"


def active_model() -> Any:
    """The model Inspect has made active, or None (outside an eval: e.g. ``steerboard run`` checking a task).

    Inspect builds the eval's models, then makes each active while it constructs the tasks for it, so a task
    can check what the provider can do before any sample runs.
    """
    try:
        from inspect_ai.model._model import active_model as _active
    except ImportError:  # pragma: no cover - tests/test_inspect_private.py fails on this path
        return None
    try:
        return _active()
    except Exception:  # noqa: BLE001 - no active model
        return None
