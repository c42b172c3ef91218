"""``dpo/<model>``: a Direct Preference Optimisation baseline (Rafailov et al. 2023) trained with trl.

The default run trains a LoRA adapter (peft) with trl's ``DPOTrainer`` on the shipped preference pairs
(``methods/data/dpo/pairs.jsonl``, built by :mod:`steerboard.methods.editdata`): harmful prompts
(StrongREJECT, plain and wrapped in team-written attack templates) prefer a refusal over a compliance
opening, and benign prompts (GSM8K train, MMLU dev, team-written sensitive-sounding requests) prefer the
helpful answer over a refusal, so over-refusal is not rewarded. The pairs are disjoint from every
evaluation prompt (``tests/test_dpo.py``).

The adapter is trained on first use and cached by hash of (model, config, pairs) under
``artifacts/dpo``; it is then merged into the method's private copy of the weights, so serving costs
the same as the base model. ``-M lora=false`` fine-tunes all weights instead (the cache then holds the
full state dict). Needs the ``dpo`` extra (``pip install 'steerboard[dpo]'``).

Example::

    inspect eval tasks/xstest.py --model dpo/smollm2-135m
    inspect eval tasks/xstest.py --model dpo/smollm2-135m -M beta=0.2 -M epochs=2
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.base import Method, MethodConfig, require_modules

if TYPE_CHECKING:
    from steerboard.engine import Engine

logger = logging.getLogger(__name__)

PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig(MethodConfig):
    """Options of ``dpo/``.

    Attributes:
        lora: train a LoRA adapter (default) instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: LoRA dropout.
        target_modules: LoRA target module names, or ``all-linear``.
        lora_top_fraction: put LoRA only in this top fraction of the decoder blocks (1.0: all). The
            default 0.5 halves the backward pass (gradients stop at the lowest adapted block), the main
            cost of CPU training.
        beta: DPO temperature (strength of the KL anchor to the reference model).
        loss_type: trl DPO loss (``sigmoid`` is the paper's).
        lr: learning rate (> 0).
        epochs: passes over the pairs.
        batch_size: pairs per optimiser step.
        max_length: tokens per prompt + response (longer ones are cut from the end).
        max_pairs: use only the first this-many pairs (``None``: all).
        pairs_file: a JSONL of pairs (``prompt``, ``chosen``, ``rejected``) replacing the shipped ones.
        seed: training seed (data order, LoRA init).
    """

    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    lora_top_fraction: float = 0.5
    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 160
    max_pairs: int | None = None
    pairs_file: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bounds(lr="> 0", beta="> 0", epochs="> 0", batch_size=">= 1", max_length=">= 16")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ValueError("-M lora_r must be >= 1 and lora_alpha > 0")
        if not 0 < self.lora_top_fraction <= 1:
            raise ValueError(f"-M lora_top_fraction must be in (0, 1], got {self.lora_top_fraction}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"-M lora_dropout must be in [0, 1), got {self.lora_dropout}")
        self.check_bounds(max_pairs=">= 1")
        if self.pairs_file is not None and not Path(self.pairs_file).is_file():
            raise ValueError(f"-M pairs_file={self.pairs_file!r}: no such file")


def load_pairs(cfg: DPOConfig) -> list[dict[str, str]]:
    """The preference pairs for ``cfg`` (shipped or ``pairs_file``), validated.

    Raises:
        ValueError: no pairs, a missing key, or an empty prompt/chosen/rejected text.
    """
    if cfg.pairs_file:
        with open(cfg.pairs_file, encoding="utf-8") as f:
            pairs = [json.loads(line) for line in f if line.strip()]
        where = cfg.pairs_file
    else:
        from steerboard.methods.editdata import load_dpo_pairs

        pairs, where = load_dpo_pairs(), "the shipped pairs"
    if cfg.max_pairs is not None:
        pairs = pairs[: cfg.max_pairs]
    if not pairs:
        raise ValueError(f"no DPO preference pairs in {where}")
    for i, p in enumerate(pairs):
        missing = [k for k in PAIR_KEYS if not isinstance(p.get(k), str) or not p[k].strip()]
        if missing:
            raise ValueError(f"DPO pair {i} in {where} has no (or empty) {', '.join(missing)}; needs {', '.join(PAIR_KEYS)}")
    return [{k: p[k] for k in PAIR_KEYS} for p in pairs]


DPO_MODULES = {"trl": "dpo", "peft": "dpo", "accelerate": "dpo"}
"""What ``dpo/`` imports to train (the ``dpo`` extra)."""


def _require_extra() -> None:
    require_modules(DPO_MODULES, "dpo/")


def train_dpo(engine: Engine, pairs: list[dict[str, str]], cfg: DPOConfig, out_dir: Path) -> dict[str, Any]:
    """Train on ``pairs`` in place on ``engine.model`` and save the adapter (or weights) to ``out_dir``.

    With LoRA, the engine's model is left with the adapter merged in. Returns training statistics.
    """
    _require_extra()
    import tempfile

    import torch
    from datasets import Dataset
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]
    ds = Dataset.from_list(rows)
    tok = engine.tokenizer
    side = tok.padding_side
    model = engine.model
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        if cfg.target_modules == "all-linear":
            # peft's "all-linear" cannot be combined with layers_to_transform: list the blocks' linear layers
            linear_types = (torch.nn.Linear,)
            try:
                from transformers.pytorch_utils import Conv1D

                linear_types = (torch.nn.Linear, Conv1D)
            except ImportError:  # pragma: no cover
                pass
            targets = sorted({
                n.rsplit(".", 1)[-1] for n, mod in engine.decoder_layers()[0].named_modules()
                if isinstance(mod, linear_types)
            })
        else:
            targets = [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
        n_layers = len(engine.decoder_layers())
        first = n_layers - max(1, round(cfg.lora_top_fraction * n_layers))
        peft_config = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
            task_type="CAUSAL_LM", layers_to_transform=list(range(first, n_layers)),
        )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrlDPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=cfg.batch_size,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr,
            beta=cfg.beta,
            loss_type=[cfg.loss_type],
            max_length=cfg.max_length,
            truncation_mode="keep_start",
            logging_steps=5,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            bf16=False,
            fp16=False,
            use_cpu=engine.device.type == "cpu",
            disable_tqdm=False,
            gradient_checkpointing=False,  # 135M-class models fit easily; recomputation would only slow CPU runs
            dataloader_num_workers=0,
            lr_scheduler_type="linear",
        )
        with engine.lock:
            model.train()
            try:
                trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
                result = trainer.train()
                trained = trainer.model
                out_dir.mkdir(parents=True, exist_ok=True)
                if cfg.lora:
                    trained.save_pretrained(str(out_dir))
                    engine.model = trained.merge_and_unload()
                else:
                    from safetensors.torch import save_file

                    sd = {k: v.detach().cpu().contiguous() for k, v in trained.state_dict().items()}
                    save_file(_dedupe_shared(sd), str(out_dir / "model.safetensors"))
                    engine.model = trained
            finally:
                tok.padding_side = side
                engine.model.eval()
                for p in engine.model.parameters():
                    p.requires_grad_(False)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    stats = {
        "pairs": len(pairs),
        "steps": int(trainer.state.global_step),
        "seconds": round(time.perf_counter() - t0, 1),
        # CPU seconds of this process (all threads): on a shared machine, cpu_seconds / threads estimates
        # the wall time the same run takes with the cores to itself
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "torch_threads": torch.get_num_threads(),
        "train_loss": float(result.training_loss),
        "first_logged": logs[0] if logs else None,
        "last_logged": logs[-1] if logs else None,
    }
    (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=1, default=str))
    return stats


def _dedupe_shared(sd: dict[str, Any]) -> dict[str, Any]:
    """Drop tensors that share storage with an earlier one (tied embeddings), as safetensors requires."""
    seen: set[int] = set()
    out = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        out[k] = v
    return out


class DPOMethod(Method):
    """Serves the model with a DPO-trained adapter merged into its private weights."""

    name = "dpo"
    config_class = DPOConfig
    private_weights = True

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        self.artifact: str | None = None
        self.train_stats: dict[str, Any] | None = None

    @property
    def cfg(self) -> DPOConfig:
        assert isinstance(self.config, DPOConfig)
        return self.config

    def required_modules(self) -> dict[str, str]:
        return dict(DPO_MODULES)

    def prepare(self, engine: Engine) -> None:
        """Load the cached adapter for (model, config, pairs) or train it, then merge it in."""
        import hashlib

        _require_extra()
        pairs = load_pairs(self.cfg)
        data_key = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()
        path = self.artifact_path(engine, data_key)
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            done = path / "DONE"
            if done.exists():
                self._load(engine, path)
                stats_file = path / "train_stats.json"
                self.train_stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
            else:
                logger.warning("dpo/: training the adapter on %d pairs (first use; cached afterwards)", len(pairs))
                self.train_stats = train_dpo(engine, pairs, self.cfg, path)
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
            d["artifacts"]["adapter"] = {"path": self.artifact, "sha256": file_sha256(weights_file(self.artifact))}
        d["stats"] = {"train": self.train_stats}
        return d


def weights_file(artifact: str | Path) -> Path:
    """The file of a trained DPO artifact that holds its weights (the LoRA adapter, or the full model).

    The artifact's sha256 is this file's: the folder also holds training timings, absolute paths and peft's
    module list in set order, which differ between two trainings that produce the same weights.
    """
    folder = Path(artifact)
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (folder / name).exists():
            return folder / name
    return folder
