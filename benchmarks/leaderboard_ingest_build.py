"""Benchmark: ingest 1,000 Inspect logs / 1,000,000 samples into DuckDB (target <= 60 s) and build the static
site from it (target <= 10 s), on the machine's cores (the target is stated for 2 cores).

The logs are synthetic but real ``.eval`` files written by Inspect's own writer (see
``steerboard.leaderboard.synthetic``); writing them is slow (~1.5 s per 1,000-sample log), so they are
generated once into a cache directory outside git and reused (``--regenerate`` to force).

Usage::

    python benchmarks/leaderboard_ingest_build.py                 # 1000 logs x 1000 samples, 2 workers
    python benchmarks/leaderboard_ingest_build.py --logs 50 --samples 200 --repeats 3   # quick look

Prints each timing, the median over ``--repeats``, and the ratio to the target (ratio < 1 meets it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

INGEST_TARGET_S = 60.0
BUILD_TARGET_S = 10.0
GENERATOR_VERSION = 1


def ensure_logs(n_logs: int, n_samples: int, workers: int, regenerate: bool) -> Path:
    """Return the cache dir holding the synthetic logs, writing them first if needed."""
    from steerboard.leaderboard.synthetic import SYNTHETIC_LISTING, benchmark_runs, write_synthetic_logs
    from steerboard.paths import cache_dir

    d = cache_dir("bench", f"leaderboard-{n_logs}x{n_samples}")
    marker = d / "COMPLETE.json"
    want = {"n_logs": n_logs, "n_samples": n_samples, "generator_version": GENERATOR_VERSION}
    if marker.exists() and not regenerate and json.loads(marker.read_text()) == want:
        return d
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    t = time.perf_counter()
    write_synthetic_logs(d / "logs", benchmark_runs(n_logs, n_samples), workers=workers)
    import yaml

    (d / "listing.yaml").write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    marker.write_text(json.dumps(want))
    print(f"generated {n_logs} logs x {n_samples} samples in {time.perf_counter() - t:.1f} s -> {d}")
    return d


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the ingest reader processes)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def add_log_options(ap: argparse.ArgumentParser, samples: int) -> None:
    """The options of the synthetic logs and of the timed ingest (``--logs``, ``--samples``, ``--workers``,
    ``--repeats``); ``benchmarks/scaleout.py`` takes them too for its ingest benchmark."""
    ap.add_argument("--logs", type=int, default=1000, help="synthetic logs (default 1000)")
    ap.add_argument("--samples", type=int, default=samples, help=f"samples per log (default {samples})")
    ap.add_argument("--workers", type=int, default=2, help="ingest worker processes (and log writers)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats; the median is reported")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_log_options(ap, samples=1000)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()

    d = ensure_logs(args.logs, args.samples, args.workers, args.regenerate)
    if args.generate_only:
        return 0
    from steerboard.leaderboard.build import build_site
    from steerboard.leaderboard.ingest import ingest_logs
    from steerboard.leaderboard.listing import load_listing_file

    listing = load_listing_file(d / "listing.yaml")
    print(
        f"cores available: {len(os.sched_getaffinity(0))}; ingest workers: {args.workers}; "
        f"load average before: {os.getloadavg()[0]:.1f} (shared machine: other jobs slow this down)"
    )
    ingest_t: list[float] = []
    build_t: list[float] = []
    ingest_cpu: list[float] = []
    build_cpu: list[float] = []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "results.duckdb"
            t, c = time.perf_counter(), cpu_seconds()
            summary = ingest_logs([d / "logs"], db, listing=listing, workers=args.workers, progress=False)
            ingest_t.append(time.perf_counter() - t)
            ingest_cpu.append(cpu_seconds() - c)
            t, c = time.perf_counter(), cpu_seconds()
            built = build_site(db, Path(tmp) / "site", listing=listing)
            build_t.append(time.perf_counter() - t)
            build_cpu.append(cpu_seconds() - c)
            print(
                f"repeat {rep + 1}: ingest {ingest_t[-1]:.2f} s ({summary.runs_added} runs, "
                f"{summary.samples_added} samples, {summary.skipped} skipped); build {build_t[-1]:.2f} s "
                f"({built.pages} pages)"
            )
    mi, mb = statistics.median(ingest_t), statistics.median(build_t)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    ci, cb = statistics.median(ingest_cpu), statistics.median(build_cpu)
    print(
        f"CPU time (this process + reader processes): ingest {ci:.1f} s, build {cb:.1f} s "
        f"(load-independent; on {args.workers} dedicated cores ingest needs >= {ci / args.workers:.1f} s wall)"
    )
    print(f"ingest median {mi:.2f} s  target {INGEST_TARGET_S:.0f} s  ratio {mi / INGEST_TARGET_S:.2f}")
    print(f"build  median {mb:.2f} s  target {BUILD_TARGET_S:.0f} s  ratio {mb / BUILD_TARGET_S:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
