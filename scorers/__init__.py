"""Judges and Inspect scorers: refusal and harmfulness, offline by default, measured against human labels.

``from steerboard.scorers import refusal_scorer, harm_scorer`` gives the Inspect scorers;
:mod:`steerboard.scorers.judges` holds the judge API (``Verdict``, ``get_refusal_judge``, ...).
Heavy dependencies load lazily on first use.
"""

from steerboard.scorers.judge_scorers import harm_metrics, harm_scorer, refusal_metrics, refusal_scorer

__all__ = ["harm_metrics", "harm_scorer", "refusal_metrics", "refusal_scorer"]
