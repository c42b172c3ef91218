"""Continuous batching with the KV cache edited in place vs copied, side by side, on the embedded model.

In continuous batching rows leave the KV cache when they finish and join it when Inspect's next requests
arrive, and leading padding columns are trimmed. transformers' ``DynamicLayer`` makes each of these a copy of
the whole cache (and the engine's appending layer then copied it once more into fresh buffers); the engine's
layer (``steerboard.engine._GrowingMixin``) edits its buffers in place instead. The cost of the copies grows
with rows x prompt length x store width, so long prompts under the batch-invariant float64 store are where it
shows: SafeEdit's prompts (~450 tokens), 36 of them, as the quick suite's SafeEdit pair asks them.

Each repeat generates the same requests both ways (alternating which goes first), arriving in groups as
Inspect's samples do, and prints the medians, the ratio, and whether every row's tokens are the same both
ways (they must be).

Usage::

    python benchmarks/kv_cache_edits.py                     # 36 SafeEdit prompts, 48 tokens, 3 repeats
    python benchmarks/kv_cache_edits.py --n 24 --arrive 6 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import steerboard  # noqa: F401  (first: OpenMP settings before torch loads)


@contextlib.contextmanager
def copying_cache() -> Iterator[None]:
    """Row removal, trims and joins done by copying, as transformers' ``DynamicLayer`` does them."""
    from transformers.cache_utils import DynamicLayer

    from steerboard.engine import _growing_layer

    layer = _growing_layer()

    def trim_by_slice(self, start: int) -> None:  # noqa: ANN001
        self.keys = self.keys[..., start:, :]
        self.values = self.values[..., start:, :]

    saved = {k: layer.__dict__.get(k) for k in ("batch_select_indices", "trim_left", "stack")}
    layer.batch_select_indices = DynamicLayer.batch_select_indices
    layer.trim_left = trim_by_slice
    layer.stack = None  # the engine's merge then concatenates
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                delattr(layer, k)
            else:
                setattr(layer, k, v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=36, help="prompts (SafeEdit's six per item, items in order)")
    ap.add_argument("--tokens", type=int, default=48, help="max new tokens")
    ap.add_argument("--arrive", type=int, default=12, help="requests per arriving group")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from steerboard.engine import Engine, GenerationRequest
    from steerboard.tasks.safeedit import safeedit

    engine = Engine.load("smollm2-135m")
    prompts: list[str] = []
    for s in safeedit(protocol="standard").dataset:
        prompts += [*s.metadata["prompts"].values(), s.metadata["knowledge_prompt"]]
        if len(prompts) >= args.n:
            break
    reqs = [GenerationRequest(engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.tokens)
            for p in prompts[: args.n]]
    print(f"{len(reqs)} prompts, {statistics.mean(len(r.input_ids) for r in reqs):.0f} tokens on average, "
          f"{args.tokens} new tokens, arriving {args.arrive} at a time", flush=True)

    def run() -> tuple[float, list[list[int]]]:
        pending = [reqs[i : i + args.arrive] for i in range(args.arrive, len(reqs), args.arrive)][::-1]

        def more(free: int) -> list[GenerationRequest]:
            return pending.pop() if pending and free > 0 else []

        t = time.perf_counter()
        out = engine.generate_continuous(reqs[: args.arrive], more=more)
        return time.perf_counter() - t, [o.token_ids for o in out]

    run()  # warm-up
    times: dict[str, list[float]] = {"in place": [], "copying": []}
    tokens: dict[str, list[list[int]]] = {}
    for rep in range(args.repeats):
        for way in (("in place", "copying") if rep % 2 == 0 else ("copying", "in place")):
            with copying_cache() if way == "copying" else contextlib.nullcontext():
                sec, tokens[way] = run()
            times[way].append(sec)
    inplace, copying = (statistics.median(times[w]) for w in ("in place", "copying"))
    print(f"in place {inplace:.1f} s, copying {copying:.1f} s (medians of {args.repeats}); copying/in place = "
          f"{copying / inplace:.2f}; same tokens both ways: {tokens['in place'] == tokens['copying']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
