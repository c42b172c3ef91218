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
    monkeypatch.delenv("STEERBOARD_FORCE_BF16", raising=False)
    want = "bfloat16" if precision.cpu_has_fast_bf16() else "float32"  # explicit wins where the CPU has bf16
    assert precision.resolve_matmul_dtype("bfloat16", "cpu", torch.float32) == want
    monkeypatch.setenv("STEERBOARD_FORCE_BF16", "1")
    assert precision.resolve_matmul_dtype("bfloat16", "cpu", torch.float32) == "bfloat16"


@pytest.mark.parametrize(
    ("env", "native"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "avx2"}, False),
        ({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, False),
        ({"ATEN_CPU_CAPABILITY": "default"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None),
        ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
        ({}, None),
    ],
)
def test_emulated_cpu_paths_follow_the_kernel_caps(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, env: dict[str, str], native: bool | None
) -> None:
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY below bf16 make detection behave as on an AVX2-only CPU: auto
    resolves to float32 and an explicit bfloat16 falls back to float32 with a one-line note (None: the CPU decides)."""
    import logging

    for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "STEERBOARD_FORCE_BF16",
              "STEERBOARD_MATMUL_DTYPE"):
        monkeypatch.delenv(k, raising=False)
    precision.cpu_has_fast_bf16.cache_clear()
    real = precision.cpu_has_fast_bf16()  # what the hardware has
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    precision.cpu_has_fast_bf16.cache_clear()
    try:
        has = precision.cpu_has_fast_bf16()
        assert has == (real if native is None else native)
        assert precision.cpu_kind() in (("amx", "avx512_bf16") if has else ("no_bf16",))
        assert precision.resolve_matmul_dtype("auto", "cpu", torch.float32) == ("bfloat16" if has else "float32")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="steerboard.precision"):
            got = precision.resolve_matmul_dtype("bfloat16", "cpu", torch.float32)
        assert got == ("bfloat16" if has else "float32")
        notes = [r.getMessage() for r in caplog.records]
        if has:
            assert notes == [] and precision.native_matmul_note("bfloat16", "cpu") is None
        else:
            assert len(notes) == 1 and "running float32 matmuls instead" in notes[0] and "\n" not in notes[0]
        assert precision.resolve_matmul_dtype("bfloat16", "cuda:0", torch.float32) == "bfloat16"  # not a CPU matter
    finally:
        precision.cpu_has_fast_bf16.cache_clear()


def test_unnative_bf16_is_said_before_weights_load_and_recorded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tiny_model_dir: str
) -> None:
    """On a CPU without bf16 (emulated), -M matmul_dtype=bfloat16 is said when the config is built (before any
    weights) and the engine runs float32, which the log's runtime records with the CPU path taken."""
    import logging

    from steerboard.methods.base import MethodConfig, runtime_info

    monkeypatch.delenv("STEERBOARD_FORCE_BF16", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    precision.cpu_has_fast_bf16.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            cfg = MethodConfig.from_dict({"matmul_dtype": "bfloat16", "device": "cpu"})
        assert any("no native bfloat16" in r.getMessage() for r in caplog.records)
        eng = Engine.load(tiny_model_dir, matmul_dtype=cfg.matmul_dtype)
        info = runtime_info(eng)
        assert info["matmul_dtype"] == "float32" and info["cpu_kind"] == "no_bf16"
        assert info["cpu_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    finally:
        precision.cpu_has_fast_bf16.cache_clear()


def test_bad_matmul_dtype_errors_before_loading(tmp_path) -> None:
    with pytest.raises(ValueError, match="matmul_dtype must be one of auto, float32, bfloat16; got 'int4'"):
        Engine.load(str(tmp_path / "does-not-exist"), matmul_dtype="int4")
    from steerboard.methods.base import MethodConfig

    assert MethodConfig.from_dict({"matmul_dtype": "float32"}).matmul_dtype == "float32"
    with pytest.raises(ValueError, match="matmul_dtype"):
        MethodConfig.from_dict({"matmul_dtype": "fp8"})


def test_screened_greedy_equals_float32_argmax_on_near_ties() -> None:
    """Near-ties below bf16 resolution are settled in float32; a too-thin margin falls back to the full head."""
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(5000, 64, generator=g) * 0.1)
        base_row = head.weight[7].clone()
        for j in range(100, 140):  # 40 tokens that tie with token 7 to ~1e-4
            head.weight[j] = base_row + torch.randn(64, generator=g) * 1e-4
    h = torch.randn(48, 64, generator=g) * 2
    h[:16] = base_row * 30 + torch.randn(16, 64, generator=g) * 1e-3
    with torch.inference_mode():
        want = (h @ head.weight.T).argmax(-1)
        low = (h.bfloat16() @ head.weight.bfloat16().T).float().argmax(-1)
        got, n_cand, n_back = precision.screened_greedy(h, head)
    assert (low[:16] != want[:16]).any()  # plain bf16 would pick wrong tokens here
    assert torch.equal(got, want) and n_back == 0
    assert 48 + 16 * 40 <= n_cand < 48 * 5000 // 10  # all near-ties kept, yet a screen, not a full re-score
    # a margin far below the bf16 error trips the run-time check: those rows use the full float32 head
    with torch.inference_mode():
        got2, _, n_back2 = precision.screened_greedy(h * 50, head, margin=1e-3)
        assert n_back2 > 0 and torch.equal(got2, (h * 50 @ head.weight.T).argmax(-1))
    # an in-place change of the head is seen (its bf16 copy is re-made)
    with torch.no_grad():
        head.weight[3] = h[20] / h[20].norm() * 10
    with torch.inference_mode():
        assert int(precision.screened_greedy(h[20:21], head)[0]) == 3 == int((h[20:21] @ head.weight.T).argmax())


def test_screened_head_gives_the_same_greedy_tokens(tiny_model_dir: str) -> None:
    on = Engine.load(tiny_model_dir, matmul_dtype="bfloat16")
    off = Engine.load(tiny_model_dir, matmul_dtype="bfloat16", head_screen=False)
    assert on.uses_screened_head() and not off.uses_screened_head()
    prompts = ["How do I bake bread?", "Hi there", "Tell me a story about a dragon and a cat", "2+2?"]
    reqs = [GenerationRequest(on.chat_ids([{"role": "user", "content": p}]), max_new_tokens=24) for p in prompts]
    a, b = on.generate(reqs), off.generate(reqs)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert on.head_screen_rows > 0 and off.head_screen_rows == 0
    # logprob requests take the full-logits path and agree too
    lp = [GenerationRequest(r.input_ids, max_new_tokens=8, logprobs=True, top_logprobs=3) for r in reqs]
    la, lb = on.generate(lp), off.generate(lp)
    assert [r.token_ids for r in la] == [r.token_ids for r in lb]
    assert [t.logprob for t in la[0].logprobs] == pytest.approx([t.logprob for t in lb[0].logprobs])


def test_packed_linear_is_bit_identical_to_plain_bf16(tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN-packed weights change speed only: logits equal the plain bf16 F.linear path exactly."""
    packed = Engine.load(tiny_model_dir, matmul_dtype="bfloat16")
    ids = _ids(packed)
    a = packed.forward(ids).logits
    lin = packed.model.model.layers[0].mlp.down_proj
    # packed wherever oneDNN offers it (the dev/CI CPUs do); elsewhere the plain path runs and is compared
    assert (getattr(lin, precision._MARK)[4] is not None) == precision.packed_linear_available("bfloat16")
    monkeypatch.setenv("STEERBOARD_PACKED_LINEAR", "0")
    precision.packed_linear_available.cache_clear()
    try:
        plain = Engine.load(tiny_model_dir, matmul_dtype="bfloat16")
        b = plain.forward(ids).logits
        assert getattr(plain.model.model.layers[0].mlp.down_proj, precision._MARK)[4] is None
    finally:
        monkeypatch.delenv("STEERBOARD_PACKED_LINEAR")
        precision.packed_linear_available.cache_clear()
    assert torch.equal(a, b)


def test_input_cast_is_reused_only_for_the_same_tensor() -> None:
    x = torch.randn(2, 8)
    a = precision._cast_input(x, torch.bfloat16)
    assert precision._cast_input(x, torch.bfloat16) is a
    y = x.clone()
    assert precision._cast_input(y, torch.bfloat16) is not a
    assert torch.equal(precision._cast_input(x, torch.float16), x.half())
