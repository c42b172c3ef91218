"""``sae/`` on a model without a shipped SAE preset: one line naming the models that have presets and how to
supply an SAE, before any weights load."""

from __future__ import annotations

import re

import pytest

from steerboard.methods.sae import SAEConfig, preset_models, resolve


def test_unknown_model_names_presets_and_sae_path() -> None:
    with pytest.raises(ValueError) as err:
        resolve(SAEConfig.from_dict({}), "some/unknown-model")
    msg = str(err.value)
    assert "\n" not in msg
    assert "no shipped SAE preset for 'some/unknown-model'" in msg
    for name, model in preset_models().items():  # every model with a preset, and its preset
        assert f"{model} (-M preset={name})" in msg
    assert re.search(r"-M sae_path=DIR.*-M layer=N", msg)


def test_model_with_sae_less_preset_is_pointed_at_it() -> None:
    with pytest.raises(ValueError, match=r"preset 'paper-phi3' is for this model.*-M preset=paper-phi3 -M sae_path="):
        resolve(SAEConfig.from_dict({}), "microsoft/Phi-3-mini-4k-instruct")


def test_inspect_get_model_fails_before_loading() -> None:
    """Through Inspect's provider: the model does not exist, so an error naming presets proves no load ran."""
    from inspect_ai.model import get_model

    with pytest.raises(Exception, match="no shipped SAE preset for 'some/unknown-model'"):
        get_model("sae/some/unknown-model", memoize=False)
