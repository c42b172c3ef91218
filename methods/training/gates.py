"""Gate fitting and selection for the steering methods (``sae/``, ``actadd/``).

* :func:`fit_gate_probe`: the harmful-prompt probe on the gate data's ``fit`` split (the runtime's
  :func:`steerboard.methods.steering.load_or_fit_probe` calls it when no probe is shipped or cached), and
  :func:`fit_classifier`, the prompt-text classifier of ``gate=classifier`` (called likewise by
  :func:`steerboard.methods.prompt_gate.load_or_fit_classifier`);
* the gate threshold's choice on the ``dev`` split, by firing rates (:func:`choose_gate`) or by outcome
  (:func:`choose_gate_by_outcome`), and writing it into a preset (``steerboard sae gate``);
* dev-split screening of an intervention (:func:`screen`) with a degenerate-text check.

Torch is imported inside functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerboard.linear import LinearProbe
from steerboard.methods.steering import (
    DEFAULT_GATE_FEATURE,
    PRESET_THRESHOLD_KEYS,
    check_gate_feature,
    combine_gate_scores,
    gate_data,
    load_or_fit_probe,
    probe_key,
    prompt_features,
    prompt_ids,
    shipped_probe_path,
)

if TYPE_CHECKING:
    from steerboard.engine import Engine


def fit_gate_probe(engine: Engine, layer: int, feature: str = DEFAULT_GATE_FEATURE, progress: bool = False) -> Any:
    """Fit the harmful-prompt probe on the gate data's ``fit`` split (see :func:`gate_data`)."""
    import torch

    harmful, benign = gate_data("fit")
    x = prompt_features(engine, harmful + benign, layer, feature, progress=progress, desc="gate probe")
    y = torch.tensor([1] * len(harmful) + [0] * len(benign))
    return LinearProbe.fit(x, y)


def fit_classifier(progress: bool = False) -> LinearProbe:
    """Fit the classifier on the gate data's ``fit`` split (harmful = 1, benign = 0)."""
    import torch

    from steerboard.methods.prompt_gate import embed_prompts

    harmful, benign = gate_data("fit")
    x = embed_prompts(harmful + benign, progress=progress)
    y = torch.tensor([1] * len(harmful) + [0] * len(benign))
    return LinearProbe.fit(x, y)


@dataclass
class GatePoint:
    """Gate firing rates on the dev split at one threshold."""

    threshold: float
    tpr: float  # share of dev harmful prompts gated on
    fpr: float  # share of dev benign prompts gated on

    @property
    def youden(self) -> float:
        return self.tpr - self.fpr


def gate_curve(p_harmful: Sequence[float], p_benign: Sequence[float], thresholds: Sequence[float]) -> list[GatePoint]:
    """TPR / FPR of ``p >= threshold`` for each threshold."""
    if not p_harmful or not p_benign:
        raise ValueError("gate_curve needs harmful and benign probabilities")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"gate thresholds must be in [0, 1], got {t}")
    return [
        GatePoint(float(t), mean([float(p >= t) for p in p_harmful]), mean([float(p >= t) for p in p_benign]))
        for t in thresholds
    ]


def choose_gate_threshold(points: Sequence[GatePoint]) -> GatePoint:
    """The dev-split point with the largest Youden J = TPR - FPR; ties go to the higher threshold
    (fewer benign prompts steered)."""
    if not points:
        raise ValueError("choose_gate_threshold needs at least one point")
    return max(points, key=lambda g: (round(g.youden, 9), g.threshold))


DEFAULT_THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def choose_gate(
    engine: Engine,
    layer: int,
    feature: str = DEFAULT_GATE_FEATURE,
    thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    ship: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit (or load) the gate probe on the ``fit`` split and choose its threshold on the ``dev`` split.

    The threshold maximises Youden's J (dev TPR - dev FPR; see :func:`choose_gate_threshold`). No
    evaluation set is read. With ``ship`` the probe is written to the package's ``artifacts/`` folder.

    Returns:
        A JSON-able report: the chosen point, the whole dev curve, split sizes, the probe key and a
        one-line note for presets.
    """
    check_gate_feature(feature)
    if not thresholds:
        raise ValueError("choose_gate needs at least one threshold")
    probe = load_or_fit_probe(engine, layer, feature)
    harmful, benign = gate_data("dev")
    x = prompt_features(engine, harmful + benign, layer, feature, progress=progress, desc="gate dev")
    p = probe.predict_proba(x).tolist()
    ph, pb = p[: len(harmful)], p[len(harmful) :]
    curve = gate_curve(ph, pb, thresholds)
    best = choose_gate_threshold(curve)
    n_fit_h, n_fit_b = (len(v) for v in gate_data("fit"))
    key = probe_key(engine, layer, feature)
    if ship:
        path = shipped_probe_path(engine, layer, feature)
        path.write_text(json.dumps(probe.to_dict()))
    note = (
        f"{best.threshold} chosen on the gate data's dev split (max TPR - FPR; steerboard sae gate --feature "
        f"{feature}): dev harmful TPR {best.tpr:.3f}, dev benign FPR {best.fpr:.3f} over {len(harmful)} harmful / "
        f"{len(benign)} benign dev prompts; probe fitted on {n_fit_h} harmful / {n_fit_b} benign fit prompts "
        f"(layer {layer}, {feature} pooling, key {key})"
    )
    return {
        "layer": layer,
        "feature": feature,
        "probe_key": key,
        "n_fit": {"harmful": n_fit_h, "benign": n_fit_b},
        "n_dev": {"harmful": len(harmful), "benign": len(benign)},
        "chosen": {"threshold": best.threshold, "tpr": round(best.tpr, 4), "fpr": round(best.fpr, 4)},
        "curve": [{"threshold": g.threshold, "tpr": round(g.tpr, 4), "fpr": round(g.fpr, 4)} for g in curve],
        "note": note,
    }


@dataclass
class OutcomePoint:
    """What gating at one threshold does to refusal on the dev split, from per-prompt base / steered verdicts.

    A gated row's reply is exactly the steered reply when the gate fires and the base reply when it does not
    (the gate is decided at prefill from the pre-steering residual, and batching does not change a row), so
    every threshold can be scored from one base run and one ungated run.
    """

    threshold: float
    fire_harmful: float
    fire_benign: float
    refusal_harmful: float  # gated
    refusal_benign: float  # gated
    kept: float  # (gated - base) / (ungated - base) on harmful prompts; NaN when steering gains nothing
    benign_delta: float  # gated - base on benign prompts


def _gated_rate(p: Sequence[float], base: Sequence[int | None], steered: Sequence[int | None], t: float) -> float:
    vals = [(s if pi >= t else b) for pi, b, s in zip(p, base, steered)]
    ok = [float(v) for v in vals if v is not None]
    return mean(ok) if ok else float("nan")


def outcome_curve(
    p_harmful: Sequence[float],
    p_benign: Sequence[float],
    base_harmful: Sequence[int | None],
    base_benign: Sequence[int | None],
    steered_harmful: Sequence[int | None],
    steered_benign: Sequence[int | None],
    thresholds: Sequence[float],
) -> list[OutcomePoint]:
    """Gated refusal, kept share of the gain and benign delta at each threshold (refusal flags: 1/0/None=error)."""
    if not (len(p_harmful) == len(base_harmful) == len(steered_harmful)) or not (
        len(p_benign) == len(base_benign) == len(steered_benign)
    ):
        raise ValueError("outcome_curve: probabilities and flags must line up prompt by prompt")
    base_h = _gated_rate(p_harmful, base_harmful, steered_harmful, 2.0)
    base_b = _gated_rate(p_benign, base_benign, steered_benign, 2.0)
    full_h = _gated_rate(p_harmful, base_harmful, steered_harmful, -1.0)
    out = []
    for g in gate_curve(p_harmful, p_benign, thresholds):
        rh = _gated_rate(p_harmful, base_harmful, steered_harmful, g.threshold)
        rb = _gated_rate(p_benign, base_benign, steered_benign, g.threshold)
        gain = full_h - base_h
        out.append(OutcomePoint(g.threshold, g.tpr, g.fpr, rh, rb, (rh - base_h) / gain if gain > 0 else float("nan"),
                                rb - base_b))
    return out


def choose_outcome_threshold(points: Sequence[OutcomePoint], benign_budget: float = 0.10) -> OutcomePoint:
    """The threshold keeping the most of the refusal gain while benign refusal rises by at most ``benign_budget``
    (the conditional-steering target, applied to the dev split); ties go to the higher threshold. When no
    threshold meets the budget, the one with the smallest benign rise."""
    if not points:
        raise ValueError("choose_outcome_threshold needs at least one point")
    ok = [g for g in points if g.benign_delta <= benign_budget + 1e-9 and g.kept == g.kept]
    if ok:
        return max(ok, key=lambda g: (round(g.kept, 9), g.threshold))
    return min(points, key=lambda g: (round(g.benign_delta, 9), -g.threshold))


def choose_gate_by_outcome(
    engine: Engine,
    method: Any,
    layer: int,
    feature: str = DEFAULT_GATE_FEATURE,
    thresholds: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    benign_budget: float = 0.10,
    max_tokens: int = 48,
    judge: str = "embed",
    progress: bool = True,
    gate: str = "probe",
) -> dict[str, Any]:
    """Choose ``method``'s gate threshold from its effect on the dev split (no evaluation set is read).

    ``gate`` is ``probe`` (the hooked layer's prompt residual, pooled by ``feature``), ``classifier``
    (the prompt-text classifier of :mod:`steerboard.methods.prompt_gate`) or ``both``
    (:func:`combine_gate_scores` of the two).

    ``method`` is a prepared, *ungated* steering method. The gate data's dev prompts are generated greedily
    with the base model and with ``method`` ungated, judged, and every threshold is scored exactly from those
    two runs (:class:`OutcomePoint`); the threshold keeping the most refusal gain on dev harmful prompts
    while dev benign refusal rises by at most ``benign_budget`` wins (:func:`choose_outcome_threshold`).
    """
    from steerboard.engine import GenerationRequest

    check_gate_feature(feature)
    if getattr(method.resolved, "gate", "none") != "none":
        raise ValueError("choose_gate_by_outcome needs the method ungated (gate=none)")
    harmful, benign = gate_data("dev")
    prompts = harmful + benign
    p, key, about = gate_scores(engine, prompts, gate, layer, feature, progress=progress)
    reqs = [GenerationRequest(input_ids=prompt_ids(engine, q), max_new_tokens=max_tokens) for q in prompts]
    base = judge_refusal_flags(prompts, [r.text for r in engine.generate(reqs, progress=progress)], judge=judge)
    steered = judge_refusal_flags(
        prompts, [r.text for r in engine.generate(reqs, intervention=method.intervention(), progress=progress)], judge=judge
    )
    nh = len(harmful)
    curve = outcome_curve(p[:nh], p[nh:], base[:nh], base[nh:], steered[:nh], steered[nh:], thresholds)
    best = choose_outcome_threshold(curve, benign_budget)
    rates = {
        "base": {"harmful": _gated_rate(p[:nh], base[:nh], steered[:nh], 2.0),
                 "benign": _gated_rate(p[nh:], base[nh:], steered[nh:], 2.0)},
        "ungated": {"harmful": _gated_rate(p[:nh], base[:nh], steered[:nh], -1.0),
                    "benign": _gated_rate(p[nh:], base[nh:], steered[nh:], -1.0)},
    }
    n_fit_h, n_fit_b = (len(v) for v in gate_data("fit"))
    note = (
        f"{best.threshold} chosen on the gate data's dev split by outcome (steerboard sae gate --gate {gate} --outcome "
        f"{method.name}, greedy {max_tokens} tokens, {judge} judge): the most kept refusal gain with dev benign "
        f"refusal up at most {benign_budget:+.2f}; at {best.threshold}: gate fires on {best.fire_harmful:.3f} of "
        f"{nh} dev harmful / {best.fire_benign:.3f} of {len(benign)} dev benign prompts, kept {best.kept:.3f} of "
        f"the gain (harmful refusal base {rates['base']['harmful']:.3f}, ungated {rates['ungated']['harmful']:.3f}, "
        f"gated {best.refusal_harmful:.3f}), "
        f"benign refusal {best.benign_delta:+.3f}; {gate} fitted on {n_fit_h} harmful / {n_fit_b} benign fit prompts "
        f"({about}, key {key})"
    )
    return {
        "gate": gate,
        "layer": layer,
        "feature": feature,
        "method": method.name,
        "probe_key": key,
        "rule": f"max kept gain s.t. dev benign refusal delta <= {benign_budget}",
        "n_dev": {"harmful": nh, "benign": len(benign)},
        **{k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in rates.items()},
        "chosen": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(best).items()},
        "curve": [{k: round(v, 4) for k, v in vars(g).items()} for g in curve],
        "note": note,
    }


def gate_scores(
    engine: Engine, prompts: Sequence[str], gate: str, layer: int, feature: str = DEFAULT_GATE_FEATURE,
    progress: bool = False,
) -> tuple[list[float], str, str]:
    """(P(harmful) per prompt, the gate artifact's key, a few words on it) for ``gate`` = probe, classifier or both."""
    if gate == "both":
        pp, kp, ap = gate_scores(engine, prompts, "probe", layer, feature, progress=progress)
        pc, kc, ac = gate_scores(engine, prompts, "classifier", layer, feature, progress=progress)
        return [combine_gate_scores(a, b) for a, b in zip(pp, pc)], f"{kp}+{kc}", f"mean log-odds of probe ({ap}) and {ac}"
    if gate == "classifier":
        from steerboard.methods.prompt_gate import classifier_key, classifier_scores, load_or_fit_classifier

        clf = load_or_fit_classifier(progress=progress)
        return classifier_scores(clf, prompts, progress=progress), classifier_key(), "MiniLM prompt embedding"
    if gate != "probe":
        raise ValueError(f"gate {gate!r} has no scores; valid: probe, classifier, both")
    probe = load_or_fit_probe(engine, layer, feature)
    x = prompt_features(engine, prompts, layer, feature, progress=progress, desc="gate dev")
    return probe.predict_proba(x).tolist(), probe_key(engine, layer, feature), f"layer {layer}, {feature} pooling"


def write_gate_to_preset(path: Path, report: dict[str, Any]) -> None:
    """Set the gate's threshold (and the ``chosen_on`` note) in a preset file: ``gate_threshold`` /
    ``gate_feature`` for the probe, ``classifier_threshold`` for the classifier, ``both_threshold`` for both
    (which uses the probe's ``gate_feature``)."""
    preset = json.loads(path.read_text())
    gate = report.get("gate", "probe")
    if gate in ("classifier", "both"):
        if gate == "both" and preset.get("gate_feature", report["feature"]) != report["feature"]:
            raise ValueError(
                f"{path}: preset gate_feature {preset.get('gate_feature')!r} differs from the pooling the both-gate "
                f"threshold was chosen with ({report['feature']!r})"
            )
        key = PRESET_THRESHOLD_KEYS[gate]
        preset[key] = report["chosen"]["threshold"]
        preset.setdefault("chosen_on", {})[key] = report["note"]
        path.write_text(json.dumps(preset, indent=2) + "\n")
        return
    if int(preset.get("layer", report["layer"])) != int(report["layer"]):
        raise ValueError(f"{path}: preset layer {preset.get('layer')} differs from the gate's layer {report['layer']}")
    out: dict[str, Any] = {}
    for k, v in preset.items():  # keep the key order; gate_feature goes right after gate_threshold
        if k == "gate_feature":
            continue
        out[k] = v
        if k == "gate_threshold":
            out["gate_feature"] = report["feature"]
    out["gate_threshold"] = report["chosen"]["threshold"]
    out.setdefault("gate_feature", report["feature"])
    out.setdefault("chosen_on", {})["gate_threshold"] = report["note"]
    path.write_text(json.dumps(out, indent=2) + "\n")


def distinct_n(text: str, n: int = 2) -> float:
    """Share of distinct word n-grams (1.0 = no repetition); 1.0 for texts shorter than n words."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 if not grams else len(set(grams)) / len(grams)


def is_degenerate(text: str, min_distinct: float = 0.5) -> bool:
    """Repetitive or empty output (steering pushed too hard)."""
    t = text.strip()
    if len(t) < 2:
        return True
    words = t.split()
    if len(words) >= 8 and distinct_n(t, 2) < min_distinct:
        return True
    grams = [t[i : i + 4] for i in range(len(t) - 3)]
    if len(grams) >= 12 and len(set(grams)) / len(grams) < 0.35:  # character loops ("egegegeg...")
        return True
    letters = sum(c.isalpha() for c in t)
    return letters / max(1, len(t)) < 0.4


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else float("nan")


@dataclass
class ScreenResult:
    """Refusal on dev harmful / benign prompts under one intervention, and the share of degenerate text."""

    refusal_harmful: float
    refusal_benign: float
    degenerate: float
    judge_errors: int
    samples: list[tuple[str, str]]

    def score(self, overrefusal_weight: float = 0.5) -> float:
        """What the dev-split choice maximises."""
        return self.refusal_harmful - overrefusal_weight * self.refusal_benign - self.degenerate

    def row(self, overrefusal_weight: float = 0.5) -> dict[str, Any]:
        """One row of a dev-split screening table: the rates rounded to 3 places, the judge errors, the
        :meth:`score` and the first 120 characters of the first kept reply."""
        return {
            "refusal_harmful": round(self.refusal_harmful, 3), "refusal_benign": round(self.refusal_benign, 3),
            "degenerate": round(self.degenerate, 3), "judge_errors": self.judge_errors,
            "score": round(self.score(overrefusal_weight), 3),
            "sample": self.samples[0][1][:120] if self.samples else "",
        }


def judge_refusal_flags(prompts: Sequence[str], responses: Sequence[str], judge: str = "embed") -> list[int | None]:
    """Refusal flags (1 refusal, 0 compliance, None judge error) from the project's refusal judge."""
    from steerboard.scorers.judges import judge_refusals

    return [v.flagged for v in judge_refusals(list(prompts), list(responses), judge=judge)]


def screen(
    engine: Engine,
    intervention: Any,
    harmful: Sequence[str],
    benign: Sequence[str],
    *,
    max_tokens: int = 32,
    judge: str = "embed",
    keep_samples: int = 3,
) -> ScreenResult:
    """Generate greedy replies under ``intervention`` and judge them (dev-split selection)."""
    from steerboard.engine import GenerationRequest

    prompts = list(harmful) + list(benign)
    reqs = [GenerationRequest(input_ids=prompt_ids(engine, p), max_new_tokens=max_tokens) for p in prompts]
    outs = [r.text for r in engine.generate(reqs, intervention=intervention)]
    flags = judge_refusal_flags(prompts, outs, judge=judge)
    nh = len(harmful)

    def rate(fs: list[int | None]) -> float:
        ok = [f for f in fs if f is not None]
        return mean([float(f) for f in ok]) if ok else float("nan")

    return ScreenResult(
        refusal_harmful=rate(flags[:nh]),
        refusal_benign=rate(flags[nh:]),
        degenerate=mean([float(is_degenerate(o)) for o in outs]),
        judge_errors=sum(f is None for f in flags),
        samples=list(zip(prompts[:keep_samples], outs[:keep_samples])),
    )


@dataclass(frozen=True)
class DevScreen:
    """How a steering choice is screened on the dev split (``steerboard actadd fit``, ``steerboard sae
    features``): greedy replies of at most ``max_tokens`` tokens to the first ``n_harmful`` harmful and
    ``n_benign`` benign dev prompts, judged by ``judge``; a choice scores harmful refusal -
    ``overrefusal_weight`` x benign refusal - degenerate share (:meth:`ScreenResult.score`)."""

    n_harmful: int = 24
    n_benign: int = 24
    max_tokens: int = 32
    judge: str = "embed"
    overrefusal_weight: float = 0.5

    def prompts(self) -> tuple[list[str], list[str]]:
        """The dev harmful and the dev benign prompts screened."""
        from steerboard.methods import fitdata

        return fitdata.harmful_prompts("dev")[: self.n_harmful], fitdata.benign_prompts("dev")[: self.n_benign]

    def row(self, engine: Engine, intervention: Any, harmful: Sequence[str], benign: Sequence[str]) -> dict[str, Any]:
        """:func:`screen` under ``intervention`` (None: unsteered), as a table row (:meth:`ScreenResult.row`)."""
        res = screen(engine, intervention, harmful, benign, max_tokens=self.max_tokens, judge=self.judge)
        return res.row(self.overrefusal_weight)

    def chosen_on(self, harmful: Sequence[str], benign: Sequence[str]) -> dict[str, Any]:
        """How a preset's choice was made, for its ``chosen_on`` record."""
        return {
            "split": "dev", "n_harmful": len(harmful), "n_benign": len(benign), "max_tokens": self.max_tokens,
            "judge": self.judge, "score": f"refusal_harmful - {self.overrefusal_weight} * refusal_benign - degenerate",
        }
