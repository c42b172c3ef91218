"""A missing optional dependency is reported, with its install command, before any weights load."""

from __future__ import annotations

import sys

import pytest

from steerboard.methods import provider
from steerboard.methods.base import require_modules


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an engine fails the test: the check must come first."""

    def load_engine(*_args: object, **_kw: object) -> None:
        raise AssertionError("weights were loaded before the dependency check")

    monkeypatch.setattr(provider, "load_engine", load_engine)


def _missing(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # `import m` now fails, as if not installed


def test_require_modules_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require_modules({"json": "none"}, "x")  # present: no error
    _missing(monkeypatch, "trl", "peft")
    with pytest.raises(ImportError, match=r"^dpo/ needs peft, trl, which are not installed: pip install 'steerboard\[dpo\]'$"):
        require_modules({"trl": "dpo", "peft": "dpo", "json": "dpo"}, "dpo/")


@pytest.mark.parametrize(
    ("model", "args", "modules", "extra"),
    [
        ("sae/smollm2-135m", {}, ("sae_lens",), "sae"),
        ("dpo/smollm2-135m", {}, ("trl",), "dpo"),
        ("actadd/smollm2-135m", {"gate": "classifier"}, ("sentence_transformers",), "judges"),
        ("sae/smollm2-135m", {"gate": "both"}, ("sentence_transformers",), "judges"),
    ],
)
def test_provider_checks_before_weights(
    monkeypatch: pytest.MonkeyPatch, no_weights: None, model: str, args: dict, modules: tuple[str, ...], extra: str
) -> None:
    from inspect_ai.model import get_model

    import steerboard._registry  # noqa: F401

    _missing(monkeypatch, *modules)
    with pytest.raises(ImportError, match=rf"{model.split('/')[0]}/ needs .*pip install 'steerboard\[{extra}\]'"):
        get_model(model, **args)


def test_ungated_steering_needs_no_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerboard.methods.actadd import ActAddConfig, ActAddMethod
    from steerboard.methods.base import BaseMethod, MethodConfig

    _missing(monkeypatch, "sentence_transformers")
    assert ActAddMethod(ActAddConfig.from_dict({"gate": "none"}), "smollm2-135m").required_modules() == {}
    assert BaseMethod(MethodConfig(), "smollm2-135m").required_modules() == {}


def test_sae_train_cli_checks_before_the_model(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from steerboard import models
    from steerboard.cli import main

    def no_model(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was resolved before the dependency check")

    monkeypatch.setattr(models, "resolve_model", no_model)
    _missing(monkeypatch, "sae_lens")
    assert main(["sae", "train", "--model", "smollm2-135m"]) == 2
    assert "steerboard sae train needs sae_lens, which is not installed: pip install 'steerboard[sae]'" in capsys.readouterr().err
