"""Batched greedy output vs the same prompts run one by one, on the embedded model.

The engine pads on the left, buckets by length and drops finished rows; none of that may change a greedy
reply. By default the engine is batch-invariant (``Engine(deterministic=True)``: float64 attention, see
``steerboard.precision.batch_invariant``), so batched and one-by-one replies should be identical. With
``deterministic=False`` attention runs in float32 ``sdpa``, whose sums depend on the batch's padding; with
bfloat16 matmuls that flips near-tie tokens and the texts diverge from there (a padding or masking bug
would instead change most replies, and early). This prints, per setting, how many of N prompts match
fully, and for the others the first token where they part.

Usage::

    python benchmarks/batch_vs_single.py                      # 64 XSTest prompts, 48 tokens
    python benchmarks/batch_vs_single.py --n 16 --settings float32
    python benchmarks/batch_vs_single.py --n 32 --tokens 32 --timing-repeats 3   # batched tok/s per setting
"""

from __future__ import annotations

import argparse
import time

import steerboard  # noqa: F401  (first: OpenMP settings before torch loads)


def _engines(settings: str) -> list[tuple[str, object]]:
    from steerboard.engine import Engine

    out = []
    for setting in [d.strip() for d in settings.split(",") if d.strip()]:
        dtype, _, mode = setting.partition(":")
        if mode not in ("", "nondeterministic"):
            raise SystemExit(f"unknown setting {setting!r}: use DTYPE or DTYPE:nondeterministic")
        out.append((setting, Engine.load("smollm2-135m", matmul_dtype=dtype, deterministic=mode != "nondeterministic")))
    return out


def time_settings(args: argparse.Namespace, prompts: list[str]) -> None:
    """Batched greedy tok/s of each setting, the settings interleaved, medians of ``--timing-repeats``."""
    import statistics

    from steerboard.engine import GenerationRequest

    engines = _engines(args.settings)
    rates: dict[str, list[float]] = {name: [] for name, _ in engines}
    for _ in range(args.timing_repeats):
        for name, eng in engines:
            reqs = [GenerationRequest(eng.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.tokens)
                    for p in prompts]
            t0 = time.perf_counter()
            out = eng.generate(reqs)
            rates[name].append(sum(len(o.token_ids) for o in out) / (time.perf_counter() - t0))
    for name, r in rates.items():
        print(f"{name}: median {statistics.median(r):.0f} tok/s (runs: {', '.join(f'{x:.0f}' for x in r)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="prompts (XSTest, safe and unsafe interleaved)")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument(
        "--settings",
        default="auto,auto:nondeterministic,float32",
        help="matmul dtypes to check, comma separated; ':nondeterministic' adds deterministic=False",
    )
    ap.add_argument("--timing-repeats", type=int, default=0,
                    help="instead: time batched generation per setting, interleaved, this many times")
    args = ap.parse_args()

    from engine_vs_inspect_hf import load_prompts

    from steerboard.engine import GenerationRequest

    prompts = load_prompts(args.n)
    if args.timing_repeats:
        time_settings(args, prompts)
        return
    for _setting, eng in _engines(args.settings):
        reqs = [GenerationRequest(eng.chat_ids([{"role": "user", "content": p}]), max_new_tokens=args.tokens)
                for p in prompts]
        t0 = time.perf_counter()
        batched = eng.generate(reqs)
        t1 = time.perf_counter()
        single = [eng.generate([r])[0] for r in reqs]
        t2 = time.perf_counter()
        same = sum(b.token_ids == s.token_ids for b, s in zip(batched, single))
        firsts = []
        for b, s in zip(batched, single):
            if b.token_ids != s.token_ids:
                firsts.append(next((i for i, (x, y) in enumerate(zip(b.token_ids, s.token_ids)) if x != y),
                                   min(len(b.token_ids), len(s.token_ids))))
        print(f"matmul_dtype={eng.matmul_dtype} deterministic={eng.deterministic}: {same}/{len(reqs)} prompts identical batched vs one by one "
              f"({args.tokens} greedy tokens; batched {t1 - t0:.0f} s, one by one {t2 - t1:.0f} s)")
        if firsts:
            print(f"  the others first differ at generated token {sorted(firsts)}")


if __name__ == "__main__":
    main()
