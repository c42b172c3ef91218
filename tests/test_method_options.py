"""``-M`` method options are parsed by the config dataclass's field types, from the text the user typed."""

from __future__ import annotations

import pytest
from inspect_ai._util.config import parse_cli_args  # Inspect's own -M reading (what a provider receives)

from steerboard.methods.base import MethodConfig, cli_model_arg_texts
from steerboard.methods.prompt import PromptConfig
from steerboard.methods.sae import SAEConfig


def _as_inspect_passes(cls: type[MethodConfig], *items: str) -> MethodConfig:
    """The config built from ``inspect eval ... -M item ...``: Inspect's YAML reading plus the command line."""
    argv = ["eval", "tasks/xstest.py"]
    for item in items:
        argv += ["-M", item]
    return cls.from_dict(parse_cli_args(list(items)), cli_model_arg_texts(argv, environ={}))


def test_str_field_keeps_text_yaml_would_coerce() -> None:
    assert parse_cli_args(["system_prompt=yes"]) == {"system_prompt": True}  # what Inspect hands over
    assert _as_inspect_passes(PromptConfig, "system_prompt=yes").system_prompt == "yes"
    assert _as_inspect_passes(PromptConfig, "system_prompt=012").system_prompt == "012"
    assert _as_inspect_passes(PromptConfig, "system_prompt=1.50").system_prompt == "1.50"


def test_str_field_keeps_its_comma() -> None:
    text = "You are safe, and helpful."
    assert isinstance(parse_cli_args([f"system_prompt={text}"])["system_prompt"], list)  # Inspect splits it
    assert _as_inspect_passes(PromptConfig, f"system_prompt={text}").system_prompt == text
    # without the command line (the Python API handing over Inspect's split) the pieces join back exactly
    assert PromptConfig.from_dict({"system_prompt": ["You are safe", " and helpful."]}).system_prompt == text


def test_str_field_rejects_a_yaml_value_whose_spelling_is_lost() -> None:
    with pytest.raises(ValueError, match=r"system_prompt=True: expected text, got a boolean.*quote"):
        PromptConfig.from_dict({"system_prompt": True})  # e.g. `system_prompt: yes` in a suite file
    with pytest.raises(ValueError, match="expected text, got an integer"):
        PromptConfig.from_dict({"system_prompt": 10})
    # the command line's text is used only when it is what the value was read from
    with pytest.raises(ValueError, match="expected text"):
        PromptConfig.from_dict({"system_prompt": True}, {"system_prompt": "no"})


def test_list_of_ints_parses_decimal_text() -> None:
    assert parse_cli_args(["features=012"]) == {"features": 10}  # YAML 1.1 octal
    assert _as_inspect_passes(SAEConfig, "features=012").features == [12]
    assert _as_inspect_passes(SAEConfig, "features=012,7").features == [12, 7]
    assert SAEConfig.from_dict({"features": "3, 4"}).features == [3, 4]
    with pytest.raises(ValueError, match=r"features='0x1A': expected an integer \(decimal digits\)"):
        SAEConfig.from_dict({"features": "0x1A"})
    with pytest.raises(ValueError, match="expected an integer"):
        SAEConfig.from_dict({"features": "1.5"})


def test_list_of_floats() -> None:
    assert _as_inspect_passes(SAEConfig, "strengths=1e1,2.5").strengths == [10.0, 2.5]
    assert SAEConfig.from_dict({"strengths": [4, "8"]}).strengths == [4.0, 8.0]
    with pytest.raises(ValueError, match="expected a number"):
        SAEConfig.from_dict({"strengths": "strong"})


def test_int_field() -> None:
    assert _as_inspect_passes(MethodConfig, "max_batch_size=012").max_batch_size == 12
    assert MethodConfig.from_dict({"max_batch_size": 8}).max_batch_size == 8
    for bad in ("0x10", "8.5", "many"):
        with pytest.raises(ValueError, match="max_batch_size.*expected an integer"):
            MethodConfig.from_dict({"max_batch_size": bad})
    with pytest.raises(ValueError, match="expected an integer"):
        MethodConfig.from_dict({"max_batch_size": True})


def test_float_field() -> None:
    assert _as_inspect_passes(MethodConfig, "batch_wait_ms=1e1").batch_wait_ms == 10.0
    assert _as_inspect_passes(SAEConfig, "gate_threshold=.5").gate_threshold == 0.5
    with pytest.raises(ValueError, match="batch_wait_ms.*expected a number"):
        MethodConfig.from_dict({"batch_wait_ms": "soon"})


def test_bool_field() -> None:
    assert _as_inspect_passes(MethodConfig, "head_screen=no").head_screen is False
    assert _as_inspect_passes(MethodConfig, "trust_remote_code=YES").trust_remote_code is True
    with pytest.raises(ValueError, match="head_screen='maybe': expected true or false"):
        MethodConfig.from_dict({"head_screen": "maybe"})


def test_literal_and_optional_fields() -> None:
    assert _as_inspect_passes(MethodConfig, "dtype=float32").dtype == "float32"
    assert _as_inspect_passes(SAEConfig, "layer=none").layer is None
    with pytest.raises(ValueError, match="must be one of 'auto', 'float32', 'bfloat16', 'float16'"):
        MethodConfig.from_dict({"dtype": "fp8"})


def test_cli_model_arg_texts_reads_every_spelling() -> None:
    argv = ["eval", "t.py", "-M", "a=1", "-Mb=x, y", "--model-arg", "c-d=z", "--model-arg=e=1=2", "-M", "a=2"]
    assert cli_model_arg_texts(argv, environ={"INSPECT_EVAL_MODEL_ARGS": "f=no a=0"}) == {
        "f": "no", "a": "2", "b": "x, y", "c_d": "z", "e": "1=2",
    }


def test_provider_parses_typed_text(tiny_model_dir: str) -> None:
    """``inspect eval ... -M system_prompt=yes`` reaches the prompt/ provider as True; it runs with "yes"."""
    import click
    from inspect_ai.model import get_model

    with click.Context(click.Command("eval"), info_name="eval") as ctx:  # Inspect's command, as it runs
        ctx.params["m"] = ("system_prompt=yes",)
        model = get_model(f"prompt/{tiny_model_dir}", **parse_cli_args(["system_prompt=yes"]))
    assert model.api.method.config.system_prompt == "yes"  # type: ignore[attr-defined]


def test_steerboard_run_keeps_method_option_text() -> None:
    from steerboard.run_cli import _kv

    assert _kv(["system_prompt=yes", "features=012"], "-M", parse=False) == {"system_prompt": "yes", "features": "012"}
    assert _kv(["subset=yes"], "-T") == {"subset": True}
