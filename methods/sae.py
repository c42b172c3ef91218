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

Training (``steerboard sae train``) and feature discovery (``steerboard sae features``) live here too.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.base import Method, MethodConfig, detail_field, sweep_field
from steerboard.methods.steering import (
    GatedSteeringConfig,
    HookSteering,
    SteerOn,
    gated_intervention,
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
def feature_max_activations(engine: Engine, sae: Any, layer: int, features: Sequence[int]) -> dict[int, float]:
    """Largest activation of each feature over every token of the SAE's fit text (:func:`training_sequences`).

    A clamp strength divided by this is the unit a reader can compare across SAEs and papers ("clamp at
    k times the feature's maximum activation on the fit data").
    """
    import torch

    from steerboard.methods.steering import residuals

    seqs = training_sequences(engine)
    best = torch.full((len(features),), float("-inf"))
    idx = torch.tensor(list(features), dtype=torch.long)
    for i in range(0, len(seqs), 64):
        for h in residuals(engine, seqs[i : i + 64], layer, batch_size=16):
            with torch.no_grad():
                acts = sae.encode(h.float())[:, idx]
            best = torch.maximum(best, acts.max(0).values)
    return {int(f): round(float(v), 4) for f, v in zip(features, best, strict=True)}


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


# ---------------------------------------------------------------------- training (steerboard sae train)
def training_sequences(engine: Engine, ctx_len: int = 128) -> list[list[int]]:
    """Token sequences the shipped SAE is trained on: corpus windows + chat-formatted fit text.

    Chat text: ``fit``-split harmful prompts with a refusal and with a compliance reply, and benign
    prompts with a compliance reply (team-written replies), so refusal-like text is in distribution.
    """
    from steerboard.methods import fitdata

    tok = engine.tokenizer
    seqs: list[list[int]] = []
    for text in fitdata.corpus_texts():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        seqs.extend(ids[i : i + ctx_len] for i in range(0, len(ids) - 16, ctx_len))
    harmful = fitdata.harmful_prompts("fit")
    benign = fitdata.benign_prompts("fit")
    convs = list(zip(harmful, fitdata.paired_responses(harmful, fitdata.refusal_responses())))
    convs += list(zip(harmful, fitdata.paired_responses(harmful[::-1], fitdata.compliance_responses())))
    convs += list(zip(benign, fitdata.paired_responses(benign, fitdata.compliance_responses())))
    for p, r in convs:
        seqs.append(
            engine.chat_ids([{"role": "user", "content": p}, {"role": "assistant", "content": r}], add_generation_prompt=False)
        )
    return seqs


@dataclass
class TrainReport:
    """What ``steerboard sae train`` measured."""

    tokens: int
    epochs: int
    fvu: float
    l0: float
    dead_fraction: float
    seconds_collect: float
    seconds_train: float
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_sae(
    model: str = "smollm2-135m",
    *,
    layer: int = 8,
    k: int = 32,
    expansion: int = 8,
    epochs: int = 2,
    batch_size: int = 1024,
    lr: float = 5e-4,
    out_dir: Path | None = None,
    seed: int = 0,
    holdout: float = 0.05,
    max_tokens: int | None = 40000,
    activation_cache: Path | None = None,
) -> TrainReport:
    """Train a Top-k SAE on ``model``'s residual stream after block ``layer`` and save it (fp16, SAELens format).

    Uses SAELens' ``TopKTrainingSAE`` and ``SAETrainer`` with an in-memory activation iterator: the
    activations are collected once (forward cut at the hooked layer) and shuffled each epoch.
    The decoder starts from normalised, centred activation samples (encoder = decoder transpose), which
    gets a usable dictionary from a small compute budget (the defaults fit a 2-core machine shared with
    other jobs: ~40k tokens, 2 epochs); raise ``max_tokens``/``epochs`` for a better SAE.
    SAELens' ``LanguageModelSAETrainingRunner`` is not used because it loads the model through
    TransformerLens/hub and streams a hub dataset, which does not work offline.
    """
    import torch
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    from steerboard.engine import Engine
    from steerboard.methods.steering import residuals

    torch.manual_seed(seed)
    engine = Engine.load(model)
    t0 = time.perf_counter()
    if activation_cache is not None and Path(activation_cache).is_file():
        acts = torch.load(activation_cache)
    else:
        seqs = training_sequences(engine)
        if max_tokens is not None:  # an evenly spread subset of the sequences (corpus and chat alike)
            step = max(1, round(sum(len(q) for q in seqs) / max_tokens))
            seqs = seqs[::step]
        hs = residuals(engine, seqs, layer, batch_size=16, progress=True, desc="collect activations")
        acts = torch.cat([h[1:] for h in hs])  # drop each sequence's first position (attention-sink outlier)
        if activation_cache is not None:
            torch.save(acts, activation_cache)
    t_collect = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(acts.shape[0], generator=gen)
    n_hold = max(256, int(holdout * acts.shape[0]))
    held, train = acts[perm[:n_hold]], acts[perm[n_hold:]]
    d_in = train.shape[1]
    # scale inputs to mean norm sqrt(d_in) for training (SAELens' "expected_average_only_in"), done here so
    # b_dec can start at the data mean; the factor is folded into the weights before saving
    scale = math.sqrt(d_in) / float(train.norm(dim=-1).mean())
    train = train * scale
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=d_in * expansion, k=k)
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(train.mean(0))
        pick = torch.randperm(train.shape[0], generator=gen)[: cfg.d_sae]
        atoms = train[pick] - train.mean(0)
        if atoms.shape[0] < cfg.d_sae:  # fewer tokens than latents: pad with random directions
            atoms = torch.cat([atoms, torch.randn(cfg.d_sae - atoms.shape[0], d_in, generator=gen)])
        atoms = atoms / atoms.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        sae.W_dec.copy_(atoms * 0.1)  # SAELens' decoder_init_norm
        sae.W_enc.copy_(atoms.T.contiguous())

    def provider() -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(train.shape[0], generator=gen)
            for b in range(0, len(order) - batch_size + 1, batch_size):
                yield train[order[b : b + batch_size]]

    total = epochs * (train.shape[0] // batch_size) * batch_size
    tcfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr / 10,
        lr_warm_up_steps=10,
        lr_decay_steps=max(1, total // batch_size // 5),
        lr_scheduler_name="constant",
        dead_feature_window=max(5, train.shape[0] // batch_size),  # one epoch without firing = dead
        feature_sampling_window=10**9,
    )
    t1 = time.perf_counter()
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    sae = trainer.fit()
    t_train = time.perf_counter() - t1
    sae.fold_activation_norm_scaling_factor(scale)
    sae.fold_W_dec_norm()

    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name.lower())
    out_dir = Path(out_dir or ARTIFACT_DIR / f"{slug}-l{layer}-topk{k}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sae.cfg.metadata.hook_name = engine.layer_module_name(layer)
    sae.cfg.metadata.model_name = engine.source
    sae.cfg.dtype = "float16"
    sae.save_inference_model(out_dir)
    # store weights in fp16 (half the size; loaded back as float32)
    from safetensors.torch import load_file, save_file

    wpath = out_dir / "sae_weights.safetensors"
    save_file({k_: v.half().contiguous() for k_, v in load_file(str(wpath)).items()}, str(wpath))

    inf = load_sae(out_dir)
    fvu, l0, dead = evaluate_sae(inf, held, acts)
    report = TrainReport(
        tokens=int(acts.shape[0]), epochs=epochs, fvu=fvu, l0=l0, dead_fraction=dead,
        seconds_collect=round(t_collect, 1), seconds_train=round(t_train, 1), out_dir=str(out_dir),
    )
    (out_dir / "training_report.json").write_text(
        json.dumps({**report.to_dict(), "out_dir": out_dir.name, "model": engine.source, "layer": layer, "k": k,
                    "d_sae": d_in * expansion, "lr": lr, "batch_size": batch_size, "seed": seed}, indent=2)
    )
    return report


def evaluate_sae(sae: Any, held: torch.Tensor, all_acts: torch.Tensor, batch: int = 4096) -> tuple[float, float, float]:
    """(FVU on ``held``, mean L0 on ``held``, fraction of latents that never fire on ``all_acts``)."""
    import torch

    with torch.no_grad():
        err = 0.0
        l0 = 0.0
        for b in range(0, held.shape[0], batch):
            x = held[b : b + batch]
            a = sae.encode(x)
            err += float(((sae.decode(a) - x) ** 2).sum())
            l0 += float((a != 0).sum())
        var = float(((held - held.mean(0)) ** 2).sum())
        fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool)
        for b in range(0, all_acts.shape[0], batch):
            fired |= (sae.encode(all_acts[b : b + batch]) != 0).any(0)
    return err / var, l0 / held.shape[0], 1.0 - float(fired.float().mean())


# ---------------------------------------------------------------------- feature discovery (steerboard sae features)
def discover(
    model: str = "smollm2-135m",
    *,
    sae_path: Path | None = None,
    layer: int | None = None,
    prompt: str | None = None,
    response: str | None = None,
    min_tokens: int = 2,
    n_candidates: int = 6,
    strengths: list[float] | None = None,
    n_harmful: int = 32,
    n_benign: int = 24,
    max_tokens: int = 32,
    judge: str = "embed",
    overrefusal_weight: float = 0.5,
    preset_out: Path | None = None,
    report: Path | None = None,
    max_prerank: int = 48,
    n_rank_prompts: int = 6,
) -> dict[str, Any]:
    """The paper's feature search, then a dev-split screen; writes the best feature and strength to a preset.

    1. Teacher-force a refusal to one harmful prompt (the model's own reply if the judge calls it a
       refusal, else a team-written refusal) and list latents active on >= ``min_tokens`` reply tokens.
    2. Pre-rank candidates cheaply: the ``max_prerank`` with the largest mean activation on the refusal
       are each clamped (at the middle strength) and scored by the teacher-forced log-probability of a
       refusal opener on ``n_rank_prompts`` dev harmful prompts (one forward pass per candidate). The
       cap keeps this affordable on a shared CPU; raise it to rank every candidate.
    3. Screen the top ``n_candidates`` by generation at each strength on dev harmful and benign prompts,
       judged by the refusal judge, with a degenerate-text check; score = harmful refusal
       - ``overrefusal_weight`` x benign refusal - degenerate share.
    """
    import torch
    from tqdm.auto import tqdm

    from steerboard.engine import Engine, GenerationRequest
    from steerboard.methods import fitdata
    from steerboard.methods.steering import (
        judge_refusal_flags,
        pair_ids,
        prompt_ids,
        residuals,
        screen,
    )

    t0 = time.perf_counter()
    engine = Engine.load(model)
    is_embedded = model in EMBEDDED_MODEL_NAMES
    path = Path(sae_path) if sae_path else ARTIFACT_DIR / DEFAULT_ARTIFACT
    sae_cfg = _read_sae_cfg(path)
    layer = layer if layer is not None else _layer_from_hook((sae_cfg.get("metadata") or {}).get("hook_name"))
    if layer is None:
        raise ValueError("cannot tell the SAE's layer from its cfg.json: give --layer")
    sae = load_sae(path, device=str(engine.device))
    if int(sae.cfg.d_in) != int(engine.model.config.hidden_size):
        raise ValueError(f"SAE d_in={sae.cfg.d_in} != model hidden size {engine.model.config.hidden_size}")
    module = engine.layer_module_name(layer)

    # 1. candidates from one refusal
    prompt = prompt or fitdata.harmful_prompts("fit")[0]
    source = "given"
    if response is None:
        own = engine.generate([GenerationRequest(input_ids=prompt_ids(engine, prompt), max_new_tokens=48)])[0].text
        if judge_refusal_flags([prompt], [own], judge=judge)[0] == 1:
            response, source = own, "model"
        else:
            response, source = fitdata.refusal_responses()[0], "team"
    p_ids, r_ids = pair_ids(engine, prompt, response)
    h = residuals(engine, [p_ids + r_ids], layer)[0][-len(r_ids) :]
    with torch.no_grad():
        acts = sae.encode(h.to(engine.device)).cpu()
    active = (acts > 0).sum(0)
    cand = [int(i) for i in torch.nonzero(active >= min_tokens).flatten().tolist()]
    if not cand:
        raise ValueError(f"no latent is active on >= {min_tokens} refusal tokens; lower --min-tokens")
    mean_act = acts.mean(0)
    ranked = sorted(cand, key=lambda f: -float(mean_act[f]))[:max_prerank]
    resid_norm = float(h.norm(dim=-1).mean())
    strengths = strengths or [round(resid_norm * f, 1) for f in (0.2, 0.35, 0.5)]
    mid = strengths[len(strengths) // 2]

    # 2. cheap pre-rank: teacher-forced log-prob of a refusal opener on dev harmful prompts
    harmful = fitdata.harmful_prompts("dev")[:n_harmful]
    benign = fitdata.benign_prompts("dev")[:n_benign]
    opener = engine.tokenizer("I'm sorry, but I can't", add_special_tokens=False)["input_ids"]
    rank_prompts = [prompt_ids(engine, p) for p in harmful[:n_rank_prompts]]
    conts = [list(opener)] * len(rank_prompts)

    def opener_lp(iv: Any) -> float:
        lps = engine.score(rank_prompts, conts, intervention=iv)
        return float(sum(sum(x) for x in lps) / len(lps))

    base_lp = opener_lp(None)
    pre: list[tuple[float, int]] = []
    for f in tqdm(ranked, desc="pre-rank candidates"):
        st = SAESteerer(sae, [f], [mid], "clamp")
        pre.append((opener_lp(gated_intervention(engine.model, module, st.apply, "both", None)) - base_lp, f))
    pre.sort(reverse=True)
    top = [f for _, f in pre[:n_candidates]]
    tqdm.write(json.dumps({"prerank_top": [[f, round(g, 3)] for g, f in pre[: max(n_candidates, 8)]]}))

    # 3. generation screen on the dev split
    def res_dict(r: Any) -> dict[str, Any]:
        return {
            "refusal_harmful": round(r.refusal_harmful, 3), "refusal_benign": round(r.refusal_benign, 3),
            "degenerate": round(r.degenerate, 3), "judge_errors": r.judge_errors,
            "score": round(r.score(overrefusal_weight), 3), "sample": r.samples[0][1][:120] if r.samples else "",
        }

    base = screen(engine, None, harmful, benign, max_tokens=max_tokens, judge=judge)
    rows: list[dict[str, Any]] = []
    grid = [(f, s) for f in top for s in strengths]
    for f, s in tqdm(grid, desc="screen feature x strength"):
        st = SAESteerer(sae, [f], [s], "clamp")
        r = screen(engine, gated_intervention(engine.model, module, st.apply, "both", None), harmful, benign,
                   max_tokens=max_tokens, judge=judge)
        rows.append({"feature": f, "strength": s, **res_dict(r)})
        tqdm.write(json.dumps(rows[-1]))  # partial results survive an interrupted screen
    best = max(rows, key=lambda r: r["score"])
    result = {
        "prompt": prompt, "response": response, "response_source": source, "layer": layer,
        "n_candidates_found": len(cand), "n_preranked": len(ranked), "prerank_top": [{"feature": f, "opener_logprob_gain": round(g, 3)} for g, f in pre[:n_candidates]],
        "strengths": strengths, "base": res_dict(base), "best": best, "table": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    preset = {
        "model": model,
        "artifact": path.name if (is_embedded and path.parent == ARTIFACT_DIR) else str(path.resolve()),
        "layer": layer,
        "features": [best["feature"]],
        "strengths": [best["strength"]],
        "mode": "clamp",
        "steer_on": "both",
        "gate": "none",
        "gate_threshold": 0.5,
        "chosen_on": {
            "procedure": "steerboard sae features", "split": "dev", "n_harmful": len(harmful),
            "n_benign": len(benign), "max_tokens": max_tokens, "judge": judge,
            "score": f"refusal_harmful - {overrefusal_weight} * refusal_benign - degenerate",
            "n_candidates_found": len(cand), "screened": len(rows), "base": res_dict(base), "best": best,
        },
    }
    out = preset_out or (PRESET_DIR / f"{DEFAULT_PRESET}.json" if is_embedded else Path("sae-preset.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(preset, indent=2) + "\n")
    result["preset"] = str(out)
    if report is not None:
        report.write_text(json.dumps(result, indent=2) + "\n")
    return result


def record_max_activation(preset: str = "smollm2-135m", write: bool = False) -> dict[str, Any]:
    """Measure the preset's features' maximum activation on the fit data (:func:`feature_max_activations`);
    with ``write``, store it in the shipped preset as ``max_activation``."""
    import json

    from steerboard.engine import Engine

    p = load_preset(preset)
    if not p.get("artifact"):
        raise ValueError(f"preset {preset!r} names no shipped SAE artifact; the maximum activation needs the SAE")
    eng = Engine.load(p["model"])
    sae = load_sae(ARTIFACT_DIR / p["artifact"])
    seqs = training_sequences(eng)
    rec = {
        "values": {str(k): v for k, v in feature_max_activations(eng, sae, p["layer"], p["features"]).items()},
        "measured_on": f"every token of the SAE's fit text (training_sequences: {len(seqs)} sequences, "
                       f"{sum(map(len, seqs))} tokens: corpus windows and chat-formatted fit-split prompts with "
                       "refusal and compliance replies), residual after block "
                       f"{p['layer']} encoded by the shipped SAE",
        "command": f"python -m steerboard.methods.sae max-activation {preset} --write",
    }
    if write:
        path = PRESET_DIR / f"{preset}.json"
        data = json.loads(path.read_text())
        data["max_activation"] = rec
        path.write_text(json.dumps(data, indent=2) + "\n")
    return rec


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    if sys.argv[1:2] != ["max-activation"]:
        sys.exit("usage: python -m steerboard.methods.sae max-activation [PRESET] [--write]")
    rest = [a for a in sys.argv[2:] if a != "--write"]
    print(json.dumps(record_max_activation(rest[0] if rest else "smollm2-135m", "--write" in sys.argv), indent=1))
