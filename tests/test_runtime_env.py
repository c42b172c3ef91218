"""Importing steerboard has no side effects: the OpenMP wait setting is applied where an engine is about to be
created, and the method providers read ``-M`` text from Inspect's command, not from ``sys.argv``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from _helpers import inspect_eval_provenance, run_python

_OMP_VARS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def _child(code: str, **extra: str) -> str:
    """Run ``code`` in a fresh interpreter whose environment holds no OpenMP wait setting (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if k not in _OMP_VARS}
    env.update(extra)
    return run_python(code, env=env).strip().splitlines()[-1]


def test_importing_steerboard_sets_no_environment_variable() -> None:
    code = (
        "import os, json; before = dict(os.environ); import steerboard; "
        "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), dict(os.environ) == before]))"
    )
    assert json.loads(_child(code)) == [None, True]


def test_importing_the_inspect_entry_point_changes_nothing() -> None:
    """What ``inspect`` loads from the ``inspect_ai`` entry-point group leaves the environment and argv alone."""
    code = (
        "import os, sys, json\n"
        "from importlib.metadata import entry_points\n"
        "before, argv = dict(os.environ), list(sys.argv)\n"
        "(ep,) = [e for e in entry_points(group='inspect_ai') if e.name == 'steerboard']\n"
        "ep.load()\n"
        "print(json.dumps([ep.value, dict(os.environ) == before, sys.argv == argv, 'torch' in sys.modules]))"
    )
    assert json.loads(_child(code)) == ["steerboard._registry", True, True, False]


def test_configure_openmp_sets_the_spin_only_before_torch_and_without_a_user_choice() -> None:
    code = (
        "import os, json\n"
        "from steerboard._runtime_env import configure_openmp\n"
        "first = configure_openmp()\n"
        "again = configure_openmp()\n"
        "print(json.dumps([first, again, os.environ.get('GOMP_SPINCOUNT')]))"
    )
    assert json.loads(_child(code)) == [True, False, "10000"]
    # a user's choice is kept
    assert json.loads(_child(code, OMP_WAIT_POLICY="PASSIVE")) == [False, False, None]
    assert json.loads(_child(code, GOMP_SPINCOUNT="500")) == [False, False, "500"]
    # once torch (and libgomp with it) is loaded the variable would not be read: it is left unset
    late = "import torch\n" + code
    assert json.loads(_child(late)) == [False, False, None]


def test_creating_a_method_provider_sets_the_spin_before_torch_loads(tiny_model_dir: str) -> None:
    code = (
        "import os, sys, json\n"
        "from inspect_ai.model import get_model\n"
        "before = ['torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT')]\n"
        f"get_model('base/{tiny_model_dir}', memoize=False)\n"
        "print(json.dumps(before + [os.environ.get('GOMP_SPINCOUNT')]))"
    )
    assert json.loads(_child(code)) == [False, None, "10000"]


def test_provider_ignores_sys_argv(tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program calling Inspect's Python API hands over values as they are, whatever its own argv says."""
    from inspect_ai.model import get_model

    monkeypatch.setattr(sys, "argv", ["inspect", "eval", "tasks/xstest.py", "-M", "system_prompt=yes"])
    with pytest.raises(ValueError, match="system_prompt=True: expected text"):
        get_model(f"prompt/{tiny_model_dir}", memoize=False, system_prompt=True)


def test_provider_reads_the_typed_text_from_inspects_command(tiny_model_dir: str) -> None:
    """Under ``inspect eval -M system_prompt=yes`` the provider gets True; the command's raw -M text gives "yes"."""
    import click
    from inspect_ai.model import get_model

    from steerboard.methods.provider import inspect_cli_model_arg_texts

    assert inspect_cli_model_arg_texts() == {}
    with click.Context(click.Command("eval"), info_name="eval") as ctx:
        ctx.params["m"] = ("system_prompt=yes", "max_batch_size=012")
        assert inspect_cli_model_arg_texts() == {"system_prompt": "yes", "max_batch_size": "012"}
        model = get_model(f"prompt/{tiny_model_dir}", memoize=False, system_prompt=True, max_batch_size=10)
    cfg = model.api.method.config  # type: ignore[attr-defined]
    assert (cfg.system_prompt, cfg.max_batch_size) == ("yes", 12)


@pytest.mark.slow
def test_inspect_eval_command_line_keeps_typed_text(tiny_model_dir: str, tmp_path: Path) -> None:
    """End to end through the ``inspect`` command: ``-M system_prompt=yes`` reaches the method as "yes"."""
    prov = inspect_eval_provenance(tmp_path, f"prompt/{tiny_model_dir}", "-M", "system_prompt=yes", "--max-tokens", "2")
    assert prov["method"] == "prompt" and prov["config"]["system_prompt"] == "yes"
