"""Adapter training for ``dpo/`` and ``sft/`` (trl ``DPOTrainer`` / ``SFTTrainer``, LoRA by default).

* :func:`train_adapter`: train on the ``train`` pairs, measure held-out statistics, save the adapter;
* :func:`write_manifest`: record the adapter's sha256 with the option fingerprint and pairs' hash;
* :func:`train_artifact`: both, the one entry point :meth:`steerboard.methods.dpo.AdapterMethod.prepare` calls
  when no shipped or cached adapter matches its options;
* :func:`tune_adapter`: choose options (``beta``, ``lr``, ...) on the dev split by the score the SAE and
  refusal-direction presets are chosen with (:class:`~steerboard.methods.training.gates.DevScreen`);
* :func:`main`: ``python -m steerboard.methods.dpo train|tune [--kind dpo|sft] [--ship]``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.dpo import (
    MANIFEST,
    AdapterConfig,
    AdapterMethod,
    DPOConfig,
    DPOMethod,
    _require_extra,
    load_pairs,
    pairs_key,
    weights_file,
)

if TYPE_CHECKING:
    from steerboard.engine import Engine


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


def _trainer_and_rows(kind: Literal["dpo", "sft"], train: list[dict[str, str]], cfg: AdapterConfig) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    """(trl config class, trainer class, dataset rows, kind-specific trl options) for ``kind``."""
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
    return TrlConfig, Trainer, rows, extra


def _trl_args(trl_config: Any, engine: Engine, cfg: AdapterConfig, output_dir: str, extra: dict[str, Any]) -> Any:
    """trl's training arguments: the options' schedule, float32, no checkpoints, logging every 5 steps."""
    return trl_config(
        output_dir=output_dir,
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


def _save_trained(engine: Engine, trained: Any, cfg: AdapterConfig, out_dir: Path) -> None:
    """Save the adapter (or all weights without LoRA) to ``out_dir`` and leave the engine's model trained."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        trained.save_pretrained(str(out_dir))
        engine.model = trained.merge_and_unload()
    else:
        from safetensors.torch import save_file

        sd = {k: v.detach().cpu().contiguous() for k, v in trained.state_dict().items()}
        save_file(_dedupe_shared(sd), str(out_dir / "model.safetensors"))
        engine.model = trained


def _train_stats(
    kind: str, pairs: list[dict[str, str]], train: list[dict[str, str]], held: list[dict[str, str]], trainer: Any,
    result: Any, t_train: float, cpu0: float, held_stats: dict[str, Any],
) -> dict[str, Any]:
    """The training statistics ``train_stats.json`` records (and the method's provenance reports)."""
    import torch

    keep = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "learning_rate",
            "mean_token_accuracy", "epoch", "step")
    logs = [{k: h[k] for k in keep if k in h} | {"step": h.get("step")} for h in trainer.state.log_history if "loss" in h]
    return {
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

    from datasets import Dataset

    train = [p for p in pairs if p["split"] == "train"]
    held = [p for p in pairs if p["split"] == "heldout"]
    trl_config, trainer_class, rows, extra = _trainer_and_rows(kind, train, cfg)
    ds = Dataset.from_list(rows)
    tok = engine.tokenizer
    side = tok.padding_side
    model = engine.model
    peft_config = lora_config(engine, cfg)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        args = _trl_args(trl_config, engine, cfg, tmp, extra)
        with engine.lock:
            model.train()
            try:
                trainer = trainer_class(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
                result = trainer.train()
                trained = trainer.model
                t_train = time.perf_counter() - t0
                beta = getattr(cfg, "beta", 0.1)
                if cfg.lora:
                    held_stats = heldout_stats(engine, trained, held, beta, trained.disable_adapter)
                else:
                    held_stats = {"pairs": len(held), "note": "held-out statistics need a LoRA adapter (the reference)"}
                _save_trained(engine, trained, cfg, out_dir)
            finally:
                tok.padding_side = side
                engine.model.eval()
                for p in engine.model.parameters():
                    p.requires_grad_(False)
    stats = _train_stats(kind, pairs, train, held, trainer, result, t_train, cpu0, held_stats)
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


def train_artifact(
    engine: Engine, pairs: list[dict[str, str]], cfg: AdapterConfig, out_dir: Path, kind: Literal["dpo", "sft"],
    model: str,
) -> dict[str, Any]:
    """Train the adapter into ``out_dir`` (:func:`train_adapter`) and write its manifest (:func:`write_manifest`);
    the statistics. What :meth:`~steerboard.methods.dpo.AdapterMethod.prepare` calls on first use of options
    that no shipped or cached adapter matches."""
    stats = train_adapter(engine, pairs, cfg, out_dir, kind)
    write_manifest(out_dir, cfg.fingerprint(), pairs_key(pairs), model)
    return stats


def write_manifest(path: Path, fingerprint: str, data_key: str, model: str) -> dict[str, Any]:
    """Record the adapter's sha256 with what it was trained from (checked by :func:`check_manifest`)."""
    from steerboard.methods.base import file_sha256

    m = {"model": model, "config_fingerprint": fingerprint, "pairs_key": data_key,
         "weights_file": weights_file(path).name, "sha256": file_sha256(weights_file(path))}
    (path / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")
    return m


def method_class(kind: str) -> type[AdapterMethod]:
    """``DPOMethod`` or ``SFTMethod`` for ``kind``."""
    if kind == "dpo":
        return DPOMethod
    from steerboard.methods.sft import SFTMethod

    return SFTMethod


def dev_prompts(pairs: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """The dev-split harmful and benign prompts no pair contains (:func:`tune_adapter`'s screen).

    The dev split of the fit pool (``fitdata.harmful_prompts("dev")`` / ``benign_prompts`` and the gate's
    ``gate_harmful_prompts("dev")`` / ``gate_benign_prompts``), minus every prompt that is, or is inside, a
    pair's prompt (the pairs are built from the whole fit pool, so part of the dev split trained).
    """
    from steerboard.methods import fitdata

    seen = [p["prompt"].strip() for p in pairs]
    exact = set(seen)

    def unseen(texts: list[str]) -> list[str]:
        out = []
        for t in dict.fromkeys(texts):
            s = t.strip()
            if s not in exact and not any(s in q for q in seen):
                out.append(t)
        return out

    harmful = unseen(fitdata.harmful_prompts("dev") + fitdata.gate_harmful_prompts("dev"))
    benign = unseen(fitdata.benign_prompts("dev") + fitdata.gate_benign_prompts("dev"))
    return harmful, benign


def parse_grid(items: list[str], config_class: type[AdapterConfig], fixed: dict[str, str]) -> list[dict[str, str]]:
    """``["beta=0.1,0.5", "lr=5e-5,2e-4"]`` -> every combination as option dicts (over ``fixed``), each validated
    by ``config_class`` before anything trains.

    Raises:
        ValueError: a malformed item, a key given twice or also fixed with ``-M``, or an invalid value.
    """
    import itertools

    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. beta=0.1,0.5)")
        key = key.strip()
        if key in axes or key in fixed:
            raise ValueError(f"--grid {key}: given twice (in --grid or -M)")
        axes[key] = vals
    if not axes:
        raise ValueError("give at least one --grid KEY=V1,V2,... (e.g. --grid beta=0.1,0.5 --grid lr=5e-5,2e-4)")
    combos = [fixed | dict(zip(axes, vs, strict=True)) for vs in itertools.product(*axes.values())]
    for c in combos:
        config_class.from_dict(c)  # unknown keys and bad values fail here, before any model work
    return combos


def tune_adapter(
    kind: Literal["dpo", "sft"], model: str, combos: list[dict[str, str]], *, max_tokens: int = 32,
    judge: str = "embed", overrefusal_weight: float = 0.5, progress: bool = True,
) -> dict[str, Any]:
    """Train (or load, cached by option fingerprint) one adapter per option set in ``combos`` and screen each on
    the dev prompts no pair contains (:func:`dev_prompts`): greedy replies of ``max_tokens`` tokens, refusal by
    ``judge``, score = harmful refusal - ``overrefusal_weight`` x benign refusal - degenerate share, the
    :class:`~steerboard.methods.training.gates.DevScreen` score the SAE and ``actadd/`` presets are chosen by.
    The highest score wins (the first in grid order on a tie). Returns the report (base row, one row per option
    set with its held-out statistics, the chosen options)."""
    from tqdm.auto import tqdm

    from steerboard.engine import Engine
    from steerboard.methods.training.gates import DevScreen

    cls = method_class(kind)
    methods = [cls(cls.config_class.from_dict(c), model) for c in combos]
    pairs = load_pairs(methods[0].cfg)
    harmful, benign = dev_prompts(pairs)
    dev = DevScreen(n_harmful=len(harmful), n_benign=len(benign), max_tokens=max_tokens, judge=judge,
                    overrefusal_weight=overrefusal_weight)
    rows: list[dict[str, Any]] = [{"options": None, **dev.row(Engine.load(model), None, harmful, benign)}]
    for opts, method in zip(combos, tqdm(methods, desc=f"{kind}/ dev screen", unit="option set", disable=not progress),
                            strict=True):
        engine = Engine.load(model)
        method.prepare(engine)  # trains on first use; cached by option fingerprint afterwards
        held = (method.train_stats or {}).get("heldout", {})
        rows.append({"options": opts, **dev.row(engine, None, harmful, benign),
                     "heldout": {k: held.get(k) for k in ("preference_accuracy", "reward_margin",
                                                          "kl_to_base_benign_per_token")},
                     "steps": (method.train_stats or {}).get("steps"),
                     "adapter": Path(method.artifact or "").name, "shipped": method.shipped})
    best = max(range(1, len(rows)), key=lambda i: (rows[i]["score"], -i))
    return {"kind": kind, "model": model, "chosen": rows[best]["options"], "rows": rows,
            "chosen_on": dev.chosen_on(harmful, benign) | {"rule": "highest score; first in grid order on a tie",
                                                          "excluded": "dev prompts contained in any pair of the sample trained on"}}


def _tune_table(rep: dict[str, Any]) -> str:
    """The tune report as a markdown table (options, dev refusal rates, score, held-out statistics)."""
    lines = ["| options | harmful refusal | benign refusal | degenerate | score | held-out pref. acc. | KL benign |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        opts = "base (no adapter)" if r["options"] is None else " ".join(f"{k}={v}" for k, v in r["options"].items())
        if r["options"] == rep["chosen"]:
            opts = f"**{opts}** (chosen)"
        h = r.get("heldout", {})
        lines.append(f"| {opts} | {r['refusal_harmful']:.3f} | {r['refusal_benign']:.3f} | {r['degenerate']:.3f} | "
                     f"{r['score']:.3f} | {h.get('preference_accuracy', '')} | {h.get('kl_to_base_benign_per_token', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m steerboard.methods.dpo train [--kind dpo|sft] [--ship] [-M key=value ...]``: train the adapter
    for the embedded model (or ``--model``) and, with ``--ship``, copy it into ``methods/artifacts/``."""
    import argparse

    from steerboard.engine import Engine

    ap = argparse.ArgumentParser(prog="python -m steerboard.methods.dpo")
    ap.add_argument("action", choices=("train", "tune"))
    ap.add_argument("--kind", choices=("dpo", "sft"), default="dpo")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("-M", dest="options", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--ship", action="store_true", help="copy the trained adapter into methods/artifacts/")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="tune: an option's candidate values (repeat for a grid)")
    ap.add_argument("--max-tokens", type=int, default=32, help="tune: reply length on the dev prompts")
    ap.add_argument("--out", type=Path, default=None, help="tune: write the report (JSON) here")
    args = ap.parse_args(argv)
    cls = method_class(args.kind)
    options = dict(o.split("=", 1) for o in args.options)
    if args.action == "tune":
        combos = parse_grid(args.grid, cls.config_class, options)
        rep = tune_adapter(args.kind, args.model, combos, max_tokens=args.max_tokens)
        if args.out:
            args.out.write_text(json.dumps(rep, indent=1) + "\n")
        print(_tune_table(rep))
        print(f"chosen: {rep['chosen']}")
        return 0
    cfg = cls.config_class.from_dict(options)
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
