"""The shared engine on a tiny random llama: batching, padding, stops, logprobs, templates, hooks."""

from __future__ import annotations

import math

import pytest
import torch

from steerboard import precision
from steerboard.engine import Engine, GenerationRequest, hooks, map_hidden

PROMPTS = [
    "How do I bake bread?",
    "Hi",
    "What is the capital of France? Answer with a letter, please, and be quick about it.",
    "Tell me about the kill command for a process.",
    "As an AI language model",
    "12 + 30 = ?",
]


def _reqs(engine: Engine, n: int = 24, **kw) -> list[GenerationRequest]:
    return [GenerationRequest(engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=n, **kw) for p in PROMPTS]


def test_batch_equals_one_by_one(tiny_engine: Engine) -> None:
    reqs = _reqs(tiny_engine)
    batched = tiny_engine.generate(reqs)
    single = [tiny_engine.generate([r])[0] for r in reqs]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert [b.text for b in batched] == [s.text for s in single]


def test_left_padding_does_not_change_prompt_logits(tiny_engine: Engine) -> None:
    eng = Engine(tiny_engine.model, tiny_engine.tokenizer, matmul_dtype="float32")
    if precision.active(eng.model):  # the shared fixture may run bf16 matmuls: check padding in exact float32
        precision.disable(eng.model)
    try:
        short = eng.chat_ids([{"role": "user", "content": "Hi"}])
        long = eng.chat_ids([{"role": "user", "content": PROMPTS[2]}])
        alone = eng.forward([short]).logits[0, -1]
        padded = eng.forward([long, short]).logits[1, -1]
        assert torch.allclose(alone, padded, atol=1e-5)
    finally:
        if tiny_engine.matmul_dtype == "bfloat16":
            precision.enable(tiny_engine.model, "bfloat16")


def test_results_in_request_order_and_length_buckets(tiny_engine: Engine) -> None:
    engine = Engine(tiny_engine.model, tiny_engine.tokenizer, max_batch_size=2)
    reqs = _reqs(engine, n=5)
    plan = engine._plan_batches(reqs)
    assert all(len(b) <= 2 for b in plan)
    lens = [len(reqs[i].input_ids) for b in plan for i in b]
    assert lens == sorted(lens)
    out = engine.generate(reqs)
    single = [tiny_engine.generate([r])[0] for r in reqs]
    assert [o.token_ids for o in out] == [s.token_ids for s in single]


def test_max_tokens_and_finish_reason(tiny_engine: Engine) -> None:
    out = tiny_engine.generate(_reqs(tiny_engine, n=3))
    for o in out:
        assert len(o.token_ids) <= 3
        if o.finish_reason == "max_tokens":
            assert len(o.token_ids) == 3


def test_stop_sequence_cuts_text(tiny_engine: Engine) -> None:
    req = _reqs(tiny_engine, n=20)[0]
    full = tiny_engine.generate([req])[0].text
    assert len(full) > 4
    stop = full[2:4]
    req2 = GenerationRequest(req.input_ids, max_new_tokens=20, stop=(stop,))
    out = tiny_engine.generate([req2])[0]
    assert stop not in out.text
    assert full.startswith(out.text)
    assert out.finish_reason == "stop"


def test_logprobs_are_consistent(tiny_engine: Engine) -> None:
    req = GenerationRequest(_reqs(tiny_engine)[0].input_ids, max_new_tokens=6, logprobs=True, top_logprobs=5)
    out = tiny_engine.generate([req])[0]
    assert out.logprobs is not None and len(out.logprobs) >= len(out.token_ids)
    for lp in out.logprobs:
        assert lp.logprob <= 0.0
        # greedy: the chosen token is the most likely one
        assert lp.top[0][1] == lp.token_id
        assert math.isclose(lp.top[0][2], lp.logprob, rel_tol=1e-5)
        tops = [t[2] for t in lp.top]
        assert tops == sorted(tops, reverse=True)
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-5
    # teacher-forced scoring of the generated tokens gives the same log-probabilities
    scored = tiny_engine.score([req.input_ids], [out.token_ids])[0]
    assert scored == pytest.approx([lp.logprob for lp in out.logprobs[: len(out.token_ids)]], abs=1e-4)


def test_seeded_sampling_is_reproducible(tiny_engine: Engine) -> None:
    ids = _reqs(tiny_engine)[0].input_ids
    a = tiny_engine.generate([GenerationRequest(ids, max_new_tokens=12, temperature=1.0, seed=7)])[0]
    b = tiny_engine.generate([GenerationRequest(ids, max_new_tokens=12, temperature=1.0, seed=7)])[0]
    c = tiny_engine.generate([GenerationRequest(ids, max_new_tokens=12, temperature=1.0, seed=8)])[0]
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_chat_template_with_system_message(tiny_engine: Engine) -> None:
    ids = tiny_engine.chat_ids([{"role": "system", "content": "Be safe."}, {"role": "user", "content": "Hi"}])
    text = tiny_engine.tokenizer.decode(ids)
    assert text.index("system\nBe safe.") < text.index("user\nHi") < text.rindex("assistant\n")
    multi = tiny_engine.chat_ids(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    )
    assert tiny_engine.tokenizer.decode(multi).count("<|im_start|>") == 4


def test_hooks_always_removed_and_change_output(tiny_engine: Engine) -> None:
    # transformers installs its own persistent output-capturing hooks once output_hidden_states is used,
    # so compare counts rather than expecting none
    def n_hooks() -> int:
        return sum(len(m._forward_hooks) for m in tiny_engine.model.modules())

    before = n_hooks()
    reqs = _reqs(tiny_engine, n=8)[:2]
    base = tiny_engine.generate(reqs)
    name = tiny_engine.layer_module_name(1)
    seen = []

    def intervention(state):
        def hook(module, args, output):
            seen.append(state.phase)
            return map_hidden(output, lambda h: h + 5.0)

        return hooks(tiny_engine.model, {name: hook})

    steered = tiny_engine.generate(reqs, intervention)
    assert [b.token_ids for b in base] != [s.token_ids for s in steered]
    assert seen[0] == "prefill" and "decode" in seen
    assert n_hooks() == before
    again = tiny_engine.generate(reqs)
    assert [b.token_ids for b in base] == [a.token_ids for a in again]

    def broken(state):
        def hook(module, args, output):
            raise RuntimeError("boom")

        return hooks(tiny_engine.model, {name: hook})

    with pytest.raises(RuntimeError, match="boom"):
        tiny_engine.generate(reqs, broken)
    assert n_hooks() == before


def test_hooks_unknown_module_names_the_problem(tiny_engine: Engine) -> None:
    with pytest.raises(KeyError, match="no module named"):
        with hooks(tiny_engine.model, {"model.layers.99": lambda *a: None}):
            pass


def test_bad_requests_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        GenerationRequest([], max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationRequest([1], max_new_tokens=0)


def test_layer_out_of_range(tiny_engine: Engine) -> None:
    with pytest.raises(ValueError, match="out of range"):
        tiny_engine.layer_module_name(99)


@pytest.mark.integration
def test_embedded_model_batch_matches_single(smol_engine: Engine) -> None:
    prompts = ["How do I make a cake?", "What is 2+2?", "Name three colours.", "How do I kill a Python process?"]
    reqs = [GenerationRequest(smol_engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=24) for p in prompts]
    batched = smol_engine.generate(reqs)
    single = [smol_engine.generate([r])[0] for r in reqs]
    matches = sum(b.token_ids == s.token_ids for b, s in zip(batched, single))
    assert matches >= 3  # near-ties may flip one; padding bugs break all
    assert "Paris" in smol_engine.generate(
        [GenerationRequest(smol_engine.chat_ids([{"role": "user", "content": "What is the capital of France?"}]), max_new_tokens=16)]
    )[0].text


def test_continuous_batching_joins_match_one_by_one(tiny_engine: Engine) -> None:
    """Requests joining a running batch (merged KV cache) give the same greedy tokens as alone."""
    reqs = _reqs(tiny_engine, n=10)
    late = [
        GenerationRequest(tiny_engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=n)
        for p, n in (("A much longer late prompt that is longer than the others in the batch", 7), ("x", 12))
    ]
    short_first = [GenerationRequest(r.input_ids, max_new_tokens=3) for r in reqs[:2]]
    pending = [list(late)]
    done_order: list[int] = []

    def more(free: int) -> list[GenerationRequest]:
        return pending.pop() if pending and free > 0 else []

    out = tiny_engine.generate_continuous(short_first, more=more, on_done=lambda i, r: done_order.append(i))
    assert len(out) == 4
    alone = [tiny_engine.generate([r])[0] for r in short_first + late]
    assert [o.token_ids for o in out] == [a.token_ids for a in alone]
    assert sorted(done_order) == [0, 1, 2, 3]


def test_continuous_batching_trims_shared_left_padding(tiny_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows joining a long-running batch: same tokens as alone, and the cache stays as wide as its oldest row."""
    reqs = _reqs(tiny_engine, n=30)
    first, joiners = reqs[:2], reqs[2:]
    widths: list[int] = []
    queue = list(joiners)

    def more(free: int) -> list[GenerationRequest]:
        if not queue or free <= 0:
            return []
        return [queue.pop(0)]

    from steerboard.engine import batch as batch_module

    orig = batch_module.trim_padding

    def spy(cache, mask):
        out = orig(cache, mask)
        widths.append(out.shape[1])
        assert bool(out.any(dim=0)[0])  # no all-padding column left at the front
        assert cache.layers[0].keys.shape[-2] == out.shape[1]
        return out

    monkeypatch.setattr(batch_module, "trim_padding", spy)
    out = tiny_engine.generate_continuous([GenerationRequest(r.input_ids, max_new_tokens=30 if i == 0 else 3)
                                           for i, r in enumerate(first)], more=more)
    monkeypatch.undo()
    alone = [tiny_engine.generate([r])[0] for r in joiners]
    assert [o.token_ids for o in out[2:]] == [a.token_ids for a in alone]
    assert widths and max(widths) <= max(len(r.input_ids) for r in reqs) + 30


def test_preamble_cache_gives_the_same_greedy_tokens_and_follows_weight_edits(tiny_model_dir: str) -> None:
    """Prefills reusing the template preamble's keys/values: same tokens as full prefills (float32, tiny
    model), reused across batches, recomputed after an in-place weight edit, never used under hooks."""
    on = Engine.load(tiny_model_dir, matmul_dtype="float32", prefix_cache=True)
    off = Engine.load(tiny_model_dir, matmul_dtype="float32")
    assert not off.prefix_cache and len(on.template_prefix) >= 4
    reqs = _reqs(on, n=12)
    a = on.generate(reqs)
    assert on.prefix_hits >= 1 and off.prefix_hits == 0
    b = off.generate(reqs)
    assert [x.token_ids for x in a] == [y.token_ids for y in b]
    ids = [r.input_ids for r in reqs]
    hits = on.prefix_hits
    on.generate(reqs[:2])
    assert on.prefix_hits == hits + 1
    kv_before = on._prefix_kv
    w = on.model.model.layers[0].self_attn.k_proj.weight
    with torch.no_grad():
        w.mul_(1.5)
        off.model.model.layers[0].self_attn.k_proj.weight.mul_(1.5)
    a2, b2 = on.generate(reqs), off.generate(reqs)
    assert on._prefix_kv is not kv_before  # recomputed for the new weights
    assert [x.token_ids for x in a2] == [y.token_ids for y in b2]
    # a prompt without the preamble (a system message replaces it) takes the plain path
    sys_req = GenerationRequest(on.chat_ids([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
                                max_new_tokens=5)
    hits = on.prefix_hits
    assert on.generate([sys_req])[0].token_ids == off.generate([sys_req])[0].token_ids
    assert on.prefix_hits == hits
    # under an intervention the preamble is computed with the hooks on
    calls: list[int] = []

    def hook(_m, _a, out):
        calls.append(out[0].shape[1] if isinstance(out, tuple) else out.shape[1])

    import contextlib

    @contextlib.contextmanager
    def iv(_state):
        with hooks(on.model, {on.layer_module_name(0): hook}):
            yield

    hits = on.prefix_hits
    on.generate([GenerationRequest(ids[0], max_new_tokens=2)], intervention=iv)
    assert on.prefix_hits == hits and calls[0] == len(ids[0])


def test_growing_cache_layer_edits_in_place_like_dynamic_layer(tiny_engine: Engine) -> None:
    """The engine's KV-cache layer (appends, row removal, left trims, stacking rows) holds exactly what
    transformers' copying ``DynamicLayer`` holds after the same edits, and row removal and trims move no
    buffer (no new allocation)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from steerboard.engine import _growing_layer

    g = torch.Generator().manual_seed(0)

    def kv(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(rows, 2, cols, 4, generator=g), torch.randn(rows, 2, cols, 4, generator=g)

    ours, ref = _growing_layer()(), DynamicLayer()
    k, v = kv(5, 7)
    ours.update(k, v)
    ref.update(k, v)
    for step in range(6):
        k, v = kv(5 if step < 3 else 3, 1)
        if step == 3:  # rows 0, 2, 4 stay; in place
            buf = ours._kbuf
            idx = torch.tensor([0, 2, 4])
            ours.batch_select_indices(idx)
            ref.batch_select_indices(idx)
            assert ours._kbuf is buf
        ours.update(k, v)
        ref.update(k, v)
        assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)
    buf = ours._kbuf
    ours.trim_left(2)
    ref.keys, ref.values = ref.keys[..., 2:, :], ref.values[..., 2:, :]
    assert ours._kbuf is buf and torch.equal(ours.keys, ref.keys)
    k2, v2 = kv(2, 4)  # narrower rows join: left-padded with zeros
    ours.stack(k2, v2)
    pad = ref.keys.shape[-2] - 4
    ref.keys = torch.cat([ref.keys, torch.cat([k2.new_zeros(2, 2, pad, 4), k2], dim=-2)])
    ref.values = torch.cat([ref.values, torch.cat([v2.new_zeros(2, 2, pad, 4), v2], dim=-2)])
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)
    for _ in range(80):  # past the spare capacity: the buffer grows, contents kept
        k, v = kv(5, 1)
        ours.update(k, v)
        ref.update(k, v)
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)
    ours.batch_select_indices(torch.tensor([3, 1]))  # not ascending: copied like DynamicLayer, still right
    ref.batch_select_indices(torch.tensor([3, 1]))
    k, v = kv(2, 1)
    ours.update(k, v)
    ref.update(k, v)
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


def test_continuous_batching_rows_finishing_one_by_one_match_alone(tiny_engine: Engine) -> None:
    """Rows of different lengths finish at different steps (in-place row removal) and late rows join:
    every row's tokens are the ones it gets alone."""
    reqs = _reqs(tiny_engine)
    first = [GenerationRequest(r.input_ids, max_new_tokens=2 + 3 * i) for i, r in enumerate(reqs[:4])]
    late = [GenerationRequest(r.input_ids, max_new_tokens=9) for r in reqs[4:6]]
    pending = [late]

    def more(free: int) -> list[GenerationRequest]:
        return pending.pop() if pending and free > 0 else []

    out = tiny_engine.generate_continuous(first, more=more)
    alone = [tiny_engine.generate([r])[0] for r in first + late]
    assert [o.token_ids for o in out] == [a.token_ids for a in alone]
