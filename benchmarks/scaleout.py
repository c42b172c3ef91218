"""Benchmark: logs on object storage and the Ray executor, each measured side by side with the local path.

1. Ingest of N synthetic logs from a local S3-compatible server (moto's server mode on 127.0.0.1, in its own
   process) versus from local disk (target: S3 within 2x of disk). The logs are the leaderboard benchmark's cached synthetic logs
   (``benchmarks/leaderboard_ingest_build.py``), uploaded to the server before timing.
2. A tiny suite (random-weight tiny llama, method configurations x one task) through ``--executor ray`` on a
   local 2-CPU Ray cluster versus the local executor (target: ray within 1.15x of local), checking that the
   scores are equal. The Ray cluster is started before timing (its start-up is printed separately).
3. With ``--suite quick``: the shipped suite's method configurations on some of its tasks with small limits,
   through ``steerboard run --suite FILE --executor local|ray`` each in a fresh process (as a user runs them),
   alternating over ``--repeats``; asserts every pair succeeded and the scores are equal, prints the medians,
   the ratio, the fixed overhead per run and per configuration, and where the Ray run's time went (actor start,
   imports, per-pair overhead, eval time per configuration).

Usage::

    python benchmarks/scaleout.py                              # 1000 logs x 20 samples; tiny suite
    python benchmarks/scaleout.py --logs 1000 --samples 20 --repeats 3 --skip-ray
    python benchmarks/scaleout.py --skip-ingest --limit 4
    python benchmarks/scaleout.py --skip-ingest --suite quick --tasks xstest,mmlu,truthfulqa --task-limit 4 \
        --max-tokens 16 --repeats 3

Needs ``pip install 'steerboard[scale,ray]'``.
"""

from __future__ import annotations

import argparse
import contextlib
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

    from steerboard.leaderboard.ingest import ingest_logs
    from steerboard.leaderboard.listing import load_listing_file

    d = _leaderboard_bench().ensure_logs(n_logs, n_samples, workers, regenerate=False)
    listing = load_listing_file(d / "listing.yaml")
    server = _start_s3()
    try:
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        t = time.perf_counter()
        fs.put(str(d / "logs"), "bench/logs", recursive=True)
        print(f"uploaded {n_logs} logs to the local S3 server in {time.perf_counter() - t:.1f} s")
        # "s3" downloads through obstore where installed (the default); "s3 via s3fs" is the same ingest with
        # every download through s3fs/botocore, for comparison
        kinds = [("disk", str(d / "logs")), ("s3", "s3://bench/logs")]
        if importlib.util.find_spec("obstore") is not None:
            kinds.append(("s3 via s3fs", "s3://bench/logs"))
        times: dict[str, list[float]] = {k: [] for k, _ in kinds}
        cpu: dict[str, list[tuple[float, float, float]]] = {k: [] for k, _ in kinds}
        tmp = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
        for r in range(repeats):
            for kind, loc in kinds:
                db = tmp / f"{kind.replace(' ', '-')}-{r}.duckdb"
                c0 = _cpu_seconds(server)
                t = time.perf_counter()
                with warnings.catch_warnings(), _s3fs_only(kind == "s3 via s3fs"):
                    warnings.simplefilter("ignore")
                    s = ingest_logs([loc], db, listing=listing, workers=workers, progress=False)
                times[kind].append(time.perf_counter() - t)
                cpu[kind].append(tuple(b - a for a, b in zip(c0, _cpu_seconds(server))))
                assert s.runs_added == n_logs, s.lines()
                main, readers, srv = cpu[kind][-1]
                print(f"  repeat {r + 1}: ingest from {kind}: {times[kind][-1]:.2f} s ({s.runs_added} runs); CPU "
                      f"seconds: ingest process {main:.2f}, reader processes {readers:.2f}, S3 server {srv:.2f}")
            t = time.perf_counter()
            again = ingest_logs(["s3://bench/logs"], tmp / f"s3-{r}.duckdb", listing=listing, progress=False)
            print(f"  repeat {r + 1}: incremental re-ingest from s3 (nothing new): {time.perf_counter() - t:.2f} s "
                  f"({again.already_present} already present)")
        shutil.rmtree(tmp, ignore_errors=True)
        md, ms = statistics.median(times["disk"]), statistics.median(times["s3"])
        print(f"ingest {n_logs} logs x {n_samples} samples, {workers} workers: disk {md:.2f} s, s3 {ms:.2f} s "
              f"(medians of {repeats}); s3/disk = {ms / md:.2f} (target <= {INGEST_RATIO_TARGET})")
        if "s3 via s3fs" in times:
            mf = statistics.median(times["s3 via s3fs"])
            print(f"  the same with every download through s3fs instead of obstore: {mf:.2f} s; s3fs/disk = "
                  f"{mf / md:.2f}")
        # the CPU the S3 path needs on top of the disk path's, and the wall time it implies on this machine's
        # cores if every core were busy all the time
        cores = len(os.sched_getaffinity(0))
        total = {k: statistics.median(sum(c) for c in v) for k, v in cpu.items()}
        floor = total["s3"] / cores
        print(f"CPU seconds (medians): disk path {total['disk']:.2f}, S3 path {total['s3']:.2f} (S3 server "
              f"{statistics.median(c[2] for c in cpu['s3']):.2f}); the S3 path on {cores} fully busy cores takes "
              f">= {floor:.2f} s = {floor / md:.2f}x the disk median")
    finally:
        server.stop()


def bench_ray(limit: int, max_tokens: int, configs: int) -> None:
    import ray

    from steerboard.runner import parse_suite, run_with_executor
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


def _small_suite(name: str, tasks: list[str], task_limit: int, max_tokens: int, dpo_pairs: int) -> dict:
    """A shipped suite's methods with its tasks cut down: only ``tasks``, each limit at most ``task_limit``,
    ``max_tokens`` at most ``max_tokens``, DPO trained on ``dpo_pairs`` pairs."""
    import yaml

    from steerboard.runner.suite import suite_path

    data = yaml.safe_load(suite_path(name).read_text())
    data["name"] = f"{data.get('name', name)}-small"
    kept = []
    for t in data["tasks"]:
        if t["name"] not in tasks:
            continue
        t = dict(t)
        t["limit"] = min(int(t.get("limit") or task_limit), task_limit)
        cfg = dict(t.get("config") or {})
        cfg["max_tokens"] = min(int(cfg.get("max_tokens") or max_tokens), max_tokens)
        t["config"] = cfg
        if t["name"] == "side_effects":
            t["args"] = {**(t.get("args") or {}), "reply_tokens": max_tokens}
        kept.append(t)
    if not kept:
        raise SystemExit(f"--tasks {','.join(tasks)}: none of them is in suite {name}")
    data["tasks"] = kept
    for m in data["methods"]:
        if isinstance(m, dict) and m.get("name") == "dpo":
            m["args"] = {**(m.get("args") or {}), "max_pairs": dpo_pairs}
    return data


def _run_cli(suite_file: Path, executor: str, log_dir: str, ray_address: str | None) -> tuple[float, float, list]:
    """(launch time, wall seconds, summary) of one ``steerboard run`` in a fresh process (``log_dir``: a folder
    or an fsspec URL)."""
    import json
    import subprocess
    import sys

    import fsspec

    cmd = [sys.executable, "-m", "steerboard.cli", "run", "--suite", str(suite_file), "--executor", executor,
           "--log-dir", str(log_dir), "--display", "none"]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    launched = time.time()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"steerboard run --executor {executor} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    fs, root = fsspec.core.url_to_fs(log_dir)
    (found,) = fs.glob(f"{root.rstrip('/')}/suite-*-summary.json")
    summary = json.loads(fs.cat_file(found))
    return launched, wall, summary


@contextlib.contextmanager
def _s3fs_only(on: bool):
    """Within: S3 downloads go through s3fs (obstore switched off), when ``on``."""
    from steerboard import storage

    real = storage._obstore_store
    if on:
        storage._obstore_store = lambda bucket: None
    try:
        yield
    finally:
        storage._obstore_store = real


class _S3Server:
    """A local S3-compatible server (moto's server mode) in its own process on a loopback port, with the
    environment pointing at it. Its own process, as a real object store is: a server in the benchmark's
    process would share the GIL with the client being measured."""

    def __init__(self) -> None:
        import subprocess
        import sys

        port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the local S3 server (python -m moto.server) did not start on port {port}") from None
                time.sleep(0.1)
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                          AWS_EC2_METADATA_DISABLED="true")  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def _cpu_seconds(server: _S3Server) -> tuple[float, float, float]:
    """CPU seconds so far of this process, of its finished child processes (the ingest readers) and of the
    S3 server (Linux ``/proc``; 0 elsewhere)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        srv = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        srv = 0.0
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, srv


def _start_s3() -> _S3Server:
    return _S3Server()


def _ingest_and_build(logs: str, tmp: Path) -> str:
    """``steerboard ingest --logs LOGS`` then ``steerboard build`` (fresh processes); returns what they printed."""
    import subprocess
    import sys

    db = tmp / "s3.duckdb"
    out = []
    for cmd in (["ingest", "--logs", logs, "--db", str(db)], ["build", "--db", str(db), "--out", f"{logs}-site"]):
        proc = subprocess.run([sys.executable, "-m", "steerboard.cli", *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"steerboard {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out.append(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")
    return "; ".join(out)


def bench_suite(
    name: str, tasks: list[str], task_limit: int, max_tokens: int, dpo_pairs: int, repeats: int, s3: bool = False,
) -> None:
    """The suite through ``steerboard run`` with each executor in a fresh process, alternating, side by side.

    With ``s3`` the Ray runs log to a local S3 server (moto) and the last one is ingested from it and built
    into a site there, as on a cluster."""
    import json

    import ray
    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="scaleout-suite-"))
    data = _small_suite(name, tasks, task_limit, max_tokens, dpo_pairs)
    suite_file = tmp / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(data, sort_keys=False))
    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    print(f"local Ray cluster ({os.cpu_count()} CPUs) started in {time.perf_counter() - t:.1f} s (not in the timings)")
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    runs: dict[str, list] = {"local": [], "ray": []}
    server = _start_s3() if s3 else None
    try:
        if server is not None:
            import s3fs

            s3fs.S3FileSystem().mkdir("bench")
        for r in range(repeats):
            order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
            for ex in order:
                logs = f"s3://bench/ray-{r}" if ex == "ray" and server is not None else str(tmp / f"{ex}-{r}")
                launched, wall, summary = _run_cli(suite_file, ex, logs, address if ex == "ray" else None)
                walls[ex].append(wall)
                runs[ex].append((launched, wall, summary))
                print(f"  repeat {r + 1}: --executor {ex} --log-dir {logs}: {wall:.1f} s ({len(summary)} pairs)",
                      flush=True)
        if server is not None:
            print(f"  ingest + build from s3://bench/ray-{repeats - 1}: {_ingest_and_build(f's3://bench/ray-{repeats - 1}', tmp)}")
    finally:
        ray.shutdown()
        if server is not None:
            server.stop()
    n_pairs = len(runs["local"][0][2])
    n_configs = len({json.dumps([s["method"], s["args"]], sort_keys=True) for s in runs["local"][0][2]})
    for ex in walls:
        for _, _, summary in runs[ex]:
            bad = [f"{s['method']} {s['args']} x {s['task']}: {s['status']}" for s in summary if s["status"] != "success"]
            assert not bad, f"{ex}: {bad}"
    key = [(s["method"], json.dumps(s["args"], sort_keys=True), s["task"]) for s in runs["local"][0][2]]
    for ex in walls:
        for _, _, summary in runs[ex]:
            assert [(s["method"], json.dumps(s["args"], sort_keys=True), s["task"]) for s in summary] == key
            assert [s.get("metrics") for s in summary] == [s.get("metrics") for s in runs["local"][0][2]], (
                f"scores differ between runs ({ex})"
            )
    ml, mr = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"suite {data['name']}: {n_configs} configurations, {n_pairs} pairs (tasks {', '.join(tasks)}, limit <= "
          f"{task_limit}, max_tokens <= {max_tokens}, dpo max_pairs {dpo_pairs}): local {ml:.1f} s, ray {mr:.1f} s "
          f"(medians of {repeats}); ray/local = {mr / ml:.2f} (target <= {RAY_RATIO_TARGET}); scores equal: True")
    # where the Ray run's extra time goes (its median run)
    launched, wall, summary = sorted(runs["ray"], key=lambda x: x[1])[len(runs["ray"]) // 2]
    lw = sorted(runs["local"], key=lambda x: x[1])[len(runs["local"]) // 2]
    workers = [s["worker"] for s in summary]
    pids = sorted({w["pid"] for w in workers})
    first_pair = min(w["pair_started"] for w in workers)
    first_actor = min(w["actor_started"] for w in workers)
    eval_ray, eval_local = sum(s["seconds"] for s in summary), sum(s["seconds"] for s in lw[2])
    in_pair = sum(w["pair_seconds"] for w in workers) - eval_ray
    print(f"  ray run (median): {len(pids)} actor process(es); launch -> first actor process running "
          f"{first_actor - launched:.1f} s; its imports {statistics.mean(w['import_seconds'] for w in workers):.1f} s; "
          f"launch -> first pair started {first_pair - launched:.1f} s")
    print(f"  eval_set time summed over pairs: ray {eval_ray:.1f} s, local {eval_local:.1f} s (difference "
          f"{eval_ray - eval_local:+.1f} s: model loads and fits happen inside pairs in both)")
    print(f"  per-pair overhead in the actor outside eval_set (validation, Ray call): {in_pair / n_pairs:.2f} s")
    print(f"  local run outside eval_set (imports, validation, summary): {lw[1] - eval_local:.1f} s; ray run outside "
          f"the actors' pairs: {wall - sum(w['pair_seconds'] for w in workers):.1f} s")
    per_cfg: dict[str, list[float]] = {}
    for s_l, s_r in zip(lw[2], summary):
        k = f"{s_l['method']} {json.dumps(s_l['args'], sort_keys=True)}" if s_l["args"] else s_l["method"]
        per_cfg.setdefault(k, [0.0, 0.0])
        per_cfg[k][0] += s_l["seconds"]
        per_cfg[k][1] += s_r["seconds"]
    print("  eval_set seconds per configuration (median runs), local / ray:")
    for k, (a, b) in per_cfg.items():
        print(f"    {k:<40} {a:7.1f} / {b:7.1f}")
    over = mr - ml
    print(f"  fixed overhead: {over:.1f} s per run = {over / n_configs:.1f} s per configuration "
          f"({n_configs} configurations)")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _leaderboard_bench().add_log_options(ap, samples=20)
    ap.add_argument("--limit", type=int, default=4, help="samples per pair in the tiny suite")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--configs", type=int, default=2, help="method configurations in the tiny suite (1-3)")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--suite", help="instead of the tiny suite: this shipped suite's methods through `steerboard run`"
                    " with each executor in a fresh process (e.g. quick)")
    ap.add_argument("--tasks", default="xstest,mmlu", help="with --suite: the suite's tasks to keep")
    ap.add_argument("--task-limit", type=int, default=2, help="with --suite: samples per task at most")
    ap.add_argument("--dpo-pairs", type=int, default=8, help="with --suite: DPO training pairs")
    ap.add_argument("--s3", action="store_true", help="with --suite: the Ray runs log to a local S3 server (moto), "
                    "then ingest and build from it")
    args = ap.parse_args()
    if not args.skip_ingest:
        bench_ingest(args.logs, args.samples, args.workers, args.repeats)
    if not args.skip_ray and args.suite:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        bench_suite(args.suite, tasks, args.task_limit, args.max_tokens, args.dpo_pairs, args.repeats, args.s3)
    elif not args.skip_ray:
        bench_ray(args.limit, args.max_tokens, args.configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
