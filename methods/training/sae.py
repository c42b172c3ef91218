"""SAE training and feature discovery for ``sae/`` (``steerboard sae train``, ``steerboard sae features``).

* :func:`train_sae`: a Top-k SAE on the residual stream of the fit text (:func:`training_sequences`);
* :func:`discover`: candidate refusal features and their strengths, screened on the dev split;
* :func:`record_max_activation`: each preset feature's maximum activation on the fit text (the unit
  :func:`steerboard.methods.sae.strength_units` reports).

The runtime (:class:`steerboard.methods.sae.SAEMethod`) loads the SAE and preset these write; it trains nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerboard.methods.sae import (
    ARTIFACT_DIR,
    DEFAULT_ARTIFACT,
    DEFAULT_PRESET,
    EMBEDDED_MODEL_NAMES,
    PRESET_DIR,
    SAESteerer,
    _layer_from_hook,
    _read_sae_cfg,
    load_preset,
    load_sae,
)
from steerboard.methods.steering import gated_intervention
from steerboard.methods.training.gates import DevScreen

if TYPE_CHECKING:
    import torch

    from steerboard.engine import Engine


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


def _collect_activations(engine: Any, layer: int, max_tokens: int | None, activation_cache: Path | None) -> torch.Tensor:
    """``[tokens, d_in]`` residuals after block ``layer`` over the fit text (an evenly spread subset of about
    ``max_tokens``), each sequence's first position dropped; read from / written to ``activation_cache``."""
    import torch

    from steerboard.methods.steering import residuals

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
    return acts


def _init_topk_sae(train: torch.Tensor, expansion: int, k: int, gen: torch.Generator) -> Any:
    """A SAELens ``TopKTrainingSAE`` whose decoder starts from normalised, centred activation samples (encoder =
    decoder transpose) and ``b_dec`` from the data mean."""
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    d_in = train.shape[1]
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
    return sae


def _save_sae(sae: Any, engine: Any, layer: int, out_dir: Path) -> None:
    """Save the trained SAE for inference in SAELens format, weights in fp16 (loaded back as float32)."""
    from safetensors.torch import load_file, save_file

    sae.cfg.metadata.hook_name = engine.layer_module_name(layer)
    sae.cfg.metadata.model_name = engine.source
    sae.cfg.dtype = "float16"
    sae.save_inference_model(out_dir)
    wpath = out_dir / "sae_weights.safetensors"
    save_file({k_: v.half().contiguous() for k_, v in load_file(str(wpath)).items()}, str(wpath))


def _fit_sae(sae: Any, train: torch.Tensor, gen: torch.Generator, epochs: int, batch_size: int, lr: float) -> Any:
    """Train ``sae`` with SAELens' ``SAETrainer`` for ``epochs`` passes over ``train``, reshuffled each epoch."""
    import torch
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

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
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    return trainer.fit()


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

    from steerboard.engine import Engine

    torch.manual_seed(seed)
    engine = Engine.load(model)
    t0 = time.perf_counter()
    acts = _collect_activations(engine, layer, max_tokens, activation_cache)
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
    sae = _init_topk_sae(train, expansion, k, gen)

    t1 = time.perf_counter()
    sae = _fit_sae(sae, train, gen, epochs, batch_size, lr)
    t_train = time.perf_counter() - t1
    sae.fold_activation_norm_scaling_factor(scale)
    sae.fold_W_dec_norm()

    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name.lower())
    out_dir = Path(out_dir or ARTIFACT_DIR / f"{slug}-l{layer}-topk{k}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_sae(sae, engine, layer, out_dir)

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


def _discovery_sae(engine: Any, sae_path: Path | None, layer: int | None) -> tuple[Path, int, Any]:
    """(the SAE's folder, its layer, the SAE) for ``steerboard sae features``, checked against the model."""
    path = Path(sae_path) if sae_path else ARTIFACT_DIR / DEFAULT_ARTIFACT
    sae_cfg = _read_sae_cfg(path)
    layer = layer if layer is not None else _layer_from_hook((sae_cfg.get("metadata") or {}).get("hook_name"))
    if layer is None:
        raise ValueError("cannot tell the SAE's layer from its cfg.json: give --layer")
    sae = load_sae(path, device=str(engine.device))
    if int(sae.cfg.d_in) != int(engine.model.config.hidden_size):
        raise ValueError(f"SAE d_in={sae.cfg.d_in} != model hidden size {engine.model.config.hidden_size}")
    return path, layer, sae


def _refusal_latents(
    engine: Any, sae: Any, layer: int, prompt: str | None, response: str | None, min_tokens: int, judge: str
) -> tuple[str, str, str, list[int], torch.Tensor, torch.Tensor]:
    """Step 1 of :func:`discover`: teacher-force a refusal to one harmful prompt and list the latents active on
    >= ``min_tokens`` reply tokens. Returns (prompt, response, where the response came from, candidate latents,
    their mean activation over the reply, the reply's residuals)."""
    import torch

    from steerboard.engine import GenerationRequest
    from steerboard.methods import fitdata
    from steerboard.methods.steering import pair_ids, prompt_ids, residuals
    from steerboard.methods.training.gates import judge_refusal_flags

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
    return prompt, response, source, cand, acts.mean(0), h


def _prerank(
    engine: Any, sae: Any, module: str, ranked: Sequence[int], strength: float, harmful: Sequence[str],
    n_rank_prompts: int,
) -> list[tuple[float, int]]:
    """Step 2 of :func:`discover`: ``(gain, latent)`` best first, the gain in teacher-forced log-probability of a
    refusal opener on ``n_rank_prompts`` dev harmful prompts when the latent is clamped at ``strength``."""
    from tqdm.auto import tqdm

    from steerboard.methods.steering import prompt_ids

    opener = engine.tokenizer("I'm sorry, but I can't", add_special_tokens=False)["input_ids"]
    rank_prompts = [prompt_ids(engine, p) for p in harmful[:n_rank_prompts]]
    conts = [list(opener)] * len(rank_prompts)

    def opener_lp(iv: Any) -> float:
        lps = engine.score(rank_prompts, conts, intervention=iv)
        return float(sum(sum(x) for x in lps) / len(lps))

    base_lp = opener_lp(None)
    pre: list[tuple[float, int]] = []
    for f in tqdm(ranked, desc="pre-rank candidates"):
        st = SAESteerer(sae, [f], [strength], "clamp")
        pre.append((opener_lp(gated_intervention(engine.model, module, st.apply, "both", None)) - base_lp, f))
    pre.sort(reverse=True)
    return pre


def _screen_features(
    engine: Any, sae: Any, module: str, top: Sequence[int], strengths: Sequence[float], dev: DevScreen,
    harmful: Sequence[str], benign: Sequence[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Step 3 of :func:`discover`: the unsteered screen and one row per (latent, strength), generated on the dev
    split and judged."""
    from tqdm.auto import tqdm

    base = dev.row(engine, None, harmful, benign)
    rows: list[dict[str, Any]] = []
    grid = [(f, s) for f in top for s in strengths]
    for f, s in tqdm(grid, desc="screen feature x strength"):
        st = SAESteerer(sae, [f], [s], "clamp")
        iv = gated_intervention(engine.model, module, st.apply, "both", None)
        rows.append({"feature": f, "strength": s, **dev.row(engine, iv, harmful, benign)})
        tqdm.write(json.dumps(rows[-1]))  # partial results survive an interrupted screen
    return base, rows


def _discovery_preset(
    model: str, path: Path, is_embedded: bool, layer: int, best: dict[str, Any], base: dict[str, Any], n_found: int,
    n_screened: int, chosen_on: dict[str, Any],
) -> dict[str, Any]:
    """The ``sae/`` preset :func:`discover` writes: the best (latent, strength), clamped, ungated, with how it was
    chosen."""
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
            "procedure": "steerboard sae features", **chosen_on,
            "n_candidates_found": n_found, "screened": n_screened, "base": base, "best": best,
        },
    }
    return preset


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
    dev: DevScreen | None = None,
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
       judged by the refusal judge, with a degenerate-text check, as ``dev`` says (default
       :class:`~steerboard.methods.training.gates.DevScreen` with 32 harmful prompts); ``dev.judge`` also
       judges the model's own reply in step 1.
    """
    from tqdm.auto import tqdm

    from steerboard.engine import Engine

    dev = dev or DevScreen(n_harmful=32)
    t0 = time.perf_counter()
    engine = Engine.load(model)
    is_embedded = model in EMBEDDED_MODEL_NAMES
    path, layer, sae = _discovery_sae(engine, sae_path, layer)
    module = engine.layer_module_name(layer)
    prompt, response, source, cand, mean_act, h = _refusal_latents(
        engine, sae, layer, prompt, response, min_tokens, dev.judge
    )
    ranked = sorted(cand, key=lambda f: -float(mean_act[f]))[:max_prerank]
    resid_norm = float(h.norm(dim=-1).mean())
    strengths = strengths or [round(resid_norm * f, 1) for f in (0.2, 0.35, 0.5)]
    mid = strengths[len(strengths) // 2]
    harmful, benign = dev.prompts()
    pre = _prerank(engine, sae, module, ranked, mid, harmful, n_rank_prompts)
    top = [f for _, f in pre[:n_candidates]]
    tqdm.write(json.dumps({"prerank_top": [[f, round(g, 3)] for g, f in pre[: max(n_candidates, 8)]]}))
    base, rows = _screen_features(engine, sae, module, top, strengths, dev, harmful, benign)
    best = max(rows, key=lambda r: r["score"])
    result = {
        "prompt": prompt, "response": response, "response_source": source, "layer": layer,
        "n_candidates_found": len(cand), "n_preranked": len(ranked), "prerank_top": [{"feature": f, "opener_logprob_gain": round(g, 3)} for g, f in pre[:n_candidates]],
        "strengths": strengths, "base": base, "best": best, "table": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    preset = _discovery_preset(model, path, is_embedded, layer, best, base, len(cand), len(rows),
                               dev.chosen_on(harmful, benign))
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
