"""``steerboard sae train|features``: train the embedded model's SAE and find refusal features.

Heavy imports happen inside the command functions (``steerboard --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerboard.cli import add_command_group

GATED_METHODS: dict[str, str] = {
    "sae": "steerboard.methods.sae:SAEMethod",
    "actadd": "steerboard.methods.actadd:ActAddMethod",
}
"""The methods whose gate threshold ``steerboard sae gate --outcome`` chooses (their configs are
:class:`~steerboard.methods.steering.GatedSteeringConfig`s)."""


def ungated_method(name: str, model: str) -> Any:
    """``GATED_METHODS[name]`` built with ``gate=none`` for ``model`` (validates its options; loads nothing)."""
    module, _, attr = GATED_METHODS[name].partition(":")
    method_cls = getattr(importlib.import_module(module), attr)
    return method_cls(method_cls.config_class.from_dict({"gate": "none"}), model)


def _model_command(
    sub: argparse._SubParsersAction, name: str, help: str,  # type: ignore[type-arg]
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """The sub-command ``name`` that runs ``func(args)`` on ``--model``, which every command here takes."""
    cmd = sub.add_parser(name, help=help)
    cmd.add_argument("--model", default="smollm2-135m", help="alias, local dir or hub id (default smollm2-135m)")
    cmd.set_defaults(func=func)
    return cmd


def _add_dev_screen_options(cmd: argparse.ArgumentParser, n_harmful: int) -> None:
    """The dev-split screen's options, read by :func:`_dev_screen`."""
    cmd.add_argument("--dev-harmful", type=int, default=n_harmful,
                     help=f"dev harmful prompts per screen (default {n_harmful})")
    cmd.add_argument("--dev-benign", type=int, default=24, help="dev benign prompts per screen (over-refusal; default 24)")
    cmd.add_argument("--max-tokens", type=int, default=32, help="generated tokens per screen reply (default 32)")
    cmd.add_argument("--judge", default="embed", help="refusal judge: embed (default) or strmatch")
    cmd.add_argument("--overrefusal-weight", type=float, default=0.5,
                     help="score = harmful refusal - w * benign refusal - degenerate share (default w=0.5)")


def _dev_screen(args: argparse.Namespace) -> Any:
    """The :class:`~steerboard.methods.training.gates.DevScreen` the options of :func:`_add_dev_screen_options` give."""
    from steerboard.methods.training.gates import DevScreen

    return DevScreen(n_harmful=args.dev_harmful, n_benign=args.dev_benign, max_tokens=args.max_tokens,
                     judge=args.judge, overrefusal_weight=args.overrefusal_weight)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = add_command_group(subparsers, "sae", "train an SAE / discover refusal features (sae/ method)")

    tr = _model_command(
        sub, "train", "train a Top-k SAE on a model's residual stream (reproduces the shipped one)", _train
    )
    tr.add_argument("--layer", type=int, default=8, help="decoder block whose residual output is read (default 8)")
    tr.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    tr.add_argument("--expansion", type=int, default=8, help="latents = expansion x hidden size (default 8)")
    tr.add_argument("--epochs", type=int, default=2, help="passes over the collected activations (default 2)")
    tr.add_argument("--batch-size", type=int, default=1024, help="tokens per step (default 1024)")
    tr.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--max-tokens", type=int, default=40000, help="activation tokens collected (default 40000)")
    tr.add_argument("--activation-cache", type=Path, default=None, help="save/load the collected activations here")
    tr.add_argument("--out", type=Path, default=None, help="output directory (default: the shipped artifact folder)")

    fe = _model_command(
        sub, "features",
        "find refusal latents (active on >= 2 refusal tokens) and screen them by clamping on the dev split",
        _features,
    )
    fe.add_argument("--sae-path", type=Path, default=None, help="SAELens SAE dir (default: the shipped SAE)")
    fe.add_argument("--layer", type=int, default=None, help="hook layer (default: from the SAE's hook_name)")
    fe.add_argument("--prompt", default=None, help="harmful prompt (default: the first fit-split harmful prompt)")
    fe.add_argument("--response", default=None,
                    help="refusal text to teacher-force (default: the model's own reply if it refuses, else a team refusal)")
    fe.add_argument("--min-tokens", type=int, default=2, help="latent must be active on >= this many refusal tokens")
    fe.add_argument("--max-prerank", type=int, default=48, help="candidates pre-ranked (largest mean activation first)")
    fe.add_argument("--rank-prompts", type=int, default=6, help="dev harmful prompts used by the pre-rank")
    fe.add_argument("--candidates", type=int, default=4, help="candidates screened by generation (after a cheap pre-rank)")
    fe.add_argument("--strengths", default="", help="clamp strengths to screen, comma separated (default: scaled to the SAE)")
    _add_dev_screen_options(fe, n_harmful=32)
    fe.add_argument("--preset-out", type=Path, default=None, help="write the preset here (default: presets/<model>.json)")
    fe.add_argument("--report", type=Path, default=None, help="also write the full screening table as JSON")

    ga = _model_command(
        sub, "gate", "fit the conditional-steering gate probe (fit split) and choose its threshold on the dev split",
        _gate,
    )
    ga.add_argument("--layer", type=int, default=8, help="hooked layer whose prompt residual the probe reads (default 8)")
    ga.add_argument("--feature", default="mean_last", help="pooling: mean, last or mean_last (default mean_last)")
    ga.add_argument("--gate", default="probe", choices=["probe", "classifier", "both"],
                    help="probe (residual of the hooked layer, default), classifier (MiniLM prompt-text classifier) "
                         "or both (mean of the two's log-odds)")
    ga.add_argument("--thresholds", default="", help="thresholds to try, comma separated (default 0.05..0.95 step 0.05)")
    ga.add_argument("--ship", action="store_true", help="write the probe into the package's artifacts/ folder")
    ga.add_argument("--write-presets", type=Path, nargs="*", default=None,
                    help="preset JSON files to update with the chosen threshold and pooling")
    ga.add_argument("--outcome", default=None, choices=sorted(GATED_METHODS),
                    help="choose the threshold for this method from its effect on the dev split (base and ungated "
                         "replies judged; most kept refusal gain with dev benign refusal up <= --benign-budget) "
                         "instead of the gate's own TPR - FPR")
    ga.add_argument("--benign-budget", type=float, default=0.10, help="allowed rise of dev benign refusal (default 0.10)")
    ga.add_argument("--max-tokens", type=int, default=48, help="greedy tokens per dev reply with --outcome (default 48)")
    ga.add_argument("--judge", default="embed", help="refusal judge with --outcome: embed (default) or strmatch")
    add_actadd_parser(subparsers)


def add_actadd_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = add_command_group(subparsers, "actadd", "fit difference-in-means refusal directions (actadd/ method)")
    fit = _model_command(
        sub, "fit",
        "fit both directions for every layer, choose source/layer/coefficient on the dev split, write a preset",
        _actadd_fit,
    )
    fit.add_argument("--layers", default="", help="layers to screen, comma separated (default: ~20-33%% depth)")
    fit.add_argument("--fractions", default="", help="coefficients as fractions of the residual norm (default 0.25,0.4,0.55)")
    fit.add_argument("--sources", default="", help="prompts,responses (default both)")
    _add_dev_screen_options(fit, n_harmful=24)
    fit.add_argument("--out", type=Path, default=None, help="preset path (default: the shipped preset for the embedded model)")
    fit.add_argument("--reuse-directions", action="store_true",
                     help="load the already fitted direction file instead of refitting (re-runs only the dev-split choice)")


def _actadd_fit(args: argparse.Namespace) -> int:
    from steerboard.methods.actadd import SOURCES
    from steerboard.methods.training.actadd import fit_and_choose

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] or None
    bad = [s for s in sources or [] if s not in SOURCES]
    if bad:
        raise ValueError(f"--sources {bad}: valid sources are {', '.join(SOURCES)}")
    res = fit_and_choose(
        args.model,
        layers=[int(x) for x in args.layers.split(",") if x.strip()] or None,
        fractions=[float(x) for x in args.fractions.split(",") if x.strip()] or None,
        sources=sources, dev=_dev_screen(args), out=args.out, reuse_directions=args.reuse_directions,
    )
    print(json.dumps(res, indent=2))
    return 0


def _gate(args: argparse.Namespace) -> int:
    from steerboard.methods.steering import check_gate_feature
    from steerboard.methods.training.gates import (
        DEFAULT_THRESHOLD_GRID,
        choose_gate,
        choose_gate_by_outcome,
        write_gate_to_preset,
    )

    check_gate_feature(args.feature)  # before loading the model
    thresholds = [float(x) for x in args.thresholds.split(",") if x.strip()] or list(DEFAULT_THRESHOLD_GRID)
    bad = [t for t in thresholds if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"--thresholds {bad}: thresholds must be in [0, 1]")
    missing = [str(p) for p in args.write_presets or [] if not p.is_file()]
    if missing:
        raise ValueError(f"--write-presets: no such preset file(s): {', '.join(missing)}")
    if not 0.0 <= args.benign_budget <= 1.0:
        raise ValueError(f"--benign-budget {args.benign_budget}: must be in [0, 1]")
    method = None
    if args.outcome is not None:  # validate the method's options before loading the model
        method = ungated_method(args.outcome, args.model)
        if method.resolved.layer != args.layer:
            raise ValueError(f"--layer {args.layer}: the {args.outcome} preset steers layer {method.resolved.layer}")
    from steerboard.engine import Engine
    from steerboard.models import resolve_model

    if args.gate in ("classifier", "both") and method is None:
        outcomes = " or ".join(f"--outcome {m}" for m in GATED_METHODS)
        raise ValueError(f"--gate {args.gate}: give {outcomes} (its threshold is chosen by outcome)")
    if args.gate == "both" and args.ship:
        raise ValueError("--gate both --ship: the both-gate has no artifact of its own; ship the probe and the classifier")
    engine = Engine.load(str(resolve_model(args.model)))
    if args.gate == "classifier":
        from steerboard.methods.prompt_gate import load_or_fit_classifier, shipped_classifier_path

        clf = load_or_fit_classifier(progress=True)
        if args.ship:
            shipped_classifier_path().write_text(json.dumps(clf.to_dict()))
    elif args.gate == "probe":
        rep = choose_gate(engine, args.layer, args.feature, thresholds, ship=args.ship)
    if method is not None:
        method.prepare(engine)
        rep = choose_gate_by_outcome(engine, method, args.layer, args.feature, thresholds,
                                     benign_budget=args.benign_budget, max_tokens=args.max_tokens, judge=args.judge,
                                     gate=args.gate)
    for path in args.write_presets or []:
        write_gate_to_preset(path, rep)
    print(json.dumps(rep, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from steerboard.methods.base import require_modules
    from steerboard.methods.sae import SAE_MODULES
    from steerboard.methods.training.sae import train_sae

    require_modules(SAE_MODULES, "steerboard sae train")  # before the model loads

    rep = train_sae(
        args.model, layer=args.layer, k=args.k, expansion=args.expansion, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, out_dir=args.out, seed=args.seed, max_tokens=args.max_tokens,
        activation_cache=args.activation_cache,
    )
    print(json.dumps(rep.to_dict(), indent=2))
    return 0


def _features(args: argparse.Namespace) -> int:
    from steerboard.methods.base import require_modules
    from steerboard.methods.sae import SAE_MODULES
    from steerboard.methods.training.sae import discover

    require_modules(SAE_MODULES, "steerboard sae features")  # before the model loads

    strengths = [float(s) for s in args.strengths.split(",") if s.strip()] or None
    res = discover(
        args.model, sae_path=args.sae_path, layer=args.layer, prompt=args.prompt, response=args.response,
        min_tokens=args.min_tokens, n_candidates=args.candidates, strengths=strengths,
        dev=_dev_screen(args), preset_out=args.preset_out, report=args.report,
        max_prerank=args.max_prerank, n_rank_prompts=args.rank_prompts,
    )
    print(json.dumps(res, indent=2))
    return 0
