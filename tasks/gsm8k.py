"""GSM8K: grade-school maths word problems, chain-of-thought, numeric exact match of the final answer.

Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems" (arXiv 2110.14168). The 1,319 test
problems; the model reasons step by step and ends with ``ANSWER: <number>``; the final number is compared
numerically with the reference (Inspect's ``match(numeric=True)``). ``-T fewshot=N`` prepends N worked
train-set solutions (seeded choice; the train split is disjoint from the test split).

O'Brien et al. 2024 (arXiv 2411.11296) use GSM8K to measure the capability cost of refusal steering.

Examples::

    inspect eval tasks/gsm8k.py --model base/smollm2-135m --limit 20
    inspect eval steerboard/gsm8k --model sae/smollm2-135m -T fewshot=5 --limit 100
"""

from __future__ import annotations

import random
import re
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import match
from inspect_ai.solver import generate, prompt_template

from steerboard.tasks._common import (
    check_bool,
    check_int,
    data_file,
    make_dataset,
    read_jsonl,
    reject_unknown_options,
    system_text,
)

TEST_FILE = "gsm8k/test.jsonl.gz"
TEST_SHA256 = "8aefed8a0a4edffc10dabc1cb850490cd05e40e41187834ab38619094f4e7d5d"
TRAIN_FILE = "gsm8k/train.jsonl.gz"
TRAIN_SHA256 = "817754552790aa6015096975ee23a24a8a3b996362bc4dbc4b3541fab43132a0"
TASK_VERSION = "1.0.0"

PROMPT = (
    "Work out the answer to this maths problem. Think it through step by step, then write the final "
    'number alone on the last line as "ANSWER: <number>".\n\n{prompt}'
)

_CALC = re.compile(r"<<[^>]*>>")


def _final_answer(answer: str) -> str:
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '####' final-answer marker: {answer[-80:]!r}")
    return answer.split("####")[-1].strip().replace(",", "")


def record_to_sample(record: dict[str, Any]) -> Sample:
    """Convert a GSM8K record (``question``, ``answer`` with ``#### <n>``) to a Sample.

    The target is the final number with thousands separators removed; the worked reasoning (calculator
    annotations stripped) is kept in metadata for few-shot use.
    """
    answer = str(record["answer"])
    reasoning = _CALC.sub("", answer.split("####")[0]).strip()
    return Sample(
        input=str(record["question"]),
        target=_final_answer(answer),
        metadata={"reasoning": reasoning},
    )


def fewshot_block(records: list[dict[str, Any]]) -> str:
    """Format worked train examples that end with the same ``ANSWER:`` line the model must produce."""
    parts = []
    for r in records:
        s = record_to_sample(r)
        parts.append(f"Problem: {s.input}\n{(s.metadata or {})['reasoning']}\nANSWER: {s.target}")
    return "Here are some solved examples.\n\n" + "\n\n".join(parts)


@task
def gsm8k(fewshot: int = 0, fewshot_seed: int = 42, shuffle: bool = False, seed: int = 0, **options: Any) -> Task:
    """GSM8K test set (1,319 problems) with chain-of-thought and numeric exact match.

    Args:
        fewshot: number of worked train examples in the system message (0-8).
        fewshot_seed: seed for choosing the few-shot examples.
        shuffle: shuffle the samples (before ``--limit``) with ``seed``.
        seed: shuffle seed.
        **options: anything else is rejected (Inspect would only warn about it).
    """
    reject_unknown_options("gsm8k", gsm8k, options)
    fewshot = check_int("fewshot", fewshot, 0, 8)
    fewshot_seed = check_int("fewshot_seed", fewshot_seed)
    shuffle = check_bool("shuffle", shuffle)
    seed = check_int("seed", seed)

    records = read_jsonl(data_file(TEST_FILE, TEST_SHA256))
    dataset = make_dataset(records, record_to_sample, "gsm8k", TEST_FILE, shuffle=shuffle, seed=seed)
    solver = [prompt_template(PROMPT), generate()]
    if fewshot:
        train = read_jsonl(data_file(TRAIN_FILE, TRAIN_SHA256))
        examples = random.Random(fewshot_seed).sample(train, fewshot)
        solver.insert(0, system_text(fewshot_block(examples)))
    return Task(
        dataset=dataset,
        solver=solver,
        scorer=match(numeric=True),
        config=GenerateConfig(max_tokens=384),
        version=TASK_VERSION,
        metadata={"fewshot": fewshot},
    )
