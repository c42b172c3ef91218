"""Paths a user takes one step past the README, and failures that end cleanly (issue 35).

Sweeps typed like ``-M``, atomic summaries without NaN, suite YAML errors, model paths and data files checked
by ``--dry-run``, relative data paths under every launcher, no lock files left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steerboard.cli import main

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- --sweep typed by the method's fields


def test_sweep_values_are_typed_by_the_method_fields(capsys: pytest.CaptureFixture) -> None:
    from steerboard.run_cli import typed_sweep

    # the README's sweep: a list[float] field swept one value per run, numbers as a suite file holds them
    assert typed_sweep("sae", {"strengths": "15,30,45"}) == {"strengths": [15, 30, 45]}
    assert typed_sweep("actadd", {"coefficient": "0,4.5,8"}) == {"coefficient": [0, 4.5, 8]}
    rc, out, _ = _run(["run", "--method", "sae", "--sweep", "strengths=15,30", "--task", "xstest",
                       "--limit", "2", "--dry-run"], capsys)
    assert rc == 0
    assert '{"strengths": 15}' in out and '{"strengths": 30}' in out  # numbers, not the strings "15", "30"


def test_sweep_from_the_command_line_shares_the_suite_files_configuration() -> None:
    from steerboard.run_cli import typed_sweep
    from steerboard.runner import parse_suite

    cli = parse_suite({"methods": [{"name": "actadd", "sweep": typed_sweep("actadd", {"coefficient": "4,8"})}],
                       "tasks": ["xstest"]})
    yaml_suite = parse_suite({"methods": [{"name": "actadd", "sweep": {"coefficient": [4, 8]}}], "tasks": ["xstest"]})
    assert [m.slug for m in cli.methods] == [m.slug for m in yaml_suite.methods]


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("coefficient=0,big", "--sweep coefficient=0,big: coefficient='big': expected a number"),
        ("coeficient=1,2", "method actadd has no option 'coeficient'; valid: "),
        ("layer=1.5", "--sweep layer=1.5: layer='1.5': expected an integer"),
    ],
)
def test_bad_sweep_value_is_one_line_before_any_weights_load(
    sweep: str, message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerboard.methods import provider

    monkeypatch.setattr(provider, "load_engine", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.delenv("STEERBOARD_DEBUG", raising=False)
    rc, _, err = _run(["run", "--method", "actadd", "--sweep", sweep, "--task", "xstest", "--limit", "2"], capsys)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- summaries: atomic, no NaN


def test_summary_has_no_nan_and_the_table_says_n_a(tmp_path: Path) -> None:
    from steerboard.runner.summary import finish_summary as _finish
    from steerboard.runner.summary import results_table

    summary = [{"method": "base", "args": {}, "task": "xstest", "status": "success", "samples": 0,
                "metrics": {"refusal_scorer/refusal_rate_safe": float("nan"), "refusal_scorer/refusal_rate_unsafe": 0.5}}]
    path = tmp_path / "suite-x-summary.json"
    _finish(summary, path)

    def reject(constant: str) -> None:
        raise ValueError(f"bare {constant} in JSON")

    data = json.loads(path.read_text(), parse_constant=reject)  # what a strict parser does
    assert data[0]["metrics"]["refusal_scorer/refusal_rate_safe"] is None
    table = results_table(summary)
    assert "=nan" not in table and "refusal_rate_safe=n/a" in table and "refusal_rate_unsafe=0.500" in table


def test_summary_write_is_atomic_on_a_full_disk(tmp_path: Path) -> None:
    """A write that runs out of space (here: a file-size limit) leaves the previous summary whole."""
    path = tmp_path / "suite-x-summary.json"
    path.write_text(json.dumps([{"status": "success"}]))
    script = textwrap.dedent(f"""
        import resource, signal
        from steerboard.runner.summary import finish_summary as _finish
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # the write fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
        summary = [{{"method": "base", "args": {{}}, "task": "t", "status": "cancelled", "pad": "x" * 2000}}]
        try:
            _finish(summary, {str(path)!r})
        except OSError as ex:
            print("failed:", ex.errno)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "failed:" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads(path.read_text()) == [{"status": "success"}]  # the old summary, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


# ---------------------------------------------------------------- suite YAML, model paths


def test_suite_yaml_syntax_error_exits_2_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\nmethods: [base\ntasks: [xstest]\n")
    rc, _, err = _run(["run", "--suite", str(suite), "--dry-run"], capsys)
    assert rc == 2
    assert f"{suite}:3:6: YAML syntax error" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = _run(["run", "--suite", str(suite), "--method", "base", "--dry-run"], capsys)
    assert rc == 2 and f"{suite}:3:6" in err


def test_dry_run_checks_the_model_path_and_a_real_run_leaves_no_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = str(tmp_path / "no-such-model")
    args = ["run", "--method", "base", "--task", "xstest", "--limit", "1", "--model", missing,
            "--log-dir", str(tmp_path / "logs")]
    rc, _, err = _run([*args, "--dry-run"], capsys)
    assert rc == 2 and f"model {missing!r} does not exist" in err
    rc, _, err = _run(args, capsys)  # the real run: the same error before any pair starts
    assert rc == 2 and "nothing was run" in err
    assert not list(tmp_path.rglob("*.lock"))
    (tmp_path / "file-model").write_text("x")
    rc, _, err = _run([*args[:-4], "--model", str(tmp_path / "file-model"), "--dry-run"], capsys)
    assert rc == 2 and "is a file" in err


def test_model_problem_names_hub_ids_missing_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerboard.models import model_problem

    assert model_problem("smollm2-135m") is None
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert model_problem("someorg/somemodel") is None  # may download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not in the local Hugging Face cache" in model_problem("someorg/surely-not-cached-xyz")


@pytest.mark.integration
def test_a_finished_pair_leaves_no_lock_file(tiny_model_dir: str, tmp_path: Path, capsys) -> None:
    rc, out, _ = _run(["run", "--method", "base", "--task", "xstest", "--limit", "1", "-T", "judge=strmatch",
                       "--model", tiny_model_dir, "--log-dir", str(tmp_path), "--display", "none",
                       "--max-tokens", "2"], capsys)
    assert rc == 0, out
    assert list(tmp_path.rglob("*.eval")) and not list(tmp_path.rglob("*.lock"))


# ---------------------------------------------------------------- data files: text a tokenizer takes, relative paths


def _prompts(path: Path, bad_line: int | None = None) -> Path:
    lines = [json.dumps({"id": f"p{i}", "prompt": f"How do I bake bread number {i}?"}) for i in range(3)]
    if bad_line is not None:
        lines[bad_line - 1] = '{"id": "bad", "prompt": "lone \\ud800 surrogate"}'
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lone_surrogate_in_prompts_file_is_caught_by_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _prompts(tmp_path / "prompts.jsonl", bad_line=2)
    rc, _, err = _run(["run", "--method", "base", "--task", "side_effects", "--limit", "2",
                       "-T", f"prompts_file={bad}", "--dry-run"], capsys)
    assert rc == 2
    assert f"{bad}, line 2: field 'prompt' holds a lone surrogate (U+D800" in err, err


def test_lone_surrogate_at_run_time_fails_the_sample_with_a_message() -> None:
    from inspect_ai.model import ChatMessageUser

    from steerboard.methods.provider import checked_text, message_dicts

    assert message_dicts([ChatMessageUser(content="fine")]) == [{"role": "user", "content": "fine"}]
    with pytest.raises(ValueError, match=r"message 0 \(user\) holds a lone surrogate \(U\+DC80"):
        message_dicts([ChatMessageUser(content="bad \udc80")])
    with pytest.raises(ValueError, match="lone surrogate"):
        checked_text([{"role": "user", "content": "\ud800"}])


def test_relative_prompts_file_resolves_from_the_launch_folder_under_inspect_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerboard.tasks import _common
    from steerboard.tasks.side_effects import side_effects

    _prompts(tmp_path / "mine.jsonl")
    # what `inspect eval <path to tasks/side_effects.py> -T prompts_file=mine.jsonl` does: the task is built
    # with the task file's folder as the working directory
    monkeypatch.chdir(TASKS_DIR)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["inspect", "eval", os.path.relpath(TASKS_DIR / "side_effects.py", tmp_path)])
    task = side_effects(prompts_file="mine.jsonl", subset="benign")
    assert len(task.dataset) == 3
    # launched from the repository as `inspect eval tasks/side_effects.py`: the launch folder from the argument
    monkeypatch.delenv("PWD")
    monkeypatch.setattr(sys, "argv", ["inspect", "eval", "tasks/side_effects.py"])
    assert _common.launch_dir() == TASKS_DIR.parent
    # everywhere else: the working folder
    monkeypatch.chdir(tmp_path)
    assert _common.user_path("mine.jsonl") == tmp_path / "mine.jsonl"


# ---------------------------------------------------------------- exit while the torch thread is busy

_BUSY_AT_EXIT = """
import sys, time
from steerboard import torch_thread
import torch
a = torch.randn(400, 400)
def decode_like():   # torch kernels with stopping points between steps, as the engine's decode loop
    for _ in range(10 ** 6):
        a @ a
        torch_thread.run_inline_jobs()
def fit_like():      # torch kernels with no stopping point, as a model load or a fit
    for _ in range(10 ** 6):
        a @ a
torch_thread.EXIT_WAIT = 1.0
torch_thread.submit(decode_like if sys.argv[1] == "decode" else fit_like)
time.sleep(0.3)
print("main thread done", flush=True)
"""


@pytest.mark.parametrize("job, rc", [("decode", 0), ("fit", 1)])
def test_exit_with_the_torch_thread_busy_never_aborts(job: str, rc: int) -> None:
    """A daemon thread inside a torch kernel at interpreter finalisation aborts the process ("terminate called
    without an active exception", exit 134): the exit hook stops it, or leaves at once when it cannot."""
    proc = subprocess.run([sys.executable, "-c", _BUSY_AT_EXIT, job], capture_output=True, text=True, timeout=120)
    assert "terminate called" not in proc.stderr and proc.returncode == rc, (proc.returncode, proc.stderr[-500:])
    assert "main thread done" in proc.stdout


def test_cli_stops_the_torch_thread_and_keeps_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerboard import cli, torch_thread

    exits: list[int] = []
    monkeypatch.setattr(cli, "_main", lambda argv: 130)
    monkeypatch.setattr(torch_thread, "shutdown", lambda timeout: False)  # stuck in a long job
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    assert cli.main([]) == 130 and exits == [130]
    exits.clear()
    monkeypatch.setattr(torch_thread, "shutdown", lambda timeout: True)
    assert cli.main([]) == 130 and exits == []


# ---------------------------------------------------------------- Inspect's own providers


@pytest.mark.parametrize(
    "task, args, fallback",
    [("mmlu", {}, "-T format=letters"), ("mmlu", {"format": "cloze"}, "-T format=letters"),
     ("truthfulqa", {}, "-T format=letters"), ("side_effects", {}, None)],
)
def test_task_needing_logliks_fails_at_construction_on_a_provider_without_them(
    task: str, args: dict, fallback: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspect_ai import eval as inspect_eval

    from steerboard.protocol import CapabilityError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CapabilityError) as info:
        # by file, as `inspect eval tasks/<task>.py` runs it (the registry name is exercised in a fresh process by
        # test_tasks_e2e.py; inside this long test process an earlier test can leave Inspect's registry without it)
        inspect_eval(os.path.relpath(TASKS_DIR / f"{task}.py"), model="mockllm/model", task_args=args, limit=1, display="none")
    message = str(info.value)
    assert "\n" not in message and "cannot return log-likelihoods" in message and "base/, actadd/" in message
    assert (fallback in message) if fallback else "format=letters" not in message
    assert not list(tmp_path.rglob("*.eval"))  # failed before any sample (no log was even started)


@pytest.mark.integration
@pytest.mark.parametrize("task", ["mmlu", "truthfulqa"])
def test_letter_format_runs_on_inspect_hf(task: str, tiny_model_dir: str, tmp_path: Path) -> None:
    """transformers rejects temperature=0 when hf/ samples (its default): greedy letters there are top_k=1."""
    from inspect_ai import eval as inspect_eval

    (log,) = inspect_eval(os.path.relpath(TASKS_DIR / f"{task}.py"), model=f"hf/{tiny_model_dir}", task_args={"format": "letters"},
                          limit=2, display="none", log_dir=str(tmp_path))
    assert log.status == "success", log.error
    assert log.results.completed_samples == 2
    assert log.plan.config.temperature is None and log.plan.config.top_k == 1


def test_option_errors_through_inspect_eval_are_one_line(tmp_path: Path) -> None:
    inspect = str(Path(sys.executable).parent / "inspect")
    root = TASKS_DIR.parent
    for argv, message in (
        (["tasks/xstest.py", "--model", "base/smollm2-135m", "-M", "colour=blue"], "unknown -M option(s)"),
        (["tasks/mmlu.py", "--model", "mockllm/model"], "cannot return log-likelihoods"),
    ):
        proc = subprocess.run([inspect, "eval", *argv, "--limit", "1", "--log-dir", str(tmp_path)], cwd=root,
                              capture_output=True, text=True, timeout=300)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 and message in text and "Traceback" not in text, text[-2000:]
        # Inspect's 4-line banner and the message alone, wrapped to the terminal width (a traceback: 100+ lines)
        assert len([line for line in text.splitlines() if line.strip()]) <= 10, text


# ---------------------------------------------------------------- the submission path


def _submission_log(path: Path, task: str, n: int, *, limit: int | None, seed: int = 0, method: str = "sae",
                    cfg: dict | None = None) -> Path:
    from inspect_ai.log import write_eval_log

    from steerboard.leaderboard.listing import resolve_listing
    from steerboard.leaderboard.synthetic import SyntheticRun, synthetic_log

    version = resolve_listing(None).tasks[task].version or 1
    log = synthetic_log(SyntheticRun(task=task, method=method, model_args=cfg if cfg is not None else {"strengths": 4},
                                     n_samples=n, seed=n, task_args={"shuffle": True, "seed": seed},
                                     task_version=version))  # type: ignore[arg-type]
    log.eval.config.limit = limit
    path.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(log, str(path))
    return path


@pytest.fixture
def small_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submission suite's sizes, made small (synthetic logs of 10-12 samples)."""
    from steerboard.leaderboard import submit

    monkeypatch.setattr(submit, "suite_sizes", lambda: {"xstest": (10, {"shuffle": True, "seed": 0}),
                                                        "mmlu": (12, {"shuffle": True, "seed": 0})})


def test_submit_check_ignores_an_earlier_limited_try_beside_the_run(tmp_path: Path, small_suite: None) -> None:
    from steerboard.leaderboard.listing import resolve_listing
    from steerboard.leaderboard.submit import check_submission

    _submission_log(tmp_path / "sae" / "xstest" / "a.eval", "xstest", 10, limit=10)
    _submission_log(tmp_path / "sae" / "mmlu" / "b.eval", "mmlu", 12, limit=12)
    loose = _submission_log(tmp_path / "try.eval", "xstest", 20, limit=20)  # the README's --limit 20 try
    rep = check_submission(tmp_path, resolve_listing(None), required=["xstest", "mmlu"])
    assert rep.ok, rep.lines()
    assert any(f"ignored {loose}" in n for n in rep.notes)
    # a size or shuffle seed of its own is not the submission's items
    _submission_log(tmp_path / "sae" / "mmlu" / "b.eval", "mmlu", 12, limit=12, seed=1)
    rep = check_submission(tmp_path, resolve_listing(None), required=["xstest", "mmlu"])
    assert not rep.ok and any("submission suite's 12 samples (shuffle=True, seed=0)" in p
                              for p in rep.problems[str(tmp_path / "sae" / "mmlu" / "b.eval")])


def test_submit_check_two_runs_of_a_task_is_one_line_naming_both(tmp_path: Path, small_suite: None) -> None:
    from steerboard.leaderboard.listing import resolve_listing
    from steerboard.leaderboard.submit import check_submission

    a = _submission_log(tmp_path / "r1" / "xstest" / "a.eval", "xstest", 10, limit=10)
    b = _submission_log(tmp_path / "r2" / "xstest" / "b.eval", "xstest", 10, limit=10)
    _submission_log(tmp_path / "r1" / "mmlu" / "c.eval", "mmlu", 12, limit=12)
    rep = check_submission(tmp_path, resolve_listing(None), required=["xstest", "mmlu"])
    (line,) = rep.problems[""]
    assert f"task 'xstest' appears in 2 logs ({a}, {b})" in line and "\n" not in line


def test_submit_check_takes_a_method(tmp_path: Path, small_suite: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerboard.leaderboard.listing import resolve_listing
    from steerboard.leaderboard.submit import check_submission

    monkeypatch.chdir(tmp_path)
    _submission_log(Path("logs/sae-1a2b3c4d/xstest/a.eval"), "xstest", 10, limit=10)
    _submission_log(Path("logs/sae-1a2b3c4d/mmlu/b.eval"), "mmlu", 12, limit=12)
    _submission_log(Path("logs/try.eval"), "xstest", 20, limit=20)  # an inspect eval try of the same method
    _submission_log(Path("logs/actadd/xstest/c.eval"), "xstest", 10, limit=10, method="actadd", cfg={})
    rep = check_submission("sae", resolve_listing(None), required=["xstest", "mmlu"])
    assert rep.ok, rep.lines()
    assert "checking method sae's run in logs/sae-1a2b3c4d" in rep.notes[0]
    _submission_log(Path("logs/sae-99999999/xstest/d.eval"), "xstest", 10, limit=10, cfg={"strengths": 8})
    with pytest.raises(ValueError, match="method 'sae' has 2 configurations under logs/ .*give the run folder"):
        check_submission("sae", resolve_listing(None), required=["xstest", "mmlu"])


def test_submission_dry_run_prints_an_estimate_per_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    rc, out, err = _run(["run", "--suite", "submission", "--method", "base", "--dry-run", "--log-dir",
                         str(tmp_path)], capsys)
    assert rc == 0, err
    pairs = [line for line in out.splitlines() if line.strip().startswith("to run")]
    assert pairs and all("~" in line for line in pairs), out
    assert "estimated time on this machine:" in out and "reference rates" in out


# ---------------------------------------------------------------- packaging: `make setup` without warnings


def test_every_importable_data_folder_is_a_listed_package() -> None:
    """setuptools prints ~40 lines of warning for each folder Python could import that `packages` leaves out
    (about 850 lines of `make setup` before they were listed)."""
    import tomllib

    root = TASKS_DIR.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = set()
    for package, folder in config["package-dir"].items():
        for d in (root / folder).rglob("*"):
            parts = d.relative_to(root / folder).parts
            if d.is_dir() and "__pycache__" not in parts and all(p.isidentifier() for p in parts):
                on_disk.add(".".join((package, *parts)))
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk - set(config["package-dir"]) == set()


# ---------------------------------------------------------------- network waits are said and bounded


def test_a_silent_storage_endpoint_is_named_and_given_up_on(tmp_path: Path) -> None:
    """An S3 endpoint that accepts connections and never answers: the wait is announced, and the command
    fails within the --timeout (one try, not botocore's and s3fs's retries: 413 s with the defaults)."""
    import socket
    import threading
    import time

    pytest.importorskip("s3fs")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.getsockname()[1]}",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "steerboard.cli", "ingest", "--logs", "s3://bucket/logs", "--db",
                           str(tmp_path / "r.duckdb"), "--timeout", "4"], env=env, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - t0
    server.close()
    assert proc.returncode == 2, proc.stderr
    assert "waiting for s3://bucket/logs to answer" in proc.stderr
    assert "no answer within 4 s" in proc.stderr and "--timeout" in proc.stderr
    assert elapsed < 60, elapsed  # start-up plus one bounded try


def test_timeout_flag_and_variable_are_checked(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    from steerboard import storage

    monkeypatch.setenv(storage.NET_TIMEOUT_ENV, "soon")
    with pytest.raises(storage.StorageError, match="STEERBOARD_NET_TIMEOUT='soon'"):
        storage.net_timeout()
    monkeypatch.setenv(storage.NET_TIMEOUT_ENV, "12")
    assert storage.net_timeout() == 12.0
    rc, _, err = _run(["--timeout", "0", "run", "--method", "base", "--task", "xstest", "--dry-run"], capsys)
    assert rc == 2 and "--timeout 0.0: give the storage timeout in seconds" in err


def test_estimate_uses_this_machines_logs_and_scales_with_max_tokens(tmp_path: Path) -> None:
    from inspect_ai.log import write_eval_log

    from steerboard.leaderboard.synthetic import SyntheticRun, synthetic_log
    from steerboard.runner import parse_suite, plan_pairs
    from steerboard.runner.estimate import estimate_pairs

    log = synthetic_log(SyntheticRun(task="xstest", method="base", n_samples=20, seed=1,
                                     generate={"max_tokens": 48, "temperature": 0.0}))
    log.plan.config.max_tokens = 48
    log.stats.started_at, log.stats.completed_at = "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:40+00:00"
    (tmp_path / "old").mkdir()
    write_eval_log(log, str(tmp_path / "old" / "x.eval"))  # 20 samples in 100 s at 48 tokens: 5 s each
    suite = parse_suite({"methods": ["base"], "tasks": [{"name": "xstest", "limit": 10, "config": {"max_tokens": 96}}]})
    runs = suite.runs()
    seconds, source = estimate_pairs(suite, runs, [p.entry() for p in plan_pairs(suite, runs, tmp_path)], tmp_path)
    assert seconds == [pytest.approx(10 * 5.0 * 96 / 48)] and source == "this machine's logs"
    done = [{**p.entry(), "status": "done"} for p in plan_pairs(suite, runs, tmp_path)]
    assert estimate_pairs(suite, runs, done, tmp_path)[0] == [None]  # nothing left to run
