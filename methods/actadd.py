"""``actadd/<model>``: a difference-in-means refusal direction added to (or ablated from) the residual stream.

Two direction sources, fitted on the ``fit`` split of :mod:`steerboard.methods.fitdata` (disjoint from
every evaluation set):

* ``responses`` (the shipped preset): **contrastive activation addition** on a response contrast, in the
  manner of Rimsky et al. 2024 (*Steering Llama 2 via Contrastive Activation Addition*): the same harmful
  prompts are followed by a teacher-forced refusal reply and by a compliance reply, the residual is
  averaged over each reply's tokens, and the direction is the mean difference (refusal minus compliance).
  CAA contrasts the two answers of multiple-choice pairs at the answer token; here the contrast is whole
  free-text replies;
* ``prompts`` (Arditi et al. 2024, *Refusal in Language Models Is Mediated by a Single Direction*): mean
  residual at the last prompt token over harmful prompts minus the mean over harmless prompts. Its measured
  effect on the embedded model is in ``docs/steering.md``.

``operation=add`` adds ``coefficient x unit direction`` after decoder block ``layer`` (at the positions
``steer_on`` names); ``operation=ablate`` projects the direction out (``coefficient`` unused).
``gate=probe`` steers only prompts a harmful-prompt probe flags (see :mod:`steerboard.methods.steering`).

``actadd/smollm2-135m`` with no options uses the shipped preset ``presets/actadd/smollm2-135m.json``
(directions for every layer and both sources in ``artifacts/``; source, layer and coefficient chosen on
the dev split by ``steerboard actadd fit``, which reproduces both). On other models give
``-M layer=N -M coefficient=C`` (directions are fitted once and cached by a hash of model, config and
data) or run ``steerboard actadd fit --model M`` and pass ``-M preset=PATH.json``.

Examples::

    inspect eval tasks/xstest.py --model actadd/smollm2-135m
    inspect eval tasks/xstest.py --model actadd/smollm2-135m -M gate=probe
    inspect eval tasks/xstest.py --model actadd/smollm2-135m -M source=prompts -M layer=10 -M coefficient=30
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.base import Method, MethodConfig, sweep_field
from steerboard.methods.steering import (
    GatedSteeringConfig,
    HookSteering,
    SteerOn,
    read_preset,
)

if TYPE_CHECKING:
    import torch

    from steerboard.engine import Engine

PRESET_DIR = Path(__file__).parent / "presets" / "actadd"
ARTIFACT_DIR = Path(__file__).parent / "artifacts"
EMBEDDED_MODEL_NAMES = ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")
SOURCES = ("prompts", "responses")


@dataclass
class ActAddConfig(GatedSteeringConfig):
    """Options of ``actadd/`` (``-M key=value``). Unset options come from the preset.

    Attributes:
        preset: shipped preset name (``smollm2-135m``) or a path to a preset JSON from ``steerboard actadd fit``.
        source: ``prompts`` (harmful minus harmless prompts) or ``responses`` (refusal minus compliance replies).
        layer: decoder block whose residual output is steered.
        coefficient: norm of the added vector (``add``); the residual norm sets the scale.
        operation: ``add`` or ``ablate`` (project the direction out).
        steer_on: ``prompt``, ``generated`` or ``both`` token positions.

    The gate options (``gate``, ``gate_threshold``, ``gate_feature``) are those of
    :class:`~steerboard.methods.steering.GatedSteeringConfig`.
    """

    preset: str | None = None
    source: Literal["prompts", "responses"] | None = None
    layer: int | None = None
    coefficient: float | None = sweep_field(None)
    operation: Literal["add", "ablate"] | None = None
    steer_on: Literal["prompt", "generated", "both"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None:
            read_preset(PRESET_DIR, self.preset)
        self.check_bounds(layer=">= 0")
        if self.coefficient is not None and not math.isfinite(self.coefficient):
            raise ValueError(f"-M coefficient must be a finite number, got {self.coefficient}")


@dataclass
class ResolvedActAdd:
    source: str
    layer: int
    coefficient: float
    operation: str
    steer_on: SteerOn
    gate: str
    gate_threshold: float
    gate_feature: str
    preset: str | None
    artifact: Path | None


def resolve(cfg: ActAddConfig, model_name: str) -> ResolvedActAdd:
    """Merge preset and options; validate what needs no weights.

    Raises:
        ValueError: a required choice is missing (names what to pass).
    """
    name = cfg.preset
    if name is None and model_name in EMBEDDED_MODEL_NAMES:
        name = "smollm2-135m"
    p = read_preset(PRESET_DIR, name) if name else {}
    source = cfg.source or p.get("source")
    layer = cfg.layer if cfg.layer is not None else p.get("layer")
    coef = cfg.coefficient if cfg.coefficient is not None else p.get("coefficient")
    operation = cfg.operation or p.get("operation", "add")
    missing = [k for k, v in (("source", source), ("layer", layer)) if v is None]
    if coef is None and operation == "add":
        missing.append("coefficient")
    if missing:
        raise ValueError(
            f"actadd/{model_name}: no preset for this model; give {', '.join('-M ' + m + '=...' for m in missing)} "
            f"(valid sources: {', '.join(SOURCES)}), or choose them on the dev split with "
            f"`steerboard actadd fit --model {model_name}` and pass -M preset=PATH.json"
        )
    artifact = None
    if p.get("artifact") and (cfg.preset is not None or name is not None):
        artifact = (ARTIFACT_DIR / p["artifact"]) if not Path(p["artifact"]).is_absolute() else Path(p["artifact"])
    gate, gate_threshold, gate_feature = cfg.resolve_gate(p)
    return ResolvedActAdd(
        source=str(source),
        layer=int(layer),  # type: ignore[arg-type]
        coefficient=float(coef) if coef is not None else 0.0,
        operation=operation,
        steer_on=cfg.steer_on or p.get("steer_on", "both"),
        gate=gate,
        gate_threshold=gate_threshold,
        gate_feature=gate_feature,
        preset=name,
        artifact=artifact,
    )


# ---------------------------------------------------------------------- fitting directions
def fit_directions(engine: Engine, progress: bool = False) -> dict[str, torch.Tensor]:
    """Unit difference-in-means directions for every decoder block and both sources.

    Returns:
        ``{"prompts": [L, d], "responses": [L, d], "prompts_norm": [L], "responses_norm": [L],
        "resid_norm": [L]}`` (raw difference norms, and the mean residual norm of the fit prompts
        at their last token, which sets the coefficient scale).
    """
    import torch

    from steerboard.methods import fitdata
    from steerboard.methods.steering import pair_ids, prompt_ids

    harmful = fitdata.harmful_prompts("fit")
    benign = fitdata.benign_prompts("fit")
    n_layers = len(engine.decoder_layers())
    layers = list(range(1, n_layers + 1))  # hidden_states[i + 1] = output of block i

    def last_token_means(prompts: list[str]) -> torch.Tensor:
        hs = engine.hidden_states([prompt_ids(engine, p) for p in prompts], layers)
        return torch.stack([torch.stack([h[layer][-1] for layer in layers]) for h in hs]).mean(0)  # [L, d]

    h_harm = last_token_means(harmful)
    h_benign = last_token_means(benign)

    def response_means(responses: list[str]) -> torch.Tensor:
        pairs = [pair_ids(engine, p, r) for p, r in zip(harmful, responses)]
        hs = engine.hidden_states([p + r for p, r in pairs], layers)
        per = [torch.stack([h[layer][-len(r) :].mean(0) for layer in layers]) for h, (_, r) in zip(hs, pairs)]
        return torch.stack(per).mean(0)

    ref = response_means(fitdata.paired_responses(harmful, fitdata.refusal_responses()))
    com = response_means(fitdata.paired_responses(harmful, fitdata.compliance_responses()))
    out: dict[str, torch.Tensor] = {}
    for name, diff in (("prompts", h_harm - h_benign), ("responses", ref - com)):
        norm = diff.norm(dim=-1)
        out[name] = (diff / norm.clamp(min=1e-8)[:, None]).contiguous()
        out[f"{name}_norm"] = norm.contiguous()
    out["resid_norm"] = ((h_harm.norm(dim=-1) + h_benign.norm(dim=-1)) / 2).contiguous()
    return out


def load_directions(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


def save_directions(dirs: dict[str, torch.Tensor], path: Path, meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in dirs.items()}, str(tmp), metadata=meta or {})
    tmp.replace(path)


class ActAddSteerer:
    """Adds ``coefficient x direction`` or projects the direction out."""

    def __init__(self, direction: torch.Tensor, coefficient: float, operation: str) -> None:
        self.direction = direction.float()
        self.coefficient = coefficient
        self.operation = operation
        self.vector = self.direction * coefficient

    def apply(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        d = self.direction.to(device=x.device, dtype=x.dtype)
        if self.operation == "ablate":
            return x - mask * (x @ d)[..., None] * d
        return x + mask * self.vector.to(device=x.device, dtype=x.dtype)


class ActAddMethod(HookSteering, Method):
    """Difference-in-means refusal direction steering (optionally gated per request)."""

    name = "actadd"
    config_class = ActAddConfig

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        assert isinstance(config, ActAddConfig)
        self.resolved = resolve(config, model_name)

    def directions(self, engine: Engine) -> dict[str, torch.Tensor]:
        """Shipped directions (preset artifact) or fitted ones, cached by a hash of (model, data)."""
        from steerboard.methods import fitdata

        if self.resolved.artifact is not None:
            if not self.resolved.artifact.is_file():
                raise FileNotFoundError(f"preset direction file {self.resolved.artifact} is missing")
            return load_directions(self.resolved.artifact)
        data_key = json.dumps(
            ["actadd-directions-v1", fitdata.harmful_prompts("fit"), fitdata.benign_prompts("fit"),
             fitdata.refusal_responses(), fitdata.compliance_responses()]
        )
        import hashlib

        path = self.artifact_path(engine, hashlib.sha256(data_key.encode()).hexdigest(), suffix=".safetensors")
        self.direction_file = path
        if not path.is_file():
            save_directions(fit_directions(engine), path)
        return load_directions(path)

    def prepare(self, engine: Engine) -> None:
        r = self.resolved
        n_layers = self.layer_count(engine)
        dirs = self.directions(engine)
        table = dirs[r.source]
        hidden = int(getattr(engine.model.config, "hidden_size", table.shape[-1]))
        if table.shape != (n_layers, hidden):
            raise ValueError(
                f"direction table has shape {tuple(table.shape)}, expected ({n_layers}, {hidden}): "
                "it was fitted on a different model"
            )
        self.bind_steering(engine, ActAddSteerer(table[r.layer].to(engine.device), r.coefficient, r.operation), r.layer)

    def describe(self) -> dict[str, Any]:
        from steerboard.methods.base import file_sha256

        d = super().describe()
        d["resolved"] = {
            k: (str(v) if isinstance(v, Path) else v) for k, v in self.resolved.__dict__.items() if k != "artifact"
        }
        path = self.resolved.artifact or getattr(self, "direction_file", None)
        if path is not None:
            d["artifacts"]["direction"] = {"path": str(path), "sha256": file_sha256(path)}
        d["artifacts"].update(self.gate_artifacts())
        return d


def __getattr__(name: str) -> Any:
    """``fit_and_choose`` moved to :mod:`steerboard.methods.training.actadd`; it still resolves here (that module
    is imported only when asked for)."""
    if name == "fit_and_choose":
        from steerboard.methods.training import actadd

        return actadd.fit_and_choose
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
