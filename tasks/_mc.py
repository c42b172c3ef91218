"""Multiple-choice helpers shared by ``mmlu`` and ``truthfulqa``: option-letter log-probabilities and
generated-letter parsing.

Two readings of one generation:

* **logprob**: at the first non-whitespace generated token, take the provider's ``top_logprobs`` and keep
  the tokens that are exactly an option letter (after stripping whitespace); equal letters (``"A"``,
  ``" A"``) are merged with log-sum-exp. Works with any Inspect provider that returns top_logprobs.
* **generated**: parse the option letter the model wrote ("B", "(B)", "B.", "The answer is B").

When the provider returns no logprobs (e.g. ``mockllm``), the logprob reading falls back to the generated
letter and the score's metadata says ``fallback: true`` (counted by the ``logprob_fallbacks`` metric).
Inspect's own ``multiple_choice``/``choice`` pair scores the generated letter only, hence this module.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

from inspect_ai.model import GenerateConfig, ModelOutput
from inspect_ai.scorer import Metric, SampleScore, metric

LETTERS = string.ascii_uppercase
TOP_LOGPROBS = 20
MC_CONFIG = GenerateConfig(max_tokens=16, temperature=0.0)
"""Task-level defaults for letter answers (greedy, short); ``--max-tokens`` etc. override them."""


def mc_config() -> GenerateConfig:
    """:data:`MC_CONFIG` in a form the active provider takes.

    Inspect's ``hf/`` samples by default (``do_sample=True``) and transformers rejects ``temperature=0`` when
    sampling, so there greedy is ``top_k=1`` (sampling from the single best token) instead; with
    ``-M do_sample=false`` it decodes greedily and takes no sampling settings.
    """
    from steerboard.inspect_private import active_model

    model = active_model()
    if model is None or type(model.api).__name__ != "HuggingFaceAPI":
        return MC_CONFIG
    if getattr(model.api, "do_sample", True):
        return GenerateConfig(max_tokens=MC_CONFIG.max_tokens, top_k=1)
    return GenerateConfig(max_tokens=MC_CONFIG.max_tokens)
LOGPROB_ARGS: dict[str, Any] = {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
"""Forced by the solvers on every generate call: the logprob reading needs them."""


def letters(n: int) -> str:
    """The first ``n`` option letters (A, B, ...)."""
    if not 1 <= n <= len(LETTERS):
        raise ValueError(f"between 1 and {len(LETTERS)} options supported, got {n}")
    return LETTERS[:n]


def format_options(choices: list[str]) -> str:
    """Render options as ``A. text`` lines."""
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters(len(choices)), choices, strict=True))


def letter_logprobs(output: ModelOutput, valid: str) -> dict[str, float] | None:
    """Log-probabilities of the option letters at the first answer token.

    Args:
        output: the model output (with ``logprobs`` requested).
        valid: the option letters in play (e.g. "ABCD").

    Returns:
        ``{letter: logprob}`` for the letters found among the position's top logprobs (may be empty when
        none of them is in the top-k), or ``None`` when the provider returned no logprobs at all.
    """
    if not output.choices or output.choices[0].logprobs is None:
        return None
    content = output.choices[0].logprobs.content
    if not content:
        return None
    position = next((lp for lp in content if lp.token.strip()), content[0])
    candidates: list[tuple[str, float]] = [(position.token, position.logprob)]
    candidates += [(t.token, t.logprob) for t in (position.top_logprobs or [])]
    merged: dict[str, list[float]] = {}
    seen: set[str] = set()
    for token, logprob in candidates:
        if token in seen:  # the sampled token usually repeats inside top_logprobs
            continue
        seen.add(token)
        key = token.strip()
        if len(key) == 1 and key in valid:
            merged.setdefault(key, []).append(logprob)
    return {k: _logsumexp(v) for k, v in merged.items()}


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


# Option letters are matched upper-case only, so the article "a" is never read as option A. A reply that
# starts with a bare letter counts only when the letter stands alone ("B", "B.", "(B)", "B:"), so the
# article in "A lesion causes ..." is not read as option A either.
_LEAD = re.compile(
    r"^\s*(?:(?i:answer)\s*[:\-]?\s*)?(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])(?=$|[.,:;)\]]|\s*\n))"
)
_PHRASE = re.compile(r"(?i:\banswer\s*(?:is\s*:?|:)\s*(?:option\s*)?)[\(\[]?([A-Z])[\)\]]?(?=$|[\s.,:;)\]])")


def generated_letter(text: str, valid: str) -> str | None:
    """Parse the option letter a model wrote; ``None`` when no valid letter can be read."""
    for pattern in (_LEAD, _PHRASE):
        m = pattern.search(text)
        if m:
            letter = next(g for g in m.groups() if g)
            if letter in valid:
                return letter
    return None


def read_choice(output: ModelOutput, valid: str) -> dict[str, Any]:
    """Both readings of one generation.

    Returns:
        dict with ``logprobs`` (letter -> logprob or None), ``logprob_letter`` (argmax letter or None),
        ``generated_letter`` and ``fallback`` (True when no logprobs came back, so the logprob reading
        uses the generated letter).
    """
    lps = letter_logprobs(output, valid)
    gen = generated_letter(output.completion, valid)
    if lps is None:
        return {"logprobs": None, "logprob_letter": gen, "generated_letter": gen, "fallback": True}
    best = max(lps, key=lambda k: lps[k]) if lps else None
    return {"logprobs": lps, "logprob_letter": best, "generated_letter": gen, "fallback": False}


@metric
def logprob_fallbacks() -> Metric:
    """Number of samples whose logprob reading fell back to the generated letter (no logprobs returned)."""

    def compute(scores: list[SampleScore]) -> float:
        return float(sum(1 for s in scores if (s.score.metadata or {}).get("fallback")))

    return compute  # type: ignore[return-value]
