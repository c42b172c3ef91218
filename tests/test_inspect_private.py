"""steerboard.inspect_private against the installed Inspect: each private name it relies on is still there and
still does what the package expects. An Inspect upgrade that moves or changes one fails here."""

from __future__ import annotations

import textwrap
from pathlib import Path

from steerboard import inspect_private


def test_prerequisite_error_is_inspects_own():
    from inspect_ai._util.error import PrerequisiteError

    from steerboard.errors import UserError

    assert inspect_private.PrerequisiteError is PrerequisiteError  # not the stand-in
    assert issubclass(UserError, PrerequisiteError) and issubclass(UserError, ValueError)
    assert UserError("bad -T value").message == "bad -T value"


def test_model_info_lookup_key_is_inspects_own():
    from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY

    from steerboard.methods import provider

    assert inspect_private.MODEL_INFO_LOOKUP_API_KEY == MODEL_INFO_LOOKUP_API_KEY
    assert provider._MODEL_INFO_LOOKUP_API_KEY == MODEL_INFO_LOOKUP_API_KEY


def test_active_model_is_none_outside_an_eval_and_the_model_while_tasks_are_built(tmp_path: Path):
    import contextvars

    from inspect_ai.model._model import active_model_context_var

    def fresh() -> None:  # as in a new process: an earlier test of the full run may have left a model active
        active_model_context_var.set(None)
        _check_active_model(tmp_path)

    contextvars.copy_context().run(fresh)


def _check_active_model(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval

    assert inspect_private.active_model() is None
    seen: list[str] = []
    task_file = tmp_path / "probe.py"
    task_file.write_text(textwrap.dedent("""
        from inspect_ai import Task, task
        from inspect_ai.dataset import Sample

        from steerboard.inspect_private import active_model

        SEEN = []

        @task
        def probe():
            SEEN.append(str(active_model()))
            return Task(dataset=[Sample(input="hi", target="x")])
    """))
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe", task_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.SEEN = seen
    from steerboard.tasks._testing import mock_model

    logs = inspect_eval(module.probe, model=mock_model(), limit=1, log_dir=str(tmp_path / "logs"), display="none")
    assert logs[0].status == "success", logs[0].error
    assert seen == ["mockllm/model"]
    assert inspect_private.active_model() is None
