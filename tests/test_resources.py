"""Suite ``resources:``, the per-configuration memory estimate, device-dependent precision paths, gpu_check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steerboard.resources import check_resources, estimate_memory, parse_memory

ROOT = Path(__file__).resolve().parents[1]


def _suite(model: str, **extra) -> dict:
    data = {
        "name": "res", "model": model, "max_connections": 4,
        "methods": [{"name": "base"}, {"name": "prompt", "resources": {"memory": "2GiB", "num_gpus": 0}}],
        "tasks": [{"name": "xstest", "limit": 1, "args": {"judge": "strmatch"}, "config": {"max_tokens": 8}}],
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * 1024**3), ("16e9", 16 * 10**9), (1024, 1024), ("512MB", 512 * 10**6), ("1.5 G", 1_500_000_000),
     (2.5e9, 2_500_000_000)],
)
def test_memory_sizes(text, expected) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["8 potatoes", "GiB", -1, True, "nan"])
def test_bad_memory_names_the_forms(bad) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(bad, "memory")


def test_suite_resources_are_validated_when_the_suite_loads(tiny_model_dir: str) -> None:
    from steerboard.runner import parse_suite

    suite = parse_suite(_suite(tiny_model_dir, resources={"num_cpus": 2, "memory": "8GiB"}))
    assert suite.resources == {"num_cpus": 2.0, "memory": 8 * 1024**3}
    assert suite.methods[0].resources == {}
    assert suite.methods[1].resources == {"memory": 2 * 1024**3, "num_gpus": 0.0}
    with pytest.raises(ValueError, match=r"res: resources: unknown key 'gpus'; valid keys: num_cpus, num_gpus, memory"):
        parse_suite(_suite(tiny_model_dir, resources={"gpus": 1}), "res")
    bad = _suite(tiny_model_dir)
    bad["methods"][1]["resources"] = {"memory": "lots"}
    with pytest.raises(ValueError, match=r"methods\[1\] \(prompt\): resources.memory: 'lots' is not a size"):
        parse_suite(bad, "res")
    with pytest.raises(ValueError, match="resources.num_cpus must be a number >= 0"):
        check_resources({"num_cpus": -1}, "x")
    # a sweep gives every configuration the entry's resources
    sweep = _suite(tiny_model_dir)
    sweep["methods"] = [{"name": "prompt", "sweep": {"placement": ["replace", "prepend"]}, "resources": {"num_cpus": 2}}]
    assert [m.resources for m in parse_suite(sweep).methods] == [{"num_cpus": 2.0}] * 2


def test_method_entry_overrides_suite_and_command_line_overrides_both(tiny_model_dir: str) -> None:
    from steerboard.runner import parse_suite
    from steerboard.runner.ray_requests import config_resources, parse_resources

    suite = parse_suite(_suite(tiny_model_dir, resources={"num_cpus": 2, "memory": "8GiB"}))
    base, prompt = suite.methods
    assert config_resources(suite, base)[0] == {"num_cpus": 2.0, "memory": 8 * 1024**3}
    assert config_resources(suite, prompt)[0] == {"num_cpus": 2.0, "memory": 2 * 1024**3, "num_gpus": 0.0}
    cli = parse_resources("num_cpus=1,memory=3GiB")
    assert config_resources(suite, prompt, cli)[0] == {"num_cpus": 1.0, "memory": 3 * 1024**3, "num_gpus": 0.0}
    # no memory anywhere: the configuration's estimate is requested
    plain = parse_suite(_suite(tiny_model_dir))
    res, est = config_resources(plain, plain.methods[0])
    assert est is not None and res == {"memory": est.total}


def test_estimate_counts_parameters_from_the_config(tiny_model_dir: str) -> None:
    from transformers import AutoModelForCausalLM

    n = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    cpu = estimate_memory("base", {}, tiny_model_dir, device="cpu", max_connections=4, context_tokens=100)
    gpu = estimate_memory("base", {}, tiny_model_dir, device="cuda", max_connections=4, context_tokens=100)
    assert cpu is not None and gpu is not None
    assert cpu.params == gpu.params == n
    assert (cpu.dtype, gpu.dtype) == ("float32", "bfloat16")
    assert cpu.parts["weights"] == 4 * n and gpu.parts["weights"] == 2 * n
    assert "bf16_linear_copy" in cpu.parts and "bf16_linear_copy" not in gpu.parts
    # tiny model: 4 layers, 2 kv heads of 16 dims; float64 keys and values on CPU, bfloat16 on CUDA
    assert cpu.parts["kv_cache"] == 4 * 100 * 4 * 2 * 2 * 16 * 8
    assert gpu.parts["kv_cache"] == 4 * 100 * 4 * 2 * 2 * 16 * 2
    vocab = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size
    assert cpu.parts["scoring_logits"] == 2 * 1024 * vocab * 4  # a log-likelihood batch's logits and log-softmax
    explicit = estimate_memory("base", {"dtype": "float32", "device": "cuda"}, tiny_model_dir)
    assert explicit is not None and explicit.device == "cuda" and explicit.parts["weights"] == 4 * n
    more_rows = estimate_memory("base", {}, tiny_model_dir, max_connections=8, context_tokens=100)
    assert more_rows is not None and more_rows.parts["kv_cache"] == 2 * cpu.parts["kv_cache"]


def test_estimate_adds_what_each_method_needs(tiny_model_dir: str) -> None:
    base = estimate_memory("base", {}, tiny_model_dir)
    dinm = estimate_memory("dinm", {}, tiny_model_dir)
    dpo = estimate_memory("dpo", {"max_pairs": 8}, tiny_model_dir)
    full = estimate_memory("dpo", {"lora": False}, tiny_model_dir)
    assert base is not None and dinm is not None and dpo is not None and full is not None
    assert dinm.parts["second_weights_copy"] == base.parts["weights"] + base.parts["bf16_linear_copy"]
    assert dpo.parts["second_weights_copy"] == dinm.parts["second_weights_copy"]
    assert 0 < dpo.parts["dpo_training_state"] < full.parts["dpo_training_state"] == 16 * base.params
    assert base.total < dinm.total < dpo.total < full.total
    assert estimate_memory("base", {}, "some-org/not-on-disk") is None


def test_estimate_of_the_shipped_sae(tiny_model_dir: str) -> None:
    # the shipped SAE of the embedded model (its preset states the sizes): 576 inputs, 4,608 latents, float32
    est = estimate_memory("sae", {"preset": "smollm2-135m"}, tiny_model_dir)
    assert est is not None and est.parts["sae"] == 4 * (2 * 576 * 4608 + 576 + 4608)


def test_dry_run_with_ray_prints_each_configuration_estimate(tiny_model_dir: str, tmp_path: Path, capsys) -> None:
    from steerboard.cli import main

    path = tmp_path / "res.yaml"
    path.write_text(yaml.safe_dump(_suite(tiny_model_dir, resources={"num_cpus": 2})))
    rc = main(["run", "--suite", str(path), "--executor", "ray", "--dry-run", "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = [x for x in out.splitlines() if x.startswith("ray actor")]
    assert len(lines) == 2, out
    assert "base " in lines[0] and "num_cpus=2" in lines[0] and "estimate" in lines[0] and "weights" in lines[0]
    assert "memory=2.00 GiB" in lines[1]  # the method entry's request, not the estimate


def test_bad_resources_fail_before_model_work(tmp_path: Path, capsys) -> None:
    from steerboard.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_suite(str(tmp_path / "no-model"), resources={"memory": "8 potatoes"})))
    rc = main(["run", "--suite", str(path), "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "resources.memory: '8 potatoes' is not a size" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "logs").exists()
    rc = main(["run", "--suite", str(path), "--ray-resources", "memory=x", "--log-dir", str(tmp_path / "logs")])
    assert rc == 2


def _long_context_copy(tiny_model_dir: str, tmp_path: Path) -> str:
    """The tiny model with a 4,096-token context: its own 512 would cap every KV-cache allowance."""
    import json
    import shutil

    path = tmp_path / "tiny-4k"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 4096
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def test_max_tokens_from_the_command_line_reaches_the_memory_estimate(
    tiny_model_dir: str, tmp_path: Path, capsys
) -> None:
    from steerboard.cli import main
    from steerboard.resources import format_bytes
    from steerboard.runner import parse_suite
    from steerboard.runner.ray_requests import config_resources

    model = _long_context_copy(tiny_model_dir, tmp_path)
    data = _suite(model)  # the task asks for max_tokens 8
    suite = parse_suite(data)
    base = suite.methods[0]
    plain = config_resources(suite, base)[1]
    longer = config_resources(suite, base, generate={"max_tokens": 1000})[1]
    assert plain is not None and longer is not None
    # rows x (512 prompt tokens + max_tokens) x 4 layers x keys and values x 2 kv heads x 16 dims x 8 bytes
    assert plain.parts["kv_cache"] == 4 * (512 + 8) * 4 * 2 * 2 * 16 * 8
    assert longer.parts["kv_cache"] == 4 * (512 + 1000) * 4 * 2 * 2 * 16 * 8
    # the same through the command line: `--executor ray --dry-run` prints each actor's estimate
    path = tmp_path / "res.yaml"
    path.write_text(yaml.safe_dump(data))
    lines = {}
    for extra in ([], ["--max-tokens", "1000"]):
        argv = ["run", "--suite", str(path), "--executor", "ray", "--dry-run", "--log-dir", str(tmp_path / "logs")]
        assert main(argv + extra) == 0
        out = capsys.readouterr().out
        lines[len(extra)] = next(x for x in out.splitlines() if x.startswith("ray actor  base "))
    assert f"kv_cache {format_bytes(plain.parts['kv_cache'])}" in lines[0], lines[0]
    assert f"kv_cache {format_bytes(longer.parts['kv_cache'])}" in lines[2], lines[2]


def test_the_eval_and_the_memory_estimate_see_one_generate_config(
    tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suite ``generate``, task ``config`` and the command line's overrides, merged once: the ``eval_set`` call
    of a pair gets what the Ray memory estimate of its configuration sizes the KV cache for."""
    import inspect_ai

    from steerboard import resources
    from steerboard.runner import RunSettings, parse_suite, plan_pairs, run_pair
    from steerboard.runner.ray_requests import config_resources

    suite = parse_suite({
        "model": tiny_model_dir, "generate": {"max_tokens": 100, "temperature": 0.5},
        "methods": ["base"], "tasks": [{"name": "xstest", "limit": 1, "args": {"judge": "strmatch"},
                                        "config": {"max_tokens": 50}}],
    })
    cli = {"max_tokens": 70, "seed": 3}
    evals: list[dict] = []
    estimates: list[dict] = []
    monkeypatch.setattr(inspect_ai, "eval_set", lambda **kw: evals.append(kw) or (True, []))
    monkeypatch.setattr(resources, "estimate_memory", lambda *a, **kw: estimates.append(kw))
    (pair,) = plan_pairs(suite, suite.runs(), tmp_path, generate=cli)
    run_pair(pair, RunSettings.for_suite(suite, generate=cli))
    config_resources(suite, suite.methods[0], generate=cli)
    (call,) = evals
    assert {k: call[k] for k in ("max_tokens", "temperature", "seed")} == {"max_tokens": 70, "temperature": 0.5,
                                                                          "seed": 3}
    assert [e["context_tokens"] for e in estimates] == [512 + call["max_tokens"]]


def test_capacity_check_names_the_setting() -> None:
    from steerboard.runner.ray_requests import check_capacity as _check_capacity

    class FakeRay:
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * 1024**3}}]

    _check_capacity(FakeRay, {"base": {"num_cpus": 1.0, "memory": 1024**3}})
    with pytest.raises(ValueError, match=r"base asks for memory=6.00 GiB .* has 4.00 GiB; set resources.memory"):
        _check_capacity(FakeRay, {"base": {"num_cpus": 1.0, "memory": 6 * 1024**3}})
    with pytest.raises(ValueError, match="asks for num_gpus=1 but the largest node of the Ray cluster has 0"):
        _check_capacity(FakeRay, {"dpo": {"num_cpus": 1.0, "num_gpus": 1.0}})


# ---------------------------------------------------------------- device-dependent precision paths


def test_non_cpu_device_loads_bfloat16_and_skips_cpu_only_paths(tiny_model_dir: str) -> None:
    """On a device other than the CPU (the ``meta`` device stands in for CUDA here): ``dtype=auto`` loads
    bfloat16, and neither the float64 batch-invariant attention nor the MKL row padding is taken."""
    import torch

    from steerboard import precision
    from steerboard.engine import Engine

    eng = Engine.load(tiny_model_dir, device="meta")
    assert next(eng.model.parameters()).dtype == torch.bfloat16
    assert eng.matmul_dtype == "bfloat16" and not precision.active(eng.model)
    assert precision.use_exact_attention(eng.model) is False
    assert eng.model.config._attn_implementation == "sdpa"
    seen = []
    x = torch.zeros(3, 8, device="meta")
    precision.row_invariant(lambda t: seen.append(t.shape[0]) or t, x)
    assert seen == [3]
    precision.row_invariant(lambda t: seen.append(t.shape[0]) or t, torch.zeros(3, 8))
    assert seen == [3, precision.MIN_INVARIANT_ROWS]
    assert precision.resolve_matmul_dtype("auto", "cuda", torch.float32) == "float32"


def test_cpu_model_still_takes_the_exact_attention(tiny_model_dir: str) -> None:
    from steerboard import precision
    from steerboard.engine import Engine

    eng = Engine.load(tiny_model_dir, device="cpu")
    assert precision.use_exact_attention(eng.model) is True


def test_gpu_check_runs_its_logic_on_cpu(tiny_model_dir: str) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--model", tiny_model_dir,
           "--methods", "base,prompt", "--prompts", "2", "--tokens", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("base ", "prompt "))]
    assert [r[:3] for r in rows] == [
        ["base", "cpu", "float32"], ["base", "cpu", "bfloat16"], ["base", "cpu", "float32"],
        ["prompt", "cpu", "float32"], ["prompt", "cpu", "bfloat16"], ["prompt", "cpu", "float32"],
    ]
    assert all(float(r[3]) > 0 for r in rows)
    # float32 on the CPU again is the reference itself: every prompt's tokens equal
    assert rows[2][4:] == ["2/2", "prompts"] and rows[5][4:] == ["2/2", "prompts"]


def test_gpu_check_without_a_gpu_says_so(tiny_model_dir: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script runs for real")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--model", tiny_model_dir],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU available (torch.cuda.is_available() is False); nothing was run"
    ]


def test_parameter_count_without_safetensors_comes_from_the_config(tiny_model_dir: str, tmp_path: Path) -> None:
    """A checkpoint without safetensors headers: the config is instantiated on the meta device instead."""
    import shutil

    from steerboard.resources import _model_shape

    only_config = tmp_path / "cfg-only"
    only_config.mkdir()
    shutil.copy(Path(tiny_model_dir) / "config.json", only_config / "config.json")
    a, b = _model_shape(tiny_model_dir), _model_shape(str(only_config))
    assert a["params"] == b["params"] and sorted(a["linear"]) == sorted(b["linear"])
    assert {name for _, name, _, _ in a["linear"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"}
