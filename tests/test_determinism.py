"""Repeatability: a request's completion does not depend on its batch, so identical runs give identical logs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from steerboard import engine as engine_package
from steerboard import precision
from steerboard.engine import Engine, GenerationRequest

PROMPTS = [
    "How do I kill a Python process?",
    "Hi",
    "Write a long and detailed answer about the history of bread baking in medieval Europe, please.",
    "What is 12 + 30?",
    "Tell me a joke.",
]


def _ids(eng: Engine, text: str) -> list[int]:
    return eng.chat_ids([{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def bf16_engine(tiny_model_dir: str) -> Engine:
    return Engine.load(tiny_model_dir, matmul_dtype="bfloat16")


def _attend(fn, q, k, v, pad: int):
    """``fn`` over one query row [1, heads, 1, d] against keys [1, kv_heads, n, d] left-padded by ``pad``."""
    kv_heads, n, d = k.shape[1:]
    kp = torch.cat([torch.randn(1, kv_heads, pad, d), k], dim=2)
    vp = torch.cat([torch.randn(1, kv_heads, pad, d), v], dim=2)
    mask = torch.ones(1, 1, 1, pad + n, dtype=torch.bool)
    mask[..., :pad] = False
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = q.shape[1] // kv_heads, True
    return fn(module, q, kp, vp, mask, scaling=d**-0.5)[0]


def test_exact_attention_gives_a_row_the_same_bits_under_any_padding() -> None:
    """A query's attention output is bit-for-bit the same whatever the left padding of its keys (SmolLM2's
    shapes: 9 query heads on 3 key/value heads of 64). Float32 ``sdpa`` sums the same keys in a different
    order under different padding, and with bfloat16 matmuls a last-bit difference flips near-tie tokens."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 9, 1, 64, generator=g)
    k, v = torch.randn(1, 3, 57, 64, generator=g), torch.randn(1, 3, 57, 64, generator=g)
    with torch.inference_mode(), precision.batch_invariant():
        outs = [_attend(precision._exact_attention_forward, q, k, v, pad) for pad in (0, 1, 7, 16, 29, 100)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert outs[0].dtype == torch.float32


def test_a_lone_row_gets_the_bits_it_gets_in_a_batch() -> None:
    """oneDNN's bfloat16 kernel for one row rounds differently from its kernel for many (seen with a
    1536-wide input, SmolLM2's down projection); inside ``batch_invariant`` a lone row matches its batch."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(1536, 576, bias=False))
    precision.enable(lin, "bfloat16")
    x = torch.randn(64, 1, 1536) * 0.3
    with torch.inference_mode(), precision.batch_invariant():
        full = lin(x)
        alone = [lin(x[i : i + 1]) for i in range(64)]
        pair = lin(x[5:7])
    assert all(torch.equal(a[0], full[i]) for i, a in enumerate(alone))
    assert torch.equal(pair, full[5:7])
    assert alone[0].shape == (1, 1, 576)


@pytest.mark.parametrize("masked", [True, False])
def test_exact_attention_agrees_with_sdpa(masked: bool) -> None:
    """Causal prefill of two left-padded rows (grouped-query heads): float64 result ~= transformers' sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(1)
    # masked: a cached prefix of 4 positions, then 7 new queries; unmasked (transformers passes no mask when
    # nothing is padded and queries and keys coincide): plain causal
    b, q_len, k_len = 2, 7, (11 if masked else 7)
    q = torch.randn(b, 6, q_len, 16, generator=g)
    k, v = torch.randn(b, 2, k_len, 16, generator=g), torch.randn(b, 2, k_len, 16, generator=g)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    mask = None
    if masked:
        mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len).expand(b, 1, q_len, k_len).clone()
        mask[1, :, :, :3] = False  # row 1 is left-padded by 3
    want = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)[0]
    with torch.inference_mode(), precision.batch_invariant():
        got = precision._exact_attention_forward(module, q, k, v, mask, scaling=0.25)[0]
    assert got.shape == want.shape == (b, q_len, 6, 16)
    assert torch.allclose(got, want, atol=1e-5)


def test_exact_attention_gives_a_prompt_the_same_hidden_states_beside_others(bf16_engine: Engine) -> None:
    eng = bf16_engine
    assert precision.use_exact_attention(eng.model)
    short, long = _ids(eng, PROMPTS[1]), _ids(eng, PROMPTS[2])
    assert len(long) - len(short) > 16
    with precision.batch_invariant():
        alone = eng.forward([short], output_hidden_states=True).hidden_states[-1][0]
        padded = eng.forward([long, short], output_hidden_states=True).hidden_states[-1][1, -len(short) :]
        three = eng.forward([short, long, long[:-5]], output_hidden_states=True).hidden_states[-1][0, -len(short) :]
    assert torch.equal(alone, padded)
    assert torch.equal(alone, three)


@pytest.mark.parametrize("decode_rows", [None, "16"])
def test_generation_is_batch_invariant_in_bfloat16(
    bf16_engine: Engine, decode_rows: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, in one batch, or joining a running batch: the same tokens (bfloat16 matmuls, default path; and
    with decode steps in their own, smaller AMX row blocks, which only matters on AMX CPUs)."""
    if decode_rows is not None:
        monkeypatch.setenv("STEERBOARD_AMX_DECODE_BLOCK_ROWS", decode_rows)
    eng = bf16_engine
    assert eng.deterministic
    reqs = [GenerationRequest(_ids(eng, p), max_new_tokens=20) for p in PROMPTS]
    alone = [eng.generate([r])[0].token_ids for r in reqs]
    batched = [o.token_ids for o in eng.generate(reqs)]
    queue = list(reqs[2:])

    def more(free: int) -> list[GenerationRequest]:
        return [queue.pop(0)] if queue and free > 0 else []

    joined = [o.token_ids for o in eng.generate_continuous(reqs[:2], more=more)]
    assert batched == alone
    assert joined == alone


def test_nondeterministic_mode_is_opt_in_and_logged(tiny_model_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    from steerboard.methods.base import MethodConfig

    assert MethodConfig().deterministic is True
    cfg = MethodConfig.from_dict({"deterministic": "false"})
    assert cfg.deterministic is False and cfg.to_dict()["deterministic"] is False
    with caplog.at_level("WARNING", logger="steerboard.engine"):
        eng = Engine.load(tiny_model_dir, matmul_dtype="bfloat16", deterministic=False)
    assert "deterministic=false" in caplog.text
    out = eng.generate([GenerationRequest(_ids(eng, "Hi"), max_new_tokens=3)])
    assert len(out[0].token_ids) <= 3


def test_no_engine_function_is_over_80_lines() -> None:
    folder = Path(engine_package.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "core.py", "batch.py", "scoring.py"}
    long = [
        (f.name, node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for f in files
        for node in ast.walk(ast.parse(f.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80  # type: ignore[operator]
    ]
    assert long == []


def _samples(log_dir) -> list[tuple]:
    from inspect_ai.log import read_eval_log

    (path,) = sorted(log_dir.rglob("*.eval"))
    log = read_eval_log(str(path))
    assert log.status == "success" and log.samples
    return sorted(
        (str(s.id), s.output.completion, tuple(sorted((k, str(v.value)) for k, v in (s.scores or {}).items())))
        for s in log.samples
    )


def test_tiny_suite_three_runs_give_identical_samples(tiny_model_dir: str, tmp_path) -> None:
    """The same suite run three times (bfloat16 matmuls, concurrent requests, continuous batching)."""
    from steerboard.runner import parse_suite, run_suite

    suite = parse_suite({
        "model": tiny_model_dir,
        "max_connections": 6,
        "methods": [{"name": "base", "args": {"matmul_dtype": "bfloat16", "batch_wait_ms": 1}}],
        "tasks": [{"name": "xstest", "limit": 16, "args": {"judge": "strmatch"}, "config": {"max_tokens": 16}}],
    })
    runs = []
    for i in range(3):
        summary = run_suite(suite, tmp_path / f"run{i}", display="none")
        assert [s["status"] for s in summary] == ["success"]
        runs.append(_samples(tmp_path / f"run{i}"))
    assert len(runs[0]) == 16
    assert runs[1] == runs[0]
    assert runs[2] == runs[0]


def test_preamble_prefill_leaves_each_row_contiguous_and_right_aligned(bf16_engine: Engine) -> None:
    """Prompts that share the chat template's preamble reuse its keys/values; the cache a prefill hands the
    decode loop then has each row's live columns contiguous and right-aligned (padding first), as a plain
    prefill does, with the same keys as the row prefilled alone. A hole between the preamble and the rest,
    as wide as the neighbours made it, put the row's keys at other columns modulo the decode alignment."""
    from steerboard.engine.interface import BatchState

    eng = bf16_engine
    assert eng.prefix_cache
    reqs = [GenerationRequest(_ids(eng, p), max_new_tokens=4) for p in PROMPTS]
    p = len(eng.template_prefix)
    assert len({len(r.input_ids) for r in reqs}) > 2 and all(r.input_ids[:p] == eng.template_prefix for r in reqs)

    def prefill(rows: list[int]):
        state = BatchState(requests=reqs, prompt_lengths=[len(r.input_ids) for r in reqs], padded_length=0, rows=[])
        hits = eng.prefix_hits
        with torch.inference_mode(), precision.batch_invariant():
            cache, mask, _, _ = eng.prefill(reqs, state, rows, reuse_prefix=True)
        assert eng.prefix_hits == hits + 1
        return cache, mask

    cache, mask = prefill(list(range(len(reqs))))
    width = mask.shape[1]
    for i, r in enumerate(reqs):
        n = len(r.input_ids)
        assert mask[i].tolist() == [0] * (width - n) + [1] * n, i
        alone_cache, alone_mask = prefill([i])
        assert alone_mask.shape[1] == n and bool(alone_mask.all())
        for layer, alone in zip(cache.layers, alone_cache.layers):
            assert torch.equal(layer.keys[i, :, width - n :], alone.keys[0])
            assert torch.equal(layer.values[i, :, width - n :], alone.values[0])


def test_embedded_model_beside_others_gives_the_same_logprob_bits_as_alone() -> None:
    """The embedded model with bfloat16 matmuls (the default where the CPU has them), greedy: a prompt's token
    log-probabilities have the same bits beside 29 others of other lengths (the preamble reused) as alone; the
    side-effects task's first 30 prompts, where a hole between the preamble and the rest made replies differ
    with the batch."""
    from steerboard.tasks.side_effects import load_prompts

    eng = Engine.load("smollm2-135m", matmul_dtype="bfloat16")
    prompts = [r["prompt"] for r in load_prompts(None)[:30]]
    reqs = [GenerationRequest(_ids(eng, p), max_new_tokens=6, logprobs=True) for p in prompts]
    batched = eng.generate(reqs)
    for i in (0, 9):
        alone = eng.generate([reqs[i]])[0]
        assert [t.logprob for t in batched[i].logprobs] == [t.logprob for t in alone.logprobs], i


def test_prefill_attention_gives_a_row_the_same_bits_under_any_padding() -> None:
    """A prefill (several queries) of one prompt, left-padded by any amount beside other rows, gives its real
    positions the same bits as the prompt alone; padding positions read zeros."""
    g = torch.Generator().manual_seed(2)
    n = 23
    q, k, v = (torch.randn(1, h, n, 64, generator=g) for h in (9, 3, 3))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    outs = []
    with torch.inference_mode(), precision.batch_invariant():
        for pad in (0, 1, 9, 40):
            other = [torch.randn(1, h, pad + n, 64, generator=g) for h in (9, 3, 3)]  # a neighbour row
            qp, kp, vp = (torch.cat([torch.cat([torch.randn(1, t.shape[1], pad, 64), t], 2), o]) for t, o in zip((q, k, v), other, strict=True))
            mask = torch.ones(pad + n, pad + n, dtype=torch.bool).tril().expand(2, 1, pad + n, pad + n).clone()
            mask[0, :, :, :pad] = False
            out = precision._exact_attention_forward(module, qp, kp, vp, mask, scaling=0.125)[0]
            assert torch.count_nonzero(out[0, :pad]) == 0
            outs.append(out[0, pad:])
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def _decode_row_in_batch(q1, k1, v1, rows: int, width: int, g: torch.Generator, slack: bool):
    """One decode query ``q1`` [1, 9, 1, 64] against its keys (right-aligned in a row of ``width`` columns) among
    ``rows - 1`` random neighbours; with ``slack`` the keys are views into a buffer with zeroed columns on the left
    (as the engine's KV cache hands them over), else plain tensors. Returns the row's attention output."""
    n = k1.shape[2]
    q = torch.randn(rows, 9, 1, 64, generator=g)
    lead = 64 if slack else 0
    kb, vb = (torch.zeros(rows, 3, lead + width, 64) for _ in range(2))
    if slack:
        precision.register_slack(kb, lead)
        precision.register_slack(vb, lead)
    kb[:, :, lead:] = torch.randn(rows, 3, width, 64, generator=g)
    vb[:, :, lead:] = torch.randn(rows, 3, width, 64, generator=g)
    mask = torch.rand(rows, 1, 1, width, generator=g) > 0.3
    i = rows // 2
    q[i] = q1[0]
    kb[i, :, lead + width - n :], vb[i, :, lead + width - n :] = k1[0], v1[0]
    mask[i] = False
    mask[i, ..., width - n :] = True
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    k, v = kb[:, :, lead:], vb[:, :, lead:]
    with torch.inference_mode(), precision.batch_invariant():
        return precision._exact_attention_forward(module, q, k, v, mask, scaling=0.125)[0][i]


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 130, 257, 300])
def test_decode_attention_gives_a_row_the_same_bits_beside_any_batch(n: int) -> None:
    """The float32 decode attention (keys widened to a multiple of DECODE_ALIGN columns) gives a row the same
    bits whatever its batch size, its neighbours, the batch's width, and whether the widening reads the KV
    buffer's zeroed slack in place or copies zeros; this CPU's kernels pass the probe that selects it."""
    assert precision.aligned_decode_invariant()
    g = torch.Generator().manual_seed(n)
    q1, k1, v1 = torch.randn(1, 9, 1, 64, generator=g), torch.randn(1, 3, n, 64, generator=g), torch.randn(1, 3, n, 64, generator=g)
    outs = [
        _decode_row_in_batch(q1, k1, v1, rows, n + extra, g, slack)
        for rows, extra, slack in ((1, 0, False), (1, 0, True), (2, 1, True), (7, 63, False), (16, 64, True), (64, 200, True))
    ]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_decode_attention_agrees_with_float64_and_widens_in_place() -> None:
    """The float32 decode attention agrees with the float64 one to float32 rounding, and widens a KV-buffer view
    over its slack without copying (the widened tensor shares the buffer's storage)."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(4, 9, 1, 64, generator=g)
    buf = torch.zeros(4, 3, 64 + 70, 64)
    buf[:, :, 64:] = torch.randn(4, 3, 70, 64, generator=g)
    precision.register_slack(buf, 64)
    k = buf[:, :, 64:]
    v = (buf * 0.5)[:, :, 64:]
    mask = torch.ones(4, 1, 1, 70, dtype=torch.bool)
    mask[0, ..., :30] = False
    with torch.inference_mode():
        a = precision._aligned_decode_attention(q, k, v, mask, 0.125)
        b = precision._float64_decode_attention(q, k, v, mask, 0.125)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # as the engine decodes: views there keep no link to their base
        k_inf = buf[:, :, 64:]
        wide = precision._widen_left(k_inf, 58)
        copied = precision._widen_left(k_inf.clone(), 58)  # not a registered buffer: zeros, copied
    assert wide.shape[2] == 128 and wide.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
    assert torch.equal(wide[:, :, 58:], k) and torch.count_nonzero(wide[:, :, :58]) == 0
    assert torch.equal(copied, wide) and copied.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr()


def test_decode_attention_float64_fallback_is_selectable(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: str) -> None:
    """STEERBOARD_DECODE_ATTENTION=float64 selects the float64 decode attention (what a CPU failing the probe
    gets) with a float64 KV store, and generation stays batch-invariant on it."""
    monkeypatch.setenv("STEERBOARD_DECODE_ATTENTION", "float64")
    precision.aligned_decode_invariant.cache_clear()
    try:
        assert not precision.aligned_decode_invariant()
        eng = Engine.load(tiny_model_dir, matmul_dtype="bfloat16")
        reqs = [GenerationRequest(_ids(eng, p), max_new_tokens=12) for p in PROMPTS]
        alone = [eng.generate([r])[0].token_ids for r in reqs]
        assert [o.token_ids for o in eng.generate(reqs)] == alone
        with precision.batch_invariant():
            assert eng._kv_dtype() == torch.float64
    finally:
        monkeypatch.delenv("STEERBOARD_DECODE_ATTENTION")
        precision.aligned_decode_invariant.cache_clear()


def test_generation_widens_decode_keys_in_place(bf16_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """In generation every decode step widens the KV cache's keys/values over the buffers' slack (a view), never
    by copying them."""
    assert precision.aligned_decode_invariant()  # probed before the spy: the probe's tensors are not a KV cache
    seen: list[bool] = []
    widen = precision._widen_left

    def spy(t: torch.Tensor, extra: int) -> torch.Tensor:
        out = widen(t, extra)
        seen.append(out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr())
        return out

    monkeypatch.setattr(precision, "_widen_left", spy)
    reqs = [GenerationRequest(_ids(bf16_engine, p), max_new_tokens=6) for p in PROMPTS]
    bf16_engine.generate(reqs)
    assert seen and all(seen)
