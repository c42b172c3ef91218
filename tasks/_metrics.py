"""Metrics over dict-valued scores, shared by steerboard's tasks.

Judge failures are excluded from every denominator (and counted separately by the scorers' own
``judge_errors`` metric): a sample whose ``Score.value["judge_error"]`` is 1 never moves a rate.
Inspect's ``grouped()`` works on scalar scores only, hence these small helpers.
"""

from __future__ import annotations

import math
from typing import Any

from inspect_ai.scorer import Metric, SampleScore, metric


def _value(s: SampleScore) -> dict[str, Any]:
    v = s.score.value
    return v if isinstance(v, dict) else {}


def _ok(s: SampleScore, key: str) -> bool:
    v = _value(s)
    if v.get("judge_error"):
        return False
    x = v.get(key)
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def mean_of(scores: list[SampleScore], key: str) -> float:
    """Mean of ``value[key]`` over samples without a judge error (NaN when there are none)."""
    vals = [float(_value(s)[key]) for s in scores if _ok(s, key)]
    return sum(vals) / len(vals) if vals else float("nan")


@metric
def breakdown(key: str, group_key: str, prefix: str) -> Metric:
    """Mean of ``value[key]`` per value of ``metadata[group_key]``, reported as ``<prefix><group>``.

    Args:
        key: the Score.value dict key to average (e.g. "refusal").
        group_key: the sample metadata key to group on (e.g. "type").
        prefix: metric name prefix (e.g. "refusal_rate_type_").
    """

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        groups: dict[str, list[SampleScore]] = {}
        for s in scores:
            g = (s.sample_metadata or {}).get(group_key)
            if g is not None:
                groups.setdefault(str(g), []).append(s)
        return {f"{prefix}{g}": mean_of(ss, key) for g, ss in sorted(groups.items())}

    return compute  # type: ignore[return-value]


@metric
def key_means(names: dict[str, str]) -> Metric:
    """Means of several ``value`` keys over samples without a judge error.

    Args:
        names: metric name -> Score.value key (a dict-valued metric, so each name is logged as-is).
    """

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        return {name: mean_of(scores, key) for name, key in names.items()}

    return compute  # type: ignore[return-value]


@metric
def key_sums(names: dict[str, str]) -> Metric:
    """Sums of several ``value`` keys over all samples (counts such as ``judge_error``)."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        return {name: float(sum(float(_value(s).get(key) or 0) for s in scores)) for name, key in names.items()}

    return compute  # type: ignore[return-value]
