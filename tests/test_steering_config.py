"""The pieces ``sae/`` and ``actadd/`` share: gate options, the interventions' declared preamble key, the
``sae gate --outcome`` method lookup and the logistic-regression utility."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from steerboard.methods.actadd import ActAddConfig
from steerboard.methods.sae import SAEConfig
from steerboard.methods.steering import GATE_META_KEY, GatedSteeringConfig, HookSteering, SteeringIntervention


@pytest.mark.parametrize("cls", [SAEConfig, ActAddConfig])
def test_gate_options_come_from_one_config(cls: type[GatedSteeringConfig]) -> None:
    assert issubclass(cls, GatedSteeringConfig)
    with pytest.raises(ValueError, match=r"-M gate_threshold must be in \[0, 1\], got 1.5"):
        cls.from_dict({"gate_threshold": "1.5"})
    with pytest.raises(ValueError, match="must be one of 'mean', 'last', 'mean_last'"):
        cls.from_dict({"gate_feature": "max"})


def test_resolve_gate_prefers_options_then_preset() -> None:
    preset = {"gate": "probe", "gate_threshold": 0.25, "classifier_threshold": 0.35, "gate_feature": "mean"}
    assert GatedSteeringConfig().resolve_gate(preset) == ("probe", 0.25, "mean")
    assert GatedSteeringConfig(gate="classifier").resolve_gate(preset) == ("classifier", 0.35, "mean")
    assert GatedSteeringConfig(gate="both", gate_threshold=0.6, gate_feature="last").resolve_gate(preset) == (
        "both", 0.6, "last",
    )
    assert GatedSteeringConfig().resolve_gate({}) == ("none", 0.5, "mean_last")
    with pytest.raises(ValueError, match="gate_feature 'max' is unknown"):
        GatedSteeringConfig().resolve_gate({"gate_feature": "max"})


class _Hooked(HookSteering):
    name = "hooked"


def _hooked(gate: str) -> _Hooked:
    h = _Hooked()
    h.resolved = SimpleNamespace(gate=gate, steer_on="both", gate_threshold=0.5, gate_feature="mean")
    h.steerer = SimpleNamespace(apply=lambda hidden, mask: hidden)
    h._module, h._model, h.probe, h._span_offset = "model.layers.0", None, None, 0
    return h


def test_intervention_declares_its_preamble_key() -> None:
    plain = _hooked("none").intervention()
    assert isinstance(plain, SteeringIntervention) and plain.preamble_key is not None
    assert plain.preamble_key([SimpleNamespace(meta={})]) is not None
    assert plain.preamble_key([SimpleNamespace(meta={GATE_META_KEY: False})]) is None  # a row turned off
    assert _hooked("probe").intervention().preamble_key is None  # gated rows differ: no shared preamble


def test_outcome_methods_are_looked_up() -> None:
    from steerboard.methods.actadd import ActAddMethod
    from steerboard.methods.sae import SAEMethod
    from steerboard.methods.sae_cli import GATED_METHODS, ungated_method

    assert set(GATED_METHODS) == {"sae", "actadd"}
    for name, cls in (("sae", SAEMethod), ("actadd", ActAddMethod)):
        m = ungated_method(name, "smollm2-135m")
        assert type(m) is cls and m.resolved.gate == "none"


def test_linear_probe_fits_and_round_trips() -> None:
    import torch

    from steerboard.linear import LinearProbe

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 3, generator=g) + 2.0, torch.randn(40, 3, generator=g) - 2.0])
    y = torch.tensor([1] * 40 + [0] * 40)
    probe = LinearProbe.fit(x, y)
    p = probe.predict_proba(x)
    assert ((p >= 0.5).long() == y).float().mean() > 0.95
    assert torch.equal(LinearProbe.from_dict(probe.to_dict()).predict_proba(x), p)


def test_a_screen_result_row_rounds_scores_and_clips_the_sample() -> None:
    from steerboard.methods.training.gates import ScreenResult

    row = ScreenResult(0.81234, 0.2, 0.05, 1, [("prompt", "x" * 200)]).row(0.5)
    assert row == {"refusal_harmful": 0.812, "refusal_benign": 0.2, "degenerate": 0.05, "judge_errors": 1,
                   "score": 0.662, "sample": "x" * 120}
    no_replies = ScreenResult(0.5, 0.5, 0.0, 0, []).row(1.0)
    assert (no_replies["score"], no_replies["sample"]) == (0.0, "")
