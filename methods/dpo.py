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

Train the shipped adapter again (``--ship`` copies it into ``methods/artifacts/``)::

    nice -n 10 python -m steerboard.methods.dpo train --ship
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import time
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


def lora_config(engine: Engine, cfg: AdapterConfig) -> Any:
    """peft ``LoraConfig`` for ``cfg`` (or None without LoRA): linear layers of the top blocks."""
    if not cfg.lora:
        return None
    import torch
    from peft import LoraConfig

    if cfg.target_modules == "all-linear":
        # peft's "all-linear" cannot be combined with layers_to_transform: list the blocks' linear layers
        linear_types: tuple[type, ...] = (torch.nn.Linear,)
        try:
            from transformers.pytorch_utils import Conv1D

            linear_types = (torch.nn.Linear, Conv1D)
        except ImportError:  # pragma: no cover
            pass
        targets = sorted({
            n.rsplit(".", 1)[-1] for n, mod in engine.decoder_layers()[0].named_modules() if isinstance(mod, linear_types)
        })
    else:
        targets = [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    n_layers = len(engine.decoder_layers())
    first = n_layers - max(1, round(cfg.lora_top_fraction * n_layers))
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
        task_type="CAUSAL_LM", layers_to_transform=list(range(first, n_layers)),
    )


def _response_ids(engine: Engine, prompt: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    from steerboard.methods.dinm import _response_ids as ids

    p, r = ids(engine, [{"role": "user", "content": prompt}], response, max_length)
    return p, r[: max(1, max_length - len(p))]


def heldout_stats(engine: Engine, model: Any, pairs: list[dict[str, str]], beta: float, ref: Any) -> dict[str, Any]:
    """Preference accuracy and reward margin on ``pairs`` (DPO implicit reward ``beta * log pi/pi_ref`` of the
    whole reply) and the mean per-token KL(policy || reference) on the chosen replies of the benign pairs.

    Args:
        model: the trained model (adapter active).
        ref: a context manager factory under which ``model`` computes the reference (``disable_adapter``).
    """
    import torch

    if not pairs:
        return {"pairs": 0}

    def logits(ids: list[int]) -> Any:
        x = torch.tensor([ids], device=engine.device)
        return model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float()

    accs, margins, kls, chosen_gain, rejected_gain = [], [], [], [], []
    model.eval()
    with torch.no_grad():
        for p in pairs:
            lp = {}
            for side in ("chosen", "rejected"):
                pi, ri = _response_ids(engine, p["prompt"], p[side], 256)
                seq = pi + ri
                pos = torch.arange(len(pi) - 1, len(seq) - 1, device=engine.device)
                tgt = torch.tensor(ri, device=engine.device)
                pol = torch.log_softmax(logits(seq)[pos], -1)
                with ref():
                    base = torch.log_softmax(logits(seq)[pos], -1)
                lp[side] = (float(pol.gather(-1, tgt[:, None]).sum()), float(base.gather(-1, tgt[:, None]).sum()))
                if side == "chosen" and p["stratum"].startswith("benign"):
                    kls.append(float((pol.exp() * (pol - base)).sum(-1).mean()))
            rc = beta * (lp["chosen"][0] - lp["chosen"][1])
            rr = beta * (lp["rejected"][0] - lp["rejected"][1])
            accs.append(float(rc > rr))
            margins.append(rc - rr)
            chosen_gain.append(lp["chosen"][0] - lp["chosen"][1])
            rejected_gain.append(lp["rejected"][0] - lp["rejected"][1])
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {
        "pairs": len(pairs),
        "preference_accuracy": mean(accs),
        "reward_margin": mean(margins),
        "chosen_logp_change": mean(chosen_gain),
        "rejected_logp_change": mean(rejected_gain),
        "kl_to_base_benign_per_token": mean(kls),
        "kl_pairs": len(kls),
        "beta": beta,
    }


def train_adapter(
    engine: Engine, pairs: list[dict[str, str]], cfg: AdapterConfig, out_dir: Path, kind: Literal["dpo", "sft"]
) -> dict[str, Any]:
    """Train on the ``train`` pairs in place on ``engine.model`` and save the adapter (or weights) to ``out_dir``.

    DPO: trl ``DPOTrainer`` on (prompt, chosen, rejected). SFT: trl ``SFTTrainer`` on (prompt, chosen), loss
    on the completion only. With LoRA, held-out statistics are measured with the adapter active (reference:
    adapter disabled), then the engine's model is left with the adapter merged in. Returns the statistics.
    """
    _require_extra(f"{kind}/")
    import tempfile

    import torch
    from datasets import Dataset

    train = [p for p in pairs if p["split"] == "train"]
    held = [p for p in pairs if p["split"] == "heldout"]
    if kind == "dpo":
        from trl import DPOConfig as TrlConfig
        from trl import DPOTrainer as Trainer

        rows = [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                 "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in train]
        extra: dict[str, Any] = {"beta": cfg.beta, "loss_type": [cfg.loss_type], "truncation_mode": "keep_start"}  # type: ignore[attr-defined]
    else:
        from trl import SFTConfig as TrlConfig
        from trl import SFTTrainer as Trainer

        rows = [{"prompt": [{"role": "user", "content": p["prompt"]}], "completion": [{"role": "assistant", "content": p["chosen"]}]}
                for p in train]
        extra = {"completion_only_loss": True}
    ds = Dataset.from_list(rows)
    tok = engine.tokenizer
    side = tok.padding_side
    model = engine.model
    peft_config = lora_config(engine, cfg)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrlConfig(
            output_dir=tmp,
            per_device_train_batch_size=cfg.batch_size,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr,
            max_length=cfg.max_length,
            logging_steps=5,
            logging_first_step=True,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            bf16=False,
            fp16=False,
            use_cpu=engine.device.type == "cpu",
            disable_tqdm=False,
            gradient_checkpointing=False,  # 135M-class models fit easily; recomputation would only slow CPU runs
            dataloader_num_workers=0,
            lr_scheduler_type="linear",
            **extra,
        )
        with engine.lock:
            model.train()
            try:
                trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
                result = trainer.train()
                trained = trainer.model
                t_train = time.perf_counter() - t0
                beta = getattr(cfg, "beta", 0.1)
                if cfg.lora:
                    held_stats = heldout_stats(engine, trained, held, beta, trained.disable_adapter)
                else:
                    held_stats = {"pairs": len(held), "note": "held-out statistics need a LoRA adapter (the reference)"}
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
    keep = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "learning_rate",
            "mean_token_accuracy", "epoch", "step")
    logs = [{k: h[k] for k in keep if k in h} | {"step": h.get("step")} for h in trainer.state.log_history if "loss" in h]
    stats = {
        "kind": kind,
        "pairs": len(pairs),
        "train_pairs": len(train),
        "heldout_pairs": len(held),
        "strata": {s: sum(p["stratum"] == s for p in train) for s in sorted({p["stratum"] for p in train})},
        "steps": int(trainer.state.global_step),
        "seconds": round(t_train, 1),
        # CPU seconds of this process (all threads): on a shared machine, cpu_seconds / threads estimates
        # the wall time the same run takes with the cores to itself
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "torch_threads": torch.get_num_threads(),
        "train_loss": float(result.training_loss),
        "first_logged": logs[0] if logs else None,
        "last_logged": logs[-1] if logs else None,
        "curve": logs,
        "heldout": held_stats,
    }
    (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=1, default=str))
    return stats


def train_dpo(engine: Engine, pairs: list[dict[str, str]], cfg: DPOConfig, out_dir: Path) -> dict[str, Any]:
    """DPO on ``pairs`` (see :func:`train_adapter`)."""
    return train_adapter(engine, pairs, cfg, out_dir, "dpo")


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


def write_manifest(path: Path, fingerprint: str, data_key: str, model: str) -> dict[str, Any]:
    """Record the adapter's sha256 with what it was trained from (checked by :func:`check_manifest`)."""
    from steerboard.methods.base import file_sha256

    m = {"model": model, "config_fingerprint": fingerprint, "pairs_key": data_key,
         "weights_file": weights_file(path).name, "sha256": file_sha256(weights_file(path))}
    (path / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")
    return m


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
                self.train_stats = train_adapter(engine, pairs, self.cfg, path, self.kind)
                write_manifest(path, fp, data_key, self.model_name)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m steerboard.methods.dpo train [--kind dpo|sft] [--ship] [-M key=value ...]``: train the adapter
    for the embedded model (or ``--model``) and, with ``--ship``, copy it into ``methods/artifacts/``."""
    import argparse

    from steerboard.engine import Engine

    ap = argparse.ArgumentParser(prog="python -m steerboard.methods.dpo")
    ap.add_argument("action", choices=("train",))
    ap.add_argument("--kind", choices=("dpo", "sft"), default="dpo")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("-M", dest="options", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--ship", action="store_true", help="copy the trained adapter into methods/artifacts/")
    args = ap.parse_args(argv)
    if args.kind == "dpo":
        cls: type[AdapterMethod] = DPOMethod
    else:
        from steerboard.methods.sft import SFTMethod

        cls = SFTMethod
    cfg = cls.config_class.from_dict(dict(o.split("=", 1) for o in args.options))
    method = cls(cfg, args.model)
    eng = Engine.load(args.model)
    pairs = load_pairs(method.cfg)
    fp = method.cfg.fingerprint()
    dest = method.shipped_dir() if args.ship else method.artifact_path(eng, pairs_key(pairs))
    tmp = dest.with_name(dest.name + ".training")
    if tmp.exists():
        shutil.rmtree(tmp)
    stats = train_adapter(eng, pairs, method.cfg, tmp, method.kind)
    write_manifest(tmp, fp, pairs_key(pairs), args.model)
    if args.ship:
        for junk in ("README.md",):
            (tmp / junk).unlink(missing_ok=True)
        conf = tmp / "adapter_config.json"
        if conf.exists():  # peft records the base model's local cache path: ship the model's name instead
            d = json.loads(conf.read_text())
            d["base_model_name_or_path"] = args.model
            conf.write_text(json.dumps(d, indent=2) + "\n")
    else:
        (tmp / "DONE").write_text("ok\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    print(json.dumps({k: stats[k] for k in ("pairs", "steps", "seconds", "train_loss", "heldout")}, indent=1))
    print(f"adapter in {dest}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
