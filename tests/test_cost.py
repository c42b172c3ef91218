"""Cost measures: teacher-forced log-likelihood through the engine and providers, TruthfulQA/MMLU answer-string
scoring, the ``side_effects`` task, and their bad-input errors."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval

from steerboard.protocol import CapabilityError
from steerboard.scorers import loglik as ll
from steerboard.tasks import _common
from steerboard.tasks import side_effects as se
from steerboard.tasks._testing import mock_model

TASKS = Path(_common.__file__).parent
METHOD_DATA = TASKS.parent / "methods" / "data"


def task_file(name: str) -> str:
    return os.path.relpath(TASKS / f"{name}.py")


def run(task, model, tmp_path, limit=4, **kwargs):
    logs = inspect_eval(task, model=model, limit=limit, log_dir=str(tmp_path), display="none", **kwargs)
    assert len(logs) == 1
    return logs[0]


def scorer_metrics(log, name):
    (sc,) = [s for s in log.results.scores if s.name == name]
    return {k: v.value for k, v in sc.metrics.items()}


# ---------------------------------------------------------------------- pure helpers
def test_mc1_mc2_from_answer_logliks():
    assert ll.mc1_correct([-3.0, -1.0, -2.0], [0, 1, 0])
    assert not ll.mc1_correct([-1.0, -3.0], [0, 1])
    # p = (e^-1, e^-2, e^-3): mass on the true answers (first and last)
    p = [math.exp(-1), math.exp(-2), math.exp(-3)]
    assert ll.mc2_mass([-1.0, -2.0, -3.0], [1, 0, 1]) == pytest.approx((p[0] + p[2]) / sum(p))
    assert ll.mc2_mass([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))  # no underflow


def test_cloze_choice_normalises_by_answer_bytes():
    # summed log-likelihood favours the short answer; per byte, the long one is likelier
    assert ll.cloze_choice([-4.0, -6.0], ["cat", "a longer answer"]) == 1
    assert ll.cloze_choice([-4.0, -60.0], ["cat", "a longer answer"]) == 0


def test_bootstrap_ci_covers_mean_and_shrinks():
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.0, 400).tolist()
    lo, hi = ll.bootstrap_ci(x)
    assert lo < float(np.mean(x)) < hi
    lo2, hi2 = ll.bootstrap_ci(x[:40])
    assert (hi2 - lo2) > (hi - lo)
    assert all(math.isnan(v) for v in ll.bootstrap_ci([]))


# ---------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def exact_engine(tiny_model_dir):
    from steerboard.engine import Engine

    return Engine.load(tiny_model_dir, matmul_dtype="float32")


def _shift_hook(engine, scale, steer_on):
    """An intervention adding ``scale`` to block 1's output at prompt / generated / both positions."""
    from steerboard.methods.steering import gated_intervention

    def steer(h, mask):
        return h + scale * mask

    return gated_intervention(engine.model, engine.layer_module_name(1), steer, steer_on, None)


def test_score_requests_matches_full_forward(exact_engine):
    from steerboard.engine import GenerationRequest

    eng = exact_engine
    prompts = [eng.chat_ids([{"role": "user", "content": t}]) for t in ("hello there", "a much longer question here")]
    conts = [eng.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("yes it is", "no")]
    got = eng.score_requests([GenerationRequest(input_ids=p) for p in prompts], conts, distributions=True)
    want = eng.score(prompts, conts)
    for g, w, c in zip(got, want, conts, strict=True):
        assert g.token_ids == c
        assert g.logprobs == pytest.approx(w, abs=1e-4)
        assert g.distributions.shape == (len(c), eng.model.config.vocab_size)


def test_score_requests_shared_prompt_prefilled_once_matches(exact_engine):
    """One prompt with several answers (the multiple-choice case) gives the same scores as separate rows,
    with and without a gate that switches steering off for that prompt."""
    from steerboard.engine import GenerationRequest

    eng = exact_engine
    prompt = eng.chat_ids([{"role": "user", "content": "which one is it"}])
    conts = [eng.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("the first", "no", "a third answer")]
    got = eng.score_requests([GenerationRequest(input_ids=prompt) for _ in conts], conts)
    want = eng.score([prompt] * 3, conts)
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == pytest.approx(w, abs=1e-4)
    hook = _shift_hook(eng, 3.0, "both")
    off = eng.score_requests([GenerationRequest(input_ids=prompt, meta={"steer_gate": False}) for _ in conts], conts,
                             intervention=hook)
    on = eng.score_requests([GenerationRequest(input_ids=prompt) for _ in conts], conts, intervention=hook)
    single = [eng.score_requests([GenerationRequest(input_ids=prompt)], [c], intervention=hook)[0] for c in conts]
    for o, g, on_, s in zip(off, got, on, single, strict=True):
        assert o.logprobs == pytest.approx(g.logprobs, abs=1e-4)
        assert on_.logprobs == pytest.approx(s.logprobs, abs=1e-4)
        assert max(abs(a - b) for a, b in zip(on_.logprobs, g.logprobs)) > 1e-3


def test_score_requests_applies_hooks_by_phase_and_gate(exact_engine):
    """Generated-position steering leaves the first answer token's log-prob alone (it is predicted at the
    last prompt position) and changes the later ones; a request whose gate meta is off is not steered."""
    from steerboard.engine import GenerationRequest

    eng = exact_engine
    prompt = eng.chat_ids([{"role": "user", "content": "hello there"}])
    cont = eng.tokenizer("yes it is so", add_special_tokens=False)["input_ids"]
    assert len(cont) >= 3
    plain = eng.score_requests([GenerationRequest(input_ids=prompt)], [cont])[0].logprobs
    gen = eng.score_requests([GenerationRequest(input_ids=prompt)], [cont], intervention=_shift_hook(eng, 3.0, "generated"))
    prm = eng.score_requests([GenerationRequest(input_ids=prompt)], [cont], intervention=_shift_hook(eng, 3.0, "prompt"))
    off = eng.score_requests(
        [GenerationRequest(input_ids=prompt, meta={"steer_gate": False})], [cont],
        intervention=_shift_hook(eng, 3.0, "both"),
    )
    assert gen[0].logprobs[0] == pytest.approx(plain[0], abs=1e-5)
    assert max(abs(a - b) for a, b in zip(gen[0].logprobs[1:], plain[1:])) > 1e-3
    assert abs(prm[0].logprobs[0] - plain[0]) > 1e-3
    assert off[0].logprobs == pytest.approx(plain, abs=1e-5)


def test_score_requests_reuses_a_shared_prefix(tiny_model_dir):
    """A few-shot primer shared by many calls (``prefix_len``) is computed once and reused: same scores as the
    full prompt (float32), also under prompt-position steering that declares a preamble key."""
    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods.steering import SteeringIntervention

    eng = Engine.load(tiny_model_dir, matmul_dtype="float32", prefix_cache=True)
    primer = "Q: one\nA: first answer\n\nQ: two\nA: second answer"
    hook = _shift_hook(eng, 3.0, "prompt")
    keyed = SteeringIntervention(hook, lambda reqs: ("shift", 3.0))
    for iv in (None, keyed):
        for question in ("Q: three", "Q: four and more"):
            msgs = [{"role": "user", "content": f"{primer}\n\n{question}"}]
            ids = eng.chat_ids(msgs)
            cut = eng.chat_ids([{"role": "user", "content": primer}])
            n = next(i for i, (a, b) in enumerate(zip(ids, cut)) if a != b)
            conts = [eng.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("the third", "no")]
            reqs = [GenerationRequest(input_ids=ids) for _ in conts]
            hits = eng.prefix_hits
            got = eng.score_requests(reqs, conts, intervention=iv, prefix_len=n)
            assert eng.prefix_hits == hits + 1
            eng.prefix_cache = False
            want = eng.score_requests(reqs, conts, intervention=iv)
            eng.prefix_cache = True
            for g, w in zip(got, want, strict=True):
                assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    # without a declared prefix every prompt runs whole (as under a gate): a method that changes nothing scores
    # bit for bit as the reference
    hits = eng.prefix_hits
    eng.score_requests(reqs, conts)
    assert eng.prefix_hits == hits


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_score_groups_batch_invariant(tiny_model_dir, matmul_dtype):
    """With bfloat16 matmuls (``invariant_batches``) many questions in one batch score with the same bits as each
    question alone or in another order, so batching concurrent callers changes no result; in float32 (not
    invariant) they agree to float precision. Both match the one-prompt-per-row forward."""
    from steerboard import precision
    from steerboard.engine import Engine, GenerationRequest

    # bfloat16 runs on every CPU here: natively, or emulated by oneDNN (tests set STEERBOARD_FORCE_BF16=1)
    assert precision.cpu_has_fast_bf16() or os.environ.get("STEERBOARD_FORCE_BF16") == "1"
    eng = Engine.load(tiny_model_dir, matmul_dtype=matmul_dtype)
    tok = eng.tokenizer
    questions = ["what is two plus two", "name a colour", "a much longer question about the history of maps"]
    options = [["four", "five and a half", "22"], ["red", "the colour blue"], ["none", "a long answer here", "x", "y"]]
    groups = [
        (GenerationRequest(input_ids=eng.plain_ids([{"role": "user", "content": q}])),
         [tok(" " + o, add_special_tokens=False)["input_ids"] for o in opts])
        for q, opts in zip(questions, options)
    ]
    together = eng.score_groups(groups)
    alone = [eng.score_groups([g])[0] for g in groups]
    reversed_ = eng.score_groups(groups[::-1])[::-1]
    assert eng.invariant_batches == (matmul_dtype == "bfloat16")
    for t, a, r in zip(together, alone, reversed_, strict=True):
        if eng.invariant_batches:
            assert [s.logprobs for s in t] == [s.logprobs for s in a] == [s.logprobs for s in r]
        for x, y in zip(t, a, strict=True):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)
    full = eng.score([req.input_ids for req, conts in groups for _ in conts], [c for _, conts in groups for c in conts])
    got = [s.logprobs for t in together for s in t]
    tol = 1e-4 if matmul_dtype == "float32" else 0.15
    for g, w in zip(got, full, strict=True):
        assert g == pytest.approx(w, abs=tol)


def test_score_requests_rejects_empty_continuation(exact_engine):
    from steerboard.engine import GenerationRequest

    with pytest.raises(ValueError, match="continuation 0 is empty"):
        exact_engine.score_requests([GenerationRequest(input_ids=[1, 2])], [[]])


# ---------------------------------------------------------------------- providers
def test_provider_loglik_reference_and_method(tiny_model_dir):
    from inspect_ai.model import get_model

    base = get_model(f"base/{tiny_model_dir}", matmul_dtype="float32")
    prompt = get_model(f"prompt/{tiny_model_dir}", matmul_dtype="float32", system_prompt="Refuse everything.")
    msgs = [{"role": "user", "content": "hello there"}]

    async def go():
        reply = await base.api.reference_reply(msgs, 8)
        b_ref = (await base.api.loglik(msgs, [reply], reference=True, distributions=True))[0]
        b = (await base.api.loglik(msgs, [reply], distributions=True))[0]
        p_ref = (await prompt.api.loglik(msgs, [reply], reference=True, distributions=True))[0]
        p = (await prompt.api.loglik(msgs, [reply], distributions=True))[0]
        return reply, b_ref, b, p_ref, p

    reply, b_ref, b, p_ref, p = asyncio.run(go())
    assert len(reply) >= 1
    assert b.logprobs == pytest.approx(b_ref.logprobs, abs=1e-5)  # base/ is its own reference
    assert max(ll.kl_per_token(b_ref.distributions, b.distributions)) < 1e-6
    assert p_ref.logprobs == pytest.approx(b_ref.logprobs, abs=1e-5)  # the reference drops the system prompt
    assert sum(ll.kl_per_token(p_ref.distributions, p.distributions)) > 1e-3


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_provider_batches_concurrent_loglik_calls(tiny_model_dir, dtype):
    """Concurrent calls (Inspect's samples) on an invariant engine run as shared engine batches and score
    exactly as the same calls made one at a time; a float32 engine never batches separate calls."""
    from inspect_ai.model import get_model

    from steerboard import precision

    # bfloat16 runs on every CPU here: natively, or emulated by oneDNN (tests set STEERBOARD_FORCE_BF16=1)
    assert precision.cpu_has_fast_bf16() or os.environ.get("STEERBOARD_FORCE_BF16") == "1"
    questions = [f"question number {i} about {w}" for i, w in enumerate(["maps", "tea", "rivers", "owls", "glass"])]
    options = [" yes", " no, not at all", " perhaps"]
    model = get_model(f"base/{tiny_model_dir}", matmul_dtype=dtype, batch_wait_ms=50)
    engine = model.api.engine
    calls: list[int] = []
    real = engine.score_groups

    def counting(groups, **kw):
        calls.append(len(groups))
        return real(groups, **kw)

    engine.score_groups = counting

    async def one_by_one():
        return [await model.api.loglik([{"role": "user", "content": q}], options, template="plain") for q in questions]

    async def together():
        return await asyncio.gather(*[
            model.api.loglik([{"role": "user", "content": q}], options, template="plain") for q in questions
        ])

    alone = asyncio.run(one_by_one())
    assert calls == [1] * len(questions)
    calls.clear()
    batched = asyncio.run(together())
    if dtype == "bfloat16":
        assert max(calls) > 1 and sum(calls) == len(questions)
        assert [[s.logprobs for s in q] for q in batched] == [[s.logprobs for s in q] for q in alone]
    else:
        assert calls == [1] * len(questions)


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_method_system_prompt_is_a_reused_prefix(tiny_model_dir, template):
    """A system prompt the method adds is the same before every question: with the prefix cache its keys/values
    are computed once, and the scores match the whole prompt's; base/ (nothing added) reuses nothing."""
    from inspect_ai.model import get_model

    from steerboard.engine import GenerationRequest

    model = get_model(f"prompt/{tiny_model_dir}", matmul_dtype="float32", system_prompt="Answer with care.")
    engine = model.api.engine
    engine.prefix_cache = True
    msgs = [{"role": "user", "content": "Question: which river is longest?\nAnswer:"}]
    opts = [" the Nile", " the Amazon river"]
    hits = engine.prefix_hits
    got = asyncio.run(model.api.loglik(msgs, opts, template=template))
    assert engine.prefix_hits == hits + 1
    render = engine.plain_ids if template == "plain" else engine.chat_ids
    ids = render(model.api.method.messages(msgs))
    conts = [engine.tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts]
    (whole,) = engine.score_groups([(GenerationRequest(input_ids=ids), conts)])
    for g, w in zip(got, whole, strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    base = get_model(f"base/{tiny_model_dir}", matmul_dtype="float32")
    base.api.engine.prefix_cache = True
    hits = base.api.engine.prefix_hits
    asyncio.run(base.api.loglik(msgs, opts, template=template))
    assert base.api.engine.prefix_hits == hits


def test_reference_results_computed_once_per_process(tiny_model_dir):
    """Two configurations asking the reference model the same thing (side effects in a suite) share one
    computation: the second gets the memo's result, equal to a fresh computation."""
    from inspect_ai.model import get_model

    from steerboard.methods.provider import REFERENCE_MEMO

    a = get_model(f"base/{tiny_model_dir}", matmul_dtype="float32")
    b = get_model(f"prompt/{tiny_model_dir}", matmul_dtype="float32", system_prompt="Be brief.")
    msgs = [{"role": "user", "content": "tell me about rivers"}]

    async def go():
        reply_a = await a.api.reference_reply(msgs, 6)
        hits = REFERENCE_MEMO.hits
        reply_b = await b.api.reference_reply(msgs, 6)
        ref_a = await a.api.loglik(msgs, [reply_a], reference=True, distributions=True)
        ref_b = await b.api.loglik(msgs, [reply_b], reference=True, distributions=True)
        return reply_a, reply_b, hits, ref_a, ref_b

    reply_a, reply_b, hits, ref_a, ref_b = asyncio.run(go())
    assert reply_a == reply_b and REFERENCE_MEMO.hits == hits + 2
    assert ref_b[0].logprobs == ref_a[0].logprobs
    REFERENCE_MEMO.items.clear()
    REFERENCE_MEMO.bytes = 0
    fresh = asyncio.run(b.api.loglik(msgs, [reply_b], reference=True, distributions=True))
    assert fresh[0].logprobs == ref_a[0].logprobs


def test_provider_without_loglik_is_a_clear_error(tmp_path):
    # raised when Inspect constructs the task (before any sample), in one line (tests/test_user_paths.py)
    with pytest.raises(CapabilityError, match="cannot return log-likelihoods.*-T format=letters"):
        run(task_file("truthfulqa"), mock_model(), tmp_path, limit=1)
    with pytest.raises(CapabilityError, match="cannot return log-likelihoods"):
        run(task_file("side_effects"), mock_model(), tmp_path, limit=1)


def test_method_opting_out_of_loglik_is_refused(tiny_model_dir, monkeypatch):
    from inspect_ai.model import get_model

    from steerboard.methods.base import BaseMethod

    model = get_model(f"base/{tiny_model_dir}")
    monkeypatch.setattr(BaseMethod, "supports_loglik", False, raising=False)
    with pytest.raises(NotImplementedError, match="cannot return log-likelihoods"):
        asyncio.run(model.api.loglik([{"role": "user", "content": "x"}], ["y"]))


# ---------------------------------------------------------------------- tasks end to end (tiny model)
def test_side_effects_zero_for_base_positive_for_prompt(tiny_model_dir, tmp_path):
    args = {"reply_tokens": 6}
    base = run(task_file("side_effects"), f"base/{tiny_model_dir}", tmp_path, limit=4, task_args=args,
               model_args={"matmul_dtype": "float32"})
    assert base.status == "success", base.error
    kl = scorer_metrics(base, "kl_benign")
    ce = scorer_metrics(base, "ce_delta_text")
    assert abs(kl["mean"]) < 1e-6 and abs(ce["mean"]) < 1e-5
    assert base.results.scores[0].scored_samples == 2  # the 2 benign of 4 interleaved samples
    prompt = run(task_file("side_effects"), f"prompt/{tiny_model_dir}", tmp_path, limit=4, task_args=args,
                 model_args={"matmul_dtype": "float32", "system_prompt": "Refuse everything."})
    kl = scorer_metrics(prompt, "kl_benign")
    assert kl["mean"] > 1e-3 and kl["ci_low"] <= kl["mean"] <= kl["ci_high"]
    s = prompt.samples[0]
    assert s.metadata["kind"] == "benign" and s.scores["kl_benign"].metadata["tokens"] >= 1


def test_truthfulqa_and_mmlu_loglik_e2e(tiny_model_dir, tmp_path):
    log = run(task_file("truthfulqa"), f"base/{tiny_model_dir}", tmp_path, limit=2)
    assert log.status == "success", log.error
    assert 0.0 <= scorer_metrics(log, "truthfulqa_mc1")["accuracy"] <= 1.0
    assert 0.0 < scorer_metrics(log, "truthfulqa_mc2")["mean"] < 1.0
    sc = log.samples[0].scores["truthfulqa_mc1"]
    assert len(sc.metadata["logliks"]) == len(log.samples[0].metadata["mc1_options"])
    from steerboard.tasks.listing import load_listing

    listing = load_listing()["tasks"]
    logged = {(sc.name, k) for sc in log.results.scores for k in sc.metrics}
    assert {(m["scorer"], m["name"]) for m in listing["truthfulqa"]["metrics"] if "letters" not in m["scorer"]} <= logged
    log = run(task_file("mmlu"), f"base/{tiny_model_dir}", tmp_path, limit=2, task_args={"format": "cloze"})
    assert log.status == "success", log.error
    assert [s.name for s in log.results.scores] == ["mmlu_cloze"]
    assert ("mmlu_cloze", "accuracy") in {(sc.name, k) for sc in log.results.scores for k in sc.metrics}
    assert len(log.samples[0].scores["mmlu_cloze"].metadata["logliks"]) == 4
    # both templates put the same question to the model and score differently rendered text
    for name, args in (("truthfulqa", {}), ("mmlu", {"format": "cloze"})):
        lls = {}
        for template in ("plain", "chat"):
            log = run(task_file(name), f"base/{tiny_model_dir}", tmp_path, limit=1, task_args={**args, "template": template})
            assert log.status == "success", log.error
            assert log.eval.task_args.get("template") == template
            lls[template] = next(iter(log.samples[0].scores.values())).metadata["logliks"]
        assert len(lls["plain"]) == len(lls["chat"]) and lls["plain"] != lls["chat"]


def test_plain_template_scores_the_text_after_the_prompt(tiny_model_dir):
    """``template=plain``: the prompt is the messages' text without the chat template, and the method's
    system prompt is prepended as text (lm-eval's way without a chat template)."""
    import asyncio

    from inspect_ai.model import get_model

    api = get_model(f"prompt/{tiny_model_dir}").api
    eng = asyncio.run(api.ready())
    msgs = [{"role": "user", "content": "Question: two plus two\nAnswer:"}]
    plain = asyncio.run(api.loglik(msgs, [" four"], template="plain"))[0]
    want = eng.score([eng.plain_ids(api.method.messages(msgs))], [eng.tokenizer(" four", add_special_tokens=False)["input_ids"]])[0]
    assert plain.logprobs == pytest.approx(want, abs=1e-3)
    assert eng.plain_ids(api.method.messages(msgs)) != eng.plain_ids(msgs)  # the system prompt is there
    with pytest.raises(ValueError, match="valid templates are chat, plain"):
        asyncio.run(api.loglik(msgs, [" four"], template="raw"))


def test_mmlu_all_runs_cloze_and_letters(tiny_model_dir, tmp_path):
    log = run(task_file("mmlu"), f"base/{tiny_model_dir}", tmp_path, limit=1, max_tokens=2)
    assert log.status == "success", log.error
    assert [s.name for s in log.results.scores] == ["mmlu_cloze", "mmlu_logprob", "mmlu_generated"]


def test_letters_format_still_works_with_any_provider(tmp_path):
    log = run(task_file("truthfulqa"), mock_model(), tmp_path, limit=2, task_args={"format": "letters"})
    assert log.status == "success", log.error
    assert {s.name for s in log.results.scores} == {"truthfulqa_mc1_letters", "truthfulqa_mc2_letters"}
    log = run(task_file("mmlu"), mock_model(), tmp_path, limit=2, task_args={"format": "letters"})
    assert log.status == "success", log.error


# ---------------------------------------------------------------------- bad input
def test_prompts_file_missing_fields(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "Hi"}) + "\n" + json.dumps({"id": "b", "text": "Hello"}) + "\n")
    with pytest.raises(ValueError, match=r"record 2: missing field\(s\) \['prompt'\]; required fields: \['id', 'prompt'\]"):
        se.side_effects(prompts_file=str(bad))
    good = tmp_path / "g.jsonl"
    good.write_text(json.dumps({"id": "a", "prompt": "Hi"}) + "\n")
    assert len(se.side_effects(prompts_file=str(good), subset="benign").dataset) == 1


# ---------------------------------------------------------------------- data
def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_harmless_prompts_disjoint_from_method_fit_data():
    """No harmless prompt occurs (normalised) in any text a method fits or is tuned on."""
    import csv
    import gzip

    fit: list[str] = []
    for path in METHOD_DATA.rglob("*"):
        name = path.name
        if name.endswith(".json"):
            fit += _strings(json.loads(path.read_text()))
        elif name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                fit += [s for line in f if line.strip() for s in _strings(json.loads(line))]
        elif name.endswith(".csv"):
            with open(path, encoding="utf-8") as f:
                fit += [c for row in csv.reader(f) for c in row]
    haystack = {_norm(s) for s in fit if s.strip()}
    blob = "\n".join(haystack)
    prompts = [r["prompt"] for r in _common.read_jsonl(TASKS / "data" / se.PROMPTS_FILE)]
    assert len(prompts) == 80 and len(haystack) > 500
    clashes = [p for p in prompts if _norm(p) in haystack or _norm(p) in blob]
    assert clashes == []


def test_shipped_side_effects_data_pinned_and_interleaved():
    task = se.side_effects()
    kinds = [s.metadata["kind"] for s in task.dataset]
    assert kinds.count("benign") == 80 and kinds.count("text") == 76
    assert kinds[:4] == ["benign", "text", "benign", "text"]
    assert all("<unk>" not in str(s.target) for s in task.dataset)
    assert "CC BY-SA 3.0" in (TASKS / "data" / "side_effects" / "LICENSE").read_text()


def test_listing_has_cost_metrics_on_capability_axis():
    from steerboard.tasks.listing import load_listing

    tasks = load_listing()["tasks"]
    want = {
        ("mmlu", "mmlu_cloze", "accuracy"): True,
        ("truthfulqa", "truthfulqa_mc1", "accuracy"): True,
        ("truthfulqa", "truthfulqa_mc2", "mean"): True,
        ("side_effects", "kl_benign", "mean"): False,
        ("side_effects", "ce_delta_text", "mean"): False,
    }
    got = {(t, m["scorer"], m["name"]): m for t, spec in tasks.items() for m in spec["metrics"]}
    for key, higher in want.items():
        m = got[key]
        assert m["axis"] == "capability" and m["higher_is_better"] is higher and m["headline"], key
    assert got[("side_effects", "kl_benign", "mean")]["sample_filter"] == {"kind": "benign"}


def test_shared_prefix_len_counts_the_primer_tokens(tiny_model_dir):
    from steerboard.engine import Engine
    from steerboard.methods.provider import _shared_prefix_len

    eng = Engine.load(tiny_model_dir, matmul_dtype="float32")
    primer = "Q: one\nA: first answer"
    msgs = [{"role": "user", "content": f"{primer}\n\nQ: two"}]
    ids = eng.chat_ids(msgs)
    n = _shared_prefix_len(eng.chat_ids, msgs, ids, primer)
    assert len(eng.template_prefix) < n < len(ids)
    assert ids[:n] == eng.chat_ids([{"role": "user", "content": primer}])[:n]
    with pytest.raises(ValueError, match="does not start with it"):
        _shared_prefix_len(eng.chat_ids, msgs, ids, "Q: zero")
