"""Method knowledge lives in the method: memory parts and option roles are declared by each method class and its
config fields, and the memory estimate, cache keys, engine key and board labels read the declarations.

The figures and labels below were recorded from the name-based code these declarations replaced; they must not
move for the built-in methods.
"""

from __future__ import annotations

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
    ('sft', {}, 'cpu', [('process', 1572864000), ('weights', 694528), ('bf16_linear_copy', 294912), ('second_weights_copy', 989440), ('kv_cache', 2457600), ('scoring_logits', 3276800)]),
    ('sft', {'lora': False}, 'cuda', [('process', 1572864000), ('weights', 347264), ('second_weights_copy', 347264), ('kv_cache', 614400), ('scoring_logits', 3276800)]),
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

    monkeypatch.chdir(ROOT)  # pairs_file / instances_file name a file of the checkout
    rec = _record(method, args)
    assert ingest.short_config(rec) == short
    monkeypatch.setattr(ingest, "SHORT_CONFIG_CHARS", 10_000)
    assert ingest.short_config(rec) == full
    raw = {**args, **{k: v for k, v in DESCRIBED.get(method, {}).items() if k in ("strengths", "coefficient", "layer")}}
    assert build.short_config(raw) == point
    assert build._sweep_key(rec["resolved"]) == sweep
