"""The decode loop: one continuous batch whose finished rows leave and whose new requests join between
decode steps, with token choice (greedy, seeded sampling), stop strings and per-token log-probabilities.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steerboard.engine.interface import (
    BatchState,
    GenerationRequest,
    GenerationResult,
    Intervention,
    TokenLogprob,
    prefix_reuse,
)
from steerboard.engine.kvcache import merge_caches, trim_padding

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch

    from steerboard.engine.core import Engine


def choose_tokens(logits: torch.Tensor, reqs: list[GenerationRequest], gens: list[Any]) -> torch.Tensor:
    """The next token of each row of ``logits`` ``[rows, vocab]``: the argmax for greedy requests, a sample
    (temperature, then top-k, then top-p) drawn with the row's generator ``gens[j]`` for sampling ones."""
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


def token_logprob(tokenizer: Any, lp_row: torch.Tensor, token_id: int, top_n: int) -> TokenLogprob:
    """``token_id``'s entry of the log-distribution ``lp_row`` ``[vocab]``, with its ``top_n`` most likely
    alternatives, decoded with ``tokenizer``."""
    import torch

    top: list[tuple[str, int, float]] = []
    if top_n:
        vals, idx = torch.topk(lp_row, top_n)
        top = [
            (tokenizer.decode([i]), int(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist())
        ]
    return TokenLogprob(
        token=tokenizer.decode([token_id]), token_id=token_id, logprob=float(lp_row[token_id]), top=top
    )


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
    see :meth:`Engine.run_lm`).
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
        cache, mask, pos, (hidden, logits) = self.engine.prefill(self.reqs, self.state, rows, self.reuse, self.key_fn)
        if not self.live:
            self.cache, self.mask, self.next_pos, self.hidden, self.logits, self.live = cache, mask, pos, hidden, logits, rows
            return
        self.cache, mask = merge_caches(self.cache, self.mask, cache, mask)
        self.mask = trim_padding(self.cache, mask)
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
        if self.logits is None and eng.uses_screened_head() and not want_lp and greedy:
            from steerboard.precision import screened_greedy

            tok, n_cand, n_back = screened_greedy(self.hidden, eng.split_lm()[1])  # type: ignore[index]
            eng.head_screen_candidates += n_cand
            eng.head_screen_fallbacks += n_back
            eng.head_screen_rows += len(self.live)
        else:
            if self.logits is None:
                self.logits = eng.head_logits(self.hidden)
            tok = choose_tokens(self.logits, [reqs[r] for r in self.live], [self.rows[r].generator for r in self.live])
        if want_lp:
            lp = torch.log_softmax(self.logits.float(), dim=-1)
            for j, r in enumerate(self.live):
                if reqs[r].logprobs or reqs[r].top_logprobs:
                    self.rows[r].logprobs.append(token_logprob(eng.tokenizer, lp[j], int(tok[j]), reqs[r].top_logprobs))
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
            self.mask = trim_padding(self.cache, self.mask.index_select(0, keep_t))

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
            self.cache, self.hidden, self.logits = self.engine.run_lm(
                input_ids=self.tok.unsqueeze(-1), attention_mask=self.mask, position_ids=self.next_pos,
                past_key_values=self.cache,
            )
        self.next_pos = self.next_pos + 1

    def results(self) -> list[GenerationResult]:
        return [row.result for row in self.rows if row.result is not None]
