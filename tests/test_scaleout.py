"""Logs and sites on object storage, against a local S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from steerboard import storage
from steerboard.leaderboard.build import build_site
from steerboard.leaderboard.ingest import connect, ingest_logs
from steerboard.leaderboard.listing import load_listing_file
from steerboard.leaderboard.synthetic import SYNTHETIC_LISTING, SyntheticRun, write_synthetic_log

pytest.importorskip("s3fs", reason="pip install 'steerboard[scale]'")
moto_server = pytest.importorskip("moto.server", reason="pip install 'steerboard[scale]'")

BUCKET = "steerboard-test"
_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a loopback port for this module; yields its endpoint URL."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """Environment pointing S3 clients at the local server, and a fresh empty bucket; yields an s3fs client."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _clear_fs_cache()
    fs = s3fs.S3FileSystem()
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    fs.invalidate_cache()
    yield fs
    _clear_fs_cache()


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory):
    p = tmp_path_factory.mktemp("listing") / "listing.yaml"
    p.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    return load_listing_file(p)


def _write_logs(d: Path, n: int, seed0: int = 0) -> list[Path]:
    tasks = ["xstest", "crescendo", "mmlu"]
    return [
        write_synthetic_log(
            SyntheticRun(task=tasks[i % 3], method="base" if i < 3 else "sae", model_args={} if i < 3 else {"s": i},
                         n_samples=8, seed=seed0 + i),
            d / f"sub{i % 2}" / f"{seed0 + i:03d}.eval",
        )
        for i in range(n)
    ]


def _scores(db: Path) -> list[tuple]:
    con = connect(db, read_only=True)
    try:
        return con.execute(
            "SELECT run_key, sample_key, scorer, key, value FROM scores ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()


def test_join_keeps_urls_intact(tmp_path: Path) -> None:
    assert storage.join("s3://b/logs/", "base-1", "xstest") == "s3://b/logs/base-1/xstest"
    assert storage.join(tmp_path, "a") == str(tmp_path / "a")
    assert not storage.is_url(str(tmp_path)) and not storage.is_url("file:///x") and storage.is_url("s3://b")


def test_ingest_from_s3_equals_local_and_is_incremental(s3, tmp_path: Path, listing, monkeypatch) -> None:
    local = tmp_path / "logs"
    _write_logs(local, 6)
    s3.put(str(local), f"{BUCKET}/logs", recursive=True)
    url = f"s3://{BUCKET}/logs"

    s_local = ingest_logs([local], tmp_path / "local.duckdb", listing=listing, progress=False)
    s_remote = ingest_logs([url], tmp_path / "remote.duckdb", listing=listing, progress=False)
    assert (s_remote.files_seen, s_remote.runs_added, s_remote.skipped) == (6, 6, 0)
    assert s_remote.samples_added == s_local.samples_added == 48
    assert _scores(tmp_path / "remote.duckdb") == _scores(tmp_path / "local.duckdb")
    con = connect(tmp_path / "remote.duckdb", read_only=True)
    paths = [r[0] for r in con.execute("SELECT log_path FROM runs ORDER BY 1").fetchall()]
    hashes = [r[0] for r in con.execute("SELECT content_hash FROM ingest_files").fetchall()]
    con.close()
    assert all(p.startswith(f"s3://{BUCKET}/logs/sub") for p in paths)
    assert all(hashes)
    # reader processes working on logs as they arrive store the same rows
    s_pool = ingest_logs([url], tmp_path / "pool.duckdb", listing=listing, workers=2, progress=False)
    assert (s_pool.runs_added, s_pool.skipped) == (6, 0)
    assert _scores(tmp_path / "pool.duckdb") == _scores(tmp_path / "remote.duckdb")

    # second pass: nothing is downloaded or read again
    fetched: list[list[str]] = []
    real_download = storage.download_iter

    def counting_download(urls: list[str], dest: str) -> Any:
        fetched.append(list(urls))
        return real_download(urls, dest)

    monkeypatch.setattr(storage, "download_iter", counting_download)
    again = ingest_logs([url], tmp_path / "remote.duckdb", listing=listing, progress=False)
    assert (again.runs_added, again.already_present) == (0, 6)
    assert fetched == []

    # one new object and one object overwritten with other content (same name, new hash): only those two are read
    new = _write_logs(tmp_path / "more", 2, seed0=100)
    s3.put_file(str(new[0]), f"{BUCKET}/logs/sub0/new.eval")
    s3.put_file(str(new[1]), f"{BUCKET}/logs/sub0/000.eval")
    s3.invalidate_cache()
    third = ingest_logs([url], tmp_path / "remote.duckdb", listing=listing, progress=False)
    assert (third.runs_added, third.already_present) == (2, 5)
    assert sorted(u.rsplit("/", 1)[-1] for u in fetched[0]) == ["000.eval", "new.eval"]


def test_s3_downloads_go_through_obstore_with_env_credentials_and_s3fs_otherwise(
    s3, tmp_path: Path, monkeypatch
) -> None:
    pytest.importorskip("obstore", reason="pip install 'steerboard[scale]'")
    payloads = {f"{BUCKET}/dl/obj{i}.eval": bytes([i]) * (1000 + 37 * i) for i in range(40)}
    s3.pipe(payloads)
    urls = [f"s3://{k}" for k in sorted(payloads)]
    calls: list[int] = []
    real = storage._obstore_get_all

    async def counting(work: Any) -> None:
        calls.append(sum(len(items) for _, items in work))
        await real(work)

    monkeypatch.setattr(storage, "_obstore_get_all", counting)
    (tmp_path / "a").mkdir()
    got = {u: Path(lp).read_bytes() for u, lp in storage.download_iter(urls, tmp_path / "a")}
    assert got == {f"s3://{k}": v for k, v in payloads.items()}
    assert sum(calls) == 40  # every object came through obstore

    # where obstore cannot serve a bucket (credentials from a profile or a file, which only botocore reads),
    # s3fs fetches the same objects, byte for byte
    calls.clear()
    monkeypatch.setattr(storage, "_obstore_store", lambda bucket: None)
    (tmp_path / "b").mkdir()
    again = {u: Path(lp).read_bytes() for u, lp in storage.download_iter(urls, tmp_path / "b")}
    assert again == got and calls == []


def test_obstore_is_skipped_without_env_credentials(monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_PROFILE", "research")
    assert storage._obstore_store("any-bucket") is None


def test_missing_object_download_error_names_the_object(s3, tmp_path: Path) -> None:
    pytest.importorskip("obstore", reason="pip install 'steerboard[scale]'")
    s3.pipe_file(f"{BUCKET}/dl/there.eval", b"x")
    urls = [f"s3://{BUCKET}/dl/there.eval", f"s3://{BUCKET}/dl/gone.eval"]
    with pytest.raises(storage.StorageError, match=r"cannot download s3://steerboard-test/dl/gone\.eval"):
        list(storage.download_iter(urls, tmp_path))


def test_download_iter_hands_out_objects_in_order_while_later_ones_are_in_transit(tmp_path: Path, monkeypatch) -> None:
    import threading

    import fsspec

    fs = fsspec.filesystem("memory")
    urls = [f"memory://steerboard-dl/obj{i}.eval" for i in range(7)]
    for i, u in enumerate(urls):
        fs.pipe(u.split("://", 1)[1], f"object {i}".encode())
    first_taken = threading.Event()
    real_get = fs.get

    def get(rpaths: list[str], lpaths: list[str]) -> None:
        # the last chunk only arrives after the consumer has taken the first object
        if "/steerboard-dl/obj6.eval" in rpaths and not first_taken.wait(timeout=20):
            raise TimeoutError("the first object was not handed out before the last chunk arrived")
        real_get(rpaths, lpaths)

    monkeypatch.setattr(fs, "get", get)
    try:
        got = []
        for url, lp in storage.download_iter(urls, tmp_path, chunk=3, in_flight=2):
            first_taken.set()
            got.append((url, Path(lp).read_text()))
        assert got == [(u, f"object {i}") for i, u in enumerate(urls)]
        # leaving early cancels the rest and raises nothing
        it = storage.download_iter(urls, tmp_path / "again", chunk=1, in_flight=1)
        (tmp_path / "again").mkdir()
        assert next(it)[0] == urls[0]
        it.close()
    finally:
        fs.rm("/steerboard-dl", recursive=True)


def test_ingest_from_memory_filesystem(tmp_path: Path, listing) -> None:
    import fsspec

    local = tmp_path / "logs"
    _write_logs(local, 3)
    fs = fsspec.filesystem("memory")
    fs.put(str(local), "/steerboard-mem/logs", recursive=True)
    try:
        s = ingest_logs(["memory://steerboard-mem/logs"], tmp_path / "m.duckdb", listing=listing, progress=False)
        assert (s.runs_added, s.skipped) == (3, 0)
        again = ingest_logs(["memory://steerboard-mem/logs"], tmp_path / "m.duckdb", listing=listing, progress=False)
        assert (again.runs_added, again.already_present) == (0, 3)
    finally:
        fs.rm("/steerboard-mem", recursive=True)


def test_build_publishes_site_to_s3(s3, tmp_path: Path, listing) -> None:
    local = tmp_path / "logs"
    logs = _write_logs(local, 6)
    db = tmp_path / "r.duckdb"
    ingest_logs([local], db, listing=listing, progress=False)
    out = f"s3://{BUCKET}/site"
    b = build_site(db, out, listing=listing)
    s3.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/site"))
    assert "index.html" in names and len([n for n in names if n.startswith("run-")]) == b.runs == 6
    assert b"<table" in s3.cat_file(f"{BUCKET}/site/index.html")
    # a run that is gone from the database loses its page on the next build; other files stay
    s3.pipe_file(f"{BUCKET}/site/robots.txt", b"User-agent: *")
    logs[-1].unlink()
    db.unlink()
    ingest_logs([local], db, listing=listing, progress=False)
    build_site(db, out, listing=listing)
    s3.invalidate_cache()
    names2 = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/site"))
    assert len([n for n in names2 if n.startswith("run-")]) == 5
    assert "robots.txt" in names2


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from steerboard.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def test_missing_bucket_is_one_clear_line(s3, tmp_path: Path, capsys) -> None:
    rc, err = _cli(["ingest", "--logs", "s3://no-such-bucket/logs", "--db", str(tmp_path / "x.duckdb"), "-q"],
                   capsys)
    assert rc == 2 and "bucket 'no-such-bucket' does not exist" in err and len(err.splitlines()) == 1
    rc, err = _cli(["build", "--db", str(tmp_path / "x.duckdb"), "--out", "s3://no-such-bucket/site"], capsys)
    assert rc == 2 and "bucket 'no-such-bucket' does not exist" in err
    assert not (tmp_path / "x.duckdb").exists()  # failed before any work


def test_missing_credentials_name_the_setting(s3, tmp_path: Path, monkeypatch, capsys) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    _clear_fs_cache()
    rc, err = _cli(["ingest", "--logs", f"s3://{BUCKET}/logs", "--db", str(tmp_path / "x.duckdb"), "-q"], capsys)
    assert rc == 2 and "no credentials" in err and "AWS_ACCESS_KEY_ID" in err, err


def test_unknown_protocol_is_rejected(tmp_path: Path, capsys) -> None:
    rc, err = _cli(["ingest", "--logs", "nosuchproto://x/logs", "--db", str(tmp_path / "x.duckdb"), "-q"], capsys)
    assert rc == 2 and "unknown storage protocol 'nosuchproto'" in err and "s3" in err


def test_run_writes_logs_to_s3(s3, tiny_model_dir: str, tmp_path: Path, listing) -> None:
    """A suite run with ``--log-dir s3://...`` writes Inspect logs into the bucket; ingest reads them back."""
    from steerboard.runner import parse_suite, run_suite

    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base"],
        "tasks": [{"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 4}}],
    })
    url = f"s3://{BUCKET}/runs"
    out = run_suite(suite, url, display="none")
    assert [s["status"] for s in out] == ["success"]
    s3.invalidate_cache()
    assert [p for p in s3.find(f"{BUCKET}/runs") if p.endswith(".eval")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = ingest_logs([url], tmp_path / "r.duckdb", listing=listing, progress=False)
    assert (s.runs_added, s.skipped) == (1, 0)
    # the run had its aiobotocore sessions share one botocore data loader (each file parsed once)
    import aiobotocore.session as aio_session

    a, b = aio_session.get_session(), aio_session.get_session()
    assert a.get_component("data_loader") is b.get_component("data_loader") is storage._SHARED_AWS_LOADER
    assert a.get_component("data_loader").load_service_model("s3", "service-2") is b.get_component(
        "data_loader").load_service_model("s3", "service-2")


def test_run_cli_checks_the_bucket_before_model_work(s3, tmp_path: Path, capsys) -> None:
    rc, err = _cli(["run", "--method", "base", "--task", "xstest", "--limit", "1",
                    "--model", str(tmp_path / "no-model"), "--log-dir", "s3://no-such-bucket/logs"], capsys)
    assert rc == 2 and "bucket 'no-such-bucket' does not exist" in err, err


# ---------------------------------------------------------------- Ray executor


def test_unknown_executor_and_stray_address(capsys, tmp_path: Path) -> None:
    from steerboard.runner.executor import check_executor
    from steerboard.runner.ray_requests import parse_resources

    with pytest.raises(ValueError, match="unknown executor 'slurm'; valid: local, ray"):
        check_executor("slurm")
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        check_executor("local", "127.0.0.1:6379")
    with pytest.raises(ValueError, match="valid keys: num_cpus, num_gpus, memory"):
        parse_resources("cpus=2")
    assert parse_resources("num_cpus=2,num_gpus=0.5") == {"num_cpus": 2.0, "num_gpus": 0.5}
    rc, err = _cli(["run", "--method", "base", "--task", "xstest", "--limit", "1", "--executor", "slurm",
                    "--log-dir", str(tmp_path / "logs")], capsys)
    assert rc == 2 and "unknown executor 'slurm'" in err
    assert not (tmp_path / "logs").exists()


def test_ray_missing_says_how_to_install(monkeypatch) -> None:
    import sys

    from steerboard.runner.executor import check_executor

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'steerboard\[ray\]'"):
        check_executor("ray")


def test_unreachable_ray_address_fails_fast() -> None:
    pytest.importorskip("ray", reason="pip install 'steerboard[ray]'")
    import time

    from steerboard.runner.executor import check_executor

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach the Ray cluster at --ray-address 127.0.0.1:"):
        check_executor("ray", f"127.0.0.1:{_free_port()}")
    assert time.perf_counter() - t0 < 10


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'steerboard[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_matches_local_and_resumes(ray_cluster, tiny_model_dir: str, tmp_path: Path) -> None:
    """Three method configurations x one task on a 2-CPU cluster: by default one actor (2 CPUs, 2 torch
    threads) runs them one after another; the same scores as the local executor; a second run re-runs
    nothing."""
    from steerboard.runner import parse_suite, run_with_executor

    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base", {"name": "prompt", "sweep": {"placement": ["replace", "prepend"]}}],
        "tasks": [{"name": "xstest", "limit": 3, "args": {"judge": "strmatch"}, "config": {"max_tokens": 6}}],
    })
    local = run_with_executor("local", suite, tmp_path / "local", display="none")
    on_ray = run_with_executor("ray", suite, str(tmp_path / "ray"), display="none", progress=False)
    assert [s["status"] for s in on_ray] == ["success"] * 3
    assert [(s["method"], s["args"], s["task"]) for s in on_ray] == [(s["method"], s["args"], s["task"]) for s in local]
    assert [s["metrics"] for s in on_ray] == [s["metrics"] for s in local]
    logs = sorted((tmp_path / "ray").rglob("*.eval"))
    assert len(logs) == 3
    assert len({s["worker"]["pid"] for s in on_ray}) == 1
    assert {s["worker"]["torch_threads"] for s in on_ray} == {2}
    again = run_with_executor("ray", suite, str(tmp_path / "ray"), display="none", progress=False)
    assert [s["status"] for s in again] == ["success"] * 3
    assert sorted((tmp_path / "ray").rglob("*.eval")) == logs  # nothing re-ran


def test_ray_pair_that_keeps_failing_is_reported(ray_cluster, tiny_model_dir: str, tmp_path: Path) -> None:
    from steerboard.runner import parse_suite, run_with_executor

    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base", {"name": "prompt", "args": {"placement": "replace"}}],
        "tasks": [{"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 4}}],
    })
    suite.methods[1].args["device"] = "cuda:99"  # valid options; the model fails to load in its worker, every time
    out = run_with_executor("ray", suite, str(tmp_path / "logs"), display="none", progress=False)
    assert out[0]["status"] == "success"
    assert out[1]["status"] == "error" and out[1]["attempts"] == 2


def test_ray_pool_of_one_cpu_actors(ray_cluster, tiny_model_dir: str, tmp_path: Path) -> None:
    """num_cpus=1 on a 2-CPU cluster: two actors share the three configurations, each with one torch thread
    (the engine would otherwise take every core of the node), and the scores equal the local executor's."""
    from steerboard.runner import parse_suite, run_with_executor

    suite = parse_suite({
        "model": tiny_model_dir, "resources": {"num_cpus": 1},
        "methods": ["base", {"name": "prompt", "sweep": {"placement": ["replace", "prepend"]}}],
        "tasks": [{"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 4}}],
    })
    local = run_with_executor("local", suite, tmp_path / "local", display="none")
    on_ray = run_with_executor("ray", suite, str(tmp_path / "ray"), display="none", progress=False)
    assert [s["status"] for s in on_ray] == ["success"] * 3
    assert [s["metrics"] for s in on_ray] == [s["metrics"] for s in local]
    assert len({s["worker"]["pid"] for s in on_ray}) == 2
    assert {s["worker"]["torch_threads"] for s in on_ray} == {1}


def test_ray_checks_every_pair_before_any_runs(ray_cluster, tiny_model_dir: str, tmp_path: Path) -> None:
    """Invalid method options are found by the driver, before any actor gets work: nothing is written."""
    from steerboard.runner import SuiteInvalid, parse_suite, run_with_executor

    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base", {"name": "prompt", "args": {"placement": "replace"}}],
        "tasks": [{"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 4}}],
    })
    suite.methods[1].args["no_such_option"] = "1"
    with pytest.raises(SuiteInvalid, match="unknown -M option"):
        run_with_executor("ray", suite, str(tmp_path / "logs"), display="none", progress=False)
    assert not list(tmp_path.rglob("*.eval"))
