"""MMLU: 57-subject multiple-choice knowledge test, in cloze form and in letter form.

Hendrycks et al. 2021, "Measuring Massive Multitask Language Understanding" (ICLR 2021, arXiv 2009.03300).
All 14,042 test questions; ``-T fewshot=5`` prepends the subject's 5 dev exemplars (the dev split is
disjoint from test).

Cloze form (``-T format=cloze``, and part of the default ``all``): the question without lettered options;
each option's text is scored by its log-likelihood as the text after ``Answer:`` (``-T template=plain``,
default: plain text without the chat template, as lm-eval scores it; ``-T template=chat``: as the assistant's
reply to a user turn), through the provider's teacher-forced scorer (steerboard method providers; the method applies as when it generates), and the option
with the highest log-likelihood per byte of answer text wins (lm-eval's ``acc_norm``; SmolLM2 and other small
models report MMLU this way because the letter form sits near chance below a few billion parameters):

* ``mmlu_cloze``: ``accuracy``, ``stderr``, ``subject_<name>``.

Letter form (``-T format=letters``, and part of ``all``; works with any provider): one greedy generation per
question is read two ways (see ``steerboard.tasks._mc``):

* ``mmlu_logprob``: the option letter with the highest log-probability at the first answer token
  (needs a provider returning top_logprobs; otherwise falls back to the generated letter and counts it
  in ``logprob_fallbacks``);
* ``mmlu_generated``: the letter the model wrote.

Each reports ``accuracy``, ``stderr`` and per-subject accuracy ``subject_<name>``. O'Brien et al. 2024
(arXiv 2411.11296) report MMLU to measure the capability cost of refusal steering.

Examples::

    inspect eval tasks/mmlu.py --model base/smollm2-135m --limit 100 -T shuffle=true
    inspect eval tasks/mmlu.py --model base/smollm2-135m --limit 300 -T shuffle=true -T format=cloze
    inspect eval tasks/mmlu.py --model openai/gpt-4o-mini -T format=letters
    inspect eval steerboard/mmlu --model sae/smollm2-135m -T fewshot=5 -T subjects=anatomy,virology
"""

from __future__ import annotations

from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Scorer, Target, accuracy, grouped, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver

from steerboard.scorers.loglik import answer_texts, cloze_choice, loglik_model
from steerboard.tasks._common import (
    check_bool,
    check_capability,
    check_choice,
    check_int,
    data_file,
    make_dataset,
    read_jsonl,
    reject_unknown_options,
)
from steerboard.tasks._mc import (
    LOGPROB_ARGS,
    format_options,
    letters,
    logprob_fallbacks,
    mc_config,
    read_choice,
)

TEST_FILE = "mmlu/test.jsonl.gz"
TEST_SHA256 = "44a83e92a6bf20d3a8e415521f55d47d016495ad0e5bee0d45b6c50f59543ec8"
DEV_FILE = "mmlu/dev.jsonl.gz"
DEV_SHA256 = "b336f0647e1e82913c51432778323c5f41fccb30fa9cf52cc7774f5b3bdf47c7"
TASK_VERSION = "2.1.0"

Fewshot = Literal[0, 5]
Format = Literal["all", "letters", "cloze"]
Template = Literal["plain", "chat"]

CLOZE_INSTRUCTION = "Answer the question about {subject}."

INSTRUCTION = "Answer the multiple-choice question about {subject}. Reply with the letter of the correct option only."


def _subject_title(subject: str) -> str:
    return subject.replace("_", " ")


def format_question(record: dict[str, Any], with_answer: bool = False) -> str:
    """Question, lettered options and an ``Answer:`` cue (followed by the letter for exemplars)."""
    text = f"{record['question'].strip()}\n{format_options(list(record['choices']))}\nAnswer:"
    if with_answer:
        text += f" {letters(4)[int(record['answer'])]}"
    return text


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert a record (``subject``, ``index``, ``question``, ``choices`` (4), ``answer`` 0-3) to a Sample."""
    choices = list(record["choices"])
    if len(choices) != 4:
        raise ValueError(f"MMLU {record.get('subject')}#{record.get('index')}: expected 4 choices, got {len(choices)}")
    answer = int(record["answer"])
    if not 0 <= answer < 4:
        raise ValueError(f"MMLU {record.get('subject')}#{record.get('index')}: answer index {answer} not in 0-3")
    return Sample(
        id=f"{record['subject']}-{int(record['index']):04d}",
        input=format_question(record),
        target=letters(4)[answer],
        choices=choices,
        metadata={"subject": str(record["subject"]), "question": str(record["question"])},
    )


@solver
def mc_answer(exemplars: dict[str, list[dict[str, Any]]] | None = None) -> Solver:
    """Prefix the instruction (and the subject's exemplars), then generate once with letter logprobs."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        subject = (state.metadata or {})["subject"]
        head = INSTRUCTION.format(subject=_subject_title(subject))
        shots = (exemplars or {}).get(subject, [])
        if shots:
            head += "\n\n" + "\n\n".join(format_question(r, with_answer=True) for r in shots)
        state.user_prompt.text = f"{head}\n\n{state.user_prompt.text}"
        return await generate(state, **LOGPROB_ARGS)

    return solve


def cloze_question(record: dict[str, Any], with_answer: bool = False) -> str:
    """Question and an ``Answer:`` cue without options (followed by the answer text for exemplars)."""
    text = f"Question: {record['question'].strip()}\nAnswer:"
    if with_answer:
        text += f" {str(record['choices'][int(record['answer'])]).strip()}"
    return text


def cloze_prompt(record: dict[str, Any], subject: str, shots: list[dict[str, Any]] | None = None) -> str:
    """The cloze prompt: the subject's instruction, any exemplars with their answers, the question."""
    head = CLOZE_INSTRUCTION.format(subject=_subject_title(subject))
    if shots:
        head += "\n\n" + "\n\n".join(cloze_question(r, with_answer=True) for r in shots)
    return f"{head}\n\n{cloze_question(record)}"


@solver
def cloze_answer(exemplars: dict[str, list[dict[str, Any]]] | None = None, template: Template = "plain") -> Solver:
    """Score every option's text after the cloze prompt (one batch of four per question): as the text that
    follows ``Answer:`` (``plain``, with its leading space) or as the assistant's reply (``chat``)."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        api = loglik_model("mmlu", "loglik", fallback="-T format=letters")
        subject = (state.metadata or {})["subject"]
        record = {"question": state.metadata["question"], "choices": [c.value for c in state.choices]}
        prompt = cloze_prompt(record, subject, (exemplars or {}).get(subject, []))
        options = answer_texts(record["choices"], template)
        scored = await api.loglik([{"role": "user", "content": prompt}], options, template=template)
        state.store.set("mmlu_cloze", [sum(s.logprobs) for s in scored])
        return state

    return solve


@scorer(metrics=[accuracy(), stderr(), grouped(accuracy(), "subject", all=False, name_template="subject_{group_name}")])
def mmlu_cloze() -> Scorer:
    """Correct when the target option's text has the highest log-likelihood per byte."""

    async def score(state: TaskState, target: Target) -> Score:
        lls = list(state.store.get("mmlu_cloze"))
        texts = [str(c.value).strip() for c in state.choices]
        best = cloze_choice(lls, texts)
        letter = letters(4)[best]
        return Score(value=CORRECT if letter == target.text else INCORRECT, answer=letter, metadata={"logliks": lls})

    return score


def _score(state: TaskState, target: Target, which: str) -> Score:
    reading = read_choice(state.output, letters(4))
    letter = reading[which]
    return Score(
        value=CORRECT if letter == target.text else INCORRECT,
        answer=letter,
        metadata={
            "fallback": bool(reading["fallback"]) if which == "logprob_letter" else False,
            "logprobs": reading["logprobs"],
        },
    )


_SUBJECT = grouped(accuracy(), "subject", all=False, name_template="subject_{group_name}")


@scorer(metrics=[accuracy(), stderr(), logprob_fallbacks(), _SUBJECT])
def mmlu_logprob() -> Scorer:
    """Correct when the highest-logprob option letter at the first answer token is the target."""

    async def score(state: TaskState, target: Target) -> Score:
        return _score(state, target, "logprob_letter")

    return score


@scorer(metrics=[accuracy(), stderr(), _SUBJECT])
def mmlu_generated() -> Scorer:
    """Correct when the option letter the model wrote is the target."""

    async def score(state: TaskState, target: Target) -> Score:
        return _score(state, target, "generated_letter")

    return score


@task
def mmlu(
    fewshot: Fewshot = 0,
    format: Format = "all",
    subjects: str | list[str] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    template: Template = "plain",
    **options: Any,
) -> Task:
    """MMLU test set (14,042 questions, 57 subjects), 0- or 5-shot, logprob and generated-letter scoring.

    Args:
        fewshot: 0 or 5 dev exemplars of the same subject.
        format: ``all`` (cloze and letters), ``cloze`` (answer-text log-likelihood; needs a provider that
            scores continuations) or ``letters`` (option-letter log-probability and generated letter; any
            provider).
        subjects: comma-separated subject names (default: all 57).
        shuffle: shuffle the samples (before ``--limit``) with ``seed``.
        seed: shuffle seed.
        template: how the cloze form is put to the model: ``plain`` (the prompt as plain text and each option
            as the text after ``Answer:``, as lm-eval and SmolLM2's own evaluation score it) or ``chat`` (the
            prompt as a user turn of the chat template, each option as the assistant's reply). The letter
            form always uses the chat template.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("mmlu", mmlu, options)
    fewshot = check_int("fewshot", fewshot)  # type: ignore[assignment]
    check_choice("fewshot", fewshot, Fewshot)
    check_choice("format", format, Format)
    check_choice("template", template, Template)
    shuffle = check_bool("shuffle", shuffle)
    seed = check_int("seed", seed)
    if format in ("all", "cloze"):  # before any sample: a provider without log-likelihoods fails here
        check_capability(f"mmlu (format={format})", "loglik", "-T format=letters")

    records = read_jsonl(data_file(TEST_FILE, TEST_SHA256))
    all_subjects = sorted({r["subject"] for r in records})
    if subjects:
        wanted = [s.strip() for s in (subjects.split(",") if isinstance(subjects, str) else subjects) if s.strip()]
        unknown = [s for s in wanted if s not in all_subjects]
        if unknown:
            raise ValueError(f"unknown MMLU subject(s) {unknown}; valid subjects: {', '.join(all_subjects)}")
        records = [r for r in records if r["subject"] in set(wanted)]
    exemplars: dict[str, list[dict[str, Any]]] = {}
    if fewshot:
        for r in read_jsonl(data_file(DEV_FILE, DEV_SHA256)):
            exemplars.setdefault(r["subject"], []).append(r)
        exemplars = {k: v[:fewshot] for k, v in exemplars.items()}
    dataset = make_dataset(records, record_to_sample, "mmlu", TEST_FILE, shuffle=shuffle, seed=seed)
    solvers: list[Solver] = []
    scorers: list[Scorer] = []
    if format in ("all", "cloze"):
        solvers.append(cloze_answer(exemplars, template))
        scorers.append(mmlu_cloze())
    if format in ("all", "letters"):
        solvers.append(mc_answer(exemplars))
        scorers += [mmlu_logprob(), mmlu_generated()]
    return Task(
        dataset=dataset,
        solver=solvers,
        scorer=scorers,
        config=mc_config(),
        version=TASK_VERSION,
        metadata={"fewshot": fewshot, "format": format, "template": template, "subjects": subjects or "all"},
    )
