"""Judges and Inspect scorers: refusal and harmfulness, offline by default, measured against human labels.

``from steerboard.scorers import refusal_scorer, harm_scorer`` gives the Inspect scorers;
:mod:`steerboard.scorers.judges` holds the judge API (``Verdict``, ``get_refusal_judge``, ...).
The scorers are resolved lazily (PEP 562) so that ``steerboard --help``, which imports
:mod:`steerboard.scorers.cli`, does not pay for importing Inspect; heavy judge dependencies load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from steerboard.scorers.judge_scorers import harm_metrics, harm_scorer, refusal_metrics, refusal_scorer

__all__ = ["harm_metrics", "harm_scorer", "refusal_metrics", "refusal_scorer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from steerboard.scorers import judge_scorers

        return getattr(judge_scorers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
