"""The :class:`Engine` class: loading a model, the public generation entry points and the model's layout.

Its other methods come from mixins, one module per concern: chat templates (:mod:`steerboard.engine.templates`),
forward passes and prefills (:mod:`steerboard.engine.forward`) and teacher-forced scoring
(:mod:`steerboard.engine.scoring`); the decode loop is :mod:`steerboard.engine.batch`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from steerboard.engine.batch import _ContinuousBatch
from steerboard.engine.forward import _ForwardMixin
from steerboard.engine.interface import GenerationRequest, GenerationResult, Intervention
from steerboard.engine.scoring import _ScoringMixin
from steerboard.engine.templates import _TemplatesMixin, eos_token_ids

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


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


class Engine(_TemplatesMixin, _ForwardMixin, _ScoringMixin):
    """Batched generation, scoring and hidden-state capture for one causal LM.

    Public API for methods (what :meth:`steerboard.methods.base.Method.prepare` receives):
    ``model`` (the transformers ``PreTrainedModel``: hook its modules, read ``model.config``, change
    weights in a method with ``private_weights``), ``tokenizer``, :meth:`layer_module_name`,
    :meth:`decoder_layers`, :meth:`chat_ids`, :meth:`generate`, :meth:`forward`, :meth:`score` and
    :meth:`hidden_states` (for fitting), and :meth:`weights_changed` (call it after changing weights).

    The decode loop (:mod:`steerboard.engine.batch`) and methods that train on the model (DINM) build on
    the lower-level steps, public too: :meth:`pad_batch` (left-padded ids, mask and positions),
    :meth:`prefill` (a prompt forward into a new KV cache), :meth:`run_lm` (one forward with a cache),
    :meth:`split_lm`, :meth:`head_logits` and :meth:`uses_screened_head` (the decoder/head split).

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
        self.eos_ids = eos_token_ids(model, tokenizer)
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

    @property
    def invariant_batches(self) -> bool:
        """Whether a request's results do not depend on its batch mates: a deterministic engine with bfloat16
        linear layers and the batch-invariant attention (:func:`steerboard.precision.batch_invariant`; measured
        bit-exact in ``tests/test_cost.py`` and ``tests/test_determinism.py``). Float32 CPU matmuls round a
        row differently in small batches, so exact float32 engines, and GPUs, are not."""
        from steerboard import precision

        return bool(self.deterministic and self.matmul_dtype == "bfloat16" and precision.use_exact_attention(self.model))

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
