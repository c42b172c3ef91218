"""``dpo/<model>``: a Direct Preference Optimisation baseline (Rafailov et al. 2023) trained with trl.

A LoRA adapter (peft) trained with trl's ``DPOTrainer`` on the shipped preference pairs
(``methods/data/dpo/pairs.jsonl.gz``, built by ``benchmarks/build_pairs.py``; provenance in
``methods/data/dpo/SOURCE.md``): harmful prompts prefer a refusal over the embedded model's *own* sampled
completion that the harm judge calls unsafe (on-policy), and as many benign prompts prefer a helpful answer
over a needless refusal, so over-refusal is not rewarded. The pairs are disjoint from every evaluation
prompt (``tests/test_dpo.py``). A tenth of the pairs (``split: heldout``) is never trained on: held-out
preference accuracy, reward margin and the KL to the base model on held-out benign prompts are measured
after training and recorded in the training statistics.

For the embedded model with default options, ``dpo/`` loads the shipped adapter
(``methods/artifacts/dpo-smollm2-135m/``; its ``manifest.json`` holds the adapter's sha256, the option
fingerprint and the pairs' hash, checked before loading) and trains nothing. Options that change training
(and other models) train on first use and cache the adapter by hash of (model, options, pairs) under
``artifacts/dpo``; the adapter is merged into the method's private copy of the weights, so serving costs the
same as the base model. ``-M lora=false`` fine-tunes all weights instead. Needs the ``dpo`` extra
(``pip install 'steerboard[dpo]'``).

Example::

    inspect eval tasks/xstest.py --model dpo/smollm2-135m
    inspect eval tasks/xstest.py --model dpo/smollm2-135m -M beta=0.2 -M epochs=2   # retrains

Training lives in :mod:`steerboard.methods.training.preference`. Train the shipped adapter again (``--ship``
copies it into ``methods/artifacts/``)::

    nice -n 10 python -m steerboard.methods.dpo train --ship

Choose options on the dev split (each grid point trained once and cached; docs/steering.md has the table)::

    python -m steerboard.methods.dpo tune --grid beta=0.1,0.5 --grid lr=5e-5,2e-4 -M max_pairs=500 -M batch_size=2
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from steerboard.methods.base import Method, MethodConfig, detail_field, require_modules

if TYPE_CHECKING:
    from steerboard.engine import Engine
    from steerboard.resources import ModelShape

logger = logging.getLogger(__name__)

PAIR_KEYS = ("prompt", "chosen", "rejected")
ARTIFACT_DIR = Path(__file__).parent / "artifacts"
EMBEDDED_MODEL_NAMES = ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")
MANIFEST = "manifest.json"


@dataclass
class AdapterConfig(MethodConfig):
    """Options shared by the trained-adapter baselines (``dpo/``, ``sft/``).

    Attributes:
        lora: train a LoRA adapter (default) instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: LoRA dropout.
        target_modules: LoRA target module names, or ``all-linear``.
        lora_top_fraction: put LoRA only in this top fraction of the decoder blocks (1.0: all). The
            default 0.5 halves the backward pass (gradients stop at the lowest adapted block), the main
            cost of CPU training.
        lr: learning rate (> 0).
        epochs: passes over the training pairs.
        batch_size: pairs per optimiser step.
        max_length: tokens per prompt + response (longer ones are cut from the end).
        max_pairs: train on a seeded sample of this many pairs, stratified by each pair's ``stratum``
            (or its ``source`` prefix), never a prefix of the file (``None``: all).
        pairs_file: a JSONL (or .jsonl.gz) of pairs (``prompt``, ``chosen``, ``rejected``; optional
            ``stratum``, ``source``, ``split``) replacing the shipped ones.
        seed: training seed (sample of ``max_pairs``, data order, LoRA init).
    """

    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    lora_top_fraction: float = 0.5
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 160
    max_pairs: int | None = None
    pairs_file: str | None = detail_field(None)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bounds(lr="> 0", epochs="> 0", batch_size=">= 1", max_length=">= 16")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ValueError("-M lora_r must be >= 1 and lora_alpha > 0")
        if not 0 < self.lora_top_fraction <= 1:
            raise ValueError(f"-M lora_top_fraction must be in (0, 1], got {self.lora_top_fraction}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"-M lora_dropout must be in [0, 1), got {self.lora_dropout}")
        self.check_bounds(max_pairs=">= 1")
        if self.pairs_file is not None and not Path(self.pairs_file).is_file():
            raise ValueError(f"-M pairs_file={self.pairs_file!r}: no such file")


@dataclass
class DPOConfig(AdapterConfig):
    """Options of ``dpo/`` (those of :class:`AdapterConfig` and):

    Attributes:
        beta: DPO temperature (strength of the KL anchor to the reference model).
        loss_type: trl DPO loss (``sigmoid`` is the paper's).

    The defaults ``beta`` 0.1 and ``lr`` 2e-4 won the dev-split screen over beta {0.1, 0.5} x lr {5e-5, 2e-4}
    (``python -m steerboard.methods.dpo tune``; the report is ``methods/artifacts/dpo-smollm2-135m/dev_tune.json``).
    """

    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bounds(beta="> 0")


def _read_rows(path: Path) -> list[Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as ex:
                    raise ValueError(f"{path}: line {n} is not JSON ({ex.msg}); one JSON object per line") from None
        return rows


def stratified_sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ``n`` of ``rows``, each ``stratum`` (default: the ``source`` prefix before ``:``)
    represented in proportion to its size (largest remainders), in the rows' original order."""
    import random

    if n > len(rows):
        raise ValueError(f"cannot sample {n} of {len(rows)} rows")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        key = str(r.get("stratum") or str(r.get("source", "")).split(":")[0])
        groups.setdefault(key, []).append(i)
    exact = {k: n * len(v) / len(rows) for k, v in groups.items()}
    take = {k: int(e) for k, e in exact.items()}
    for k in sorted(groups, key=lambda k: (take[k] - exact[k], k))[: n - sum(take.values())]:
        take[k] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in sorted(groups):
        chosen += rng.sample(groups[k], take[k])
    return [rows[i] for i in sorted(chosen)]


def load_pairs(cfg: AdapterConfig) -> list[dict[str, str]]:
    """The preference pairs for ``cfg`` (shipped or ``pairs_file``), validated, ``max_pairs`` sampled.

    Each returned pair has ``prompt``, ``chosen``, ``rejected``, ``stratum`` and ``split`` (``train`` or
    ``heldout``).

    Raises:
        ValueError: no pairs, a row that is not an object, a missing or empty prompt/chosen/rejected, a
            prompt equal to an evaluation prompt, or ``max_pairs`` larger than the file -- before any training.
    """
    from steerboard.methods.editdata import DPO_FILE
    from steerboard.methods.fitdata import is_eval_text

    path = Path(cfg.pairs_file) if cfg.pairs_file else DPO_FILE
    where = cfg.pairs_file or f"the shipped pairs ({path.name})"
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"no DPO preference pairs in {where}")
    for i, p in enumerate(rows):
        if not isinstance(p, dict):
            raise ValueError(f"pair {i} in {where} is not a JSON object; needs {', '.join(PAIR_KEYS)}")
        missing = [k for k in PAIR_KEYS if not isinstance(p.get(k), str) or not p[k].strip()]
        if missing:
            raise ValueError(f"DPO pair {i} in {where} has no (or empty) {', '.join(missing)}; needs {', '.join(PAIR_KEYS)}")
        if is_eval_text(p["prompt"]):
            raise ValueError(
                f"pair {i} in {where}: its prompt equals an evaluation prompt ({p['prompt'][:60]!r}); "
                "training pairs must be disjoint from every evaluation set (methods/data/eval_index.txt.gz)"
            )
        if p.get("split", "train") not in ("train", "heldout"):
            raise ValueError(f"pair {i} in {where}: split {p['split']!r}; valid: 'train', 'heldout'")
    if cfg.max_pairs is not None:
        if cfg.max_pairs > len(rows):
            raise ValueError(f"-M max_pairs={cfg.max_pairs} but {where} has {len(rows)} pairs; use at most {len(rows)}")
        rows = stratified_sample(rows, cfg.max_pairs, cfg.seed)
    out = []
    for p in rows:
        stratum = str(p.get("stratum") or str(p.get("source", "")).split(":")[0])
        out.append({**{k: p[k] for k in PAIR_KEYS}, "stratum": stratum, "split": p.get("split", "train")})
    if not any(p["split"] == "train" for p in out):
        raise ValueError(f"{where}: every selected pair is held out; nothing to train on")
    return out


def pairs_key(pairs: list[dict[str, str]]) -> str:
    """Hash of the selected pairs (part of the adapter's cache key and manifest)."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()


DPO_MODULES = {"trl": "dpo", "peft": "dpo", "accelerate": "dpo"}
"""What ``dpo/`` and ``sft/`` import to train (the ``dpo`` extra)."""


def _require_extra(who: str = "dpo/") -> None:
    require_modules(DPO_MODULES, who)


def check_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an adapter folder after checking the weights' sha256 against it.

    Raises:
        ValueError: no manifest, or the weights file's sha256 differs from the recorded one.
    """
    from steerboard.methods.base import file_sha256

    mf = path / MANIFEST
    if not mf.exists():
        raise ValueError(f"adapter artifact {path} has no {MANIFEST}; train it again (delete the folder)")
    m = json.loads(mf.read_text())
    got = file_sha256(path / m["weights_file"])
    if got != m["sha256"]:
        raise ValueError(
            f"adapter artifact {path / m['weights_file']}: sha256 {got} does not match {m['sha256']} in {mf}; "
            "the file is corrupt or was replaced: restore it (git checkout) or delete the folder to retrain"
        )
    return m


class AdapterMethod(Method):
    """Serves the model with a trained adapter merged into its private weights (``dpo/``, ``sft/``)."""

    kind: Literal["dpo", "sft"] = "dpo"
    private_weights = True
    sequences_per_pair: ClassVar[int] = 2
    """Sequences one training pair puts through the model (DPO: the chosen and the rejected reply)."""

    @classmethod
    def memory_parts(cls, config: MethodConfig, model: ModelShape) -> dict[str, int]:
        """The private weights copy, plus training state: float32 weight (adapter), gradient and AdamW's two
        moments per trained parameter (the LoRA adapter's, or every weight), and the activations of one step."""
        assert isinstance(config, AdapterConfig)
        if config.lora:
            first = model.layers - max(1, round(config.lora_top_fraction * model.layers))
            names = None if config.target_modules == "all-linear" else {
                t.strip() for t in config.target_modules.split(",") if t.strip()
            }
            trained = sum(
                config.lora_r * (i + o) for layer, name, i, o in model.linear
                if layer >= first and (names is None or name in names)
            )
        else:
            trained = model.params
        # activations of one step (batch_size pairs): ~34 x tokens x hidden bytes per layer in 16-bit
        # (Korthikanti et al. 2022, "Reducing activation recomputation"), scaled to the dtype
        tokens = cls.sequences_per_pair * config.batch_size * config.max_length
        return {
            **super().memory_parts(config, model),
            f"{cls.kind}_training_state": 16 * trained,
            f"{cls.kind}_activations": int(34 * tokens * model.hidden * model.layers * model.dtype_bytes / 2),
        }

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        self.artifact: str | None = None
        self.train_stats: dict[str, Any] | None = None
        self.shipped = False

    @property
    def cfg(self) -> AdapterConfig:
        assert isinstance(self.config, AdapterConfig)
        return self.config

    def required_modules(self) -> dict[str, str]:
        return dict(DPO_MODULES)

    def shipped_dir(self) -> Path:
        return ARTIFACT_DIR / f"{self.kind}-smollm2-135m"

    def prepare(self, engine: Engine) -> None:
        """Load the shipped adapter (embedded model, matching options and pairs), a cached one, or train one."""
        _require_extra(f"{self.name}/")
        pairs = load_pairs(self.cfg)  # validated before anything loads or trains
        data_key = pairs_key(pairs)
        fp = self.cfg.fingerprint()  # training runs in float32 whatever the serving precision
        ship = self.shipped_dir()
        if self.model_name in EMBEDDED_MODEL_NAMES and (ship / MANIFEST).exists():
            m = json.loads((ship / MANIFEST).read_text())
            if m.get("config_fingerprint") == fp and m.get("pairs_key") == data_key:
                check_manifest(ship)
                self._load(engine, ship)
                stats_file = ship / "train_stats.json"
                self.train_stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
                self.artifact, self.shipped = str(ship), True
                engine.weights_changed()
                return
        path = self.artifact_path(engine, data_key)
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            done = path / "DONE"
            if done.exists():
                check_manifest(path)
                self._load(engine, path)
                stats_file = path / "train_stats.json"
                self.train_stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
            else:
                if path.exists():
                    shutil.rmtree(path)
                logger.warning("%s/: training the adapter on %d pairs (first use; cached afterwards)", self.name, len(pairs))
                # the one lazy call into training code (docs/architecture.md)
                from steerboard.methods.training.preference import train_artifact

                self.train_stats = train_artifact(engine, pairs, self.cfg, path, self.kind, self.model_name)
                done.write_text("ok\n")
        engine.weights_changed()  # the merge writes through .data: re-cast any low-precision copies
        self.artifact = str(path)

    def _load(self, engine: Engine, path: Path) -> None:
        with engine.lock:
            if self.cfg.lora:
                from peft import PeftModel

                engine.model = PeftModel.from_pretrained(engine.model, str(path)).merge_and_unload()
            else:
                from safetensors.torch import load_file

                engine.model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
            engine.model.eval()

    def describe(self) -> dict[str, Any]:
        from steerboard.methods.base import file_sha256

        d = super().describe()
        if self.artifact is not None:
            d["artifacts"]["adapter"] = {"path": self.artifact, "sha256": file_sha256(weights_file(self.artifact)),
                                         "shipped": self.shipped}
        d["stats"] = {"train": self.train_stats}
        return d


class DPOMethod(AdapterMethod):
    """Serves the model with a DPO-trained adapter merged into its private weights."""

    name = "dpo"
    kind = "dpo"
    config_class = DPOConfig


def weights_file(artifact: str | Path) -> Path:
    """The file of a trained artifact that holds its weights (the LoRA adapter, or the full model).

    The artifact's sha256 is this file's: the folder also holds training timings, absolute paths and peft's
    module list in set order, which differ between two trainings that produce the same weights.
    """
    folder = Path(artifact)
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (folder / name).exists():
            return folder / name
    return folder


_MOVED_TO_TRAINING = frozenset({
    "lora_config", "heldout_stats", "train_adapter", "train_dpo", "train_artifact", "write_manifest", "main",
})


def __getattr__(name: str) -> Any:
    """The training names, moved to :mod:`steerboard.methods.training.preference`, still resolve here (that module
    is imported only when one of them is asked for)."""
    if name in _MOVED_TO_TRAINING:
        from steerboard.methods.training import preference

        return getattr(preference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    import sys

    from steerboard.methods.training.preference import main

    sys.exit(main())
