"""Log-likelihood scoring: reaching the provider's teacher-forced scorer, answer-string multiple choice, and
side-effect metrics with bootstrap intervals.

Inspect's ``generate`` has no way to ask for the likelihood of a given continuation, so tasks that need one
(TruthfulQA MC1/MC2, MMLU cloze, ``side_effects``) call the provider's ``loglik`` through the
:class:`steerboard.protocol.ScoringModel` protocol (:func:`loglik_model`). steerboard's method providers
(``steerboard.methods.provider.MethodModelAPI``) implement it through the shared engine with the method applied
as it is during generation (message rewrite, gates, hooks, edited weights, adapters); any other provider is
refused in one line (:func:`steerboard.protocol.require_capability`) before any request is made.

Helpers here are pure functions of per-token log-probabilities, so they are tested without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from inspect_ai.scorer import Metric, SampleScore, metric

from steerboard.protocol import ScoringModel, require_capability

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def loglik_model(task: str, capability: str = "loglik", fallback: str | None = None) -> ScoringModel:
    """The active model's provider as a :class:`~steerboard.protocol.ScoringModel` with ``capability``.

    Args:
        task: the task name (for the message).
        capability: ``loglik`` (answer strings) or ``reference`` (the unsteered model's reply, scored).
        fallback: what to run instead (e.g. ``"-T format=letters"``), named in the message.

    Raises:
        steerboard.protocol.CapabilityError: the provider lacks the capability (e.g. ``mockllm/``, ``hf/``,
            API models, or a method with ``supports_loglik = False``).
    """
    from inspect_ai.model import get_model

    return require_capability(get_model(), capability, task=task, fallback=fallback)


# ---------------------------------------------------------------------- multiple choice from answer strings
def answer_texts(answers: Sequence[str], template: str) -> list[str]:
    """The continuations to score for ``answers``: under ``template=plain`` each follows the prompt's text
    (``Answer:``, ``A:``) after a space, as lm-eval's target delimiter puts it; under ``chat`` it is the
    assistant's whole reply."""
    sep = " " if template == "plain" else ""
    return [sep + str(a).strip() for a in answers]


def mc1_correct(logliks: Sequence[float], labels: Sequence[int]) -> bool:
    """MC1 (Lin et al. 2022): the answer with the highest total log-likelihood is the true one."""
    best = max(range(len(logliks)), key=lambda i: logliks[i])
    return labels[best] == 1


def mc2_mass(logliks: Sequence[float], labels: Sequence[int]) -> float:
    """MC2 (Lin et al. 2022): probability mass on the true answers, normalised over all answers,
    with each answer's probability = exp(total log-likelihood of its tokens)."""
    m = max(logliks)
    p = [math.exp(v - m) for v in logliks]
    return sum(pi for pi, lab in zip(p, labels, strict=True) if lab == 1) / sum(p)


def cloze_choice(logliks: Sequence[float], texts: Sequence[str]) -> int:
    """Index of the option with the highest log-likelihood per byte of answer text (lm-eval's ``acc_norm``
    normalisation; it removes the bias towards short answers that summed log-likelihood has)."""
    norm = [v / max(1, len(t.encode("utf-8"))) for v, t in zip(logliks, texts, strict=True)]
    return max(range(len(norm)), key=lambda i: norm[i])


# ---------------------------------------------------------------------- intervals
def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``nan``s when there are no values)."""
    import numpy as np

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def _floats(scores: list[SampleScore]) -> list[float]:
    return [float(s.score.value) for s in scores if isinstance(s.score.value, (int, float))
            and not math.isnan(float(s.score.value))]


@metric
def ci_low() -> Metric:
    """Lower end of the 95 % percentile-bootstrap interval of the mean (2,000 resamples, seed 0)."""

    def compute(scores: list[SampleScore]) -> float:
        return bootstrap_ci(_floats(scores))[0]

    return compute  # type: ignore[return-value]


@metric
def ci_high() -> Metric:
    """Upper end of the 95 % percentile-bootstrap interval of the mean (2,000 resamples, seed 0)."""

    def compute(scores: list[SampleScore]) -> float:
        return bootstrap_ci(_floats(scores))[1]

    return compute  # type: ignore[return-value]


def kl_per_token(base_logdist: Any, method_logdist: Any) -> list[float]:
    """KL(base || method) of each position's next-token distribution (nats), from ``[len, vocab]`` log-probs."""

    p = base_logdist.exp()
    return (p * (base_logdist - method_logdist)).sum(-1).clamp(min=0.0).tolist()
