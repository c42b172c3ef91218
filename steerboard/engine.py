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
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# A plain, explicit fallback for tokenizers that carry no chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class GenerationRequest:
    """One sequence to continue.

    Attributes:
        input_ids: prompt token ids (already chat-templated).
        max_new_tokens: cap on generated tokens.
        temperature: 0 (default) is greedy; > 0 samples.
        top_p: nucleus sampling mass (sampling only).
        top_k: top-k sampling cut (sampling only).
        seed: seed of this request's sampling generator (sampling only).
        stop: stop strings; generation ends when one appears and the text is cut before it.
        logprobs: return the log-probability of each generated token.
        top_logprobs: also return this many most likely alternatives per position.
        meta: free-form per-request data that interventions can read (e.g. a gate decision).
    """

    input_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.input_ids:
            raise ValueError("GenerationRequest.input_ids is empty: a prompt needs at least one token")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")


@dataclass
class TokenLogprob:
    """Log-probability of one generated token, with its top alternatives."""

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, int, float]]


@dataclass
class GenerationResult:
    """What the engine produced for one request."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "max_tokens"]
    input_tokens: int
    output_tokens: int
    logprobs: list[TokenLogprob] | None = None
    seconds: float = 0.0


@dataclass
class ScoredContinuation:
    """Teacher-forced scores of one continuation (see :meth:`Engine.score_requests`).

    Attributes:
        token_ids: the continuation's tokens.
        logprobs: log-probability of each of them given the prompt and the tokens before it.
        distributions: ``[len(token_ids), vocab]`` next-token log-distributions (only when asked for).
    """

    token_ids: list[int]
    logprobs: list[float]
    distributions: Any = None


@dataclass
class BatchState:
    """What an intervention sees while a batch runs (public API: read it, never modify it).

    One ``BatchState`` lives for one call of the engine's batch loop; the engine updates it in place
    before every forward pass, so a hook reads the current values each time it fires.

    A batch runs one **prefill** forward pass over the left-padded prompts (``phase == "prefill"``; hidden
    states ``[len(rows), padded_length, hidden_size]``), then one **decode** forward pass per new token
    (``phase == "decode"``; hidden states ``[len(rows), 1, hidden_size]``, the newest token of every live
    row). Under continuous batching, requests that arrive while a batch runs get their own prefill
    between two decode steps: ``phase`` is then ``"prefill"`` again and ``rows`` holds only the new rows.
    When the chat template's fixed preamble is reused (see :data:`Intervention`), a prefill covers only
    the tokens after it: hidden states are ``[len(rows), padded_length - len(preamble), hidden_size]``.

    Attributes:
        requests: every request of the batch so far; ``rows`` index into it (it grows as requests join).
        prompt_lengths: unpadded prompt length of each request, same indexing as ``requests``.
        padded_length: the left-padded prompt length of the current prefill (preamble included).
        phase: ``"prefill"`` during a prompt forward pass, ``"decode"`` during each one-token step.
        rows: for each row of the current forward pass (dimension 0 of every hidden state), the index of
            its request in ``requests``; finished rows are dropped, so this shrinks during decoding.
        step: number of decode steps run so far in this batch (0 before the first).
        attention_mask: the current attention mask ``[len(rows), key_length]`` (1 = real token).
    """

    requests: list[GenerationRequest]
    prompt_lengths: list[int]
    padded_length: int
    phase: Literal["prefill", "decode"] = "prefill"
    rows: list[int] = field(default_factory=list)
    step: int = 0
    attention_mask: Any = None

    def row_meta(self, key: str, default: Any = None) -> list[Any]:
        """``requests[r].meta[key]`` (or ``default``) for every row ``r`` of the current forward pass, in row order.

        ``meta`` is what :meth:`steerboard.methods.base.Method.request_meta` returned for that request,
        e.g. a per-prompt gate decision.
        """
        return [self.requests[r].meta.get(key, default) for r in self.rows]


Intervention = Callable[[BatchState], contextlib.AbstractContextManager[Any]]
"""A method's hooks (public API): ``intervention(state) -> context manager``.

The engine calls it once per batch with the batch's :class:`BatchState`, enters the returned context
manager before the first forward pass and exits it after the last (also on error). Register forward hooks
on entry (:func:`hooks` removes them on exit); they then fire on every forward pass of the batch: the
prefill and each decode step, one per generated token, with ``state`` describing that pass. A hook that
returns a new output (see :func:`map_hidden`) replaces the module's output, so editing a decoder block's
output (:meth:`Engine.layer_module_name`) edits the residual stream seen by every later layer.
Passed to :meth:`Engine.forward` or :meth:`Engine.score` (teacher forcing, e.g. while fitting), it sees
one prefill-phase pass over the whole sequences.
Method authors return one from :meth:`steerboard.methods.base.Method.intervention`.

Optional: an intervention whose effect on a prompt position depends on that position alone (the same
steering for every row at hand) may carry a ``preamble_key(requests) -> Hashable | None`` attribute. For a
prefill whose key is not None the engine computes the chat template's preamble once under the hooks (as a
one-row batch whose request has empty ``meta``) and reuses its keys/values, as it does for plain prefills
(``Engine.prefix_cache``); without the attribute, hooked prefills always run the whole prompt.
"""


def prefix_reuse(intervention: Intervention | None) -> tuple[bool, Callable[[list[GenerationRequest]], Any] | None]:
    """Whether prefills under ``intervention`` may reuse cached prefix keys/values, and its ``preamble_key``.

    Hooks may change a prefix's keys/values: it is reused without hooks, or under hooks that say how
    (``preamble_key``).
    """
    key_fn = getattr(intervention, "preamble_key", None) if intervention is not None else None
    return intervention is None or key_fn is not None, key_fn


@contextlib.contextmanager
def hooks(model: torch.nn.Module, spec: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """Register forward hooks keyed by module name for the duration of the block; always removed (public API).

    Use it inside an :data:`Intervention`: ``with hooks(engine.model, {engine.layer_module_name(8): fn}):
    yield``. Each hook is a plain torch forward hook, called after the module's forward on every forward
    pass (prefill and every decode step).

    Args:
        model: the module tree (``Engine.model``).
        spec: ``{module_name: hook(module, args, output) -> output | None}``. Returning ``None`` keeps the
            output; returning a value replaces it. A decoder block's output is a tuple (or a tensor in some
            transformers versions) whose first element is the hidden states ``[rows, seq, hidden_size]``;
            use :func:`map_hidden` to edit it either way.

    Raises:
        KeyError: a module name does not exist (lists a few valid ones).
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in spec.items():
            if name not in modules:
                near = [n for n in modules if n.endswith(name.split(".")[-1])][:5]
                raise KeyError(f"no module named {name!r} in {type(model).__name__}; e.g. {near}")
            handles.append(modules[name].register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def map_hidden(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to a module output's hidden states, whether it is a tensor or a tuple (public API).

    Args:
        output: a forward hook's ``output`` (a tensor, or a tuple whose first element is the hidden states).
        fn: maps hidden states ``[rows, seq, hidden_size]`` to a tensor of the same shape and dtype.

    Returns:
        The output with its hidden states replaced, in the same structure; return it from the hook.
    """
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


class _GrowingMixin:
    """The engine's KV-cache layer: keys/values in preallocated buffers, edited in place.

    :func:`_growing_layer` mixes it into transformers' ``DynamicLayer``.

    transformers' ``DynamicLayer`` copies the whole layer cache whenever it changes: ``update`` concatenates
    on every decode step (41 % of decode time on the embedded model once its matmuls run in bfloat16,
    profiled), ``batch_select_indices`` gathers the kept rows into a new tensor, and a slice or a merge hands
    it a tensor it then copies again. In continuous batching that happens every time a row finishes or
    joins; with long prompts and a float64 store (36 SafeEdit rows of ~450 tokens: ~0.75 GB a copy) the
    copies dominated the run. Here the layer owns buffers with spare columns and rows:

    * ``update`` writes the new keys/values into spare columns (grown by half plus 64 when full);
    * ``batch_select_indices`` with ascending indices (the rows that stay, in order) moves only the rows
      after a finished one, in place;
    * ``trim_left`` drops leading columns by moving an offset;
    * ``stack`` appends another cache's rows (left-padded to a common width) in one copy;
    * every buffer starts with :data:`SLACK` zeroed columns, and columns left of the live view only ever hold
      zeros or keys/values written earlier: the batch-invariant decode attention widens its view to the left
      over them (:func:`steerboard.precision._aligned_decode_attention`) without copying, and masked columns
      must be finite.

    Attention sees views of the buffers with the same strides as before, so results are unchanged. Anything
    else that replaces ``keys``/``values`` is adopted (copied into a new buffer) on the next ``update``.
    """

    _kbuf: Any = None
    _vbuf: Any = None
    _kview: Any = None
    _lo = 0  # buffer column of the first live column
    store_dtype: Any = None  # keep keys/values in this dtype (float64 for the float64 decode-attention fallback)
    SLACK = 64  # zeroed columns before the first usable one (= steerboard.precision.DECODE_ALIGN)

    def _owned(self) -> bool:
        return self._kbuf is not None and self.keys is self._kview

    def _view(self, rows: int, lo: int, hi: int) -> None:
        self._lo = lo
        self.keys = self._kbuf[:rows, ..., lo:hi, :]
        self.values = self._vbuf[:rows, ..., lo:hi, :]
        self._kview = self.keys

    def _alloc(self, like: Any, rows: int, cols: int) -> None:
        """New buffers of ``cols`` usable columns after :data:`SLACK` zeroed ones (see the class docstring)."""
        dtype = self.store_dtype or like.dtype
        shape = (rows, *like.shape[1:-2], self.SLACK + cols, like.shape[-1])
        self._kbuf = like.new_empty(shape, dtype=dtype)
        self._vbuf = like.new_empty(shape, dtype=dtype)
        self._kbuf[..., : self.SLACK, :] = 0
        self._vbuf[..., : self.SLACK, :] = 0

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows = key_states.shape[0]
        n = self.keys.shape[-2] if self.keys.numel() else 0
        new = key_states.shape[-2]
        lo = self._lo
        if not self._owned() or lo + n + new > self._kbuf.shape[-2]:
            keys, values = self.keys, self.values
            self._alloc(key_states, rows, n + new + max(64, (n + new) // 2))
            lo = self.SLACK
            if n:
                self._kbuf[:, ..., lo : lo + n, :] = keys
                self._vbuf[:, ..., lo : lo + n, :] = values
        self._kbuf[:rows, ..., lo + n : lo + n + new, :] = key_states
        self._vbuf[:rows, ..., lo + n : lo + n + new, :] = value_states
        self._view(rows, lo, lo + n + new)
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        keep = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        if not self._owned() or any(b <= a for a, b in zip(keep, keep[1:])):
            super().batch_select_indices(indices)
            return
        lo, hi = self._lo, self._lo + self.keys.shape[-2]
        # ascending sources: row j's source is >= j and no later source is j, so moving in order is safe
        for j, src in enumerate(keep):
            if src != j:
                self._kbuf[j, ..., lo:hi, :] = self._kbuf[src, ..., lo:hi, :]
                self._vbuf[j, ..., lo:hi, :] = self._vbuf[src, ..., lo:hi, :]
        self._view(len(keep), lo, hi)

    def trim_left(self, start: int) -> None:
        """Drop the first ``start`` columns (left padding no live row uses)."""
        if self._owned():
            self._view(self.keys.shape[0], self._lo + start, self._lo + self.keys.shape[-2])
        else:
            self.keys = self.keys[..., start:, :]
            self.values = self.values[..., start:, :]

    def stack(self, keys: Any, values: Any) -> None:
        """Append rows ``keys``/``values`` below this layer's, both right-aligned to the wider width;
        the padding columns are zeros (masked, but attention must never read uninitialised memory)."""
        mine_k, mine_v = self.keys, self.values
        ra, la, rb, lb = mine_k.shape[0], mine_k.shape[-2], keys.shape[0], keys.shape[-2]
        width = max(la, lb)
        self._alloc(mine_k, ra + rb, width + max(64, width // 2))
        s = self.SLACK
        for buf, a, b in ((self._kbuf, mine_k, keys), (self._vbuf, mine_v, values)):
            buf[:ra, ..., s : s + width - la, :] = 0
            buf[:ra, ..., s + width - la : s + width, :] = a
            buf[ra:, ..., s : s + width - lb, :] = 0
            buf[ra:, ..., s + width - lb : s + width, :] = b
        self._view(ra + rb, s, s + width)


@functools.lru_cache(maxsize=1)
def _growing_layer() -> type:
    """transformers' ``DynamicLayer`` with :class:`_GrowingMixin`'s in-place edits (imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    return type("GrowingLayer", (_GrowingMixin, DynamicLayer), {})


def new_kv_cache(config: Any, dtype: Any = None) -> Any:
    """A ``DynamicCache`` for ``config`` whose full-attention layers append without re-copying.

    With ``dtype`` those layers store keys/values in it (whatever dtype the model hands them in).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    grow = _growing_layer()
    layers = getattr(cache, "layers", None)
    if layers:
        for i, layer in enumerate(layers):
            if type(layer) is DynamicLayer:
                layers[i] = grow()
                layers[i].store_dtype = dtype
    return cache


def default_threads() -> int:
    """Torch intra-op threads: ``$STEERBOARD_THREADS`` or the number of usable cores."""
    env = os.environ.get("STEERBOARD_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``mps``, else ``cpu``."""
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Engine:
    """Batched generation, scoring and hidden-state capture for one causal LM.

    Public API for methods (what :meth:`steerboard.methods.base.Method.prepare` receives):
    ``model`` (the transformers ``PreTrainedModel``: hook its modules, read ``model.config``, change
    weights in a method with ``private_weights``), ``tokenizer``, :meth:`layer_module_name`,
    :meth:`decoder_layers`, :meth:`chat_ids`, :meth:`generate`, :meth:`forward`, :meth:`score` and
    :meth:`hidden_states` (for fitting), and :meth:`weights_changed` (call it after changing weights).

    Args:
        model: a loaded ``PreTrainedModel`` (causal LM).
        tokenizer: its tokenizer.
        max_batch_size: most sequences per forward pass.
        max_batch_tokens: most padded prompt tokens per prefill (keeps memory flat on long prompts).
        matmul_dtype: ``auto`` (bfloat16 linear layers for a float32 model on a CPU with native bf16,
            else the model's own dtype), ``float32`` (exact) or ``bfloat16``; see :mod:`steerboard.precision`.
        head_screen: with bfloat16 matmuls on a float32 model, pick greedy tokens through
            :func:`steerboard.precision.screened_greedy` (vocabulary screened in bfloat16, near-best
            candidates re-scored in float32: the float32 head's tokens at a fraction of its cost).
            Sampling and log-probability requests always get full float32 logits.
        prefix_cache: reuse the keys/values of the chat template's fixed preamble (the tokens before
            the user's text, e.g. SmolLM2's default system prompt: 24 of ~40 tokens of a short chat
            prompt) across prefills that run without an intervention. ``None`` (default) turns it on
            with bfloat16 matmuls only: the preamble computed alone differs from one computed inside a
            batch by float rounding, which exact float32 runs should not see.
        deterministic: batch-invariant generation (default): a request's completion does not depend on
            which requests share its batch, their padding or when they joined, so a run repeats exactly
            whatever the timing of concurrent requests: attention runs in float64 on a float64 KV cache,
            and lone rows and small output-head batches are padded to shapes whose kernels round each row
            alike (:func:`steerboard.precision.batch_invariant`). ``False`` keeps transformers' float32
            ``sdpa`` attention and the plain kernels: a little faster, but near-tie tokens may then flip
            between runs.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 64,
        max_batch_tokens: int = 32768,
        source: str | None = None,
        matmul_dtype: str | None = "auto",
        head_screen: bool = True,
        prefix_cache: bool | None = None,
        deterministic: bool = True,
    ) -> None:
        import torch

        from steerboard import precision

        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.source = source or getattr(model.config, "_name_or_path", "model")
        self.lock = threading.RLock()  # one batch at a time per engine (hooks and weights are shared)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = self._eos_ids()
        param = next(model.parameters())
        self.matmul_dtype = precision.resolve_matmul_dtype(matmul_dtype, str(param.device), param.dtype)
        if self.matmul_dtype != "float32" and param.dtype != getattr(torch, self.matmul_dtype):
            precision.enable(model, self.matmul_dtype)
        self.head_screen = head_screen
        self.deterministic = deterministic
        self._warned_inexact = False
        if not deterministic:
            logger.warning(
                "%s: deterministic=false: completions may differ between runs (batch composition depends on timing)",
                self.source,
            )
        self.prefix_cache = prefix_cache if prefix_cache is not None else self.matmul_dtype == "bfloat16"
        self.prefix_hits = 0  # prefills that reused the cached preamble (diagnostics)
        self._prefix_kv: tuple[Any, list[tuple[Any, Any]]] | None = None
        self._scoring = False  # inside score_groups (see _kv_dtype)
        self._weights_epoch = 0
        self.head_screen_candidates = 0  # float32 re-scores done by the screened head (diagnostics)
        self.head_screen_rows = 0
        self.head_screen_fallbacks = 0

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        matmul_dtype: str | None = "auto",
        **kwargs: Any,
    ) -> Engine:
        """Load a model by alias, local directory or hub id.

        Raises:
            ValueError: unknown alias/path, or the model is not a causal LM.
        """
        from steerboard._runtime_env import configure_openmp

        configure_openmp()  # before torch loads: libgomp reads its wait setting once
        import torch

        from steerboard.precision import MATMUL_DTYPES

        if (matmul_dtype or "auto") not in MATMUL_DTYPES:  # before any loading
            raise ValueError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}; got {matmul_dtype!r}")
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from steerboard.models import resolve_model

        path = resolve_model(model_name_or_path)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        except ImportError:  # pragma: no cover
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = {}
        if config.architectures:  # what the checkpoint was saved as decides
            is_causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures)
        else:
            is_causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(
                config, "is_encoder_decoder", False
            )
        if not is_causal:
            raise ValueError(
                f"{model_name_or_path!r} is a {config.model_type!r} model "
                f"({', '.join(config.architectures or ['no architecture'])}), not a causal language model; "
                "steerboard methods need a decoder-only chat model (e.g. Llama, Phi-3, Gemma, SmolLM2)"
            )
        dev = pick_device(device)
        if dev == "cpu":
            torch.set_num_threads(default_threads())
        torch_dtype: Any
        if dtype == "auto":
            torch_dtype = torch.float32 if dev == "cpu" else torch.bfloat16
        else:
            torch_dtype = getattr(torch, dtype)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        model.to(dev)
        model.eval()
        return cls(model, tok, source=model_name_or_path, matmul_dtype=matmul_dtype, **kwargs)

    def weights_changed(self) -> None:
        """Tell the engine its model's weights were written (re-casts low-precision copies lazily).

        In-place tensor ops are detected on their own; call this after writes through ``.data``
        or after swapping modules (e.g. peft's ``merge_and_unload``).
        """
        from steerboard import precision

        precision.refresh(self.model)
        self._weights_epoch += 1  # drops the cached preamble keys/values

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # Causal-LM classes whose logits are exactly ``lm_head(decoder(...).last_hidden_state)``: no
    # logit scaling or soft-capping after the head (checked again on the config below).
    PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "granite"})

    @property
    def invariant_batches(self) -> bool:
        """Whether a request's results do not depend on its batch mates: a deterministic engine with bfloat16
        linear layers and the batch-invariant attention (:func:`steerboard.precision.batch_invariant`; measured
        bit-exact in ``tests/test_cost.py`` and ``tests/test_determinism.py``). Float32 CPU matmuls round a
        row differently in small batches, so exact float32 engines, and GPUs, are not."""
        from steerboard import precision

        return bool(self.deterministic and self.matmul_dtype == "bfloat16" and precision.use_exact_attention(self.model))

    def _split_lm(self) -> tuple[Any, Any] | None:
        """(decoder, head) when generation may run the decoder and head separately, else ``None``.

        Running them apart lets the decode loop choose greedy tokens from the final hidden state
        without materialising float32 logits (:func:`steerboard.precision.screened_greedy`).
        Anything unusual (peft wrappers, soft-capped or scaled logits, a biased head) keeps the
        plain ``model(...).logits`` path.
        """
        import torch

        model = self.model
        cached = getattr(self, "_split_cache", None)
        if cached is not None and cached[0] is model:
            return cached[1]
        cfg = getattr(model, "config", None)
        split = None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        decoder = getattr(model, getattr(model, "base_model_prefix", "") or "model", None)
        if (
            cfg is not None
            and getattr(cfg, "model_type", None) in self.PLAIN_HEAD_MODEL_TYPES
            and type(model).__name__.endswith("ForCausalLM")
            and isinstance(head, torch.nn.Linear)
            and head.bias is None
            and decoder is not None
            and not getattr(cfg, "final_logit_softcapping", None)
            and getattr(cfg, "logits_scaling", 1.0) in (1, 1.0, None)
        ):
            split = (decoder, head)
        self._split_cache = (model, split)
        return split

    def _screen_head(self) -> bool:
        """Whether greedy rows use the screened bfloat16 head (bf16 matmuls on a float32 model)."""
        import torch

        if not self.head_screen or self.matmul_dtype != "bfloat16" or self._split_lm() is None:
            return False
        return next(self.model.parameters()).dtype == torch.float32

    def _run_lm(self, **kw: Any) -> tuple[Any, Any, Any]:
        """One forward with a KV cache: (cache, last-position hidden state or None, logits or None).

        With a split model only the final hidden state comes back (logits are made on demand by
        :meth:`_logits`); otherwise the model's own last-position logits.
        """
        split = self._split_lm()
        if split is None:
            out = self.model(**kw, use_cache=True, logits_to_keep=1)
            return out.past_key_values, None, out.logits[:, -1, :]
        out = split[0](**kw, use_cache=True)
        return out.past_key_values, out.last_hidden_state[:, -1, :], None

    def _logits(self, hidden: Any) -> Any:
        """Full logits from a final hidden state (the head in the model's own precision).

        When deterministic, the head runs on at least :data:`steerboard.precision.MIN_INVARIANT_ROWS` rows
        (zero rows added), where the float32 matmul gives each row the same bits whatever the row count.
        """
        from steerboard import precision

        split = self._split_lm()
        assert split is not None
        if self.deterministic:
            return precision.row_invariant(split[1], hidden)
        return split[1](hidden)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for src in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(x) for x in src)
        # chat models often end a turn with a special token that is not the tokenizer's eos
        for special in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return ids

    # ------------------------------------------------------------------ templating
    def chat_ids(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation under the model's chat template.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
            add_generation_prompt: end with the assistant-turn header.
        """
        template = self.tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE
        msgs = [dict(m) for m in messages]
        try:
            text = self.tokenizer.apply_chat_template(
                msgs, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as ex:  # some templates reject system messages: fold it into the first user turn
            if msgs and msgs[0]["role"] == "system" and "system" in str(ex).lower():
                sys_text = msgs.pop(0)["content"]
                if msgs and msgs[0]["role"] == "user":
                    msgs[0]["content"] = f"{sys_text}\n\n{msgs[0]['content']}"
                text = self.tokenizer.apply_chat_template(
                    msgs, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            else:
                raise
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def plain_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a conversation as plain text, without the chat template: the messages' contents joined
        by blank lines (a system message first, as lm-eval prepends a system instruction without a chat
        template), with the tokenizer's own special tokens (e.g. a BOS token)."""
        text = "\n\n".join(str(m["content"]) for m in messages)
        return self.tokenizer(text)["input_ids"]

    # ------------------------------------------------------------------ generation
    def _plan_batches(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Group request indices into length-bucketed batches (sorted by prompt length)."""
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].input_ids))
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            n = len(requests[i].input_ids)
            if cur and (len(cur) >= self.max_batch_size or (len(cur) + 1) * n > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        intervention: Intervention | None = None,
        progress: bool = False,
    ) -> list[GenerationResult]:
        """Generate continuations for many requests; results come back in request order.

        Args:
            requests: what to generate.
            intervention: entered around each batch (e.g. steering hooks).
            progress: show a tqdm bar over batches.
        """
        results: list[GenerationResult | None] = [None] * len(requests)
        batches = self._plan_batches(requests)
        it: Any = batches
        if progress and len(batches) > 1:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="generate", unit="batch")
        for idx in it:
            out = self._generate_batch([requests[i] for i in idx], intervention)
            for i, r in zip(idx, out):
                results[i] = r
        return [r for r in results if r is not None]

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        intervention: Intervention | None = None,
        more: Callable[[int], list[GenerationRequest]] | None = None,
        on_done: Callable[[int, GenerationResult], None] | None = None,
    ) -> list[GenerationResult]:
        """One batch with continuous admission: finished rows leave, new requests join mid-flight.

        Args:
            requests: the starting batch.
            intervention: entered once around the whole batch.
            more: called with the number of free slots between decode steps; returns requests that
                join the batch (their prompt is prefilled and merged into the running KV cache).
            on_done: called as ``on_done(index, result)`` the moment a request finishes; ``index``
                counts the starting requests first, then joined ones in order.

        Returns:
            Results of every request, starting ones first, then joined ones.
        """
        return self._generate_batch(list(requests), intervention, more=more, on_done=on_done)

    @functools.cached_property
    def template_prefix(self) -> list[int]:
        """Token ids every single-turn chat prompt starts with (the template's preamble before the user text)."""
        a = self.chat_ids([{"role": "user", "content": "alpha"}])
        b = self.chat_ids([{"role": "user", "content": "zulu"}])
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]

    def _kv_dtype(self) -> Any:
        """float64 where the decode attention of :func:`steerboard.precision.batch_invariant` falls back to
        float64 (a CPU whose float32 kernels fail :func:`steerboard.precision.aligned_decode_invariant`), else
        None (the model's dtype).

        Scoring keeps the model's dtype: its multi-token forwards attend row by row in float32, and a one-token
        decode casts the keys it reads to float64 exactly (float32 values are float64 values), so a float64
        store would only double the bytes copied (prefix keys/values repeated per row, gathered per row)."""
        from steerboard import precision

        if self._scoring:
            return None
        attn = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if (
            attn == precision.EXACT_ATTENTION
            and precision.batch_invariant_active()
            and not precision.aligned_decode_invariant()
        ):
            import torch

            return torch.float64
        return None

    def _new_cache(self) -> Any:
        return new_kv_cache(self.model.config, self._kv_dtype())

    def _weights_key(self) -> tuple[int, ...]:
        """Changes whenever the weights may have: in-place writes (version counters), swaps, ``weights_changed``."""
        return (id(self.model), self._weights_epoch, sum(p._version for p in self.model.parameters()))

    def _preamble_kv(self, prefix: list[int], state: BatchState, hook_key: Any = None) -> list[tuple[Any, Any]]:
        """Per-layer (keys, values) ``[1, kv_heads, len(prefix), head_dim]`` of ``prefix`` alone, cached.

        With ``hook_key`` (the active intervention's ``preamble_key``) the prefix runs under the batch's
        hooks: ``state`` describes a one-row prefill of just the prefix meanwhile, then is restored.
        """
        key = (tuple(prefix), self._weights_key(), hook_key, self._kv_dtype())
        if self._prefix_kv is None or self._prefix_kv[0] != key:
            import torch

            ids = torch.tensor([prefix], device=self.device)
            mask = torch.ones_like(ids)
            saved = (state.requests, state.prompt_lengths, state.padded_length, state.phase, state.rows,
                     state.attention_mask)
            state.requests = [GenerationRequest(input_ids=list(prefix), max_new_tokens=1)]
            state.prompt_lengths, state.padded_length, state.phase = [len(prefix)], len(prefix), "prefill"
            state.rows, state.attention_mask = [0], mask
            try:
                cache, _, _ = self._run_lm(
                    input_ids=ids, attention_mask=mask,
                    position_ids=torch.arange(len(prefix), device=self.device).unsqueeze(0),
                    past_key_values=self._new_cache(),
                )
            finally:
                (state.requests, state.prompt_lengths, state.padded_length, state.phase, state.rows,
                 state.attention_mask) = saved
            kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
            self._prefix_kv = (key, kv)
        return self._prefix_kv[1]

    def _prefill_with_preamble(
        self, reqs: list[GenerationRequest], state: BatchState, rows: list[int], prefix: list[int], hook_key: Any = None
    ) -> tuple[Any, ...]:
        """:meth:`_prefill` for rows that all start with ``prefix``: its cached keys/values are copied into
        every row and only the rest is run. Row layout: ``[prefix][left padding][rest]`` (the mask hides
        the padding, positions are explicit), so the prefix sits at the same columns in every row."""
        import torch

        dev = self.device
        p = len(prefix)
        kv = self._preamble_kv(prefix, state, hook_key)
        rest = [reqs[r].input_ids[p:] for r in rows]
        lengths = [len(x) for x in rest]
        width = max(lengths)
        b = len(rows)
        ids = torch.full((b, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((b, p + width), dtype=torch.long)
        mask[:, :p] = 1
        pos = torch.full((b, width), p, dtype=torch.long)
        for i, x in enumerate(rest):
            ids[i, width - lengths[i] :] = torch.tensor(x)
            mask[i, p + width - lengths[i] :] = 1
            pos[i, width - lengths[i] :] = torch.arange(p, p + lengths[i])
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        cache = self._new_cache()
        for i, (k, v) in enumerate(kv):
            cache.update(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous(), i)
        state.phase, state.rows, state.attention_mask = "prefill", list(rows), mask
        state.padded_length = p + width
        cache, hidden, logits = self._run_lm(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache)
        self.prefix_hits += 1
        return cache, mask, pos[:, -1:] + 1, (hidden, logits)

    def _prefill(
        self, reqs: list[GenerationRequest], state: BatchState, rows: list[int], reuse_prefix: bool = False,
        key_fn: Callable[[list[GenerationRequest]], Any] | None = None, prefix: list[int] | None = None,
    ) -> tuple[Any, ...]:
        """Left-padded prompt forward for ``rows``; returns (cache, mask, next positions, last logits).

        With ``reuse_prefix`` (no intervention, or one whose ``preamble_key`` = ``key_fn`` gives these rows
        a key) and :attr:`prefix_cache` on, rows that all start with ``prefix`` (default: the chat
        template's preamble) reuse its cached keys/values (:meth:`_prefill_with_preamble`).
        """
        import torch

        if reuse_prefix and self.prefix_cache and self._split_lm() is not None:
            prefix = prefix or self.template_prefix
            hook_key = key_fn([reqs[r] for r in rows]) if key_fn is not None else None
            if (
                (key_fn is None or hook_key is not None)
                and len(prefix) >= 4
                and all(len(reqs[r].input_ids) > len(prefix) and reqs[r].input_ids[: len(prefix)] == prefix for r in rows)
            ):
                return self._prefill_with_preamble(reqs, state, rows, prefix, hook_key)
        dev = self.device
        lengths = [len(reqs[r].input_ids) for r in rows]
        width = max(lengths)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - lengths[i] :] = torch.tensor(reqs[r].input_ids)
            mask[i, width - lengths[i] :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        state.phase, state.rows, state.attention_mask = "prefill", list(rows), mask
        state.padded_length = width
        cache, hidden, logits = self._run_lm(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self._new_cache()
        )
        return cache, mask, pos[:, -1:] + 1, (hidden, logits)

    @staticmethod
    def _trim_padding(cache: Any, mask: Any) -> Any:
        """Drop leading KV-cache columns that are padding in every live row; returns the trimmed mask.

        In continuous batching the cache is as wide as its longest-lived row, and rows joining later are
        left-padded to that width; without trimming, the width only grows (every step adds a column and
        merges keep the wider side), so attention and cache writes get steadily costlier over a long run
        (measured: a batch-16 decode step at 73 ms under Inspect vs 42 ms for a fresh batch). Positions
        are carried separately (``position_ids``), so cutting left padding changes no result.
        """
        import torch

        used = mask.any(dim=0)
        if bool(used[0]):
            return mask
        start = int(torch.argmax(used.to(torch.int8)))
        if start == 0:  # no live column at all (cannot happen with live rows)
            return mask
        for layer in cache.layers:
            if getattr(layer, "trim_left", None) is not None:
                layer.trim_left(start)
            else:
                layer.keys = layer.keys[..., start:, :]
                layer.values = layer.values[..., start:, :]
        return mask[:, start:]

    @staticmethod
    def _merge(cache_a: Any, mask_a: Any, cache_b: Any, mask_b: Any) -> tuple[Any, Any]:
        """Stack two KV caches (and masks) along the batch, left-padding the shorter one."""
        import torch

        la, lb = mask_a.shape[1], mask_b.shape[1]
        width = max(la, lb)

        def lpad(t: Any, n: int) -> Any:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[-2] = n
            return torch.cat([t.new_zeros(shape), t], dim=-2)

        for layer_a, layer_b in zip(cache_a.layers, cache_b.layers):
            if getattr(layer_a, "stack", None) is not None:
                layer_a.stack(layer_b.keys, layer_b.values)
                continue
            layer_a.keys = torch.cat([lpad(layer_a.keys, width - la), lpad(layer_b.keys, width - lb)], dim=0)
            layer_a.values = torch.cat([lpad(layer_a.values, width - la), lpad(layer_b.values, width - lb)], dim=0)
        mask = torch.cat(
            [
                torch.cat([mask_a.new_zeros((mask_a.shape[0], width - la)), mask_a], dim=1),
                torch.cat([mask_b.new_zeros((mask_b.shape[0], width - lb)), mask_b], dim=1),
            ],
            dim=0,
        )
        return cache_a, mask

    def _generate_batch(
        self,
        reqs: list[GenerationRequest],
        intervention: Intervention | None,
        more: Callable[[int], list[GenerationRequest]] | None = None,
        on_done: Callable[[int, GenerationResult], None] | None = None,
    ) -> list[GenerationResult]:
        """Run ``reqs`` as one batch (rows that finish leave it; ``more`` may add rows between steps)."""
        import torch

        from steerboard import precision, torch_thread

        batch = _ContinuousBatch(self, intervention, on_done)
        ctx = intervention(batch.state) if intervention is not None else contextlib.nullcontext()
        exact = self.deterministic and precision.use_exact_attention(self.model)
        if self.deterministic and not exact and not self._warned_inexact:
            self._warned_inexact = True
            logger.warning("%s: batch-invariant attention unavailable; completions may depend on batching", self.source)
        invariant = precision.batch_invariant() if self.deterministic else contextlib.nullcontext()
        with self.lock, torch.inference_mode(), ctx, invariant:
            batch.admit(list(reqs))
            while batch.live:
                batch.finish(batch.record(batch.choose()))
                # short jobs queued meanwhile (the embedding judge scoring finished samples)
                torch_thread.run_inline_jobs()
                batch.step()
                new = more(self.max_batch_size - len(batch.live)) if more is not None else []
                if new:
                    batch.admit(new)
        return batch.results()

    @staticmethod
    def _choose(logits: torch.Tensor, reqs: list[GenerationRequest], gens: list[Any]) -> torch.Tensor:
        import torch

        tok = logits.argmax(dim=-1)
        for j, r in enumerate(reqs):
            if r.temperature <= 0:
                continue
            row = logits[j].float() / r.temperature
            if r.top_k:
                kth = torch.topk(row, min(r.top_k, row.shape[-1])).values[-1]
                row = row.masked_fill(row < kth, -math.inf)
            probs = torch.softmax(row, dim=-1)
            if r.top_p is not None and r.top_p < 1.0:
                sp, si = torch.sort(probs, descending=True)
                cum = sp.cumsum(-1)
                drop = cum - sp > r.top_p
                sp = sp.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(0, si, sp)
                probs = probs / probs.sum()
            tok[j] = torch.multinomial(probs, 1, generator=gens[j])[0]
        return tok

    def _token_logprob(self, lp_row: torch.Tensor, token_id: int, top_n: int) -> TokenLogprob:
        import torch

        top: list[tuple[str, int, float]] = []
        if top_n:
            vals, idx = torch.topk(lp_row, top_n)
            top = [
                (self.tokenizer.decode([i]), int(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist())
            ]
        return TokenLogprob(
            token=self.tokenizer.decode([token_id]), token_id=token_id, logprob=float(lp_row[token_id]), top=top
        )

    # ------------------------------------------------------------------ scoring / activations
    def _pad_batch(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(list(s))
            mask[i, width - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        return ids.to(dev), mask.to(dev), pos.to(dev)

    def forward(
        self,
        seqs: Sequence[Sequence[int]],
        *,
        output_hidden_states: bool = False,
        intervention: Intervention | None = None,
        grad: bool = False,
    ) -> Any:
        """One left-padded forward pass over full sequences (no cache). Returns the model output.

        ``output.logits`` is [batch, width, vocab]; row ``i``'s real tokens are its last ``len(seqs[i])``.
        """
        import torch

        ids, mask, pos = self._pad_batch(seqs)
        reqs = [GenerationRequest(input_ids=list(s), max_new_tokens=1) for s in seqs]
        state = BatchState(
            requests=reqs, prompt_lengths=[len(s) for s in seqs], padded_length=ids.shape[1],
            rows=list(range(len(seqs))), attention_mask=mask,
        )
        ctx = intervention(state) if intervention is not None else contextlib.nullcontext()
        grad_ctx = contextlib.nullcontext() if grad else torch.inference_mode()
        with self.lock, grad_ctx, ctx:
            return self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos,
                output_hidden_states=output_hidden_states, use_cache=False,
            )

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        *,
        batch_size: int = 16,
        intervention: Intervention | None = None,
    ) -> list[list[float]]:
        """Teacher-forced log-probability of each continuation token given its prompt."""
        import torch

        out: list[list[float]] = []
        for b in range(0, len(prompts), batch_size):
            ps, cs = prompts[b : b + batch_size], continuations[b : b + batch_size]
            seqs = [list(p) + list(c) for p, c in zip(ps, cs)]
            res = self.forward(seqs, intervention=intervention)
            lp = torch.log_softmax(res.logits.float(), dim=-1)
            width = lp.shape[1]
            for i, c in enumerate(cs):
                start = width - len(c)  # positions of continuation tokens
                rows = lp[i, start - 1 : width - 1]
                out.append(rows.gather(-1, torch.tensor(list(c), device=rows.device).unsqueeze(-1)).squeeze(-1).tolist())
        return out

    def score_requests(
        self,
        requests: Sequence[GenerationRequest],
        continuations: Sequence[Sequence[int]],
        *,
        intervention: Intervention | None = None,
        distributions: bool = False,
        max_positions: int = 1024,
        prefix_len: int = 0,
    ) -> list[ScoredContinuation]:
        """Teacher-forced log-likelihood of each continuation after its request's prompt, as generation sees it.

        Requests with the same prompt and meta (a multiple-choice question's options) form one group whose
        prompt is prefilled once; see :meth:`score_groups`.

        Args:
            requests: prompts (chat-templated ids) with their per-request ``meta``.
            continuations: token ids to score after each prompt (at least one each).
            intervention, distributions, max_positions, prefix_len: as in :meth:`score_groups`.

        Returns:
            One :class:`ScoredContinuation` per request, in order.
        """
        if len(requests) != len(continuations):
            raise ValueError(f"{len(requests)} requests but {len(continuations)} continuations")
        for i, c in enumerate(continuations):
            if not c:
                raise ValueError(f"continuation {i} is empty: there is nothing to score")
        groups: list[tuple[GenerationRequest, list[list[int]]]] = []
        by_ids: dict[tuple[int, ...], list[int]] = {}
        where: list[tuple[int, int]] = []
        for req, cont in zip(requests, continuations):
            same = by_ids.setdefault(tuple(req.input_ids), [])
            g = next((g for g in same if groups[g][0].meta == req.meta), None)
            if g is None:
                g = len(groups)
                same.append(g)
                groups.append((req, []))
            where.append((g, len(groups[g][1])))
            groups[g][1].append(list(cont))
        scored = self.score_groups(
            groups, intervention=intervention, distributions=distributions, max_positions=max_positions,
            prefix_len=prefix_len,
        )
        return [scored[g][j] for g, j in where]

    def score_groups(
        self,
        groups: Sequence[tuple[GenerationRequest, Sequence[Sequence[int]]]],
        *,
        intervention: Intervention | None = None,
        distributions: bool = False,
        max_positions: int = 1024,
        prefix_len: int = 0,
    ) -> list[list[ScoredContinuation]]:
        """Teacher-forced log-likelihood of each group's continuations after the group's prompt.

        Many groups (many questions) run in one batch: their prompts are prefilled together (phase
        ``"prefill"``, each request's ``meta`` visible to the intervention, e.g. a gate decision), then every
        continuation token runs in one multi-token ``"decode"`` step (a prompt's continuations packed in its
        row, see :meth:`_score_batch`), so a hook that steers only prompt or only generated positions, or
        gates rows at prefill, acts exactly as it would while generating those tokens. No sampling.

        With :attr:`deterministic` the batch runs under :func:`steerboard.precision.batch_invariant`; where
        :attr:`invariant_batches` holds, a group's scores then have the same bits whichever groups share its
        batch, so batching concurrent callers together (the provider does) never changes a result.

        Args:
            groups: ``(request, continuations)`` pairs: a prompt with its ``meta`` and the token ids to score
                after it (at least one continuation, each at least one token).
            intervention: entered around each batch.
            distributions: also return each position's full next-token log-distribution (CPU float32).
            max_positions: most scored positions per batch (bounds the ``[positions, vocab]`` float32 logits).
            prefix_len: the first ``prefix_len`` prompt tokens are a prefix that many calls share (a few-shot
                primer): with :attr:`prefix_cache` on, its keys/values are computed once and reused (under
                hooks only when the intervention declares a ``preamble_key``). Without it every prompt runs
                whole.

        Returns:
            Per group, one :class:`ScoredContinuation` per continuation, in order.
        """
        from steerboard import precision

        units, batches = self._plan_scoring(groups, max_positions, prefix_len)
        out: list[list[ScoredContinuation | None]] = [[None] * len(conts) for _, conts in groups]
        exact = self.deterministic and precision.use_exact_attention(self.model)
        invariant = precision.batch_invariant() if exact else contextlib.nullcontext()
        with self.lock, invariant:
            self._scoring = True
            try:
                for idx in batches:
                    res = self._score_batch(
                        [(units[i][2], units[i][3]) for i in idx], intervention, distributions, prefix_len
                    )
                    for i, scored in zip(idx, res):
                        g, start = units[i][0], units[i][1]
                        out[g][start : start + len(scored)] = scored
            finally:
                self._scoring = False
        return [[r for r in rs if r is not None] for rs in out]

    def _plan_scoring(
        self, groups: Sequence[tuple[GenerationRequest, Sequence[Sequence[int]]]], max_positions: int, prefix_len: int
    ) -> tuple[list[tuple[int, int, GenerationRequest, list[list[int]]]], list[list[int]]]:
        """Units ``(group, first continuation, request, continuations)`` and the batches (unit indices) of
        :meth:`score_groups`; checks that every group has continuations and none is empty."""
        units: list[tuple[int, int, GenerationRequest, list[list[int]]]] = []  # (group, first cont, req, conts)
        for g, (req, conts) in enumerate(groups):
            if not conts:
                raise ValueError(f"group {g} has no continuation to score")
            for j, c in enumerate(conts):
                if not c:
                    raise ValueError(f"continuation {j} of group {g} is empty: there is nothing to score")
            # a group whose continuations do not fit one batch is split (its prompt then runs once per part)
            part: list[list[int]] = []
            start = 0
            for j, c in enumerate(conts):
                if part and sum(len(x) for x in part) + len(c) > max_positions:
                    units.append((g, start, req, part))
                    part, start = [], j
                part.append(list(c))
            units.append((g, start, req, part))

        # batches: one shared prefix each (whether a prompt reuses the cached prefix must not depend on its
        # batch mates), prompts of similar length together (less padding)
        def prefix_of(i: int) -> tuple[int, ...]:
            return tuple(units[i][2].input_ids[:prefix_len]) if prefix_len >= 4 else ()

        def packed(i: int) -> int:  # scored positions of a unit (its decode row's length + 1 per continuation)
            return sum(len(c) for c in units[i][3])

        order = sorted(range(len(units)), key=lambda i: (prefix_of(i), len(units[i][2].input_ids)))
        batches: list[list[int]] = []
        for i in order:
            cur = batches[-1] if batches else None
            if (
                cur is None
                or prefix_of(cur[0]) != prefix_of(i)
                or len(cur) >= self.max_batch_size
                or sum(packed(j) for j in cur) + packed(i) > max_positions
                or (len(cur) + 1) * max(packed(j) for j in [*cur, i]) > self.max_batch_tokens
                or (len(cur) + 1) * len(units[i][2].input_ids) > self.max_batch_tokens
                # padding: at most a quarter more than the prompts' own tokens (they come sorted by length)
                or (len(cur) + 1) * len(units[i][2].input_ids) > 1.25 * sum(len(units[j][2].input_ids) for j in [*cur, i])
            ):
                batches.append([i])
            else:
                cur.append(i)
        return units, batches

    def _score_batch(
        self,
        units: list[tuple[GenerationRequest, list[list[int]]]],
        intervention: Intervention | None,
        distributions: bool,
        prefix_len: int = 0,
    ) -> list[list[ScoredContinuation]]:
        """One prefill of the units' prompts, then one decode forward over all their continuations.

        The decode packs a prompt's continuations into its own row, one after another, with an attention mask
        that lets each continuation token see the prompt and the earlier tokens of its own continuation only
        (``[rows, 1, width, prompt + width]``): a question's options share its prompt's keys/values without
        copying them, and rows are as wide as a question's options together, not options x the longest one.
        """
        import torch

        pre = [req for req, _ in units]
        g_n = len(pre)
        state = BatchState(requests=pre, prompt_lengths=[len(r.input_ids) for r in pre], padded_length=0)
        ctx = intervention(state) if intervention is not None else contextlib.nullcontext()
        with self.lock, torch.inference_mode(), ctx:
            reuse, key_fn = prefix_reuse(intervention)
            # only a declared shared prefix is reused: a prompt computed whole and one computed after a cached
            # prefix differ by float rounding, so a method that changes nothing would not score exactly as base
            prefix = list(pre[0].input_ids[:prefix_len]) if prefix_len >= 4 else None
            cache, mask, next_pos, (hidden, logits) = self._prefill(
                pre, state, list(range(g_n)), reuse and prefix is not None, key_fn, prefix
            )
            first = (logits if logits is not None else self._logits(hidden)).float()  # predicts each token 0
            spans, width, ids, pos, attn, real = self._packed_continuations(units, mask)
            rest = None
            if width > 0:
                state.phase, state.rows, state.step = "decode", list(range(g_n)), 1
                state.attention_mask = torch.cat([mask, real], dim=1)
                kw = dict(input_ids=ids, attention_mask=attn, position_ids=next_pos + pos, past_key_values=cache)
                split = self._split_lm()
                at = [(g, start + t) for g in range(g_n) for start, n in spans[g] for t in range(n)]
                if split is None:
                    out = self.model(**kw, use_cache=True).logits
                    rest = out[[g for g, _ in at], [t for _, t in at]].float() if at else None
                else:
                    hid = split[0](**kw, use_cache=True).last_hidden_state
                    # the head on real positions only ([positions, vocab] float32)
                    rest = self._logits(hid[[g for g, _ in at], [t for _, t in at]]).float() if at else None
            results: list[list[ScoredContinuation]] = []
            k = 0
            for g, (_, conts) in enumerate(units):
                results.append([])
                for c in conts:
                    rows = first[g : g + 1]
                    if rest is not None and len(c) > 1:
                        rows = torch.cat([rows, rest[k : k + len(c) - 1]], dim=0)
                        k += len(c) - 1
                    lp = torch.log_softmax(rows, dim=-1)
                    tok = lp.gather(-1, torch.tensor(c, device=lp.device).unsqueeze(-1)).squeeze(-1)
                    results[g].append(
                        ScoredContinuation(
                            token_ids=list(c), logprobs=tok.tolist(), distributions=lp.cpu() if distributions else None
                        )
                    )
        return results

    def _packed_continuations(self, units: list[tuple[GenerationRequest, list[list[int]]]], mask: Any) -> tuple[Any, ...]:
        """The decode inputs of :meth:`_score_batch`: row ``g`` holds ``c[:-1]`` of each of unit ``g``'s
        continuations in turn. Returns (spans: per row ``[(start, length)]``, width, ids, positions relative to
        the prompt's end, the ``[rows, 1, width, prompt + width]`` boolean attention mask, real-token mask)."""
        import torch

        g_n = len(units)
        spans: list[list[tuple[int, int]]] = [[] for _ in range(g_n)]
        packed: list[list[int]] = []
        for g, (_, conts) in enumerate(units):
            row: list[int] = []
            for c in conts:
                spans[g].append((len(row), len(c) - 1))
                row += c[:-1]
            packed.append(row)
        width = max(len(r) for r in packed)
        ids = torch.full((g_n, width), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.zeros((g_n, width), dtype=torch.long)
        own = torch.zeros((g_n, width, width), dtype=torch.bool)
        real = torch.zeros((g_n, width), dtype=torch.long)
        for g in range(g_n):
            if packed[g]:
                ids[g, : len(packed[g])] = torch.tensor(packed[g])
            real[g, : len(packed[g])] = 1
            for start, n in spans[g]:
                pos[g, start : start + n] = torch.arange(n)
                own[g, start : start + n, start : start + n] = torch.ones(n, n, dtype=torch.bool).tril()
        dev = self.device
        prompt_cols = mask.bool()[:, None, None, :].expand(g_n, 1, width, mask.shape[1]) & real.to(dev).bool()[:, None, :, None]
        # padding queries see the prompt's last token only (always real: prompts are left-padded), so their values
        # stay finite and no real query's attention spans an extra column (the batch-invariant attention gathers
        # the columns a row attends; a padding column there would change its sums' blocking)
        prompt_cols[:, 0, :, -1] = True
        attn = torch.cat([prompt_cols, own.to(dev)[:, None]], dim=-1)
        return spans, width, ids.to(dev), pos.to(dev), attn, real.to(dev)

    def hidden_states(
        self, seqs: Sequence[Sequence[int]], layers: Sequence[int] | None = None, *, batch_size: int = 16
    ) -> list[dict[int, torch.Tensor]]:
        """Per-sequence hidden states ``{layer: [len(seq), hidden]}`` (layer 0 = embeddings) on CPU."""
        out: list[dict[int, torch.Tensor]] = []
        for b in range(0, len(seqs), batch_size):
            chunk = seqs[b : b + batch_size]
            res = self.forward(chunk, output_hidden_states=True)
            hs = res.hidden_states
            want = range(len(hs)) if layers is None else layers
            width = hs[0].shape[1]
            for i, s in enumerate(chunk):
                out.append({layer: hs[layer][i, width - len(s) :].float().cpu() for layer in want})
        return out

    def decoder_layers(self) -> Any:
        """The model's list of transformer blocks (``model.model.layers`` for llama-style models)."""
        base = (
            getattr(self.model, "model", None)
            or getattr(self.model, "transformer", None)
            or getattr(self.model, "gpt_neox", None)
        )
        for attr in ("layers", "h", "blocks"):
            layers = getattr(base, attr, None)
            if layers is not None:
                return layers
        raise ValueError(f"cannot find the decoder layers of {type(self.model).__name__}")

    def layer_module_name(self, layer: int) -> str:
        """Module name of decoder block ``layer`` (public API), e.g. ``"model.layers.8"``.

        The block's output is the residual stream after it: hook it with :func:`hooks` to read or steer
        layer ``layer``'s residual (``[rows, seq, hidden_size]``, ``hidden_size`` =
        ``engine.model.config.hidden_size``).

        Raises:
            ValueError: ``layer`` is not in ``0 .. n_layers - 1`` (names the range).
        """
        layers = self.decoder_layers()
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} out of range: the model has {len(layers)} layers (0..{len(layers) - 1})")
        for name, mod in self.model.named_modules():
            if mod is layers[layer]:
                return name
        raise ValueError(f"layer {layer} not found")  # pragma: no cover


@dataclass
class _Row:
    """Output state of one request in a running batch."""

    generator: Any  # torch.Generator for sampled rows, else None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str = "max_tokens"
    cut_text: str | None = None  # the text cut before a stop sequence
    result: GenerationResult | None = None


class _ContinuousBatch:
    """One continuous batch: its rows' outputs and the live rows' KV cache, mask and next positions.

    Rows are numbered in admission order (starting requests first). ``live`` lists the rows still
    generating, in KV-cache order; ``hidden``/``logits`` hold their last position's output (one of the two,
    see :meth:`Engine._run_lm`).
    """

    def __init__(
        self,
        engine: Engine,
        intervention: Intervention | None,
        on_done: Callable[[int, GenerationResult], None] | None,
    ) -> None:
        import torch

        self.engine = engine
        self.on_done = on_done
        self.t0 = time.perf_counter()
        self.state = BatchState(requests=[], prompt_lengths=[], padded_length=0, rows=[])
        self.reqs = self.state.requests  # grows as requests join
        self.rows: list[_Row] = []
        self.live: list[int] = []
        self.cache: Any = None
        self.mask: Any = None
        self.next_pos: Any = None
        self.hidden: Any = None
        self.logits: Any = None
        self.tok: Any = None
        dev = engine.device
        self.eos = torch.tensor(sorted(engine.eos_ids), device=dev) if engine.eos_ids else None
        self.reuse, self.key_fn = prefix_reuse(intervention)

    def admit(self, new: list[GenerationRequest]) -> None:
        """Prefill ``new`` requests and stack them under the live rows."""
        import torch

        dev = self.engine.device
        first = len(self.rows)
        for r in new:
            g = None
            if r.temperature > 0:
                g = torch.Generator(device=dev)
                g.manual_seed(r.seed if r.seed is not None else torch.seed() % (2**63))
            self.rows.append(_Row(generator=g))
            self.reqs.append(r)
            self.state.prompt_lengths.append(len(r.input_ids))
        rows = list(range(first, len(self.rows)))
        cache, mask, pos, (hidden, logits) = self.engine._prefill(self.reqs, self.state, rows, self.reuse, self.key_fn)
        if not self.live:
            self.cache, self.mask, self.next_pos, self.hidden, self.logits, self.live = cache, mask, pos, hidden, logits, rows
            return
        self.cache, mask = self.engine._merge(self.cache, self.mask, cache, mask)
        self.mask = self.engine._trim_padding(self.cache, mask)
        self.next_pos = torch.cat([self.next_pos, pos], dim=0)
        if self.hidden is not None:
            self.hidden = torch.cat([self.hidden, hidden], dim=0)
        else:
            self.logits = torch.cat([self.logits, logits], dim=0)
        self.live = self.live + rows

    def choose(self) -> Any:
        """The next token of every live row (and its log-probability where asked)."""
        import torch

        eng, reqs = self.engine, self.reqs
        want_lp = any(reqs[r].logprobs or reqs[r].top_logprobs for r in self.live)
        greedy = all(reqs[r].temperature <= 0 for r in self.live)
        if self.logits is None and eng._screen_head() and not want_lp and greedy:
            from steerboard.precision import screened_greedy

            tok, n_cand, n_back = screened_greedy(self.hidden, eng._split_lm()[1])  # type: ignore[index]
            eng.head_screen_candidates += n_cand
            eng.head_screen_fallbacks += n_back
            eng.head_screen_rows += len(self.live)
        else:
            if self.logits is None:
                self.logits = eng._logits(self.hidden)
            tok = eng._choose(self.logits, [reqs[r] for r in self.live], [self.rows[r].generator for r in self.live])
        if want_lp:
            lp = torch.log_softmax(self.logits.float(), dim=-1)
            for j, r in enumerate(self.live):
                if reqs[r].logprobs or reqs[r].top_logprobs:
                    self.rows[r].logprobs.append(eng._token_logprob(lp[j], int(tok[j]), reqs[r].top_logprobs))
        self.tok = tok
        return tok

    def record(self, tok: Any) -> list[bool]:
        """Append each live row's token; returns which rows are done (end of turn, stop string, length)."""
        import torch

        tok_list = tok.tolist()
        is_eos = torch.isin(tok, self.eos).tolist() if self.eos is not None else [False] * len(self.live)
        done_list = []
        for j, r in enumerate(self.live):
            req, row = self.reqs[r], self.rows[r]
            if is_eos[j]:
                row.finish = "stop"
                done_list.append(True)
                continue
            row.tokens.append(tok_list[j])
            done_list.append(len(row.tokens) >= req.max_new_tokens or (bool(req.stop) and self._hit_stop(req, row)))
        return done_list

    def _hit_stop(self, req: GenerationRequest, row: _Row) -> bool:
        """Whether a stop string has appeared; if so, cut the text before it."""
        decode = self.engine.tokenizer.decode
        max_stop = max(len(s) for s in req.stop)
        tail = decode(row.tokens[-(max_stop + 8) :], skip_special_tokens=True)
        if not any(s in tail for s in req.stop):
            return False
        full = decode(row.tokens, skip_special_tokens=True)
        cut = min((full.find(s) for s in req.stop if s in full), default=-1)
        if cut < 0:
            return False
        row.cut_text, row.finish = full[:cut], "stop"
        return True

    def finish(self, done_list: list[bool]) -> None:
        """Hand out the results of finished rows and drop them from the KV cache."""
        import torch

        for j, r in enumerate(self.live):
            if done_list[j]:
                self._result(r)
        keep = [j for j, d in enumerate(done_list) if not d]
        if len(keep) == len(self.live):
            return
        self.live = [self.live[j] for j in keep]
        if keep:
            keep_t = torch.tensor(keep, device=self.engine.device)
            self.cache.batch_select_indices(keep_t)
            self.next_pos = self.next_pos.index_select(0, keep_t)
            self.tok = self.tok.index_select(0, keep_t)
            self.mask = self.engine._trim_padding(self.cache, self.mask.index_select(0, keep_t))

    def _result(self, r: int) -> None:
        req, row = self.reqs[r], self.rows[r]
        text = row.cut_text
        if text is None:
            text = self.engine.tokenizer.decode(row.tokens, skip_special_tokens=True)
        row.result = GenerationResult(
            text=text,
            token_ids=row.tokens,
            finish_reason=row.finish,  # type: ignore[arg-type]
            input_tokens=len(req.input_ids),
            output_tokens=len(row.tokens) + (1 if row.finish == "stop" and row.cut_text is None else 0),
            logprobs=row.logprobs if (req.logprobs or req.top_logprobs) else None,
            seconds=time.perf_counter() - self.t0,
        )
        if self.on_done is not None:
            self.on_done(r, row.result)

    def step(self) -> None:
        """One decode forward pass for the live rows (their chosen tokens in, next outputs out)."""
        import torch

        if not self.live:
            return
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        state = self.state
        state.phase, state.rows, state.attention_mask = "decode", list(self.live), self.mask
        state.step += 1
        from steerboard import precision

        with precision.decode_blocks():  # one row per live request (AMX row blocks may differ, see there)
            self.cache, self.hidden, self.logits = self.engine._run_lm(
                input_ids=self.tok.unsqueeze(-1), attention_mask=self.mask, position_ids=self.next_pos,
                past_key_values=self.cache,
            )
        self.next_pos = self.next_pos + 1

    def results(self) -> list[GenerationResult]:
        return [row.result for row in self.rows if row.result is not None]
