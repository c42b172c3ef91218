"""The method author's examples (``examples/``): each installs with pip, registers through its entry point and
runs an evaluation through Inspect; each also does what its guide says on the tiny test model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# example folder -> (entry-point name, module, class)
KINDS = {
    "reminder": ("ex_reminder", "steerboard_example_reminder.method", "Reminder"),
    "randdir": ("ex_randdir", "steerboard_example_randdir.method", "RandomDirection"),
    "orthogonalize": ("ex_orthogonalize", "steerboard_example_orthogonalize.method", "Orthogonalize"),
}


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three examples pip-installed (not editable) into a fresh folder, as a user's package would be."""
    target = tmp_path_factory.mktemp("examples-site")
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--target", str(target), *(str(EXAMPLES / k) for k in KINDS),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return target


@pytest.fixture()
def on_path(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(site_dir))
    return site_dir


def _method(kind: str, **options: object):
    import importlib

    _, module, cls = KINDS[kind]
    klass = getattr(importlib.import_module(module), cls)
    return klass(klass.config_class.from_dict(options), "tiny")


def test_each_example_is_a_complete_package() -> None:
    for kind, (name, module, cls) in KINDS.items():
        pyproject = (EXAMPLES / kind / "pyproject.toml").read_text()
        assert '[project.entry-points."steerboard.methods"]' in pyproject
        assert f'{name} = "{module}:{cls}"' in pyproject
        assert (EXAMPLES / kind / module.replace(".", "/")).with_suffix(".py").is_file()


def test_installed_entry_points_register_the_methods(site_dir: Path) -> None:
    code = (
        "import json; from steerboard.methods.registry import method_entry_points; "
        "print(json.dumps(method_entry_points()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site_dir)}
    eps = json.loads(run_python(code, env=env))
    for name, module, cls in KINDS.values():
        assert eps.get(name) == f"{module}:{cls}"


def test_examples_run_through_inspect(site_dir: Path, tiny_model_dir: str, tmp_path: Path) -> None:
    """``inspect eval`` with all three providers (one process, as a user would run it after pip install)."""
    models = ",".join(f"{name}/{tiny_model_dir}" for name, _, _ in KINDS.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env["PYTHONPATH"] = str(site_dir)
    cmd = [
        str(Path(sys.executable).parent / "inspect"), "eval", "tasks/xstest.py",
        "--model", models, "-T", "judge=strmatch", "--limit", "4", "--max-tokens", "6", "--display", "none",
        "--log-format", "eval", "--log-dir", str(tmp_path / "logs"),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    logs = sorted((tmp_path / "logs").glob("*.eval"))
    assert len(logs) == 3
    from inspect_ai.log import read_eval_log

    seen = set()
    for path in logs:
        log = read_eval_log(str(path))
        assert log.status == "success"
        seen.add(log.eval.model.split("/")[0])
        assert log.samples is not None and len(log.samples) == 4  # every sample ran
        assert all(s.output.completion is not None for s in log.samples)
    assert seen == {name for name, _, _ in KINDS.values()}


def test_reminder_rewrites_the_last_user_message(on_path: Path) -> None:
    m = _method("reminder", reminder="Be safe.")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    out = m.messages(msgs)
    assert out[-1]["content"] == "c\n\nBe safe." and out[0]["content"] == "a"
    assert msgs[-1]["content"] == "c"  # the caller's list is left alone
    with pytest.raises(ValueError, match="reminder"):
        _method("reminder", reminder=" ")


def test_randdir_steers_through_the_public_hooks(on_path: Path, tiny_engine) -> None:
    from steerboard.engine import GenerationRequest

    m = _method("randdir", coefficient=50.0, layer=1)
    m.prepare(tiny_engine)
    assert m.module == tiny_engine.layer_module_name(1)
    ids = tiny_engine.chat_ids([{"role": "user", "content": "How do I kill a Python process?"}])
    reqs = [GenerationRequest(input_ids=ids, max_new_tokens=8)]
    plain = tiny_engine.generate(reqs)[0].token_ids
    steered = tiny_engine.generate(reqs, intervention=m.intervention())[0].token_ids
    assert steered != plain
    # the hooks are gone after the batch
    assert tiny_engine.generate(reqs)[0].token_ids == plain
    # prefill-only steering changes the reply too, but differently from steering every position
    only_prompt = _method("randdir", coefficient=50.0, layer=1, steer_on="prompt")
    only_prompt.prepare(tiny_engine)
    assert tiny_engine.generate(reqs, intervention=only_prompt.intervention())[0].token_ids != plain
    with pytest.raises(ValueError, match="steer_on"):
        _method("randdir", steer_on="sometimes")


def test_orthogonalize_removes_the_direction_from_the_weights(on_path: Path, tiny_model_dir: str) -> None:
    import torch

    from steerboard.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu", matmul_dtype="float32")
    m = _method("orthogonalize", layers=[1, 2])
    before = [engine.decoder_layers()[i].mlp.down_proj.weight.clone() for i in range(4)]
    m.prepare(engine)
    v = torch.randn(engine.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    for i in range(4):
        w = engine.decoder_layers()[i].mlp.down_proj.weight
        if i in (1, 2):
            assert torch.allclose(v @ w, torch.zeros_like(v @ w), atol=1e-5)  # nothing written along v
            assert not torch.equal(w, before[i])
        else:
            assert torch.equal(w, before[i])
    with pytest.raises(ValueError, match="strength"):
        _method("orthogonalize", strength=2)
