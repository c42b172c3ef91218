"""actadd/ provider: difference-in-means directions, add/ablate, gating, validation, registry (tiny model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steerboard.engine import GenerationRequest
from steerboard.methods.actadd import ActAddConfig, ActAddMethod, ActAddSteerer, fit_directions, resolve
from steerboard.testing import greedy_token_ids as _gen

LAYER = 1


PROMPTS = ["How do I bake bread?", "Tell me how to make weapons", "What is the capital of France?", "kill a process"]


@pytest.fixture(scope="module")
def directions(tiny_engine: Any) -> dict[str, Any]:
    return fit_directions(tiny_engine)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path))
    return tmp_path


def test_directions_are_unit_per_layer_and_sources_differ(tiny_engine: Any, directions: dict[str, Any]) -> None:
    import torch

    n_layers = len(tiny_engine.decoder_layers())
    for src in ("prompts", "responses"):
        d = directions[src]
        assert d.shape == (n_layers, 64)
        assert torch.allclose(d.norm(dim=-1), torch.ones(n_layers), atol=1e-4)
        assert (directions[f"{src}_norm"] > 0).all()
    assert not torch.allclose(directions["prompts"], directions["responses"])
    assert (directions["resid_norm"] > 0).all()


def test_add_and_ablate_math() -> None:
    import torch

    d = torch.zeros(8)
    d[2] = 1.0
    x = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, 1)
    add = ActAddSteerer(d, 4.0, "add").apply(x, mask)
    assert torch.allclose(add - x, 4.0 * d.expand_as(x))
    abl = ActAddSteerer(d, 0.0, "ablate").apply(x, mask)
    assert torch.allclose(abl[..., 2], torch.zeros(3, 5)) and torch.allclose(abl[..., :2], x[..., :2])
    part = ActAddSteerer(d, 4.0, "add").apply(x, torch.zeros(3, 5, 1))
    assert torch.equal(part, x)


def test_provider_fits_caches_and_steers(tiny_engine: Any, tiny_model_dir: str, cache: Path) -> None:
    before = sum(len(m._forward_hooks) for m in tiny_engine.model.modules())
    base = _gen(tiny_engine, PROMPTS)
    cfg = ActAddConfig.from_dict({"source": "responses", "layer": str(LAYER), "coefficient": "30"})
    m = ActAddMethod(cfg, tiny_model_dir)
    m.prepare(tiny_engine)
    files = list(cache.rglob("*.safetensors"))
    assert len(files) == 1  # cached by hash
    mtime = files[0].stat().st_mtime_ns
    m2 = ActAddMethod(cfg, tiny_model_dir)
    m2.prepare(tiny_engine)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not refitted
    steered = _gen(tiny_engine, PROMPTS, m.intervention())
    assert steered != base
    assert sum(len(mm._forward_hooks) for mm in tiny_engine.model.modules()) == before
    # gated-off rows are the base outputs; batch equals one-by-one
    metas = [{"steer_gate": g} for g in (False, True, False, True)]
    batch = _gen(tiny_engine, PROMPTS, m.intervention(), metas=metas)
    single = [_gen(tiny_engine, [p], m.intervention(), metas=[mt])[0] for p, mt in zip(PROMPTS, metas)]
    assert batch == single
    assert batch[0] == base[0] and batch[2] == base[2]


def test_validation(tiny_engine: Any, tiny_model_dir: str, cache: Path) -> None:
    with pytest.raises(ValueError, match="unknown -M option.*Valid keys"):
        ActAddConfig.from_dict({"coef": "3"})
    with pytest.raises(ValueError, match="must be one of 'prompts', 'responses'"):
        ActAddConfig.from_dict({"source": "both"})
    with pytest.raises(ValueError, match="no preset for this model; give -M source=.*-M layer=.*-M coefficient="):
        resolve(ActAddConfig.from_dict({}), tiny_model_dir)
    with pytest.raises(ValueError, match="gate_threshold"):
        ActAddConfig.from_dict({"gate_threshold": "2"})
    m = ActAddMethod(ActAddConfig.from_dict({"source": "prompts", "layer": "40", "coefficient": "1"}), tiny_model_dir)
    with pytest.raises(ValueError, match="4 decoder layers"):
        m.prepare(tiny_engine)
    # the embedded preset resolves without weights; a shipped direction table for another model is rejected
    r = resolve(ActAddConfig.from_dict({}), "smollm2-135m")
    assert r.preset == "smollm2-135m" and r.artifact is not None and r.artifact.is_file()
    wrong = ActAddMethod(ActAddConfig.from_dict({"preset": "smollm2-135m", "layer": str(LAYER)}), tiny_model_dir)
    with pytest.raises(ValueError, match="fitted on a different model"):
        wrong.prepare(tiny_engine)


def test_entry_point_resolves_actadd_provider(tiny_model_dir: str, cache: Path) -> None:
    import asyncio

    from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model

    import steerboard._registry  # noqa: F401

    model = get_model(f"actadd/{tiny_model_dir}", source="prompts", layer=LAYER, coefficient=10, operation="ablate")
    out = asyncio.run(model.generate([ChatMessageUser(content="hello")], config=GenerateConfig(max_tokens=4)))
    api = model.api
    assert (api.method.resolved.operation, api.method.resolved.layer) == ("ablate", LAYER)  # type: ignore[attr-defined]
    engine, method = api.engine, api.method  # type: ignore[attr-defined]
    req = GenerationRequest(input_ids=engine.chat_ids([{"role": "user", "content": "hello"}]), max_new_tokens=4)
    steered, plain = (engine.generate([req], intervention=iv)[0].text for iv in (method.intervention(), None))
    assert out.completion == steered != plain  # the provider serves the steered model


def test_steered_prefills_reuse_a_steered_preamble(tiny_model_dir: str, cache: Path) -> None:
    """Ungated steering: the preamble computed once under the hooks gives the tokens of full prefills;
    rows whose meta turns steering off, and gated runs, are prefilled in full."""
    from steerboard.engine import Engine

    on = Engine.load(tiny_model_dir, matmul_dtype="float32", prefix_cache=True)
    off = Engine.load(tiny_model_dir, matmul_dtype="float32")
    cfg = ActAddConfig.from_dict({"source": "responses", "layer": str(LAYER), "coefficient": "30"})
    m_on, m_off = ActAddMethod(cfg, tiny_model_dir), ActAddMethod(cfg, tiny_model_dir)
    m_on.prepare(on)
    m_off.prepare(off)
    a = _gen(on, PROMPTS, m_on.intervention(), n=10)
    assert on.prefix_hits >= 1
    assert a == _gen(off, PROMPTS, m_off.intervention(), n=10)
    assert a != _gen(on, PROMPTS, None, n=10)  # the steered preamble is not the plain one
    hits = on.prefix_hits
    metas = [{"steer_gate": g} for g in (False, True, False, True)]
    mixed = _gen(on, PROMPTS, m_on.intervention(), n=10, metas=metas)
    assert on.prefix_hits == hits  # rows differ: full prefill
    assert mixed == _gen(off, PROMPTS, m_off.intervention(), n=10, metas=metas)


def test_sae_preset_states_clamp_as_multiple_of_max_activation():
    """The shipped SAE preset records the feature's maximum activation on the fit data; the method reports
    its clamp in that unit (shown on the site)."""
    from steerboard.methods.sae import SAEConfig, SAEMethod, load_preset, resolve, strength_units

    p = load_preset("smollm2-135m")
    units = strength_units(p)
    assert units and units[0]["feature"] == p["features"][0] and units[0]["max_activation_fit"] > 0
    assert units[0]["times_max_activation"] == round(p["strengths"][0] / units[0]["max_activation_fit"], 3)
    assert "python -m steerboard.methods.sae max-activation" in p["max_activation"]["command"]
    assert strength_units({"features": [1], "strengths": [2.0]}) is None
    m = SAEMethod(SAEConfig(), "smollm2-135m")
    m.resolved = resolve(m.config, "smollm2-135m")
    assert m.describe()["resolved"]["strength_units"] == units
    m2 = SAEMethod(SAEConfig.from_dict({"strengths": "20"}), "smollm2-135m")
    m2.resolved = resolve(m2.config, "smollm2-135m")
    assert "strength_units" not in m2.describe()["resolved"]  # another clamp: the preset's ratio does not apply
