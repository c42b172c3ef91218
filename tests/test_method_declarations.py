"""Method knowledge lives in the method: memory parts and option roles are declared by each method class and its
config fields, and the memory estimate, cache keys, engine key and board labels read the declarations.

The figures and labels below were recorded from the name-based code these declarations replaced; they must not
move for the built-in methods (sft/'s estimate gained the training state that code counted for dpo/ alone).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (method, -M options, device, memory parts in order) on the tiny test model, 4 connections, 300 context tokens
MEMORY_CASES = [
    ('base', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('base', {}, 'cuda', [('process', 1572864000), ('weights', 347264), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('base', {'matmul_dtype': 'float32'}, 'cpu', [('process', 1572864000), ('weights', 694528), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('base', {'deterministic': False, 'max_batch_size': 2}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('prompt', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('actadd', {}, 'cuda', [('process', 1572864000), ('weights', 347264), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('sae', {'preset': 'smollm2-135m'}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('sae', 21254400), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('sae', {'preset': 'smollm2-135m'}, 'cuda', [('process', 1572864000), ('weights', 347264), ('sae', 21254400), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('sae', {'release': 'r', 'sae_id': 'i', 'layer': 1, 'features': [1], 'strengths': [2.0]}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('sae', 0), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('dpo', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('dpo_training_state', 262144), ('dpo_activations', 22282240), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('dpo', {'max_pairs': 8}, 'cuda', [('process', 1572864000), ('weights', 347264), ('second_weights_copy', 347264), ('dpo_training_state', 262144), ('dpo_activations', 11141120), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('dpo', {'lora': False}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('dpo_training_state', 2778112), ('dpo_activations', 22282240), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('dpo', {'target_modules': 'q_proj,v_proj', 'lora_r': 4, 'lora_top_fraction': 1.0, 'batch_size': 2, 'max_length': 64}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('dpo_training_state', 57344), ('dpo_activations', 4456448), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    # sft/ trains as dpo/ does: it now counts its training state (one sequence per pair where DPO has two)
    ('sft', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('sft_training_state', 262144), ('sft_activations', 11141120), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('sft', {'lora': False}, 'cuda', [('process', 1572864000), ('weights', 347264), ('second_weights_copy', 347264), ('sft_training_state', 2778112), ('sft_activations', 5570560), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
    ('dinm', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('dinm_tuning_state', 589824), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('dinm', {'dtype': 'bfloat16'}, 'cpu', [('process', 1572864000), ('weights', 347264), ('second_weights_copy', 347264), ('dinm_tuning_state', 589824), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
]


@pytest.mark.parametrize(("method", "args", "device", "parts"), MEMORY_CASES, ids=lambda v: str(v)[:40])
def test_memory_estimate_of_the_built_in_methods_is_unchanged(tiny_model_dir: str, method, args, device, parts) -> None:
    from steerboard.resources import estimate_memory

    est = estimate_memory(method, args, tiny_model_dir, device=device, max_connections=4, context_tokens=300)
    assert est is not None and list(est.parts.items()) == parts


PREC = {"dtype": "float32", "matmul_dtype": "bfloat16"}
# what each built-in method's describe() adds to the resolved settings (presets expanded, derived choices)
DESCRIBED: dict[str, dict[str, Any]] = {
    "sae": {"preset": "smollm2-135m", "sae_path": "/x/methods/artifacts/sae-smollm2-135m-l8", "release": None,
            "sae_id": None, "layer": 8, "features": [1016], "strengths": [30.0], "mode": "clamp", "steer_on": "both",
            "gate": "probe", "gate_threshold": 0.65, "gate_feature": "mean_last",
            "strength_units": [{"feature": 1016, "strength": 30.0, "x_max": 19.5}]},
    "actadd": {"preset": "smollm2-135m", "source": "prompts", "layer": 12, "coefficient": 4.0, "operation": "add",
               "steer_on": "both", "gate": "none", "gate_threshold": 0.5, "gate_feature": "mean_last"},
    # optimizer: recorded by older DINM logs
    "dinm": {"layer_rule": "toxic layer: largest safe/unsafe hidden-state distance, minus 1",
             "edited_module": "mlp output projection (down_proj) of the chosen layer", "optimizer": "adam"},
}
# (method, -M options, the row's short config, the same uncut, the point label's config, the sweep axis)
LABEL_CASES = [
    ('base', {'deterministic': False}, 'deterministic=false', 'deterministic=false', 'deterministic=false', None),
    ('prompt', {'placement': 'replace'}, 'system_prompt=You are a careful and..., placement=replace', 'system_prompt=You are a careful and..., placement=replace', 'placement=replace', None),
    ('sae', {}, 'preset=smollm2-135m, gate=probe, gate_threshold=0.65, layer=8, features=[1016], strengt...', 'preset=smollm2-135m, gate=probe, gate_threshold=0.65, layer=8, features=[1016], strengths=[30.0], mode=clamp, steer_on=both, strength_units=[{"feature": 1016, "s...', 'strengths=[30.0] layer=8', 'strengths'),
    ('actadd', {}, 'preset=smollm2-135m, gate=none, gate_threshold=0.5, source=prompts, layer=12, coefficie...', 'preset=smollm2-135m, gate=none, gate_threshold=0.5, source=prompts, layer=12, coefficient=4.0, operation=add, steer_on=both', 'coefficient=4.0 layer=12', 'coefficient'),
    ('dinm', {'instances_file': 'pyproject.toml', 'cached_prefix': False}, 'steps=10, lr=0.0005, weight_decay=0.0, kl_factor=0.1, kl_grad=false, early_stop=0.0001,...', "steps=10, lr=0.0005, weight_decay=0.0, kl_factor=0.1, kl_grad=false, early_stop=0.0001, suffix=If the user's request..., instances=8, edit_from=original", 'cached_prefix=false insta…', None),
    ('dpo', {'max_pairs': 48, 'pairs_file': 'pyproject.toml'}, 'lora=true, lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=all-linear, lora_t...', 'lora=true, lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=all-linear, lora_top_fraction=0.5, lr=0.0002, epochs=1.0, batch_size=4, max_length=160, max_pairs=48, seed=0, beta=0.1, loss_type=sigmoid', 'max_pairs=48 pairs_file=p…', None),
    ('sft', {'max_pairs': 500, 'batch_size': 2}, 'lora=true, lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=all-linear, lora_t...', 'lora=true, lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=all-linear, lora_top_fraction=0.5, lr=0.0002, epochs=1.0, batch_size=2, max_length=160, max_pairs=500, seed=0', 'batch_size=2 max_pairs=500', None),
]


def _record(method: str, args: dict[str, Any]) -> dict[str, Any]:
    """A provenance record as the method's provider writes it (resolved settings merged as in ``provenance``)."""
    from steerboard.methods.provider import method_class
    from steerboard.methods.registry import method_entry_points

    cls = method_class(method_entry_points()[method])
    cfg = cls.config_class.from_dict(args)
    return {"method": method, "resolved": {**cfg.result_options(PREC), **DESCRIBED.get(method, {}), **PREC}}


@pytest.mark.parametrize(("method", "args", "short", "full", "point", "sweep"), LABEL_CASES, ids=lambda v: str(v)[:30])
def test_board_labels_of_the_built_in_methods_are_unchanged(
    monkeypatch: pytest.MonkeyPatch, method, args, short, full, point, sweep
) -> None:
    import steerboard.leaderboard.ingest as ingest
    from steerboard.leaderboard import build
    from steerboard.methods.base import method_declarations

    monkeypatch.chdir(ROOT)  # pairs_file / instances_file name a file of the checkout
    rec = _record(method, args)
    assert ingest.short_config(rec) == short
    monkeypatch.setattr(ingest, "SHORT_CONFIG_CHARS", 10_000)
    assert ingest.short_config(rec) == full
    raw = {**args, **{k: v for k, v in DESCRIBED.get(method, {}).items() if k in ("strengths", "coefficient", "layer")}}
    decl = method_declarations(method)
    assert build.short_config(raw, sweep_keys=decl.sweep) == point
    assert build._sweep_key(rec["resolved"], decl.sweep) == sweep


# ---------------------------------------------------------------- one declaration of the runtime keys
def test_engine_config_is_the_one_list_of_runtime_engine_and_precision_keys() -> None:
    from dataclasses import fields

    from steerboard.methods.base import EngineConfig, Method, MethodConfig
    from steerboard.methods.dinm import DINMConfig

    assert MethodConfig.RUNTIME_KEYS == ("device", "head_screen", "max_batch_size", "batch_wait_ms", "trust_remote_code")
    assert MethodConfig.PRECISION_KEYS == ("dtype", "matmul_dtype")
    assert MethodConfig.ENGINE_KEYS == ("device", "dtype", "matmul_dtype", "head_screen", "deterministic",
                                        "trust_remote_code")
    assert [f.name for f in fields(MethodConfig)] == [f.name for f in fields(EngineConfig)]
    # a method's own runtime field joins its config's list, and leaves cache keys alone
    assert DINMConfig.RUNTIME_KEYS == (*MethodConfig.RUNTIME_KEYS, "cached_prefix")
    assert DINMConfig(cached_prefix=False).fingerprint() == DINMConfig().fingerprint()
    assert DINMConfig(steps=3).fingerprint() != DINMConfig().fingerprint()
    # the leaderboard's label stripping reads the same declarations
    decl = Method.declarations()
    assert set(decl.runtime) == set(MethodConfig.RUNTIME_KEYS) and set(decl.precision) == {"dtype", "matmul_dtype"}
    assert decl.quiet_defaults == {"deterministic": True} and decl.control is False
    assert decl.not_sweep_settings == {f.name for f in fields(EngineConfig)}


def test_shared_engine_is_keyed_on_the_declared_engine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerboard.methods import provider
    from steerboard.methods.base import BaseMethod, MethodConfig

    loads: list[dict[str, Any]] = []

    def fake_load(model_name: str, **kw: Any) -> object:
        loads.append(kw)
        return object()

    monkeypatch.setattr(provider, "_ENGINES", {})
    monkeypatch.setattr(provider.Engine, "load", staticmethod(fake_load))
    cfg = MethodConfig(device="cpu", matmul_dtype="float32", max_batch_size=3)
    first = provider.load_engine("m", BaseMethod(cfg, "m"))
    assert loads == [{"max_batch_size": 3, **cfg.engine_settings()}]
    assert set(loads[0]) - {"max_batch_size"} == set(MethodConfig.ENGINE_KEYS)
    # a runtime-only difference shares the engine; an engine setting does not
    same = MethodConfig(device="cpu", matmul_dtype="float32", max_batch_size=3, batch_wait_ms=1.0)
    assert provider.load_engine("m", BaseMethod(same, "m")) is first
    other = MethodConfig(device="cpu", matmul_dtype="float32", deterministic=False)
    assert provider.load_engine("m", BaseMethod(other, "m")) is not first and len(loads) == 2


# ---------------------------------------------------------------- no method names in the core
NAME_TEST = re.compile(r"""(?:\bmethod\b|\[["']method["']\]|\.get\(["']method["']\))\s*[!=]=\s*["']([^"']*)["']""")


def _name_tests(path: Path) -> list[tuple[int, str, str]]:
    return [(i, m.group(1), line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1)
            for m in NAME_TEST.finditer(line)]


def test_the_name_test_pattern_finds_what_it_looks_for() -> None:
    for line in ('if method == "sae":', 'if run.method == "base":', 'r.get("method") != "base"',
                 'x["method"] == "dpo"'):
        assert NAME_TEST.search(line), line
    assert not NAME_TEST.search('if self.method.name == other:')


def test_no_code_outside_a_method_compares_method_names() -> None:
    """Memory, labels, the control and sweep axes are declared by each method; only a method's own module may
    name it."""
    hits = []
    for folder in ("steerboard", "leaderboard", "tasks", "scorers", "methods"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            own = set(re.findall(r'^\s+name = "([^"]+)"', path.read_text(), re.M)) if folder == "methods" else set()
            hits += [f"{path.relative_to(ROOT)}:{i}: {text}" for i, name, text in _name_tests(path) if name not in own]
    assert not hits, "method names compared outside their module:\n" + "\n".join(hits)


# ---------------------------------------------------------------- declarations recorded and read back
def test_a_record_carries_the_declarations_and_is_read_without_the_method_installed() -> None:
    from steerboard.leaderboard.ingest import is_control, short_config
    from steerboard.methods.base import BaseMethod, MethodConfig, MethodDeclarations, method_declarations
    from steerboard.methods.dinm import DINMMethod

    prov = BaseMethod(MethodConfig(), "m").provenance(None)
    assert MethodDeclarations.from_record(prov["declarations"]) == BaseMethod.declarations()
    assert prov["declarations"]["control"] is True
    assert {"cached_prefix", "device"} <= set(DINMMethod.declarations().runtime)
    assert {"layer_rule", "instances_file"} <= set(DINMMethod.declarations().detail)
    # a plug-in no installed package registers: its recorded declarations label it
    rec = {"method": "not_installed_here", "resolved": {"data_file": "/a/b.jsonl", "k": 2, "fast": True},
           "declarations": {"control": False, "detail": ["data_file"], "sweep": ["k"], "quiet_defaults": {"fast": True}}}
    assert short_config(rec) == "k=2"
    assert method_declarations("not_installed_here", rec).sweep == ("k",)
    # nothing recorded, nothing installed: only the options every method shares are known
    bare = {"method": "not_installed_here", "resolved": {"data_file": "/a", "dtype": "float32", "deterministic": True}}
    assert short_config(bare) == "data_file=/a"
    assert not is_control({"method": "not_installed_here"}) and is_control({"method": "base"})
    assert is_control({"method": "renamed", "provenance": json.dumps(prov)})  # the record says control
    assert MethodDeclarations.from_record({"sweep": "k"}) is None  # malformed: not a list


def test_a_plugin_config_declares_its_roles() -> None:
    from dataclasses import dataclass

    from steerboard.leaderboard.ingest import short_config
    from steerboard.methods.base import Method, MethodConfig, detail_field, runtime_field, sweep_field

    @dataclass
    class Cfg(MethodConfig):
        scale: float = sweep_field(1.0)
        notes_file: str = detail_field("notes.txt")
        workers: int = runtime_field(2)
        rank: int = 4

    class Plug(Method):
        name = "plug"
        config_class = Cfg

    decl = Plug.declarations()
    assert decl.sweep == ("scale",) and "notes_file" in decl.detail and "workers" in decl.runtime
    assert Cfg(workers=8).fingerprint() == Cfg().fingerprint() != Cfg(rank=2).fingerprint()
    prov = Plug(Cfg(scale=3.0), "m").provenance(None)
    assert prov["resolved"]["notes_file"] == "notes.txt" and "workers" not in prov["resolved"]
    assert short_config(prov) == "scale=3.0, rank=4"  # the detail field and the default determinism left out


# ---------------------------------------------------------------- an entry-point plug-in from examples/
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def examples_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example packages pip-installed (not editable) into a fresh folder, as a user's package would be."""
    target = tmp_path_factory.mktemp("examples-site")
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--target", str(target),
        *(str(EXAMPLES / k) for k in ("reminder", "randdir", "orthogonalize")),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return target


def test_an_installed_plugin_gets_a_memory_estimate(
    examples_site: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: str
) -> None:
    from steerboard.resources import estimate_memory

    monkeypatch.syspath_prepend(str(examples_site))
    base = estimate_memory("base", {}, tiny_model_dir, max_connections=4, context_tokens=300)
    reminder = estimate_memory("ex_reminder", {}, tiny_model_dir, max_connections=4, context_tokens=300)
    randdir = estimate_memory("ex_randdir", {}, tiny_model_dir, max_connections=4, context_tokens=300)
    ortho = estimate_memory("ex_orthogonalize", {}, tiny_model_dir, max_connections=4, context_tokens=300)
    assert base is not None and reminder is not None and randdir is not None and ortho is not None
    assert reminder.parts == base.parts  # declares nothing: what every configuration needs
    assert randdir.parts == {**base.parts, "direction": 4 * 64}  # its own memory_parts (tiny model: hidden 64)
    # private weights: the default second copy of what the engine loads
    assert ortho.parts["second_weights_copy"] == base.parts["weights"] + base.parts["bf16_linear_copy"]
    assert ortho.total == base.total + ortho.parts["second_weights_copy"]


def test_an_installed_plugin_gets_board_labels_and_sweeps(
    examples_site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from steerboard.leaderboard.build import assemble, collect, load_reported
    from steerboard.leaderboard.ingest import ingest_logs, short_config
    from steerboard.leaderboard.listing import parse_listing
    from steerboard.leaderboard.synthetic import SYNTHETIC_LISTING, SyntheticRun, write_synthetic_log
    from steerboard.methods.base import method_declarations

    assert method_declarations("ex_randdir").sweep == ()  # not installed yet
    monkeypatch.syspath_prepend(str(examples_site))
    decl = method_declarations("ex_randdir")
    assert decl.sweep == ("coefficient",) and not decl.control
    # the row label of a recorded run, read from the installed plug-in's declarations (none in the record)
    prov = {"method": "ex_randdir", "resolved": {"layer": -1, "coefficient": 4.0, "seed": 0, "steer_on": "all",
                                                 "dtype": "float32", "matmul_dtype": "float32", "deterministic": True}}
    assert short_config(prov) == "layer=-1, coefficient=4.0, seed=0, steer_on=all"
    # unrecorded logs at two coefficients: a sweep along the declared axis, the point label leading with it
    listing = parse_listing(json.loads(json.dumps(SYNTHETIC_LISTING)))
    logs = tmp_path / "logs"
    logs.mkdir()
    for i, c in enumerate((2.0, 8.0)):
        run = SyntheticRun(task="xstest", method="ex_randdir", model_args={"seed": 1, "coefficient": c},
                           n_samples=10, seed=i, precision=None)
        write_synthetic_log(run, logs / f"{i}.eval")
    ingest_logs([logs], tmp_path / "r.duckdb", listing=listing, progress=False)
    view = assemble(collect(tmp_path / "r.duckdb", listing), listing, load_reported())
    (sweep,) = view["sweeps"]
    assert sweep["key"] == "coefficient" and sweep["x"] == [2.0, 8.0]
    assert sorted(r["short"] for r in view["rows"]) == ["coefficient=2.0 seed=1", "coefficient=8.0 seed=1"]
