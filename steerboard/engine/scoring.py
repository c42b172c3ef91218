"""Teacher-forced scoring of :class:`steerboard.engine.Engine`: log-likelihoods of continuations after a prompt,
as generation sees them (a multiple-choice question's options share one prefill), and plain full-sequence scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from steerboard.engine.interface import (
    BatchState,
    GenerationRequest,
    Intervention,
    ScoredContinuation,
    prefix_reuse,
)


class _ScoringMixin:
    """:class:`steerboard.engine.Engine`'s scoring methods (built on :class:`steerboard.engine.forward._ForwardMixin`)."""

    model: Any
    tokenizer: Any
    deterministic: bool
    max_batch_size: int
    max_batch_tokens: int
    lock: Any
    device: Any
    _scoring: bool

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
            cache, mask, next_pos, (hidden, logits) = self.prefill(
                pre, state, list(range(g_n)), reuse and prefix is not None, key_fn, prefix
            )
            first = (logits if logits is not None else self.head_logits(hidden)).float()  # predicts each token 0
            spans, width, ids, pos, attn, real = self._packed_continuations(units, mask)
            rest = None
            if width > 0:
                state.phase, state.rows, state.step = "decode", list(range(g_n)), 1
                state.attention_mask = torch.cat([mask, real], dim=1)
                kw = dict(input_ids=ids, attention_mask=attn, position_ids=next_pos + pos, past_key_values=cache)
                split = self.split_lm()
                at = [(g, start + t) for g in range(g_n) for start, n in spans[g] for t in range(n)]
                if split is None:
                    out = self.model(**kw, use_cache=True).logits
                    rest = out[[g for g, _ in at], [t for _, t in at]].float() if at else None
                else:
                    hid = split[0](**kw, use_cache=True).last_hidden_state
                    # the head on real positions only ([positions, vocab] float32)
                    rest = self.head_logits(hid[[g for g, _ in at], [t for _, t in at]]).float() if at else None
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
