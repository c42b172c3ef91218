"""``sae/<model>``: refusal steering with a sparse autoencoder, after O'Brien et al. 2024 (arXiv 2411.11296).

An SAE in SAELens format hooks the residual stream after decoder block ``layer``. Modes:

* ``clamp`` (the paper): encode the residual, set the chosen latent(s) to the strength, decode, and
  add ``decode(clamped) - decode(original)`` to the residual, so the SAE's reconstruction error is kept
  (with a linear decoder this is ``sum_f (s_f - a_f) * W_dec[f]``);
* ``add``: add ``s_f * W_dec[f]`` for each chosen latent.

``steer_on`` picks prompt tokens, generated tokens or both. ``gate=probe`` is conditional steering
(the paper's future work): a logistic probe on the prompt's residual at the hook layer (mean over the
user span and last prompt token, ``gate_feature``), fitted on the gate data's ``fit`` split
(:func:`steerboard.methods.fitdata.gate_harmful_prompts` / ``gate_benign_prompts``), decides per request at
prefill whether that row is steered (``gate_threshold``, chosen on the dev split by ``steerboard sae gate``);
a request's ``meta["steer_gate"]`` (bool) overrides it. ``gate=classifier`` decides from the prompt text
instead (:mod:`steerboard.methods.prompt_gate`), and ``gate=both`` from the mean of the two's log-odds
(``both_threshold``).

Presets (``-M preset=NAME``, files in ``presets/``): ``smollm2-135m`` (the default on the embedded
model: the shipped Top-k SAE on layer 8 and the feature/strength chosen on the dev split by
``steerboard sae features``) and ``paper-phi3`` (Phi-3 Mini, feature 22373 clamped to 12 (or 10); the
paper's SAE is not public, so ``-M sae_path=DIR`` is required).

Examples::

    inspect eval tasks/xstest.py --model sae/smollm2-135m
    inspect eval tasks/xstest.py --model sae/smollm2-135m -M gate=probe
    inspect eval tasks/xstest.py --model sae/smollm2-135m -M features=123,456 -M strengths=40,20 -M mode=add
    inspect eval tasks/xstest.py --model sae/microsoft/Phi-3-mini-4k-instruct -M preset=paper-phi3 -M sae_path=/my/sae

Training (``steerboard sae train``) and feature discovery (``steerboard sae features``) live in
:mod:`steerboard.methods.training.sae`; this module loads what they write.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.base import Method, MethodConfig, detail_field, sweep_field
from steerboard.methods.steering import (
    GatedSteeringConfig,
    HookSteering,
    SteerOn,
)

if TYPE_CHECKING:
    import torch

    from steerboard.engine import Engine
    from steerboard.resources import ModelShape

logger = logging.getLogger(__name__)

SAE_MODULES = {"sae_lens": "sae"}
"""What ``sae/`` and ``steerboard sae train|features`` import (the ``sae`` extra)."""

PRESET_DIR = Path(__file__).parent / "presets" / "sae"
ARTIFACT_DIR = Path(__file__).parent / "artifacts"
DEFAULT_PRESET = "smollm2-135m"
DEFAULT_ARTIFACT = "smollm2-135m-l8-topk32"  # the shipped SAE (``steerboard sae train`` defaults)
# model names for which sae/ with no options uses the embedded preset
EMBEDDED_MODEL_NAMES = ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")


# ---------------------------------------------------------------------- presets
def preset_names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset's settings: a shipped preset name, or a path to a preset JSON file.

    Raises:
        ValueError: unknown preset (lists the valid ones).
    """
    from steerboard.methods.steering import read_preset

    return read_preset(PRESET_DIR, name)


def preset_models() -> dict[str, str]:
    """Shipped preset name -> the model it is for (its ``model`` field)."""
    return {name: str(load_preset(name).get("model", "")) for name in preset_names()}


def _no_preset_message(model_name: str) -> str:
    """The one-line error for ``sae/<model>`` with no SAE named (no -M sae_path/release/preset)."""
    models = preset_models()
    own = [name for name, model in models.items() if model == model_name]
    if own:
        return (f"sae/{model_name}: preset {own[0]!r} is for this model and ships no SAE: give -M preset={own[0]} "
                "-M sae_path=DIR (an SAELens SAE; -M layer=N if its cfg.json names no hook)")
    supply = (
        "-M sae_path=DIR (an SAELens SAE; with -M layer=N if its cfg.json names no hook, and "
        "-M features=I,... -M strengths=S,... to choose what to steer) or -M release=... -M sae_id=... (SAELens hub)"
    )
    shipped = ", ".join(f"{model} (-M preset={name})" for name, model in models.items())
    return (f"sae/{model_name}: no shipped SAE preset for {model_name!r} (presets exist for {shipped}); "
            f"supply an SAE with {supply}")


def _read_sae_cfg(path: Path) -> dict[str, Any]:
    cfg = path / "cfg.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} is not an SAELens SAE directory (no cfg.json); give -M sae_path=DIR")
    return json.loads(cfg.read_text())


@dataclass
class SAEConfig(GatedSteeringConfig):
    """Options of ``sae/`` (``-M key=value``). Unset options come from the preset.

    Attributes:
        preset: a shipped preset (``smollm2-135m``, ``paper-phi3``); default ``smollm2-135m`` on the
            embedded model when no SAE is named.
        sae_path: a local SAELens SAE directory (``cfg.json`` + ``sae_weights.safetensors``).
        release: SAELens release name for ``SAE.from_pretrained`` (with ``sae_id``; needs the hub).
        sae_id: SAE id within ``release``.
        layer: decoder block whose residual output is steered (default: the SAE's ``hook_name``).
        features: latent indices to steer, comma-separated decimal integers (``-M features=012,7`` is
            ``[12, 7]``; see :class:`~steerboard.methods.base.MethodConfig` on how ``-M`` text is parsed).
        strengths: clamp values (``clamp``) or coefficients (``add``); one per feature, or one for all.
        mode: ``clamp`` or ``add``.
        steer_on: ``prompt``, ``generated`` or ``both`` token positions.

    The gate options (``gate``, ``gate_threshold``, ``gate_feature``) are those of
    :class:`~steerboard.methods.steering.GatedSteeringConfig`.
    """

    preset: str | None = None
    sae_path: str | None = detail_field(None)
    release: str | None = detail_field(None)
    sae_id: str | None = detail_field(None)
    layer: int | None = None
    features: list[int] | None = None
    strengths: list[float] | None = sweep_field(None)
    mode: Literal["clamp", "add"] | None = None
    steer_on: Literal["prompt", "generated", "both"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None:
            load_preset(self.preset)  # raises on an unknown name
        if (self.release is None) != (self.sae_id is None):
            raise ValueError("-M release and -M sae_id go together (SAELens SAE.from_pretrained(release, sae_id))")
        if self.sae_path is not None and self.release is not None:
            raise ValueError("give either -M sae_path (a local SAE) or -M release/sae_id (hub), not both")
        self.check_bounds(layer=">= 0")
        if self.features is not None:
            if not self.features:
                raise ValueError("-M features is empty; give latent indices, e.g. features=123,456")
            if any(f < 0 for f in self.features):
                raise ValueError(f"-M features must be >= 0, got {self.features}")
            if len(set(self.features)) != len(self.features):
                raise ValueError(f"-M features has duplicates: {self.features}")
        if self.strengths is not None:
            if not self.strengths or any(not math.isfinite(s) for s in self.strengths):
                raise ValueError(f"-M strengths must be finite numbers, got {self.strengths}")
            if self.features is not None and len(self.strengths) not in (1, len(self.features)):
                raise ValueError(
                    f"-M strengths has {len(self.strengths)} values for {len(self.features)} features; "
                    "give one per feature or a single value for all"
                )


@dataclass
class ResolvedSAE:
    """The settings ``sae/`` runs with after merging the preset and ``-M`` options."""

    sae_path: Path | None
    release: str | None
    sae_id: str | None
    layer: int
    features: list[int]
    strengths: list[float]
    mode: str
    steer_on: SteerOn
    gate: str
    gate_threshold: float
    gate_feature: str
    preset: str | None
    d_sae: int | None = None
    d_in: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _layer_from_hook(hook_name: str | None) -> int | None:
    """``blocks.8.hook_resid_post`` / ``model.layers.8`` -> 8."""
    if not hook_name:
        return None
    import re

    m = re.search(r"(?:blocks|layers|h)\.(\d+)", hook_name)
    return int(m.group(1)) if m else None


def resolve(cfg: SAEConfig, model_name: str) -> ResolvedSAE:
    """Merge preset + options and validate everything that needs no model weights.

    Raises:
        ValueError: no SAE named, missing preset requirement, feature index out of range, etc.
        FileNotFoundError: ``sae_path`` is not an SAE directory.
    """
    preset_name = cfg.preset
    if preset_name is None and cfg.sae_path is None and cfg.release is None:
        if model_name in EMBEDDED_MODEL_NAMES:
            preset_name = DEFAULT_PRESET
        else:
            raise ValueError(_no_preset_message(model_name))
    p: dict[str, Any] = load_preset(preset_name) if preset_name else {}
    sae_path: Path | None = None
    if cfg.sae_path is not None:
        sae_path = Path(cfg.sae_path).expanduser()
    elif cfg.release is None and p.get("artifact"):
        sae_path = ARTIFACT_DIR / p["artifact"]
    elif cfg.release is None and p.get("sae_path_required"):
        raise ValueError(
            f"preset {preset_name!r} needs -M sae_path=DIR: {p.get('sae_note', 'its SAE is not shipped')}"
        )
    if sae_path is not None and not sae_path.exists():
        raise FileNotFoundError(f"-M sae_path={str(sae_path)!r} does not exist (an SAELens SAE directory is needed)")
    sae_cfg = _read_sae_cfg(sae_path) if sae_path is not None else {}
    meta = sae_cfg.get("metadata") or {}
    layer = cfg.layer if cfg.layer is not None else p.get("layer")
    if layer is None:
        layer = _layer_from_hook(meta.get("hook_name") or sae_cfg.get("hook_name"))
    if layer is None:
        raise ValueError("cannot tell which layer the SAE reads: give -M layer=N")
    features = list(cfg.features) if cfg.features is not None else list(p.get("features") or [])
    if not features:
        raise ValueError("no features to steer: give -M features=I[,J...] (or a preset that has them)")
    strengths = list(cfg.strengths) if cfg.strengths is not None else list(p.get("strengths") or [])
    if cfg.features is not None and cfg.strengths is None and p.get("features") != list(cfg.features):
        raise ValueError("-M features given without -M strengths: give the clamp value(s), e.g. strengths=40")
    if not strengths:
        raise ValueError("no strengths: give -M strengths=S[,S...]")
    if len(strengths) == 1:
        strengths = strengths * len(features)
    if len(strengths) != len(features):
        raise ValueError(f"{len(strengths)} strengths for {len(features)} features")
    d_sae = sae_cfg.get("d_sae")
    if d_sae is not None:
        bad = [f for f in features if f >= int(d_sae)]
        if bad:
            raise ValueError(f"feature index {bad} out of range: this SAE has {d_sae} latents (0..{int(d_sae) - 1})")
    gate, gate_threshold, gate_feature = cfg.resolve_gate(p)
    return ResolvedSAE(
        sae_path=sae_path,
        release=cfg.release,
        sae_id=cfg.sae_id,
        layer=int(layer),
        features=[int(f) for f in features],
        strengths=[float(s) for s in strengths],
        mode=cfg.mode or p.get("mode", "clamp"),
        steer_on=cfg.steer_on or p.get("steer_on", "both"),
        gate=gate,
        gate_threshold=gate_threshold,
        gate_feature=gate_feature,
        preset=preset_name,
        d_sae=int(d_sae) if d_sae is not None else None,
        d_in=int(sae_cfg["d_in"]) if "d_in" in sae_cfg else None,
        extra={k: v for k, v in p.items() if k in ("model", "chosen_on", "notes")},
    )


def load_sae(path: Path | None = None, release: str | None = None, sae_id: str | None = None, device: str = "cpu") -> Any:
    """Load an SAELens SAE from a local directory or the hub, as float32.

    Raises:
        ImportError: sae-lens is not installed (names the extra to install).
    """
    try:
        from sae_lens import SAE
    except ImportError as ex:  # pragma: no cover - depends on the environment
        raise ImportError("sae/ needs sae-lens: pip install 'steerboard[sae]'") from ex
    if path is not None:
        sae = SAE.load_from_disk(str(path), device=device, dtype="float32")
    else:
        sae = SAE.from_pretrained(release, sae_id, device=device, dtype="float32")
    sae.eval()
    for prm in sae.parameters():
        prm.requires_grad_(False)
    return sae


# ---------------------------------------------------------------------- steering
class SAESteerer:
    """Applies clamp/add steering of SAE latents to residual-stream hidden states."""

    def __init__(self, sae: Any, features: Sequence[int], strengths: Sequence[float], mode: str) -> None:
        import torch

        self.sae = sae
        self.mode = mode
        self.features = torch.tensor(list(features), dtype=torch.long)
        w_dec = sae.W_dec.detach().float()
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)  # what SAELens' decode effectively uses
        self.rows = w_dec[self.features]  # [F, d_in]
        self.strengths = torch.tensor(list(strengths), dtype=torch.float32)
        self.add_vector = (self.strengths[:, None] * self.rows).sum(0)  # [d_in]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """Change to add to ``x`` ``[..., d_in]``."""
        if self.mode == "add":
            return self.add_vector.to(device=x.device, dtype=x.dtype).expand_as(x)
        acts = self.sae.encode(x.float())  # [..., d_sae] (top-k applied)
        cur = acts[..., self.features.to(acts.device)]  # [..., F]
        diff = self.strengths.to(acts.device) - cur  # decode is linear: only the change matters
        return (diff @ self.rows.to(acts.device)).to(x.dtype)

    def apply(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + mask * self.delta(x)


class SAEMethod(HookSteering, Method):
    """Clamps or adds SAE latents in the residual stream (optionally gated per request)."""

    name = "sae"
    config_class = SAEConfig

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        assert isinstance(config, SAEConfig)
        self.resolved = resolve(config, model_name)  # validation that needs no weights
        self.sae: Any = None

    @classmethod
    def memory_parts(cls, config: MethodConfig, model: ModelShape) -> dict[str, int]:
        """The SAE's weights in float32: encoder and decoder matrices and their biases (sizes from the preset or
        the SAE's ``cfg.json``; 0 when neither states them, e.g. a hub SAE not on disk)."""
        assert isinstance(config, SAEConfig)
        r = resolve(config, model.model_name)
        d_in, d_sae = r.d_in, r.d_sae
        if (d_in is None or d_sae is None) and r.sae_path is not None and (r.sae_path / "cfg.json").is_file():
            cfg = json.loads((r.sae_path / "cfg.json").read_text())
            d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
        n = 0 if d_in is None or d_sae is None else 4 * (2 * int(d_in) * int(d_sae) + int(d_in) + int(d_sae))
        return {**super().memory_parts(config, model), "sae": n}

    def required_modules(self) -> dict[str, str]:
        """SAELens (the ``sae`` extra), plus what the gate needs."""
        return {**SAE_MODULES, **super().required_modules()}

    def prepare(self, engine: Engine) -> None:
        r = self.resolved
        self.layer_count(engine)  # checks the layer
        hidden = int(getattr(engine.model.config, "hidden_size", 0))
        if r.d_in is not None and r.d_in != hidden:
            raise ValueError(f"SAE d_in={r.d_in} does not match the model's hidden size {hidden}: wrong SAE for this model")
        self.sae = load_sae(r.sae_path, r.release, r.sae_id, device=str(engine.device))
        d_in, d_sae = int(self.sae.cfg.d_in), int(self.sae.cfg.d_sae)
        if d_in != hidden:
            raise ValueError(f"SAE d_in={d_in} does not match the model's hidden size {hidden}: wrong SAE for this model")
        bad = [f for f in r.features if f >= d_sae]
        if bad:
            raise ValueError(f"feature index {bad} out of range: this SAE has {d_sae} latents (0..{d_sae - 1})")
        self.bind_steering(engine, SAESteerer(self.sae, r.features, r.strengths, r.mode), r.layer)

    def describe(self) -> dict[str, Any]:
        from steerboard.methods.base import file_sha256

        r = self.resolved
        d = super().describe()
        d["resolved"] = {
            "preset": r.preset, "sae_path": str(r.sae_path) if r.sae_path else None, "release": r.release,
            "sae_id": r.sae_id, "layer": r.layer, "features": r.features, "strengths": r.strengths,
            "mode": r.mode, "steer_on": r.steer_on, "gate": r.gate, "gate_threshold": r.gate_threshold,
            "gate_feature": r.gate_feature,
        }
        if r.preset is not None:
            units = strength_units(load_preset(r.preset))
            if units and list(r.strengths) == [u["strength"] for u in units]:
                d["resolved"]["strength_units"] = units  # clamp as a multiple of the fit data's max activation
        if r.sae_path is not None:
            d["artifacts"]["sae"] = {"path": str(r.sae_path), "sha256": file_sha256(r.sae_path)}
        else:
            d["artifacts"]["sae"] = {"path": f"{r.release}/{r.sae_id}", "sha256": None}
        d["artifacts"].update(self.gate_artifacts())
        return d


# ---------------------------------------------------------------------- strength units


def strength_units(preset: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per feature: clamp strength, the feature's maximum activation on the fit data and their ratio, from a
    preset's ``max_activation`` record (``None`` when the preset has none)."""
    rec = preset.get("max_activation")
    if not rec:
        return None
    out = []
    for f, s in zip(preset.get("features", []), preset.get("strengths", []), strict=False):
        m = rec.get("values", {}).get(str(f))
        out.append({"feature": f, "strength": s, "max_activation_fit": m,
                    "times_max_activation": round(s / m, 3) if m else None})
    return out


_MOVED_TO_TRAINING = frozenset({
    "feature_max_activations", "training_sequences", "TrainReport", "train_sae", "evaluate_sae", "discover",
    "record_max_activation",
})


def __getattr__(name: str) -> Any:
    """The training and discovery names, moved to :mod:`steerboard.methods.training.sae`, still resolve here (that
    module is imported only when one of them is asked for)."""
    if name in _MOVED_TO_TRAINING:
        from steerboard.methods.training import sae

        return getattr(sae, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    if sys.argv[1:2] != ["max-activation"]:
        sys.exit("usage: python -m steerboard.methods.sae max-activation [PRESET] [--write]")
    rest = [a for a in sys.argv[2:] if a != "--write"]
    from steerboard.methods.training.sae import record_max_activation

    print(json.dumps(record_max_activation(rest[0] if rest else "smollm2-135m", "--write" in sys.argv), indent=1))
