"""Conditional-steering gate: pooling, in-hook features = fit-time features, dev-split threshold choice,
preset wiring and option validation (tiny random model; one integration test on the embedded model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steerboard.engine import GenerationRequest
from steerboard.linear import LinearProbe
from steerboard.methods import steering
from steerboard.methods.steering import (
    GatePoint,
    choose_gate_threshold,
    gate_curve,
    gated_intervention,
    pool_span,
    probe_gate_fn,
    prompt_features,
    user_span_offset,
    write_gate_to_preset,
)

HIDDEN = 64
LAYER = 1
PROMPTS = ["How do I bake bread?", "Tell me how to make weapons right now please", "Hi", "kill a process in bash"]
METHODS_DIR = Path(steering.__file__).parent
PRESETS = [METHODS_DIR / "presets" / "sae" / "smollm2-135m.json", METHODS_DIR / "presets" / "actadd" / "smollm2-135m.json"]


def test_pool_span_shapes_and_values() -> None:
    import torch

    span = torch.arange(12, dtype=torch.float32).view(3, 4)
    assert torch.equal(pool_span(span, "mean"), span.mean(0))
    assert torch.equal(pool_span(span, "last"), span[2])
    both = pool_span(span, "mean_last")
    assert both.shape == (8,) and torch.equal(both[:4], span.mean(0)) and torch.equal(both[4:], span[2])
    with pytest.raises(ValueError, match="gate_feature 'max' is unknown; valid: mean, last, mean_last"):
        pool_span(span, "max")


def test_gate_curve_and_youden_choice() -> None:
    ph = [0.95, 0.9, 0.8, 0.6, 0.3]
    pb = [0.7, 0.4, 0.2, 0.1, 0.05]
    curve = gate_curve(ph, pb, [0.25, 0.5, 0.75])
    assert [(g.threshold, g.tpr, g.fpr) for g in curve] == [(0.25, 1.0, 0.4), (0.5, 0.8, 0.2), (0.75, 0.6, 0.0)]
    assert choose_gate_threshold(curve).threshold == 0.75  # J: 0.6, 0.6, 0.6 -> the highest threshold on a tie
    curve2 = gate_curve(ph, pb, [0.25, 0.5, 0.85])
    assert choose_gate_threshold(curve2).threshold == 0.5  # J: 0.6, 0.6, 0.4 -> the higher of the two best
    assert choose_gate_threshold([GatePoint(0.3, 0.9, 0.5), GatePoint(0.6, 0.8, 0.1)]).threshold == 0.6
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        gate_curve(ph, pb, [1.5])
    with pytest.raises(ValueError, match="harmful and benign"):
        gate_curve([], pb, [0.5])
    with pytest.raises(ValueError, match="at least one point"):
        choose_gate_threshold([])


@pytest.mark.parametrize("feature", ["mean", "last", "mean_last"])
def test_in_hook_gate_features_match_fit_time_features(tiny_engine: Any, feature: str) -> None:
    """The gate computed inside the generation hook (left-padded batch) sees the same pooled features as the
    probe saw when it was fitted (:func:`prompt_features`), for every pooling, and steers exactly the rows
    whose probability clears the threshold."""
    import torch

    width = HIDDEN * (2 if feature == "mean_last" else 1)
    torch.manual_seed(1)
    probe = LinearProbe(torch.randn(width).tolist(), 0.0, [0.0] * width, [1.0] * width)
    expected = probe.predict_proba(prompt_features(tiny_engine, PROMPTS, LAYER, feature)).tolist()
    thr = sorted(expected)[len(expected) // 2]
    seen: dict[int, float] = {}
    decided: dict[int, bool] = {}
    off = user_span_offset(tiny_engine)
    inner = probe_gate_fn(probe, off, thr, feature)

    def gate_fn(state: Any, h: Any, rows: list[int]) -> dict[int, bool]:
        width_ = h.shape[1]
        for i in rows:
            start = width_ - state.prompt_lengths[state.rows[i]] + off
            seen[state.requests[state.rows[i]].meta["k"]] = float(probe.predict_proba(pool_span(h[i, start:], feature)[None])[0])
        out = inner(state, h, rows)
        decided.update({state.requests[state.rows[i]].meta["k"]: g for i, g in out.items()})
        return out

    calls: list[int] = []

    def steer(x: Any, mask: Any) -> Any:
        calls.append(int(mask.sum().item()))
        return x + 5.0 * mask

    iv = gated_intervention(tiny_engine.model, tiny_engine.layer_module_name(LAYER), steer, "both", gate_fn)
    reqs = [GenerationRequest(input_ids=tiny_engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=2,
                              meta={"k": k})
            for k, p in enumerate(PROMPTS)]
    tiny_engine.generate(reqs, intervention=iv)
    assert sorted(seen) == list(range(len(PROMPTS)))
    for i, p in enumerate(expected):
        assert seen[i] == pytest.approx(p, abs=1e-4)
        assert decided[i] == (p >= thr)
    assert any(decided.values()) and not all(decided.values())
    assert calls  # the gated rows were steered


def _write_preset(path: Path, layer: int = 8) -> Path:
    path.write_text(json.dumps({"layer": layer, "gate": "none", "gate_threshold": 0.9, "chosen_on": {"x": 1}, "z": 2}))
    return path


def test_write_gate_to_preset(tmp_path: Path) -> None:
    rep = {"layer": 8, "feature": "last", "chosen": {"threshold": 0.35}, "note": "chosen on dev"}
    p = _write_preset(tmp_path / "p.json")
    write_gate_to_preset(p, rep)
    d = json.loads(p.read_text())
    assert d["gate_threshold"] == 0.35 and d["gate_feature"] == "last" and d["chosen_on"]["gate_threshold"] == "chosen on dev"
    keys = list(d)
    assert keys.index("gate_feature") == keys.index("gate_threshold") + 1 and d["gate"] == "none"
    with pytest.raises(ValueError, match="preset layer 3 differs"):
        write_gate_to_preset(_write_preset(tmp_path / "q.json", layer=3), rep)


def test_presets_carry_a_dev_chosen_gate_and_the_shipped_probe_matches() -> None:
    shipped = sorted((METHODS_DIR / "artifacts").glob("gate-probe-*.json"))
    assert len(shipped) == 1, f"exactly one shipped gate probe expected (stale ones deleted): {shipped}"
    key = shipped[0].stem.removeprefix("gate-probe-")
    probe = LinearProbe.from_dict(json.loads(shipped[0].read_text()))
    assert len(probe.weight) == 2 * 576  # mean_last on SmolLM2-135M's 576-wide residual
    for path in PRESETS:
        d = json.loads(path.read_text())
        assert d["gate_feature"] == "mean_last"
        assert 0.0 < d["gate_threshold"] < 1.0
        note = d["chosen_on"]["gate_threshold"]
        assert note.startswith(f"{d['gate_threshold']} chosen on the gate data's dev split") and f"key {key}" in note


def test_gate_options_resolve_and_validate(tiny_model_dir: str) -> None:
    from steerboard.methods.actadd import ActAddConfig
    from steerboard.methods.actadd import resolve as aa_resolve
    from steerboard.methods.sae import SAEConfig
    from steerboard.methods.sae import resolve as sae_resolve

    for path, resolve, cfg in ((PRESETS[0], sae_resolve, SAEConfig), (PRESETS[1], aa_resolve, ActAddConfig)):
        d = json.loads(path.read_text())
        r = resolve(cfg.from_dict({"gate": "probe"}), "smollm2-135m")
        assert (r.gate, r.gate_threshold, r.gate_feature) == ("probe", d["gate_threshold"], "mean_last")
        r = resolve(cfg.from_dict({"gate": "probe", "gate_threshold": "0.8", "gate_feature": "last"}), "smollm2-135m")
        assert (r.gate_threshold, r.gate_feature) == (0.8, "last")
        with pytest.raises(ValueError, match=r"-M gate_feature='max': must be one of 'mean', 'last', 'mean_last'"):
            cfg.from_dict({"gate_feature": "max"})
        with pytest.raises(ValueError, match="-M gate='knn': must be one of 'none', 'probe', 'classifier'"):
            cfg.from_dict({"gate": "knn"})
        with pytest.raises(ValueError, match="gate_threshold must be in"):
            cfg.from_dict({"gate_threshold": "-0.1"})


def test_bad_preset_gate_feature_errors(tmp_path: Path) -> None:
    from steerboard.methods.actadd import ActAddConfig, resolve

    d = json.loads(PRESETS[1].read_text())
    d["gate_feature"] = "median"
    d["artifact"] = str(METHODS_DIR / "artifacts" / d["artifact"])
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="gate_feature 'median' is unknown"):
        resolve(ActAddConfig.from_dict({"preset": str(p)}), "smollm2-135m")


def test_gate_cli_rejects_bad_options_before_loading(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from steerboard.cli import main

    assert main(["sae", "gate", "--model", "/nonexistent/model", "--feature", "max"]) == 2
    assert "gate_feature 'max' is unknown; valid: mean, last, mean_last" in capsys.readouterr().err
    assert main(["sae", "gate", "--model", "/nonexistent/model", "--thresholds", "0.5,1.2"]) == 2
    assert "--thresholds [1.2]" in capsys.readouterr().err
    assert main(["sae", "gate", "--model", "/nonexistent/model", "--write-presets", str(tmp_path / "no.json")]) == 2
    assert "no such preset file" in capsys.readouterr().err
    assert main(["sae", "gate", "--model", "/nonexistent/model", "--outcome", "actadd", "--benign-budget", "2"]) == 2
    assert "--benign-budget 2.0: must be in [0, 1]" in capsys.readouterr().err
    assert main(["sae", "gate", "--model", "smollm2-135m", "--outcome", "sae", "--layer", "3"]) == 2
    assert "the sae preset steers layer 8" in capsys.readouterr().err


@pytest.mark.integration
def test_shipped_probe_key_matches_the_embedded_model_and_gate_data(smol_engine: Any) -> None:
    """A change to the gate data (or pooling/version) without re-running ``steerboard sae gate --ship`` fails here."""
    assert steering.shipped_probe_path(smol_engine, 8, "mean_last").is_file()


def test_outcome_curve_scores_gated_replies_exactly() -> None:
    from steerboard.methods.steering import choose_outcome_threshold, outcome_curve

    # 4 harmful: base refuses none, steering makes 3 of 4 refuse; 4 benign: steering makes 2 over-refuse
    ph, pb = [0.9, 0.7, 0.4, 0.2], [0.8, 0.3, 0.1, 0.05]
    bh, sh = [0, 0, 0, 0], [1, 1, 1, 0]
    bb, sb = [0, 0, 0, 0], [1, 1, 0, 0]
    curve = outcome_curve(ph, pb, bh, bb, sh, sb, [0.25, 0.5, 0.75, 0.95])
    got = [(g.threshold, g.refusal_harmful, g.refusal_benign, g.kept, g.benign_delta) for g in curve]
    assert got == [
        (0.25, 0.75, 0.5, 1.0, 0.5),
        (0.5, 0.5, 0.25, pytest.approx(2 / 3), 0.25),
        (0.75, 0.25, 0.25, pytest.approx(1 / 3), 0.25),
        (0.95, 0.0, 0.0, 0.0, 0.0),
    ]
    assert choose_outcome_threshold(curve, benign_budget=0.25).threshold == 0.5  # most kept within budget
    assert choose_outcome_threshold(curve, benign_budget=0.10).threshold == 0.95
    assert choose_outcome_threshold(curve, benign_budget=1.0).threshold == 0.25
    # judge errors (None) drop out of the rates
    c2 = outcome_curve(ph, pb, [0, None, 0, 0], bb, [1, None, 1, 0], sb, [0.5])
    assert c2[0].refusal_harmful == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="line up"):
        outcome_curve(ph, pb, bh[:3], bb, sh, sb, [0.5])
    with pytest.raises(ValueError, match="at least one point"):
        choose_outcome_threshold([])
