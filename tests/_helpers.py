"""Plain helper functions shared by several test files (fixtures live in ``conftest.py``).

Test files import them as ``from _helpers import ...``: pytest puts this folder on ``sys.path`` (it has no
``__init__.py``), as it does for ``conftest.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ONE_SAMPLE_TASK = (
    "from inspect_ai import Task, task\nfrom inspect_ai.dataset import Sample\n"
    "from inspect_ai.scorer import includes\n\n\n@task\ndef one():\n"
    "    return Task(dataset=[Sample(input='Say hi.', target='hi')], scorer=includes())\n"
)
"""A task file with one sample, for runs whose task does not matter."""


def run_python(
    code: str, *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 300
) -> str:
    """Run ``code`` in a fresh interpreter (``python -c``) and return its stdout; the test fails, showing the
    end of the child's stderr, unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def inspect_eval_provenance(tmp_path: Path, model: str, *options: str) -> dict[str, Any]:
    """Run the ``inspect eval`` command on :data:`ONE_SAMPLE_TASK` (written into ``tmp_path``) with ``--model
    model`` and ``options``, and return the steerboard record of the log it wrote
    (``eval.metadata["steerboard"]``); the test fails, showing the command's stderr, unless it exits 0."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    task = tmp_path / "one.py"
    task.write_text(ONE_SAMPLE_TASK)
    inspect = Path(sys.executable).with_name("inspect")
    proc = subprocess.run(
        [str(inspect), "eval", task.name, "--model", model, *options,
         "--log-dir", str(tmp_path / "logs"), "--display", "none"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (info,) = list_eval_logs(str(tmp_path / "logs"))
    return read_eval_log(info.name, header_only=True).eval.metadata["steerboard"]


def synthetic_database(root: Path, runs: Iterable[Any], listing: Any) -> Path:
    """Write ``runs`` (:class:`~steerboard.leaderboard.synthetic.SyntheticRun`) as logs ``root/logs/000.eval``,
    ``001.eval``, ... and ingest that folder into ``root/r.duckdb`` under ``listing``; returns the database."""
    from steerboard.leaderboard.ingest import ingest_logs
    from steerboard.leaderboard.synthetic import write_synthetic_log

    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs):
        write_synthetic_log(run, logs / f"{i:03d}.eval")
    ingest_logs([logs], root / "r.duckdb", listing=listing, progress=False)
    return root / "r.duckdb"
