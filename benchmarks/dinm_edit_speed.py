"""DINM edit time: full forward passes every step ("plain") vs the cached-prefix path, side by side.

For each of the first N shipped SafeEdit test items, one edit is timed with each path (interleaved, in
alternating order so drifting machine load hits both alike), the weights restored exactly after each,
and the median seconds per edit of each path and their ratio are printed. Both paths locate the toxic
layer the same way and compute the same loss (the first-step loss of both is printed as a check).

    python benchmarks/dinm_edit_speed.py --n 6
    STEERBOARD_THREADS=2 taskset -c 0,1 python benchmarks/dinm_edit_speed.py --n 10
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=6, help="SafeEdit items (edits per path)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()

    from steerboard._runtime_env import configure_openmp

    configure_openmp()  # before torch loads (libgomp reads its wait setting once)

    import torch

    from steerboard.engine import Engine, default_threads
    from steerboard.methods.base import EditInstance
    from steerboard.methods.dinm import DINMConfig, dinm_edit
    from steerboard.tasks.safeedit import load_records

    records, _ = load_records("shipped", None)
    eng = Engine.load(args.model)
    cfg = DINMConfig(instances=0, steps=args.steps, lr=args.lr)
    orig = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    print(f"model={args.model} torch_threads={torch.get_num_threads()} (default_threads={default_threads()}) "
          f"steps={cfg.steps} lr={cfg.lr} items={args.n}")
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    # process CPU seconds (all threads): on a shared machine cpu/threads estimates the unshared wall time
    cpus: dict[str, list[float]] = {"plain": [], "cached": []}
    for i, r in enumerate(records[: args.n]):
        inst = EditInstance(
            prompt=r["adversarial prompt"], safe_response=r["safe generation"], unsafe_response=r["unsafe generation"],
            knowledge_prompt=r["knowledge constrain"]["prompt"], knowledge_answer=r["knowledge constrain"]["answer"],
            id=str(r["id"]),
        )
        order = ["plain", "cached"] if i % 2 == 0 else ["cached", "plain"]
        row = {}
        for mode in order:
            t0, c0 = time.perf_counter(), time.process_time()
            s = dinm_edit(eng, inst, cfg, cached_prefix=(mode == "cached"))
            dt = time.perf_counter() - t0
            cpus[mode].append(time.process_time() - c0)
            with torch.no_grad():
                for n, p in eng.model.named_parameters():
                    p.copy_(orig[n])
            times[mode].append(dt)
            row[mode] = (dt, s)
        sp, sc = row["plain"][1], row["cached"][1]
        print(
            f"item {r['id']}: layer={sc['layer']} prompt_tokens={sc['prompt_tokens']} safe_tokens={sc['safe_tokens']} "
            f"plain={row['plain'][0]:.2f}s cached={row['cached'][0]:.2f}s (locate {sc['seconds_locate']:.2f}s) "
            f"cpu plain={cpus['plain'][-1]:.1f}s cached={cpus['cached'][-1]:.1f}s "
            f"loss0 plain={sp['loss'][0]:.5f} cached={sc['loss'][0]:.5f} final plain={sp['loss'][-1]:.4f} "
            f"cached={sc['loss'][-1]:.4f}",
            flush=True,
        )
    mp, mc = statistics.median(times["plain"]), statistics.median(times["cached"])
    print(f"median seconds per edit: plain={mp:.2f} cached={mc:.2f} ratio plain/cached={mp / mc:.2f}x")
    cp, cc = statistics.median(cpus["plain"]), statistics.median(cpus["cached"])
    print(f"median CPU seconds per edit: plain={cp:.2f} cached={cc:.2f} ratio={cp / cc:.2f}x "
          f"(/{torch.get_num_threads()} threads ~ unshared wall: plain={cp / torch.get_num_threads():.2f} "
          f"cached={cc / torch.get_num_threads():.2f})")


if __name__ == "__main__":
    main()
