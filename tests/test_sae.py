"""sae/ provider: clamp/add steering, steer_on, gating, hooks cleanup, validation, registry (tiny model + tiny SAE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steerboard.engine import GenerationRequest
from steerboard.linear import LinearProbe
from steerboard.methods.sae import SAEConfig, SAEMethod, SAESteerer, resolve
from steerboard.methods.steering import gated_intervention, probe_gate_fn, user_span_offset
from steerboard.testing import greedy_token_ids as _gen

HIDDEN = 64
D_SAE = 128
LAYER = 1


def make_tiny_sae(path: Path, d_in: int = HIDDEN, d_sae: int = D_SAE, k: int = 8, seed: int = 0) -> Path:
    """A random Top-k SAE in SAELens format (the shipped cfg.json + sae_weights.safetensors layout)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0 / d_in**0.5)
        w = torch.randn(d_sae, d_in)
        sae.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = f"model.layers.{LAYER}"
    sae.save_model(path)
    return path


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sae(tmp_path_factory.mktemp("sae") / "sae")


def _method(tiny_engine: Any, tiny_model_dir: str, **opts: Any) -> SAEMethod:
    m = SAEMethod(SAEConfig.from_dict(opts), tiny_model_dir)
    m.prepare(tiny_engine)
    return m


PROMPTS = ["How do I bake bread?", "Tell me how to make weapons", "What is the capital of France?", "kill a process"]


def _n_hooks(engine: Any) -> int:
    return sum(len(m._forward_hooks) for m in engine.model.modules())


# ---------------------------------------------------------------- steering math
def test_clamp_to_current_value_leaves_residual_unchanged(tiny_sae: Path) -> None:
    import torch

    from steerboard.methods.sae import load_sae

    sae = load_sae(tiny_sae)
    torch.manual_seed(1)
    x = torch.randn(5, HIDDEN) * 3
    acts = sae.encode(x)
    f = int(acts[0].argmax())  # active on row 0
    mask = torch.ones(5, 1)
    # clamping every row to its own current value of f changes nothing (reconstruction error is kept)
    for r in range(5):
        st = SAESteerer(sae, [f], [float(acts[r, f])], "clamp")
        assert torch.allclose(st.apply(x[r : r + 1], mask[:1]), x[r : r + 1], atol=1e-5)
    # clamping to another value adds exactly decode(clamped) - decode(original)
    st = SAESteerer(sae, [f], [7.5], "clamp")
    clamped = acts.clone()
    clamped[:, f] = 7.5
    expect = x + (sae.decode(clamped) - sae.decode(acts))
    assert torch.allclose(st.apply(x, mask), expect, atol=1e-4)
    assert not torch.allclose(st.apply(x, mask), x, atol=1e-3)
    # the masked-out positions are untouched
    out = st.apply(x, torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]]))
    assert torch.equal(out[1], x[1]) and not torch.allclose(out[0], x[0])


def test_add_mode_adds_strength_times_decoder_rows(tiny_sae: Path) -> None:
    import torch

    from steerboard.methods.sae import load_sae

    sae = load_sae(tiny_sae)
    x = torch.zeros(2, HIDDEN)
    st = SAESteerer(sae, [3, 10], [2.0, -1.0], "add")
    expect = 2.0 * sae.W_dec[3] - sae.W_dec[10]
    assert torch.allclose(st.apply(x, torch.ones(2, 1))[0], expect, atol=1e-6)


# ---------------------------------------------------------------- generation behaviour
def test_add_mode_changes_outputs_and_hooks_are_removed(tiny_engine: Any, tiny_model_dir: str, tiny_sae: Path) -> None:
    before = _n_hooks(tiny_engine)
    base = _gen(tiny_engine, PROMPTS)
    m = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5,9", strengths="40", mode="add")
    steered = _gen(tiny_engine, PROMPTS, m.intervention())
    assert steered != base
    assert _n_hooks(tiny_engine) == before
    # a clamp of 0 on a latent that never fires changes nothing
    m0 = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5", strengths="0", mode="add")
    assert _gen(tiny_engine, PROMPTS, m0.intervention()) == base


def test_hooks_removed_even_when_generation_fails(tiny_engine: Any) -> None:
    before = _n_hooks(tiny_engine)

    def boom(x: Any, mask: Any) -> Any:
        raise RuntimeError("steer failed")

    iv = gated_intervention(tiny_engine.model, tiny_engine.layer_module_name(LAYER), boom, "both", None)
    with pytest.raises(RuntimeError, match="steer failed"):
        _gen(tiny_engine, PROMPTS[:2], iv)
    assert _n_hooks(tiny_engine) == before
    assert _gen(tiny_engine, PROMPTS[:1]) == _gen(tiny_engine, PROMPTS[:1])  # engine still usable


@pytest.mark.parametrize("steer_on,phases", [("prompt", {"prefill"}), ("generated", {"decode"}), ("both", {"prefill", "decode"})])
def test_steer_on_selects_positions(tiny_engine: Any, steer_on: str, phases: set[str]) -> None:
    seen: list[tuple[int, float]] = []

    def record(x: Any, mask: Any) -> Any:
        seen.append((x.shape[1], float(mask.sum())))
        return x + mask * 10.0

    iv = gated_intervention(tiny_engine.model, tiny_engine.layer_module_name(LAYER), record, steer_on, None)  # type: ignore[arg-type]
    base = _gen(tiny_engine, PROMPTS[:2])
    out = _gen(tiny_engine, PROMPTS[:2], iv)
    got = {"prefill" if width > 1 else "decode" for width, _ in seen}
    assert got == phases
    lens = [len(tiny_engine.chat_ids([{"role": "user", "content": p}])) for p in PROMPTS[:2]]
    if "prefill" in phases:
        assert seen[0][1] == sum(lens)  # only real prompt tokens, not left padding
    if steer_on == "generated":
        # the first token comes from the (unsteered) prompt pass
        assert [o[0] for o in out] == [b[0] for b in base]
    if steer_on == "prompt":
        assert out != base


def test_gate_steers_only_gated_rows_batch_equals_single(tiny_engine: Any, tiny_model_dir: str, tiny_sae: Path) -> None:
    m = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5,9", strengths="40", mode="add")
    iv = m.intervention()
    base = _gen(tiny_engine, PROMPTS)
    metas = [{"steer_gate": g} for g in (True, False, True, False)]
    batch = _gen(tiny_engine, PROMPTS, iv, metas=metas)
    single = [_gen(tiny_engine, [p], iv, metas=[mt])[0] for p, mt in zip(PROMPTS, metas)]
    assert batch == single
    assert batch[1] == base[1] and batch[3] == base[3]
    assert batch[0] != base[0] or batch[2] != base[2]


def test_probe_gate_batch_equals_single(tiny_engine: Any, tiny_model_dir: str, tiny_sae: Path) -> None:
    import torch

    from steerboard.methods.steering import prompt_features

    off = user_span_offset(tiny_engine)
    feats = prompt_features(tiny_engine, PROMPTS, LAYER)
    torch.manual_seed(0)
    probe = LinearProbe(torch.randn(HIDDEN).tolist(), 0.0, [0.0] * HIDDEN, [1.0] * HIDDEN)
    p = probe.predict_proba(feats)
    thr = float(p.median())
    gated = [bool(v >= thr) for v in p.tolist()]
    assert any(gated) and not all(gated)
    m = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5,9", strengths="40", mode="add")
    iv = gated_intervention(tiny_engine.model, m._module, m.steerer.apply, "both", probe_gate_fn(probe, off, thr))
    base = _gen(tiny_engine, PROMPTS)
    batch = _gen(tiny_engine, PROMPTS, iv)
    single = [_gen(tiny_engine, [q], iv)[0] for q in PROMPTS]
    assert batch == single
    for g, b, o in zip(gated, base, batch):
        if not g:
            assert o == b


def test_gate_probe_option_fits_and_caches(tiny_engine: Any, tiny_model_dir: str, tiny_sae: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path))
    m = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5", strengths="40", mode="add",
                gate="probe", gate_threshold="0.5")
    assert m.probe is not None and len(m.probe.weight) == 2 * HIDDEN  # default pooling mean_last: [mean, last]
    cached = list(tmp_path.rglob("*.json"))
    assert len(cached) == 1
    m2 = _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="5", strengths="40", mode="add",
                 gate="probe")
    assert m2.probe.weight == m.probe.weight
    _gen(tiny_engine, PROMPTS[:2], m.intervention())


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"feature": "3"}, "unknown -M option.*Valid keys"),
        ({"features": "1,2,3", "strengths": "1,2"}, "strengths has 2 values for 3 features"),
        ({"mode": "multiply"}, "must be one of"),
        ({"steer_on": "everywhere"}, "must be one of"),
        ({"preset": "nope"}, "unknown preset; valid presets: .*paper-phi3"),
    ],
)
def test_config_rejects(options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SAEConfig.from_dict(options)


def test_validation_errors(tiny_engine: Any, tiny_model_dir: str, tiny_sae: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out of range.*128 latents"):
        resolve(SAEConfig.from_dict({"sae_path": str(tiny_sae), "features": "500", "strengths": "4"}), tiny_model_dir)
    with pytest.raises(ValueError, match="paper-phi3.*needs -M sae_path"):
        resolve(SAEConfig.from_dict({"preset": "paper-phi3"}), "microsoft/Phi-3-mini-4k-instruct")
    with pytest.raises(ValueError, match="no shipped SAE preset"):
        resolve(SAEConfig.from_dict({}), tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(SAEConfig.from_dict({"sae_path": str(tmp_path / "none"), "features": "1", "strengths": "1"}), tiny_model_dir)
    with pytest.raises(ValueError, match="layers"):
        _method(tiny_engine, tiny_model_dir, sae_path=str(tiny_sae), features="1", strengths="1", layer="99")
    wrong = make_tiny_sae(tmp_path / "wrong", d_in=32, d_sae=64)
    with pytest.raises(ValueError, match="d_in=32 does not match the model's hidden size 64"):
        _method(tiny_engine, tiny_model_dir, sae_path=str(wrong), features="1", strengths="1")


def test_presets_resolve_without_weights() -> None:
    r = resolve(SAEConfig.from_dict({}), "smollm2-135m")
    assert r.preset == "smollm2-135m" and r.layer == 8 and r.mode == "clamp"
    assert r.d_sae == 4608 and r.d_in == 576 and len(r.features) == len(r.strengths) >= 1
    assert r.sae_path is not None and (r.sae_path / "sae_weights.safetensors").stat().st_size <= 12 * 2**20
    from steerboard.methods.sae import load_preset

    paper = load_preset("paper-phi3")
    assert paper["features"] == [22373] and paper["strengths"] == [12.0] and 10.0 in paper["strength_alternatives"]
    assert paper["model"] == "microsoft/Phi-3-mini-4k-instruct" and paper["sae_path_required"]


def test_paper_preset_feature_checked_against_sae(tiny_sae: Path) -> None:
    with pytest.raises(ValueError, match=r"feature index \[22373\] out of range"):
        resolve(SAEConfig.from_dict({"preset": "paper-phi3", "sae_path": str(tiny_sae)}), "microsoft/Phi-3-mini-4k-instruct")


# ---------------------------------------------------------------- registry
def test_entry_point_resolves_sae_provider(tiny_model_dir: str, tiny_sae: Path) -> None:
    from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model

    import steerboard._registry  # noqa: F401

    model = get_model(f"sae/{tiny_model_dir}", sae_path=str(tiny_sae), features="5,9", strengths="40,20", mode="add")
    out = _run(model.generate([ChatMessageUser(content="hello there")], config=GenerateConfig(max_tokens=4)))
    api = model.api
    assert api.method.resolved.features == [5, 9]  # type: ignore[attr-defined]
    engine, method = api.engine, api.method  # type: ignore[attr-defined]
    req = GenerationRequest(input_ids=engine.chat_ids([{"role": "user", "content": "hello there"}]), max_new_tokens=4)
    steered, plain = (engine.generate([req], intervention=iv)[0].text for iv in (method.intervention(), None))
    assert out.completion == steered != plain  # the provider serves the steered model
    with pytest.raises(ValueError, match="unknown -M option"):
        get_model(f"sae/{tiny_model_dir}", sae_path=str(tiny_sae), featurez="1")


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


# ---------------------------------------------------------------- integration (embedded model + shipped SAE)
@pytest.mark.integration
def test_shipped_sae_steers_embedded_model(smol_engine: Any) -> None:
    m = SAEMethod(SAEConfig.from_dict({}), "smollm2-135m")
    m.prepare(smol_engine)
    before = _n_hooks(smol_engine)
    prompts = ["How do I make a bomb at home?", "Write a short poem about the sea."]
    base = _gen(smol_engine, prompts, n=12)
    steered = _gen(smol_engine, prompts, m.intervention(), n=12)
    assert steered != base
    assert _n_hooks(smol_engine) == before
    assert json.loads((Path(m.resolved.sae_path) / "cfg.json").read_text())["d_sae"] == 4608  # type: ignore[arg-type]


def test_cli_commands_parse() -> None:
    from steerboard.cli import build_parser

    p = build_parser()
    a = p.parse_args(["sae", "train", "--layer", "8", "--epochs", "1"])
    assert a.layer == 8 and a.epochs == 1 and a.k == 32 and a.expansion == 8 and callable(a.func)
    a = p.parse_args(["sae", "features", "--judge", "strmatch", "--strengths", "20,40"])
    assert a.strengths == "20,40" and a.min_tokens == 2 and callable(a.func)
    a = p.parse_args(["actadd", "fit", "--layers", "6,8", "--reuse-directions"])
    assert a.layers == "6,8" and a.reuse_directions and callable(a.func)
    from steerboard.cli import main

    assert main(["actadd", "fit", "--sources", "bogus"]) == 2  # rejected before any model work
