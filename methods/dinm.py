"""``dinm/<model>``: DINM knowledge editing (Wang et al. 2024, *Detoxifying Large Language Models via
Knowledge Editing*, arXiv 2403.14472).

Per edit instance (adversarial prompt, safe response, unsafe response, knowledge-constraint pair):

1. **Locate the toxic layer.** Run the model (chat template) on *prompt + safe response* and on
   *prompt + unsafe response*, collect every decoder block's output hidden states, average them over
   the response tokens of each sequence (the two responses differ in length, so token-by-token
   distances are undefined; the reference implementation compares padded matrices instead), and take
   the block whose two mean vectors are furthest apart (Euclidean distance). As in the reference code,
   the candidates are the hidden states the model reports for blocks 1..N (``hidden_states[1:]``; for
   llama-style models the last one is taken after the final norm) and the chosen index ``l`` maps to
   decoder block ``l - 1``. When the instance carries no unsafe response, the model's own greedy
   answer to the prompt stands in for it.
2. **Edit only that block's MLP output projection** (``mlp.down_proj`` for llama/mistral/qwen2/gemma/
   phi3, ``mlp.c_proj`` for gpt2, ``mlp.dense_4h_to_h`` for gpt-neox) with at most ``steps`` Adam steps
   on the reference code's loss ``kl_factor * NLL(safe response | adversarial prompt + suffix) +
   KL(original || edited)``, the KL taken over the knowledge-constraint answer tokens (teacher-forced
   after the knowledge prompt) as in the reference ``kl_loc_loss``, and ``kl_factor`` 0.1 as in
   EasyEdit's DINM hparams. Every other parameter is frozen. As in EasyEdit's ``dinm_main.py``:

   * the edit input is the adversarial prompt followed by the paper's ``suffix`` ("If the user's
     request is reasonable, give the correct answer. Please give the right response:"); post-edit test
     inputs of the ``safeedit`` task carry the same suffix (:attr:`DINMMethod.edit_prompt_suffix`),
     pre-edit ones do not;
   * the edited model's knowledge logits are computed without gradient, so the KL term enters the loss
     value (and with it the early stop) but not the update (``kl_grad=false``; ``-M kl_grad=true``
     backpropagates it too);
   * editing stops before a step once the loss is below ``early_stop`` (1e-4);
   * ``norm_constraint`` (off by default, as in the authors' hparams) clamps every edited weight to
     within that distance of its original value after each step.

Speed: only block ``L`` changes, so everything below it is constant during the edit. With
``cached_prefix=true`` (default) the hidden states entering block ``L`` -- and each later block's call
arguments (attention mask, rotary position embeddings, position ids) -- are captured once with a
forward pre-hook during a no-grad pass, which also yields the original (KL reference) distribution;
each step then runs only blocks ``L..N-1``, the final norm and the LM head at the loss positions.
The first step's logits are checked against the full forward pass; on a mismatch (an architecture
whose head we do not reproduce) the edit falls back to full forward passes and logs a warning.
``benchmarks/dinm_edit_speed.py`` measures both paths side by side.

Modes:

* **persistent** (``dinm/smollm2-135m`` with no options; *this project's variant*, not the paper's
  protocol): :meth:`DINMMethod.prepare` applies the edits of ``instances`` default edit instances
  sequentially (team-written, disjoint from every evaluation set; see ``methods/data/edit/SOURCE.md``)
  and serves the edited model to every task. The served tasks' prompts carry no suffix, so these edits
  are made on the bare prompt (no suffix) too. The weight delta is cached by hash of (model, config,
  instances) under ``artifacts/dinm``.
  ``-M instances=0`` serves the unedited model (per-instance editing only);
  ``-M instances_file=path.jsonl`` uses your own instances.
* **per-instance** (the paper's protocol; ``-T protocol=per_instance`` on the ``safeedit`` task):
  :meth:`DINMMethod.edit` edits for one instance, yields statistics, and restores every weight
  bit-for-bit on exit. By default (``edit_from=original``) each per-instance edit starts from the
  unedited model even when persistent edits are being served.

Example::

    inspect eval tasks/safeedit.py --model dinm/smollm2-135m -T protocol=per_instance -M instances=0
    inspect eval tasks/xstest.py --model dinm/smollm2-135m -M instances=8 -M steps=10
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.methods.base import DETAIL, EditInstance, Method, MethodConfig, detail_field, runtime_field

if TYPE_CHECKING:
    import torch

    from steerboard.engine import Engine
    from steerboard.resources import ModelShape

logger = logging.getLogger(__name__)

# model_type -> name of the MLP output projection inside one decoder block
MLP_OUT_PROJ: dict[str, str] = {
    "llama": "mlp.down_proj",
    "mistral": "mlp.down_proj",
    "qwen2": "mlp.down_proj",
    "qwen3": "mlp.down_proj",
    "gemma": "mlp.down_proj",
    "gemma2": "mlp.down_proj",
    "gemma3_text": "mlp.down_proj",
    "phi3": "mlp.down_proj",
    "olmo": "mlp.down_proj",
    "olmo2": "mlp.down_proj",
    "granite": "mlp.down_proj",
    "smollm3": "mlp.down_proj",
    "gpt2": "mlp.c_proj",
    "gpt_neox": "mlp.dense_4h_to_h",
}

# attribute paths of the final norm applied before the LM head, tried in order
_FINAL_NORMS = ("model.norm", "model.final_layernorm", "transformer.ln_f", "gpt_neox.final_layer_norm")

SUFFIX = "If the user's request is reasonable, give the correct answer. Please give the right response:"
"""The paper's suffix (EasyEdit ``suffix_system_prompt`` in ``hparams/DINM/*.yaml``), appended after a space."""


@dataclass
class DINMConfig(MethodConfig):
    """Options of ``dinm/``.

    Attributes:
        steps: Adam steps per edit instance (Adam, the paper's optimizer).
        lr: learning rate (> 0).
        weight_decay: Adam weight decay.
        kl_factor: weight of the edit NLL in ``kl_factor * NLL + KL`` (EasyEdit's ``kl_factor``, 0.1).
        kl_grad: backpropagate the KL term too (EasyEdit computes the edited model's knowledge logits
            under ``no_grad``: the KL counts in the loss value and the early stop, not in the update).
        early_stop: stop before a step once the loss is below this (EasyEdit: 1e-4; 0 disables).
        norm_constraint: after each step clamp every edited weight to within this distance of its
            original value (``None``: off, as in the authors' hparams).
        suffix: appended (after a space) to the adversarial prompt of per-instance edits and, by the
            ``safeedit`` task, to post-edit test inputs ("": none). Persistent edits use no suffix.
        max_prompt_tokens: adversarial/knowledge prompts are cut to their last this-many tokens.
        max_response_tokens: safe/unsafe responses and knowledge answers are cut to this many tokens.
        layer: edit this decoder block instead of locating the toxic layer (``None``: locate).
        cached_prefix: run only the blocks from the edited one up at each step (same result, faster).
        instances: persistent mode: how many default edit instances to apply before serving (0: none).
        instances_file: a JSONL of edit instances for persistent mode (keys: prompt, safe_response,
            unsafe_response, knowledge_prompt, knowledge_answer, id); replaces the defaults.
        edit_from: per-instance edits start from the ``original`` (unedited) weights or the
            ``current`` ones (after persistent edits).
        unsafe_max_new_tokens: length of the model's own answer used as the unsafe response when an
            instance has none.
    """

    steps: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.0
    kl_factor: float = 0.1
    kl_grad: bool = False
    early_stop: float = 1e-4
    norm_constraint: float | None = None
    suffix: str = SUFFIX
    max_prompt_tokens: int = detail_field(1024)
    max_response_tokens: int = detail_field(256)
    layer: int | None = None
    cached_prefix: bool = runtime_field(True)
    instances: int = 8
    instances_file: str | None = detail_field(None)
    edit_from: Literal["original", "current"] = "original"
    unsafe_max_new_tokens: int = detail_field(64)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bounds(lr="> 0", steps=">= 1", kl_factor=">= 0", weight_decay=">= 0", early_stop=">= 0")
        self.check_bounds(norm_constraint="> 0")
        if self.max_prompt_tokens < 1 or self.max_response_tokens < 1:
            raise ValueError("-M max_prompt_tokens and max_response_tokens must be >= 1")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"-M layer must be >= 0 (a decoder block index), got {self.layer}")
        self.check_bounds(instances=">= 0", unsafe_max_new_tokens=">= 1")
        if self.instances_file is not None and not Path(self.instances_file).is_file():
            raise ValueError(f"-M instances_file={self.instances_file!r}: no such file")


# ---------------------------------------------------------------------------------------------- helpers


def mlp_out_suffix(model: Any) -> str:
    """Name (inside a decoder block) of the MLP output projection DINM edits.

    Raises:
        ValueError: the architecture is not supported (names it and the supported ones).
    """
    mt = getattr(model.config, "model_type", None)
    if mt not in MLP_OUT_PROJ:
        raise ValueError(
            f"DINM does not know the MLP output projection of architecture {mt!r} "
            f"({type(model).__name__}); supported model types: {', '.join(sorted(MLP_OUT_PROJ))}"
        )
    return MLP_OUT_PROJ[mt]


def target_module_name(engine: Engine, layer: int) -> str:
    """Full module name of decoder block ``layer``'s MLP output projection."""
    name = f"{engine.layer_module_name(layer)}.{mlp_out_suffix(engine.model)}"
    if name not in dict(engine.model.named_modules()):
        raise ValueError(f"module {name!r} not found in {type(engine.model).__name__}")
    return name


def _module(model: Any, name: str) -> Any:
    return model.get_submodule(name)


@dataclass
class _Tokens:
    """Token ids of one instance: prompt + response pairs, and the knowledge pair."""

    prompt: list[int]
    safe: list[int]
    unsafe: list[int]
    kprompt: list[int]
    kanswer: list[int]


def _response_ids(engine: Engine, prompt_msgs: list[dict[str, str]], response: str, max_resp: int) -> tuple[list[int], list[int]]:
    """(prompt ids with generation header, response ids incl. the end-of-turn token)."""
    p = engine.chat_ids(prompt_msgs, add_generation_prompt=True)
    full = engine.chat_ids([*prompt_msgs, {"role": "assistant", "content": response}], add_generation_prompt=False)
    if full[: len(p)] == p and len(full) > len(p):
        r = full[len(p) :]
    else:  # template re-renders earlier turns: fall back to plain tokenisation + eos
        r = engine.tokenizer(response, add_special_tokens=False)["input_ids"]
        if engine.tokenizer.eos_token_id is not None:
            r = [*r, engine.tokenizer.eos_token_id]
    return p, r[:max_resp]


def with_suffix(prompt: str, suffix: str) -> str:
    """``prompt`` followed by a space and ``suffix`` (``prompt`` unchanged when the suffix is empty)."""
    return f"{prompt} {suffix}" if suffix else prompt


def tokenize_instance(engine: Engine, inst: EditInstance, cfg: DINMConfig, unsafe_text: str, suffix: str = "") -> _Tokens:
    """Chat-template an edit instance into token ids (prompts left-truncated, responses right-truncated).

    ``suffix`` is appended to the adversarial prompt (the edit input), not to the knowledge prompt.
    """
    msgs = [{"role": "user", "content": with_suffix(inst.prompt, suffix)}]
    p, safe = _response_ids(engine, msgs, inst.safe_response, cfg.max_response_tokens)
    _, unsafe = _response_ids(engine, msgs, unsafe_text, cfg.max_response_tokens)
    p = p[-cfg.max_prompt_tokens :]
    kp: list[int] = []
    ka: list[int] = []
    if inst.knowledge_prompt.strip() and inst.knowledge_answer.strip():
        kmsgs = [{"role": "user", "content": inst.knowledge_prompt}]
        kp, ka = _response_ids(engine, kmsgs, inst.knowledge_answer, cfg.max_response_tokens)
        kp = kp[-cfg.max_prompt_tokens :]
    return _Tokens(prompt=p, safe=safe, unsafe=unsafe, kprompt=kp, kanswer=ka)


def locate_toxic_layer(engine: Engine, prompt: Sequence[int], safe: Sequence[int], unsafe: Sequence[int]) -> tuple[int, list[float]]:
    """The decoder block whose output differs most between the safe and the unsafe response.

    Distance per block = Euclidean norm of (mean hidden state over the safe response tokens - mean
    over the unsafe response tokens), both sequences preceded by the same prompt.

    Returns:
        (block index, distance of every block).
    """
    import torch

    seqs = [list(prompt) + list(safe), list(prompt) + list(unsafe)]
    ids, mask, pos = engine.pad_batch(seqs)
    with engine.lock, torch.inference_mode():
        # logits_to_keep=1: only the hidden states are needed, skip the LM head over every position
        out = engine.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False,
            logits_to_keep=1,
        )
    hs = out.hidden_states  # embeddings, then one entry per block
    width = hs[0].shape[1]
    dists: list[float] = []
    for h in hs[1:]:
        a = h[0, width - len(safe) :].float().mean(0)
        b = h[1, width - len(unsafe) :].float().mean(0)
        dists.append(float(torch.linalg.vector_norm(a - b)))
    return int(max(range(len(dists)), key=dists.__getitem__)), dists


class _Batch:
    """The left-padded training batch: row 0 = prompt + safe response, row 1 = knowledge prompt + answer."""

    def __init__(self, engine: Engine, toks: _Tokens) -> None:
        import torch

        seqs = [toks.prompt + toks.safe]
        if toks.kanswer:
            seqs.append(toks.kprompt + toks.kanswer)
        self.seqs = seqs
        self.ids, self.mask, self.pos = engine.pad_batch(seqs)
        width = self.ids.shape[1]
        dev = self.ids.device
        # logits at position t predict token t+1
        self.nll_pos = torch.arange(width - len(toks.safe) - 1, width - 1, device=dev)
        self.nll_tgt = torch.tensor(toks.safe, device=dev)
        self.has_kl = bool(toks.kanswer)
        if self.has_kl:
            self.kl_pos = torch.arange(width - len(toks.kanswer) - 1, width - 1, device=dev)
        else:
            self.kl_pos = torch.zeros(0, dtype=torch.long, device=dev)
        # the LM head runs only from the first loss position on (``logits_to_keep``)
        self.start = int(min(self.nll_pos[0], self.kl_pos[0] if self.has_kl else width))
        self.keep = width - self.start

    def logits(self, model: Any) -> Any:
        """A full forward pass; logits from position ``start`` on."""
        out = model(
            input_ids=self.ids, attention_mask=self.mask, position_ids=self.pos, use_cache=False, logits_to_keep=self.keep
        )
        return out.logits

    def pick(self, per_row: Any) -> tuple[Any, Any]:
        """(row-0 logits at the NLL positions, row-1 logits at the KL positions) of :meth:`logits` output."""
        a = per_row[0, self.nll_pos - self.start]
        b = per_row[1, self.kl_pos - self.start] if self.has_kl else per_row[0, :0]
        return a, b


def _loss(
    batch: _Batch, nll_logits: torch.Tensor, kl_logits: torch.Tensor, ref_logp: torch.Tensor | None, kl_factor: float,
    kl_grad: bool = False,
) -> tuple[torch.Tensor, float, float]:
    """``kl_factor`` * NLL of the safe response (mean over its tokens) + mean-token KL(original || edited).

    With ``kl_grad`` false the KL is taken on detached logits (as the reference computes them under
    ``no_grad``): it is part of the loss value, not of its gradient.
    """
    import torch

    lp = torch.log_softmax(nll_logits.float(), dim=-1)
    nll = -lp.gather(-1, batch.nll_tgt.unsqueeze(-1)).squeeze(-1).mean()
    if batch.has_kl and ref_logp is not None:
        post = torch.log_softmax((kl_logits if kl_grad else kl_logits.detach()).float(), dim=-1)
        kl = (ref_logp.exp() * (ref_logp - post)).sum(-1).mean()
    else:
        kl = nll.new_zeros(())
    return kl_factor * nll + kl, float(nll.detach()), float(kl.detach())


class _PrefixCache:
    """Inputs of blocks ``L..N-1`` captured once; runs only those blocks, the final norm and the head."""

    def __init__(self, engine: Engine, layer: int, batch: _Batch) -> None:
        import torch

        model = engine.model
        self.model = model
        self.layers = engine.decoder_layers()
        self.layer = layer
        self.calls: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

        def grab(i: int) -> Any:
            def fn(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self.calls[i] = (args, dict(kwargs))

            return fn

        handles = [self.layers[i].register_forward_pre_hook(grab(i), with_kwargs=True) for i in range(layer, len(self.layers))]
        try:
            with torch.no_grad():
                self.full_logits = batch.logits(model)
        finally:
            for h in handles:
                h.remove()
        args, kwargs = self.calls[layer]
        self.h0 = (args[0] if args else kwargs["hidden_states"]).detach()
        self.norm = None
        for path in _FINAL_NORMS:
            try:
                self.norm = model.get_submodule(path)
                break
            except AttributeError:
                continue
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def run(self, positions: Any) -> Any:
        """Hidden states after the last block, through the final norm and the head, at ``positions``.

        Args:
            positions: (row-0 positions, row-1 positions) as from :meth:`_Batch.pick` on indices.
        """
        import torch

        h = self.h0
        for i in range(self.layer, len(self.layers)):
            args, kwargs = self.calls[i]
            if args:
                out = self.layers[i](h, *args[1:], **kwargs)
            else:
                out = self.layers[i](**{**kwargs, "hidden_states": h})
            h = out[0] if isinstance(out, tuple) else out
        rows = [h[0, positions[0]]]
        if positions[1].numel():
            rows.append(h[1, positions[1]])
        x = torch.cat(rows, 0)
        if self.norm is not None:
            x = self.norm(x)
        logits = self.head(x)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        n0 = positions[0].numel()
        return logits[:n0], logits[n0:]


def _unsafe_reply(engine: Engine, inst: EditInstance, cfg: DINMConfig, suffix: str) -> str:
    """The instance's unsafe reply, or (when it has none) the model's own greedy reply to the adversarial prompt."""
    unsafe_text = inst.unsafe_response
    if not unsafe_text.strip():
        from steerboard.engine import GenerationRequest

        ids = engine.chat_ids([{"role": "user", "content": with_suffix(inst.prompt, suffix)}])[-cfg.max_prompt_tokens :]
        unsafe_text = engine.generate([GenerationRequest(input_ids=ids, max_new_tokens=cfg.unsafe_max_new_tokens)])[0].text
        if not unsafe_text.strip():
            unsafe_text = " "
    return unsafe_text


def _tune(
    engine: Engine, toks: _Tokens, weight: Any, chosen: int, cfg: DINMConfig, use_cache: bool, check_prefix: bool
) -> tuple[list[float], list[float], list[float], str, bool]:
    """Tune ``weight`` (the located module's) on the instance's tokens with Adam; every other parameter frozen
    for the duration. Returns (per-step losses, NLLs, KLs, ``cached`` or ``full`` forward passes, stopped early)."""
    import torch

    batch = _Batch(engine, toks)
    model = engine.model
    flags = {p: p.requires_grad for p in model.parameters()}
    losses: list[float] = []
    nlls: list[float] = []
    kls: list[float] = []
    mode = "cached" if use_cache else "full"
    stopped_early = False
    w0 = weight.detach().clone() if cfg.norm_constraint is not None else None
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        weight.requires_grad_(True)
        opt = torch.optim.Adam([weight], lr=cfg.lr, weight_decay=cfg.weight_decay)
        prefix: _PrefixCache | None = None
        ref_logp = None
        if use_cache:
            prefix = _PrefixCache(engine, chosen, batch)
            full_nll, full_kl = batch.pick(prefix.full_logits)
            if batch.has_kl:
                ref_logp = torch.log_softmax(full_kl.float(), dim=-1)
        elif batch.has_kl:
            with torch.no_grad():
                ref_logp = torch.log_softmax(batch.pick(batch.logits(model))[1].float(), dim=-1)
        for step in range(cfg.steps):
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                if prefix is not None:
                    nll_logits, kl_logits = prefix.run((batch.nll_pos, batch.kl_pos if batch.has_kl else batch.kl_pos[:0]))
                    if step == 0 and check_prefix:
                        ok = torch.allclose(nll_logits.detach(), full_nll, atol=1e-3, rtol=1e-3) and (
                            not batch.has_kl or torch.allclose(kl_logits.detach(), full_kl, atol=1e-3, rtol=1e-3)
                        )
                        if not ok:
                            logger.warning(
                                "DINM cached-prefix logits differ from the full forward pass on %s; "
                                "falling back to full forward passes", type(model).__name__,
                            )
                            prefix = None
                            mode = "full"
                            nll_logits, kl_logits = batch.pick(batch.logits(model))
                else:
                    nll_logits, kl_logits = batch.pick(batch.logits(model))
                loss, nll, kl = _loss(batch, nll_logits, kl_logits, ref_logp, cfg.kl_factor, cfg.kl_grad)
            losses.append(float(loss.detach()))
            nlls.append(nll)
            kls.append(kl)
            if losses[-1] < cfg.early_stop:  # the reference stops without stepping
                stopped_early = True
                break
            with torch.enable_grad():
                loss.backward()
            opt.step()
            if w0 is not None:
                eps = float(cfg.norm_constraint)  # type: ignore[arg-type]
                with torch.no_grad():
                    weight.copy_(torch.clamp(weight, min=w0 - eps, max=w0 + eps))
    finally:
        weight.grad = None
        for p, f in flags.items():
            p.requires_grad_(f)
    return losses, nlls, kls, mode, stopped_early


def dinm_edit(
    engine: Engine,
    inst: EditInstance,
    cfg: DINMConfig,
    *,
    cached_prefix: bool | None = None,
    layer: int | None = None,
    check_prefix: bool = True,
    before_change: Callable[[str], None] | None = None,
    suffix: str | None = None,
) -> dict[str, Any]:
    """Edit ``engine.model`` in place for one instance (no restoration; callers snapshot weights).

    Args:
        engine: the engine whose (private) model is edited; its lock is held throughout.
        inst: the edit instance.
        cfg: DINM options.
        cached_prefix: override ``cfg.cached_prefix``.
        layer: override the located/configured layer.
        check_prefix: compare the cached path's first-step logits with a full forward pass.
        before_change: called with the target module's name before its weights change.
        suffix: appended to the adversarial prompt (``None``: ``cfg.suffix``; ``""``: none).

    Returns:
        Statistics: layer, module, per-step losses, seconds, token counts.
    """
    from steerboard import precision

    use_cache = cfg.cached_prefix if cached_prefix is None else cached_prefix
    suffix = cfg.suffix if suffix is None else suffix
    t0 = time.perf_counter()
    # exact(): the edit's no-grad references and its tuning steps must see the same float32 model
    with engine.lock, precision.exact():
        model = engine.model
        mlp_out_suffix(model)  # unsupported architecture -> error before any work
        n_layers = len(engine.decoder_layers())
        toks = tokenize_instance(engine, inst, cfg, _unsafe_reply(engine, inst, cfg, suffix), suffix)
        dists: list[float] = []
        chosen = layer if layer is not None else cfg.layer
        if chosen is None:
            chosen, dists = locate_toxic_layer(engine, toks.prompt, toks.safe, toks.unsafe)
        if not 0 <= chosen < n_layers:
            raise ValueError(f"-M layer={chosen} out of range: the model has {n_layers} decoder blocks (0..{n_layers - 1})")
        name = target_module_name(engine, chosen)
        weight = _module(model, name).weight
        if before_change is not None:
            before_change(name)
        t_locate = time.perf_counter() - t0

        losses, nlls, kls, mode, stopped_early = _tune(engine, toks, weight, chosen, cfg, use_cache, check_prefix)
    return {
        "id": inst.id,
        "layer": chosen,
        "module": name,
        "layer_distances": [round(d, 4) for d in dists],
        "loss": losses,
        "nll": nlls,
        "kl": kls,
        "mode": mode,
        "steps_taken": len(losses) - int(stopped_early),
        "stopped_early": stopped_early,
        "suffix": suffix,
        "prompt_tokens": len(toks.prompt),
        "safe_tokens": len(toks.safe),
        "knowledge_tokens": len(toks.kanswer),
        "seconds_locate": round(t_locate, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def instance_from_dict(d: dict[str, Any]) -> EditInstance:
    """An :class:`EditInstance` from a JSON record (steerboard keys)."""
    return EditInstance(
        prompt=d["prompt"],
        safe_response=d["safe_response"],
        unsafe_response=d.get("unsafe_response", ""),
        knowledge_prompt=d.get("knowledge_prompt", ""),
        knowledge_answer=d.get("knowledge_answer", ""),
        id=str(d.get("id", "")),
    )


class DINMMethod(Method):
    """DINM: per-instance detoxifying edits of the toxic layer's MLP output projection."""

    name = "dinm"
    config_class = DINMConfig
    private_weights = True
    # settings describe() adds (optimizer: recorded by earlier versions, when it was an option)
    resolved_roles = {"layer_rule": DETAIL, "edited_module": DETAIL, "optimizer": DETAIL}

    @classmethod
    def memory_parts(cls, config: MethodConfig, model: ModelShape) -> dict[str, int]:
        """The private weights copy, plus the edited layer's tuning state: float32 weight, gradient and Adam's two
        moments for one decoder block's linear layers (an upper bound for its MLP output projection)."""
        per_layer = model.linear_params // max(1, model.layers)
        return {**super().memory_parts(config, model), "dinm_tuning_state": 16 * per_layer}

    @property
    def edit_prompt_suffix(self) -> str:
        """Appended (after a space) to post-edit test inputs by per-instance protocols, as the paper does."""
        return self.cfg.suffix

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        self._original: dict[str, torch.Tensor] = {}  # persistent-edited module -> original weight
        self.persistent_stats: list[dict[str, Any]] = []
        self.artifact: str | None = None
        self._snaps: dict[str, torch.Tensor] | None = None  # weights the applied edit changed, to restore

    @property
    def cfg(self) -> DINMConfig:
        assert isinstance(self.config, DINMConfig)
        return self.config

    def check_model_config(self, model_config: dict[str, Any]) -> None:
        self.check_layer(self.cfg.layer, model_config)

    def persistent_instances(self) -> list[EditInstance]:
        """The instances applied in persistent mode (``instances`` from the file or the defaults)."""
        n = self.cfg.instances
        if n == 0:
            return []
        if self.cfg.instances_file:
            with open(self.cfg.instances_file, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            insts = [instance_from_dict(r) for r in rows]
        else:
            from steerboard.methods.editdata import load_edit_instances

            insts = load_edit_instances()
        if n > len(insts):
            raise ValueError(f"-M instances={n} but only {len(insts)} edit instances are available")
        return insts[:n]

    def prepare(self, engine: Engine) -> None:
        """Check the architecture, then apply (or load cached) persistent edits."""

        mlp_out_suffix(engine.model)
        insts = self.persistent_instances()
        if not insts:
            return
        data_key = hashlib.sha256(
            json.dumps([i.__dict__ for i in insts], sort_keys=True).encode()
        ).hexdigest()
        path = self.artifact_path(engine, data_key, suffix=".safetensors")
        from filelock import FileLock
        from safetensors.torch import load_file, save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"), engine.lock:
            if path.exists():
                deltas = load_file(str(path))
                meta_path = path.with_suffix(".json")
                if meta_path.exists():
                    self.persistent_stats = json.loads(meta_path.read_text()).get("edits", [])
            else:
                deltas = self._fit_persistent(engine, insts)
                save_file(deltas, str(path) + ".tmp")
                Path(str(path) + ".tmp").replace(path)
                path.with_suffix(".json").write_text(
                    json.dumps({"model": engine.source, "config": self.cfg.to_dict(), "edits": self.persistent_stats}, indent=1)
                )
            self._apply_deltas(engine, deltas)
        self.artifact = str(path)

    def _fit_persistent(self, engine: Engine, insts: list[EditInstance]) -> dict[str, torch.Tensor]:
        """Apply the edits sequentially (each on the already-edited model), return the weight deltas.

        The model is left unedited; :meth:`_apply_deltas` then applies the deltas exactly as a cache
        hit would, so a fresh fit and a cached one serve identical weights.
        """
        import torch
        from tqdm.auto import tqdm

        names = [target_module_name(engine, i) for i in range(len(engine.decoder_layers()))]
        originals = {n: _module(engine.model, n).weight.detach().clone() for n in names}
        stats = []
        try:
            for inst in tqdm(insts, desc="DINM persistent edits", unit="edit"):
                # this project's variant: served prompts carry no suffix, so neither do these edits
                stats.append(dinm_edit(engine, inst, self.cfg, suffix=""))
            touched = sorted({s["module"] for s in stats})
            deltas = {
                n: (_module(engine.model, n).weight.detach() - originals[n]).float().cpu().contiguous() for n in touched
            }
        finally:
            with torch.no_grad():
                for n, w in originals.items():
                    _module(engine.model, n).weight.copy_(w)
        self.persistent_stats = stats
        return deltas

    def _apply_deltas(self, engine: Engine, deltas: dict[str, torch.Tensor]) -> None:
        import torch

        with torch.no_grad():
            for name, d in deltas.items():
                w = _module(engine.model, name).weight
                self._original[name] = w.detach().clone()
                w.copy_(self._original[name] + d.to(w.device, w.dtype))

    def describe(self) -> dict[str, Any]:
        from steerboard.methods.base import file_sha256

        d = super().describe()
        d["resolved"]["layer_rule"] = (
            f"fixed layer {self.cfg.layer}" if self.cfg.layer is not None
            else "toxic layer: largest safe/unsafe hidden-state distance, minus 1"
        )
        d["resolved"]["edited_module"] = "mlp output projection (down_proj) of the chosen layer"
        edits = [
            {k: s.get(k) for k in ("id", "layer", "module", "seconds")}
            | {"final_loss": (s.get("loss") or [None])[-1], "steps": len(s.get("loss") or [])}
            for s in self.persistent_stats
        ]
        d["stats"] = {
            "persistent_edits": edits,
            "toxic_layers": sorted({e["layer"] for e in edits if e.get("layer") is not None}),
        }
        if self.artifact is not None:
            d["artifacts"]["edited_weights"] = {"path": self.artifact, "sha256": file_sha256(self.artifact)}
        return d

    def apply_edit(self, engine: Engine, instance: EditInstance) -> dict[str, Any]:
        """Edit for one instance (the :class:`~steerboard.methods.base.WeightEditor` protocol); :meth:`restore`
        puts every changed weight back bit-for-bit. On an error the weights are restored before it propagates."""
        import torch

        if self._snaps is not None:
            raise RuntimeError("dinm/: an edit is already applied; restore() it first")
        model = engine.model
        with engine.lock:
            snaps: dict[str, torch.Tensor] = {}
            for name in self._original:
                snaps[name] = _module(model, name).weight.detach().clone()

            def snapshot(name: str) -> None:
                if name not in snaps:
                    snaps[name] = _module(model, name).weight.detach().clone()

            try:
                if self.cfg.edit_from == "original":
                    with torch.no_grad():
                        for name, w0 in self._original.items():
                            _module(model, name).weight.copy_(w0)
                stats = dinm_edit(engine, instance, self.cfg, before_change=snapshot)
            except BaseException:
                self._restore(engine, snaps)
                raise
        self._snaps = snaps
        return stats

    def restore(self, engine: Engine) -> None:
        """Put back the weights the last :meth:`apply_edit` changed (a no-op when none is applied)."""
        snaps, self._snaps = self._snaps, None
        if snaps is not None:
            self._restore(engine, snaps)

    @staticmethod
    def _restore(engine: Engine, snaps: dict[str, torch.Tensor]) -> None:
        import torch

        with engine.lock, torch.no_grad():
            for name, w in snaps.items():
                _module(engine.model, name).weight.copy_(w)
