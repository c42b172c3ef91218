"""Forward passes of :class:`steerboard.engine.Engine`: the model split into decoder and head, one cached
forward step, prompt prefills (reusing the chat template's preamble keys/values), and full-sequence
forwards for scoring and hidden-state capture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from steerboard.engine.interface import BatchState, GenerationRequest, Intervention
from steerboard.engine.kvcache import move_padding_left, new_kv_cache

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch


class _ForwardMixin:
    """:class:`steerboard.engine.Engine`'s forward passes (state lives on the engine, see its ``__init__``)."""

    model: Any
    tokenizer: Any
    deterministic: bool
    head_screen: bool
    matmul_dtype: str
    prefix_cache: bool
    prefix_hits: int
    lock: Any
    template_prefix: list[int]
    device: Any
    _prefix_kv: tuple[Any, list[tuple[Any, Any]]] | None
    _scoring: bool
    _weights_epoch: int

    # Causal-LM classes whose logits are exactly ``lm_head(decoder(...).last_hidden_state)``: no
    # logit scaling or soft-capping after the head (checked again on the config below).
    PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "granite"})

    def split_lm(self) -> tuple[Any, Any] | None:
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

    def uses_screened_head(self) -> bool:
        """Whether greedy rows use the screened bfloat16 head (bf16 matmuls on a float32 model): the decode loop
        then picks their tokens with :func:`steerboard.precision.screened_greedy` from the final hidden state."""
        import torch

        if not self.head_screen or self.matmul_dtype != "bfloat16" or self.split_lm() is None:
            return False
        return next(self.model.parameters()).dtype == torch.float32

    def run_lm(self, **kw: Any) -> tuple[Any, Any, Any]:
        """One forward with a KV cache: (cache, last-position hidden state or None, logits or None).

        With a split model only the final hidden state comes back (logits are made on demand by
        :meth:`head_logits`); otherwise the model's own last-position logits.
        """
        split = self.split_lm()
        if split is None:
            out = self.model(**kw, use_cache=True, logits_to_keep=1)
            return out.past_key_values, None, out.logits[:, -1, :]
        out = split[0](**kw, use_cache=True)
        return out.past_key_values, out.last_hidden_state[:, -1, :], None

    def head_logits(self, hidden: Any) -> Any:
        """Full logits from a final hidden state (the head in the model's own precision).

        When deterministic, the head runs on at least :data:`steerboard.precision.MIN_INVARIANT_ROWS` rows
        (zero rows added), where the float32 matmul gives each row the same bits whatever the row count.
        """
        from steerboard import precision

        split = self.split_lm()
        assert split is not None
        if self.deterministic:
            return precision.row_invariant(split[1], hidden)
        return split[1](hidden)

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
                cache, _, _ = self.run_lm(
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
        """:meth:`prefill` for rows that all start with ``prefix``: its cached keys/values are copied into
        every row and only the rest is run, as ``[prefix][left padding][rest]`` (the mask hides the padding,
        positions are explicit). The returned cache and mask are ``[left padding][prefix][rest]``, the layout
        of a prefill without the preamble: a row's keys are contiguous and right-aligned, which the
        batch-invariant decode attention needs (:func:`move_padding_left`)."""
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
        cache, hidden, logits = self.run_lm(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache)
        self.prefix_hits += 1
        mask = move_padding_left(cache, mask, p, [width - n for n in lengths])
        return cache, mask, pos[:, -1:] + 1, (hidden, logits)

    def prefill(
        self, reqs: list[GenerationRequest], state: BatchState, rows: list[int], reuse_prefix: bool = False,
        key_fn: Callable[[list[GenerationRequest]], Any] | None = None, prefix: list[int] | None = None,
    ) -> tuple[Any, ...]:
        """Left-padded prompt forward for ``rows``; returns (cache, mask, next positions, last logits).

        With ``reuse_prefix`` (no intervention, or one whose ``preamble_key`` = ``key_fn`` gives these rows
        a key) and :attr:`prefix_cache` on, rows that all start with ``prefix`` (default: the chat
        template's preamble) reuse its cached keys/values (:meth:`_prefill_with_preamble`).
        """
        import torch

        if reuse_prefix and self.prefix_cache and self.split_lm() is not None:
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
        cache, hidden, logits = self.run_lm(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self._new_cache()
        )
        return cache, mask, pos[:, -1:] + 1, (hidden, logits)

    def pad_batch(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-pad token sequences into one batch on the engine's device (public API).

        Returns ``(input_ids, attention_mask, position_ids)``, each ``[len(seqs), longest]``: row ``i``'s real
        tokens are its last ``len(seqs[i])`` columns (mask 1), padding columns hold the pad token (mask 0), and
        positions count real tokens from 0 (0 on padding), as :meth:`forward` runs them.
        """
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

        ids, mask, pos = self.pad_batch(seqs)
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
