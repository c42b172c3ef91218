"""The shared local generation engine used by every steerboard method provider.

One engine wraps one transformers causal LM and its tokenizer. It does:

* chat templating (multi-turn, system messages) -> token ids;
* batched generation with left padding and length-bucketed batches: greedy by default, seeded
  sampling, ``max_new_tokens``, stop sequences, per-token log-probabilities and top-k alternatives;
* teacher-forced scoring and hidden-state capture (what methods need to *fit* artifacts).

Methods never generate themselves: they pass an :class:`Intervention` (forward hooks entered
around each batch, which see a :class:`BatchState` telling them the phase and which rows are live)
or change weights of their own engine copy.

Why a hand-written decode loop instead of ``model.generate``: ``generate`` re-runs a long chain of
logits processors, stopping criteria and cache bookkeeping per token and keeps finished rows in the
batch until the longest is done. On a 2-core CPU that Python overhead is a large share of a
135M-parameter model's step time. This loop computes logits only for the last position, drops
finished rows from the batch and KV cache, and skips the softmax when nobody asked for
log-probabilities (see ``benchmarks/engine_vs_inspect_hf.py``).

The package, one module per concern (import from ``steerboard.engine``; the modules are its layout):

* :mod:`~steerboard.engine.interface`: requests, results, :class:`BatchState`, :data:`Intervention`,
  :func:`hooks` and :func:`map_hidden` (the public API methods use);
* :mod:`~steerboard.engine.core`: :class:`Engine` (loading, generation entry points, the model's layers);
* :mod:`~steerboard.engine.templates`: chat templates, the template's preamble, end-of-turn tokens;
* :mod:`~steerboard.engine.forward`: the decoder/head split, cached forward steps, prefills (reusing the
  preamble's keys/values), full-sequence forwards and hidden states;
* :mod:`~steerboard.engine.scoring`: teacher-forced log-likelihoods of continuations;
* :mod:`~steerboard.engine.batch`: the decode loop (continuous batching, token choice, stop strings);
* :mod:`~steerboard.engine.kvcache`: the KV cache whose layers are edited in place.
"""

from __future__ import annotations

from steerboard.engine.core import Engine, default_threads, pick_device
from steerboard.engine.interface import (
    BatchState,
    GenerationRequest,
    GenerationResult,
    Intervention,
    ScoredContinuation,
    TokenLogprob,
    hooks,
    map_hidden,
    prefix_reuse,
)
from steerboard.engine.kvcache import _growing_layer as _growing_layer
from steerboard.engine.kvcache import _GrowingMixin as _GrowingMixin
from steerboard.engine.kvcache import merge_caches, new_kv_cache, trim_padding
from steerboard.engine.templates import FALLBACK_CHAT_TEMPLATE

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "BatchState",
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "Intervention",
    "ScoredContinuation",
    "TokenLogprob",
    "default_threads",
    "hooks",
    "map_hidden",
    "merge_caches",
    "new_kv_cache",
    "pick_device",
    "prefix_reuse",
    "trim_padding",
]
