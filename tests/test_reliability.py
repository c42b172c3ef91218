"""Failures that are loud and checks that come first: interrupts, up-front validation, filters, ingest.

Suites run on the tiny random-weight model (``tiny_model_dir``); the interrupt tests drive a real
``steerboard run`` subprocess and signal it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import yaml

from steerboard.runner import SuiteInvalid, parse_suite, run_suite

STEERBOARD = [sys.executable, "-m", "steerboard.cli"]


def _xstest_file() -> str:
    """``tasks/xstest.py`` relative to the working directory (Inspect globs task files relatively)."""
    from steerboard.tasks import _common

    return os.path.relpath(Path(_common.__file__).parent / "xstest.py")


XSTEST_FILE = _xstest_file()


def _statuses(summary: list[dict]) -> list[str]:
    return [s["status"] for s in summary]


def _log_headers(folder: Path) -> list:
    from inspect_ai.log import list_eval_logs, read_eval_log

    return [read_eval_log(i, header_only=True) for i in list_eval_logs(str(folder))]


# ---------------------------------------------------------------- interrupts (real subprocess + SIGINT)


def _slow_suite(tmp_path: Path, model_dir: str) -> Path:
    """One method x two tasks; the first pair generates long enough to be interrupted while it runs."""
    suite = {
        "name": "tiny",
        "model": model_dir,
        "max_connections": 1,
        "methods": ["base"],
        "tasks": [
            {"name": "xstest", "limit": 2, "args": {"judge": "strmatch"}, "config": {"max_tokens": 300}},
            {"name": "jbb_refusal", "limit": 1, "args": {"judge": "strmatch"}, "config": {"max_tokens": 2}},
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _start_and_interrupt(tmp_path: Path, suite: Path, n_signals: int, gap: float = 0.1) -> tuple[int, float, str]:
    """Start ``steerboard run``, send SIGINT ``n_signals`` times once the first pair's log exists.

    Returns:
        (exit code, seconds from the first SIGINT to exit, stderr).
    """
    logs = tmp_path / "logs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*STEERBOARD, "run", "--suite", str(suite), "--log-dir", str(logs), "--display", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    first_pair = logs / "base" / "xstest"
    deadline = time.monotonic() + 300
    while not list(first_pair.glob("*.eval")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first pair never started"
        time.sleep(0.05)
    time.sleep(0.5)  # inside the eval: samples are generating
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    head = ""
    if n_signals > 1:  # the second Ctrl-C must land during the first one's clean-up: send it once acknowledged
        assert proc.stderr is not None
        while "Ctrl-C again" not in head and proc.poll() is None:
            head += proc.stderr.readline()
        time.sleep(gap)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, time.monotonic() - t0, head + err


def test_ctrl_c_stops_the_suite_and_is_never_success(tiny_model_dir: str, tmp_path: Path) -> None:
    suite = _slow_suite(tmp_path, tiny_model_dir)
    rc, _, err = _start_and_interrupt(tmp_path, suite, 1)
    assert rc == 130, err
    summary = json.loads((tmp_path / "logs" / "suite-tiny-summary.json").read_text())
    assert _statuses(summary) == ["cancelled", "not started"]
    assert "interrupted" in err
    headers = _log_headers(tmp_path / "logs")
    assert [h.status for h in headers] == ["cancelled"]  # the second pair never ran
    assert not (tmp_path / "logs" / "base" / "jbb_refusal").exists()


def test_second_ctrl_c_aborts_at_once_and_a_rerun_replaces_the_stale_log(tiny_model_dir: str, tmp_path: Path) -> None:
    # The first Ctrl-C's clean-up can take well under a second here, and two signals sent too close together
    # are delivered as one: try a few gaps until the second lands during the clean-up (every try must end 130).
    # A second signal that arrives after the first one's clean-up, while Python finalises (signal handlers are
    # reset to the default then), ends the process by SIGINT: the suite had already ended as interrupted.
    for attempt, gap in enumerate((0.0, 0.005, 0.01, 0.02, 0.05, 0.0)):
        root = tmp_path / f"try{attempt}"
        root.mkdir()
        suite_file = _slow_suite(root, tiny_model_dir)
        rc, seconds, err = _start_and_interrupt(root, suite_file, 2, gap=gap)
        if rc == -signal.SIGINT and "interrupted:" in err:
            continue
        assert rc == 130, err
        summary = json.loads((root / "logs" / "suite-tiny-summary.json").read_text())
        assert "success" not in _statuses(summary)
        if "aborted at once" in err and [h.status for h in _log_headers(root / "logs" / "base" / "xstest")] == [
            "started"
        ]:
            break
    else:
        pytest.fail("no try had the second Ctrl-C land during the first one's clean-up")
    tmp_path = root
    assert seconds < 5, f"second Ctrl-C took {seconds:.1f} s to exit"
    summary = json.loads((tmp_path / "logs" / "suite-tiny-summary.json").read_text())
    assert _statuses(summary) == ["cancelled", "not started"]
    pair = tmp_path / "logs" / "base" / "xstest"
    stale = [h.location for h in _log_headers(pair)]
    assert [h.status for h in _log_headers(pair)] == ["started"]  # what a killed run leaves

    suite = parse_suite(yaml.safe_load(suite_file.read_text()))
    plan = run_suite(suite, tmp_path / "logs", dry_run=True)
    assert _statuses(plan) == ["to resume", "to run"] and plan[0]["resumes"] == "started"
    done = run_suite(suite, tmp_path / "logs", display="none")
    assert _statuses(done) == ["success", "success"]
    assert done[0]["replaced_stale_logs"] == stale
    headers = _log_headers(pair)
    assert [h.status for h in headers] == ["success"]
    assert headers[0].results.completed_samples == 2  # no duplicate samples
    assert _statuses(run_suite(suite, tmp_path / "logs", dry_run=True)) == ["done", "done"]


# ---------------------------------------------------------------- validation before any model work


def _no_model_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any weight load or method fit fail the test (and record it)."""
    from steerboard.methods import base, provider

    calls: list[str] = []

    def forbidden(*args, **kwargs):
        calls.append("load_engine")
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(provider, "load_engine", forbidden)
    monkeypatch.setattr(base.Method, "prepare", lambda self, engine: calls.append("prepare"))
    return calls


def test_task_option_error_on_dpo_comes_before_training(
    tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inspect eval`` builds the model before the task: the provider must not load or train there."""
    from inspect_ai import eval as inspect_eval

    from steerboard.methods import dpo

    calls = _no_model_work(monkeypatch)
    monkeypatch.setattr(dpo.DPOMethod, "prepare", lambda self, engine: calls.append("train"))
    with pytest.raises(ValueError, match="invalid -T subset='foo'"):
        inspect_eval(XSTEST_FILE, model=f"dpo/{tiny_model_dir}", task_args={"subset": "foo"},
                     log_dir=str(tmp_path), display="none", limit=1)
    with pytest.raises(ValueError, match=r"unknown -T option\(s\) \['foo'\]"):
        inspect_eval(XSTEST_FILE, model=f"dpo/{tiny_model_dir}", task_args={"foo": 1},
                     log_dir=str(tmp_path), display="none", limit=1)
    assert calls == []


@pytest.mark.parametrize("method, args", [("sae", {"preset": "smollm2-135m"}), ("actadd", {"source": "responses", "coefficient": 4.0}), ("dinm", {})])
def test_layer_out_of_range_fails_from_the_model_config(
    method: str, args: dict, tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspect_ai.model import get_model

    calls = _no_model_work(monkeypatch)
    with pytest.raises(ValueError, match=r"-M layer=999: the model has 4 decoder layers \(0..3\)"):
        get_model(f"{method}/{tiny_model_dir}", layer=999, memoize=False, **args)
    assert calls == []


def test_dry_run_and_suite_start_list_every_problem(
    tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _no_model_work(monkeypatch)
    suite = parse_suite({
        "model": tiny_model_dir,
        "methods": ["base", {"name": "prompt", "args": {"placement": "sideways"}},
                    {"name": "actadd", "args": {"layer": 999, "source": "responses", "coefficient": 4.0}}],
        "tasks": [{"name": "xstest", "limit": 1, "args": {"judge": "strmatch"}},
                  {"name": "jbb_refusal", "limit": 1, "args": {"extra": "nope"}},
                  {"name": "gsm8k", "limit": 1, "args": {"fewshot": 99}, "config": {"max_tokenz": 3}},
                  {"name": "xstest", "limit": 1, "args": {"judge": "model"}}],
    })
    for dry in (True, False):
        with pytest.raises(SuiteInvalid) as info:
            run_suite(suite, tmp_path / "logs", dry_run=dry, display="none")
        msg = str(info.value)
        for needle in ("placement='sideways'", "-M layer=999", "extra='nope'", "fewshot=99", "max_tokenz",
                       "needs a grader model"):
            assert needle in msg, (needle, msg)
        assert "6 problem(s), nothing was run" in msg
    assert calls == [] and not (tmp_path / "logs").exists()


def test_bad_generate_value_and_grader_role_from_the_suite(tiny_model_dir: str, tmp_path: Path) -> None:
    suite = parse_suite({
        "model": tiny_model_dir, "model_roles": {"grader": "mockllm/model"}, "methods": ["base"],
        "tasks": [{"name": "xstest", "limit": 1, "args": {"judge": "model"}}],
    })
    plan = run_suite(suite, tmp_path, dry_run=True)  # the suite's grader satisfies -T judge=model
    assert _statuses(plan) == ["to run"]
    with pytest.raises(SuiteInvalid, match="max_tokens"):
        run_suite(suite, tmp_path, dry_run=True, generate={"max_tokens": "lots"})


def test_model_judge_without_grader_fails_at_task_start(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval

    with pytest.raises(ValueError, match="needs a grader model: add --model-role grader="):
        inspect_eval(XSTEST_FILE, model="mockllm/model", task_args={"judge": "model"},
                     log_dir=str(tmp_path), display="none", limit=1)
    from steerboard.tasks._testing import mock_model

    grader = mock_model("VERDICT: full_refusal", memoize=False)
    logs = inspect_eval(XSTEST_FILE, model=mock_model(), task_args={"judge": "model"},
                        model_roles={"grader": grader}, log_dir=str(tmp_path), display="none", limit=1)
    assert logs[0].status == "success", logs[0].error


# ---------------------------------------------------------------- filters and the CLI


def _suite_file(tmp_path: Path, model_dir: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "model": model_dir, "methods": ["base", "prompt"],
        "tasks": [{"name": "xstest", "limit": 1, "args": {"judge": "strmatch"}}],
    }))
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--only-task", "xstets"], "--only-task xstets: not in suite 's'; its tasks: xstest"),
        (["--only-method", "sea"], "--only-method sea: not in suite 's'; its methods: base, prompt"),
    ],
)
def test_unknown_filter_is_an_error_and_keeps_the_summary(
    extra: list[str], message: str, tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from steerboard.cli import main

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "suite-s-summary.json").write_text('[{"status": "success"}]')
    rc = main(["run", "--suite", str(_suite_file(tmp_path, tiny_model_dir)), "--log-dir", str(logs), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert (logs / "suite-s-summary.json").read_text() == '[{"status": "success"}]'


def test_filters_that_select_nothing_fail(tiny_model_dir: str) -> None:
    suite = parse_suite({"model": tiny_model_dir, "methods": ["base", {"name": "prompt", "tasks": ["mmlu"]}],
                         "tasks": ["xstest", "mmlu"]})
    with pytest.raises(ValueError, match="select no"):
        run_suite(suite, "unused", only_methods=["prompt"], only_tasks=["xstest"], dry_run=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--method", "sea", "--task", "xstest"], "unknown method 'sea'; installed: actadd, base"),
        (["run", "--method", "base", "--task", "xstets"], "unknown task 'xstets'; valid: xstest"),
        (["run", "--suite", "quik"], "unknown suite 'quik'"),
        (["run", "--method", "base", "--task", "xstest", "--generate", "max_tokenz=3", "--dry-run"],
         "unknown generation option(s) max_tokenz"),
    ],
)
def test_cli_errors_are_one_line_and_debug_shows_the_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerboard.cli import main

    monkeypatch.delenv("STEERBOARD_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if "--generate" not in argv:
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError):
        main(["--debug", *argv])
    monkeypatch.setenv("STEERBOARD_DEBUG", "1")
    with pytest.raises(ValueError):
        main(argv)


def test_generation_options_reach_the_log_and_a_results_table_is_printed(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from steerboard.cli import main

    rc = main(["run", "--method", "base", "--task", "xstest", "--limit", "1", "-T", "judge=strmatch",
               "--model", tiny_model_dir, "--log-dir", str(tmp_path), "--display", "none",
               "--max-tokens", "3", "--temperature", "0", "--generate", "seed=7"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (log,) = _log_headers(tmp_path)
    assert (log.eval.config.limit, log.plan.config.max_tokens, log.plan.config.seed) == (1, 3, 7)
    assert log.plan.config.temperature == 0
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split()[:5] == ["method", "config", "task", "status", "n"]
    row = next(line for line in out.splitlines() if line.startswith("base ") and "refusal_rate_safe=" in line)
    assert row.split()[3:5] == ["success", "1"]


# ---------------------------------------------------------------- ingest: lock and sample counts


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    code = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2])); con.close()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_ingest_waits_for_the_lock_or_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from steerboard.cli import main
    from steerboard.leaderboard.ingest import DatabaseLocked, connect

    db = tmp_path / "r.duckdb"
    connect(db).close()
    holder = _hold_lock(db, 30)
    try:
        with pytest.raises(DatabaseLocked, match=f"locked by PID {holder.pid}"):
            connect(db, lock_wait_s=0.5)
        os.environ["STEERBOARD_DB_LOCK_WAIT"] = "0.5"
        try:
            rc = main(["ingest", "--logs", str(tmp_path), "--db", str(db)])
        finally:
            del os.environ["STEERBOARD_DB_LOCK_WAIT"]
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert f"locked by PID {holder.pid}" in err.strip().splitlines()[-1]
    finally:
        holder.kill()
        holder.wait()
    holder = _hold_lock(db, 1.0)  # released within the wait: the second process gets the database
    try:
        con = connect(db, lock_wait_s=60)
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        con.close()
        assert "waiting up to 60 s" in capsys.readouterr().err
    finally:
        holder.wait()


def _truncate_summaries(src: Path, dst: Path, keep: int) -> None:
    """A copy of an .eval log whose sample summaries list only the first ``keep`` samples."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "summaries.json":
                data = json.dumps(json.loads(data)[:keep]).encode()
            elif item.filename.startswith("samples/"):
                continue
            zout.writestr(item, data)


def test_ingest_checks_sample_counts_and_the_more_complete_copy_wins(tmp_path: Path) -> None:
    from steerboard.leaderboard.ingest import connect, ingest_logs
    from steerboard.leaderboard.synthetic import SyntheticRun, write_synthetic_log

    intact = write_synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=16, seed=5),
                                 tmp_path / "intact" / "run.eval")
    short_dir = tmp_path / "short"
    short_dir.mkdir()
    _truncate_summaries(intact, short_dir / "run.eval", 2)
    db = tmp_path / "r.duckdb"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ingest_logs([short_dir], db, progress=False)
    assert first.runs_added == 1 and first.mismatches
    assert "sample summaries list 2 samples, the results 16 completed" in first.mismatches[0][1]
    assert any("sample summaries list 2" in str(w.message) for w in caught)
    assert any("sample count mismatch" in line for line in first.lines())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = ingest_logs([tmp_path / "intact"], db, progress=False)
        third = ingest_logs([short_dir / "run.eval"], db, progress=False)
    assert second.replaced == 1 and second.already_present == 0
    con = connect(db, read_only=True)
    try:
        assert con.execute("SELECT count(*), max(n_samples) FROM runs").fetchone() == (1, 16)
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (16,)
    finally:
        con.close()
    assert third.already_present == 1 and third.runs_added == 0  # the short copy never wins back
