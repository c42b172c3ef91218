"""Side effects: how far a method moves the model's next-token distribution on harmless inputs.

Two measures, both teacher-forced (no sampling, no judge), both lower-is-better, both computed through the
method's own provider (its system prompt, gates, hooks, edited weights or adapters apply exactly as when it
generates) against the unsteered model (``base/`` with the same runtime options) in the same run:

* ``kl_benign``: mean per-token KL(base || method) of the next-token distributions over the reply positions
  of 80 harmless chat prompts, where the reply is the *base* model's own greedy reply (up to ``reply_tokens``
  tokens, plus its end-of-turn token), generated in the same run. 0 means the method leaves ordinary chat
  untouched. Refusal-ablation tools minimise this KL; it is measurable on any model size.
* ``ce_delta_text``: cross-entropy change (nats/token) on 76 held-out WikiText-2 *test* passages, scored as
  the assistant's reply to a fixed request for encyclopedic text: CE(method) - CE(base). SAE steering work
  reports this "CE loss increase".

Each sample's value is its own mean over tokens; the metrics are the mean over samples, its standard error
and a 95 % percentile-bootstrap interval (``ci_low``/``ci_high``). Per-sample base and method
cross-entropies are kept in the score metadata.

The prompts (``-T prompts_file=`` to use your own: JSON lines with ``id`` and ``prompt``) are written for
this task and share no text with anything methods fit on (``methods/data/``; checked by the tests).

Examples::

    inspect eval tasks/side_effects.py --model sae/smollm2-135m
    inspect eval steerboard/side_effects --model actadd/smollm2-135m -T subset=benign --limit 40
"""

from __future__ import annotations

from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import Score, Scorer, Target, mean, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver

from steerboard.scorers.loglik import ci_high, ci_low, kl_per_token, loglik_model
from steerboard.tasks._common import (
    check_bool,
    check_capability,
    check_choice,
    check_fields,
    check_int,
    data_file,
    make_dataset,
    read_jsonl,
    read_records,
    reject_unknown_options,
)

PROMPTS_FILE = "side_effects/harmless_prompts.jsonl"
PROMPTS_SHA256 = "0054f21825e34d68ed5cafb35748fa623a9eae53ae8c5ba03f4fe2641949a7d7"
TEXT_FILE = "side_effects/wikitext2_test_passages.jsonl"
TEXT_SHA256 = "6f7cf554ad51ce5975f648f5a5e6286705a8f71afd4a5014d641282d2197c769"
TASK_VERSION = "1.0.0"

TEXT_REQUEST = "Write an encyclopedia paragraph."
"""The user turn the reference passages answer (so chat-level methods see a conversation, as they would)."""

Subset = Literal["all", "benign", "text"]
PROMPT_FIELDS = ("id", "prompt")
TEXT_FIELDS = ("id", "text")


def prompt_to_sample(record: dict[str, Any]) -> Sample:
    """A harmless chat prompt (``id``, ``prompt``) -> a ``kind=benign`` sample."""
    text = str(record["prompt"]).strip()
    if not text:
        raise ValueError(f"side_effects prompt {record['id']!r}: empty prompt")
    return Sample(id=f"benign-{record['id']}", input=text, metadata={"kind": "benign"})


def text_to_sample(record: dict[str, Any]) -> Sample:
    """A reference passage (``id``, ``text``) -> a ``kind=text`` sample (the passage is the scored reply)."""
    return Sample(
        id=f"text-{record['id']}", input=TEXT_REQUEST, target=str(record["text"]),
        metadata={"kind": "text", "title": str(record.get("title", ""))},
    )


@solver
def side_effect_logliks(reply_tokens: int) -> Solver:
    """Score the sample's reply with the method and with the unsteered model (two teacher-forced passes).

    Benign samples first get the unsteered model's greedy reply; text samples use the reference passage.
    """

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        api = loglik_model("side_effects", "reference")
        messages = [{"role": "user", "content": state.input_text}]
        kind = state.metadata["kind"]
        if kind == "benign":
            reply: list[int] | str = await api.reference_reply(messages, reply_tokens)
            want_dist = True
        else:
            reply = state.target.text
            want_dist = False
        (base,) = await api.loglik(messages, [reply], reference=True, distributions=want_dist)
        (steered,) = await api.loglik(messages, [base.token_ids], distributions=want_dist)
        n = len(base.token_ids)
        result: dict[str, Any] = {
            "tokens": n,
            "ce_base": -sum(base.logprobs) / n,
            "ce_method": -sum(steered.logprobs) / n,
        }
        if want_dist:
            kl = kl_per_token(base.distributions, steered.distributions)
            result["kl"] = sum(kl) / n
            result["kl_max"] = max(kl)
            result["reply"] = api.decode(base.token_ids)
        state.store.set("side_effects", result)
        return state

    return solve


def _score(state: TaskState, kind: str, value_key: str) -> Score:
    r = state.store.get("side_effects") or {}
    if state.metadata["kind"] != kind or not r:
        return Score(value=float("nan"))  # unscored: the other kind of sample
    value = r["kl"] if value_key == "kl" else r["ce_method"] - r["ce_base"]
    meta = {k: v for k, v in r.items() if k != "reply"}
    return Score(value=float(value), answer=r.get("reply"), metadata=meta)


@scorer(metrics=[mean(), stderr(), ci_low(), ci_high()])
def kl_benign() -> Scorer:
    """Mean per-token KL(base || method) over the base model's replies to harmless prompts (nats; lower is better)."""

    async def score(state: TaskState, target: Target) -> Score:
        return _score(state, "benign", "kl")

    return score


@scorer(metrics=[mean(), stderr(), ci_low(), ci_high()])
def ce_delta_text() -> Scorer:
    """Cross-entropy of the method minus that of the base model on reference text (nats/token; lower is better)."""

    async def score(state: TaskState, target: Target) -> Score:
        return _score(state, "text", "ce")

    return score


def load_prompts(prompts_file: str | None) -> list[dict[str, Any]]:
    """The shipped harmless prompts, or a local file's (checked for ``id`` and ``prompt`` on every record)."""
    if prompts_file is None:
        return read_jsonl(data_file(PROMPTS_FILE, PROMPTS_SHA256))
    rows = read_records(prompts_file)
    if not rows:
        raise ValueError(f"side_effects prompts_file {prompts_file}: no records")
    check_fields(rows, PROMPT_FIELDS, f"side_effects prompts_file {prompts_file}")
    return rows


@task
def side_effects(
    subset: Subset = "all",
    reply_tokens: int = 64,
    prompts_file: str | None = None,
    shuffle: bool = False,
    seed: int = 0,
    **options: Any,
) -> Task:
    """KL to the unsteered model on harmless chat and cross-entropy change on held-out text.

    Args:
        subset: ``all``, ``benign`` (harmless prompts: ``kl_benign``) or ``text`` (``ce_delta_text``).
        reply_tokens: most tokens of the base model's reply that the KL is taken over.
        prompts_file: harmless prompts of your own (JSON lines / JSON / parquet with ``id`` and ``prompt``).
        shuffle: shuffle the samples (before ``--limit``) with ``seed``; without it, prompts and passages
            alternate so that any ``--limit`` keeps both halves.
        seed: shuffle seed.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("side_effects", side_effects, options)
    check_choice("subset", subset, Subset)
    reply_tokens = check_int("reply_tokens", reply_tokens, minimum=1, maximum=1024)
    shuffle = check_bool("shuffle", shuffle)
    seed = check_int("seed", seed)
    check_capability("side_effects", "reference")  # before any sample: every score is a log-likelihood
    prompts = load_prompts(prompts_file) if subset in ("all", "benign") else []
    texts = read_jsonl(data_file(TEXT_FILE, TEXT_SHA256)) if subset in ("all", "text") else []
    check_fields(texts, TEXT_FIELDS, TEXT_FILE)
    benign = [prompt_to_sample(r) for r in prompts]
    text = [text_to_sample(r) for r in texts]
    interleaved: list[Sample] = []
    for i in range(max(len(benign), len(text))):
        interleaved += ([benign[i]] if i < len(benign) else []) + ([text[i]] if i < len(text) else [])
    dataset = make_dataset(
        interleaved, lambda s: s, "side_effects", prompts_file or PROMPTS_FILE, shuffle=shuffle, seed=seed
    )
    return Task(
        dataset=dataset,
        solver=side_effect_logliks(reply_tokens),
        scorer=[kl_benign(), ce_delta_text()],
        version=TASK_VERSION,
        metadata={"subset": subset, "reply_tokens": reply_tokens, "prompts_file": prompts_file},
    )
