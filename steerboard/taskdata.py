"""Where the tasks' shipped data lies, for code below the tasks (method fit data, judge training data).

The evaluation data ships inside :mod:`steerboard.tasks` (``tasks/data/``). Methods keep their fit data apart
from it and judges look up its items, but neither may import task code (docs/architecture.md: tasks sit above
methods and scorers), so they find the folder here: the package is located without being imported.
"""

from __future__ import annotations

import hashlib
from importlib.util import find_spec
from pathlib import Path

TASKS_PACKAGE = "steerboard.tasks"


def task_data_dir() -> Path:
    """The ``data`` folder of the installed :mod:`steerboard.tasks` (no task module is imported).

    Raises:
        FileNotFoundError: the tasks package is not installed.
    """
    spec = find_spec(TASKS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(f"{TASKS_PACKAGE} is not installed (reinstall steerboard)")
    return Path(locations[0]) / "data"


JBB_FILE = "jbb/jbb_behaviors_harmful100_benign100_textonly.json"
"""JailbreakBench's 100 harmful and 100 benign behaviours (the ``jbb_refusal`` task's file; the judges' harm
training data names its goals by index)."""
JBB_SHA256 = "1ac7ab91294accf9352589d84169edf124be05b69cb8540930fe03314ea7881b"

_VERIFIED: set[tuple[str, str]] = set()


def verified(path: Path, sha256: str) -> Path:
    """``path`` after checking its SHA-256 against the pin (once per process and pin).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file's checksum differs from the pin (the data changed).
    """
    if not path.is_file():
        raise FileNotFoundError(f"shipped data file missing: {path} (reinstall steerboard)")
    key = (str(path), sha256)
    if key not in _VERIFIED:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise ValueError(f"checksum mismatch for {path}: expected sha256 {sha256}, got {digest}")
        _VERIFIED.add(key)
    return path


def task_data_file(relpath: str, sha256: str) -> Path:
    """A file of the tasks' shipped data (``relpath`` under ``tasks/data``), checked against its pin
    (:func:`verified`)."""
    return verified(task_data_dir() / relpath, sha256)
