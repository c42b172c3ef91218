"""Low-precision (bfloat16) linear layers: close to float32, edits seen, training exact, bad input."""

from __future__ import annotations

import pytest
import torch

from steerboard import precision
from steerboard.engine import Engine, GenerationRequest


@pytest.fixture()
def pair(tiny_model_dir: str) -> tuple[Engine, Engine]:
    """(float32 engine, bfloat16-matmul engine) on two separate copies of the tiny model."""
    return Engine.load(tiny_model_dir, matmul_dtype="float32"), Engine.load(tiny_model_dir, matmul_dtype="bfloat16")


def _ids(engine: Engine) -> list[list[int]]:
    return [engine.chat_ids([{"role": "user", "content": p}]) for p in ("How do I bake bread?", "Hi there")]


def test_bf16_logits_close_to_float32_but_not_identical(pair: tuple[Engine, Engine]) -> None:
    f32, b16 = pair
    assert f32.matmul_dtype == "float32" and not precision.active(f32.model)
    assert b16.matmul_dtype == "bfloat16" and precision.active(b16.model)
    head = b16.model.get_output_embeddings()
    assert precision._MARK not in head.__dict__  # the output head stays float32
    a = f32.forward(_ids(f32)).logits
    b = b16.forward(_ids(b16)).logits
    assert b.dtype == torch.float32
    diff = (a - b).abs().max().item()
    assert 0 < diff < 0.05 * a.abs().max().item()


def test_in_place_edit_is_seen_and_data_writes_need_weights_changed(pair: tuple[Engine, Engine]) -> None:
    _, eng = pair
    ids = _ids(eng)
    before = eng.forward(ids).logits.clone()
    w = eng.model.model.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.mul_(3.0)  # bumps the version counter
    edited = eng.forward(ids).logits
    assert not torch.allclose(before, edited)
    with torch.no_grad():
        w.copy_(saved)
    assert torch.equal(eng.forward(ids).logits, before)  # restored weights -> same outputs again
    w.data.mul_(3.0)  # invisible to the version counter
    assert torch.equal(eng.forward(ids).logits, before)  # stale copy, as documented
    eng.weights_changed()
    assert torch.allclose(eng.forward(ids).logits, edited)
    w.data.copy_(saved)
    eng.weights_changed()


def test_grad_and_exact_paths_are_float32(pair: tuple[Engine, Engine]) -> None:
    f32, b16 = pair
    ref = f32.forward(_ids(f32)).logits
    with precision.exact():
        assert torch.equal(b16.forward(_ids(b16)).logits, ref)
    out = b16.forward(_ids(b16), grad=True).logits
    assert out.requires_grad and torch.equal(out.detach(), ref)


def test_disable_restores_plain_linear(tiny_model_dir: str) -> None:
    f32 = Engine.load(tiny_model_dir, matmul_dtype="float32")
    b16 = Engine.load(tiny_model_dir, matmul_dtype="bfloat16")
    assert precision.disable(b16.model) > 0 and not precision.active(b16.model)
    assert torch.equal(b16.forward(_ids(b16)).logits, f32.forward(_ids(f32)).logits)


def test_generation_runs_and_batches_in_bf16(pair: tuple[Engine, Engine]) -> None:
    _, eng = pair
    reqs = [GenerationRequest(i, max_new_tokens=8) for i in _ids(eng)]
    out = eng.generate(reqs)
    assert len(out) == 2 and all(1 <= o.output_tokens <= 8 for o in out)


def test_auto_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERBOARD_MATMUL_DTYPE", raising=False)
    assert precision.resolve_matmul_dtype("auto", "cuda:0", torch.bfloat16) == "bfloat16"
    assert precision.resolve_matmul_dtype("auto", "cpu", torch.float16) == "float16"
    want = "bfloat16" if precision.cpu_has_fast_bf16() else "float32"
    assert precision.resolve_matmul_dtype(None, "cpu", torch.float32) == want
    monkeypatch.setenv("STEERBOARD_MATMUL_DTYPE", "float32")
    assert precision.resolve_matmul_dtype("auto", "cpu", torch.float32) == "float32"
    assert precision.resolve_matmul_dtype("bfloat16", "cpu", torch.float32) == "bfloat16"  # explicit wins


def test_bad_matmul_dtype_errors_before_loading(tmp_path) -> None:
    with pytest.raises(ValueError, match="matmul_dtype must be one of auto, float32, bfloat16; got 'int4'"):
        Engine.load(str(tmp_path / "does-not-exist"), matmul_dtype="int4")
    from steerboard.methods.base import MethodConfig

    assert MethodConfig.from_dict({"matmul_dtype": "float32"}).matmul_dtype == "float32"
    with pytest.raises(ValueError, match="matmul_dtype"):
        MethodConfig.from_dict({"matmul_dtype": "fp8"})
