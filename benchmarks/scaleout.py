"""Benchmark: logs on object storage and the Ray executor, each measured side by side with the local path.

1. Ingest of N synthetic logs from a local S3-compatible server (moto's server mode on 127.0.0.1) versus from
   local disk (target: S3 within 2x of disk). The logs are the leaderboard benchmark's cached synthetic logs
   (``benchmarks/leaderboard_ingest_build.py``), uploaded to the server before timing.
2. A tiny suite (random-weight tiny llama, method configurations x one task) through ``--executor ray`` on a
   local 2-CPU Ray cluster versus the local executor (target: ray within 1.15x of local), checking that the
   scores are equal. The Ray cluster is started before timing (its start-up is printed separately).

Usage::

    python benchmarks/scaleout.py                              # 1000 logs x 20 samples; tiny suite
    python benchmarks/scaleout.py --logs 300 --samples 200 --repeats 3 --skip-ray
    python benchmarks/scaleout.py --skip-ingest --limit 4

Needs ``pip install 'steerboard[scale,ray]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path

INGEST_RATIO_TARGET = 2.0
RAY_RATIO_TARGET = 1.15


def _leaderboard_bench():
    spec = importlib.util.spec_from_file_location("lb_bench", Path(__file__).with_name("leaderboard_ingest_build.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_ingest(n_logs: int, n_samples: int, workers: int, repeats: int) -> None:
    import s3fs
    from moto.server import ThreadedMotoServer

    from steerboard.leaderboard.ingest import ingest_logs
    from steerboard.leaderboard.listing import load_listing_file

    d = _leaderboard_bench().ensure_logs(n_logs, n_samples, workers, regenerate=False)
    listing = load_listing_file(d / "listing.yaml")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    try:
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        t = time.perf_counter()
        fs.put(str(d / "logs"), "bench/logs", recursive=True)
        print(f"uploaded {n_logs} logs to the local S3 server in {time.perf_counter() - t:.1f} s")
        times: dict[str, list[float]] = {"disk": [], "s3": []}
        tmp = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
        for r in range(repeats):
            for kind, loc in (("disk", str(d / "logs")), ("s3", "s3://bench/logs")):
                db = tmp / f"{kind}-{r}.duckdb"
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = ingest_logs([loc], db, listing=listing, workers=workers, progress=False)
                times[kind].append(time.perf_counter() - t)
                assert s.runs_added == n_logs, s.lines()
                print(f"  repeat {r + 1}: ingest from {kind}: {times[kind][-1]:.2f} s ({s.runs_added} runs)")
            t = time.perf_counter()
            again = ingest_logs(["s3://bench/logs"], tmp / f"s3-{r}.duckdb", listing=listing, progress=False)
            print(f"  repeat {r + 1}: incremental re-ingest from s3 (nothing new): {time.perf_counter() - t:.2f} s "
                  f"({again.already_present} already present)")
        shutil.rmtree(tmp, ignore_errors=True)
        md, ms = statistics.median(times["disk"]), statistics.median(times["s3"])
        print(f"ingest {n_logs} logs x {n_samples} samples, {workers} workers: disk {md:.2f} s, s3 {ms:.2f} s "
              f"(medians of {repeats}); s3/disk = {ms / md:.2f} (target <= {INGEST_RATIO_TARGET})")
    finally:
        server.stop()


def bench_ray(limit: int, max_tokens: int, configs: int) -> None:
    import ray

    from steerboard.executors import run_with_executor
    from steerboard.run import parse_suite
    from steerboard.testing import make_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="scaleout-ray-"))
    model = str(make_tiny_model(tmp / "tiny", seed=0))
    placements = ["replace", "prepend"]
    methods: list = ["base"] + [{"name": "prompt", "args": {"placement": p}} for p in placements][: configs - 1]
    suite = parse_suite({
        "model": model, "methods": methods,
        "tasks": [{"name": "xstest", "limit": limit, "args": {"judge": "strmatch"},
                   "config": {"max_tokens": max_tokens}}],
    })
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"local Ray cluster (2 CPUs) started in {time.perf_counter() - t:.1f} s (not in the timings below)")
    try:
        t = time.perf_counter()
        local = run_with_executor("local", suite, tmp / "local", display="none")
        t_local = time.perf_counter() - t
        t = time.perf_counter()
        on_ray = run_with_executor("ray", suite, str(tmp / "ray"), display="none", progress=False)
        t_ray = time.perf_counter() - t
    finally:
        ray.shutdown()
    same = [s.get("metrics") for s in local] == [s.get("metrics") for s in on_ray]
    ok = all(s["status"] == "success" for s in local + on_ray)
    print(f"tiny suite, {len(suite.methods)} configurations x xstest (limit {limit}, max_tokens {max_tokens}): "
          f"local {t_local:.1f} s, ray {t_ray:.1f} s; ray/local = {t_ray / t_local:.2f} "
          f"(target <= {RAY_RATIO_TARGET}); all succeeded: {ok}; scores equal: {same}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--limit", type=int, default=4, help="samples per pair in the tiny suite")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--configs", type=int, default=2, help="method configurations in the tiny suite (1-3)")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    if not args.skip_ingest:
        bench_ingest(args.logs, args.samples, args.workers, args.repeats)
    if not args.skip_ray:
        bench_ray(args.limit, args.max_tokens, args.configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
