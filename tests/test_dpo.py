"""DPO baseline: config validation, pair data (disjoint from every evaluation item), training on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerboard.methods.fitdata import normalize


@pytest.fixture(scope="module")
def eval_prompt_texts() -> set[str]:
    """Normalised text of every string field of every evaluation file the tasks ship (test splits only)."""
    from steerboard.methods.editdata import eval_files, eval_strings
    from steerboard.tasks.jbb_refusal import load_jbb_records
    from steerboard.tasks.xstest import load_records

    folders = {f.parent.name for f in eval_files()}
    assert folders >= {"xstest", "jbb", "harmbench", "safeedit", "safemtdata", "mmlu", "truthfulqa", "gsm8k"}
    texts = eval_strings()
    assert len(texts) > 15000
    # the walk reads both CSV and JSON files: the longest XSTest prompt and JBB goal are in it
    for text in (max((r["prompt"] for r in load_records()), key=len), max((r["text"] for r in load_jbb_records()), key=len)):
        assert normalize(text) in texts
    return texts


def _disjoint(prompts: list[str], eval_texts: set[str]) -> list[str]:
    """Prompts that equal or contain an evaluation prompt (normalised)."""
    from steerboard.methods.fitdata import is_eval_text

    bad = []
    for p in prompts:
        n = normalize(p)
        if is_eval_text(p) or n in eval_texts or any(t in n for t in eval_texts):
            bad.append(p)
    return bad


def test_dpo_pairs_disjoint_from_every_eval_item(eval_prompt_texts):
    from steerboard.methods.editdata import DPO_FILE, load_dpo_pairs

    pairs = load_dpo_pairs()
    assert len(pairs) >= 1000
    assert _disjoint([p["prompt"] for p in pairs], eval_prompt_texts) == []
    assert len({normalize(p["prompt"]) for p in pairs}) == len(pairs)
    # balanced: harmful prompts prefer a refusal over the model's own judged-unsafe sample, benign ones a
    # helpful answer over a needless refusal
    harmful = [p for p in pairs if p["stratum"].startswith("harmful:")]
    benign = [p for p in pairs if p["stratum"].startswith("benign:")]
    assert len(harmful) == len(benign) == len(pairs) // 2
    assert all("harm judge embed: unsafe" in p["provenance"]["rejected"] for p in harmful)
    assert all("refusal" in p["provenance"]["rejected"] for p in benign)
    assert all(set(p["licence"]) == {"prompt", "chosen", "rejected"} for p in pairs)
    held = sum(p["split"] == "heldout" for p in pairs)
    assert 0.05 * len(pairs) < held < 0.15 * len(pairs)
    # the build summary next to the file records the file's hash
    import hashlib

    meta = json.loads(DPO_FILE.with_name("pairs.meta.json").read_text())
    assert meta["sha256"] == hashlib.sha256(DPO_FILE.read_bytes()).hexdigest() and meta["pairs"] == len(pairs)


def test_edit_instances_disjoint_from_every_eval_item(eval_prompt_texts):
    from steerboard.methods.editdata import load_edit_instances

    assert _disjoint([i.prompt for i in load_edit_instances()], eval_prompt_texts) == []


def test_disjointness_check_catches_overlap(eval_prompt_texts):
    """The check itself must flag an evaluation prompt, also when wrapped in an attack template."""
    from steerboard.methods.editdata import ATTACK_TEMPLATES
    from steerboard.tasks.xstest import load_records

    q = load_records()[0]["prompt"]
    assert _disjoint([q, ATTACK_TEMPLATES[0].format(q=q)], eval_prompt_texts) == [q, ATTACK_TEMPLATES[0].format(q=q)]


def test_config_validation(tmp_path):
    from steerboard.methods.dpo import DPOConfig, load_pairs

    with pytest.raises(ValueError, match="lr must be > 0"):
        DPOConfig.from_dict({"lr": "0"})
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOConfig.from_dict({"beta": -1})
    with pytest.raises(ValueError, match="Valid keys: .*beta"):
        DPOConfig.from_dict({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="pairs_file"):
        DPOConfig.from_dict({"pairs_file": str(tmp_path / "missing.jsonl")})
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"prompt": "hi", "chosen": "", "rejected": "no"}) + "\n")
    with pytest.raises(ValueError, match="pair 0 .* chosen"):
        load_pairs(DPOConfig(pairs_file=str(f)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no DPO preference pairs"):
        load_pairs(DPOConfig(pairs_file=str(empty)))
    missing = tmp_path / "missing_key.jsonl"
    missing.write_text(json.dumps({"prompt": "hi", "chosen": "yes"}) + "\n")
    with pytest.raises(ValueError, match="pair 0 .* rejected"):
        load_pairs(DPOConfig(pairs_file=str(missing)))
    # a prompt that is an evaluation prompt: refused before any training
    from steerboard.tasks.xstest import load_records

    leak = tmp_path / "leak.jsonl"
    leak.write_text(json.dumps({"prompt": "Fine prompt?", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": load_records()[0]["prompt"], "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="pair 1 .* equals an evaluation prompt"):
        load_pairs(DPOConfig(pairs_file=str(leak)))
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"prompt": "Fine prompt?", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="max_pairs=2 but .* has 1 pairs"):
        load_pairs(DPOConfig(pairs_file=str(ok), max_pairs=2))
    assert DPOConfig(max_batch_size=3).fingerprint() == DPOConfig().fingerprint()
    assert DPOConfig(beta=0.2).fingerprint() != DPOConfig().fingerprint()


def test_dpo_trains_on_tiny_model_and_caches(tiny_model_dir, tmp_path, monkeypatch, prepare_again):
    import torch

    from steerboard.engine import Engine
    from steerboard.methods.dpo import DPOConfig, DPOMethod

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    pairs = [
        {"prompt": "How do I make weapons?", "chosen": "I cannot help with that request.", "rejected": "Sure, here is how."},
        {"prompt": "What is 2+2?", "chosen": "The answer is 4.", "rejected": "I'm sorry, but I can't assist."},
        {"prompt": "Bake bread?", "chosen": "Mix flour, water, salt and yeast.", "rejected": "As an AI, I must decline."},
        {"prompt": "Kill a process?", "chosen": "Use the kill command.", "rejected": "That would be harmful."},
    ]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cfg = DPOConfig.from_dict({"pairs_file": str(f), "batch_size": 2, "epochs": 2, "lr": 5e-3, "max_length": 128})
    eng = Engine.load(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    m = DPOMethod(cfg, "tiny")
    m.prepare(eng)
    assert m.train_stats and m.train_stats["steps"] == 4 and m.train_stats["pairs"] == 4
    after = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    assert set(after) == set(before)  # adapter merged: the plain architecture is served
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any("q_proj" in n for n in changed) and any("down_proj" in n for n in changed)
    assert not any("layers.0." in n or "layers.1." in n for n in changed)  # LoRA only in the top half
    assert not any("embed" in n or "norm" in n for n in changed)  # LoRA touches only linear layers
    # the chosen answer gained log-probability relative to the rejected one
    ids = [eng.chat_ids([{"role": "user", "content": p["prompt"]}]) for p in pairs]

    def margin(engine) -> float:
        tok = engine.tokenizer
        ch = engine.score(ids, [tok(p["chosen"], add_special_tokens=False)["input_ids"] for p in pairs])
        rj = engine.score(ids, [tok(p["rejected"], add_special_tokens=False)["input_ids"] for p in pairs])
        return sum(sum(c) - sum(r) for c, r in zip(ch, rj, strict=True))

    base = Engine.load(tiny_model_dir)
    assert margin(eng) > margin(base)
    # second use: loaded from the cache, identical weights, no training
    eng2, _ = prepare_again(DPOMethod, cfg, m.artifact, after)
    # generation still works through the engine
    from steerboard.engine import GenerationRequest

    out = eng2.generate([GenerationRequest(input_ids=ids[0], max_new_tokens=4)])
    assert out[0].output_tokens >= 1


def test_entry_point_resolves_dpo(tiny_model_dir, tmp_path, monkeypatch):
    from inspect_ai.model import get_model

    from steerboard.methods.registry import method_entry_points

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    assert method_entry_points()["dpo"] == "steerboard.methods.dpo:DPOMethod"
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}) + "\n")
    model = get_model(f"dpo/{tiny_model_dir}", pairs_file=str(f), batch_size=1, max_length=64)
    assert model.api.method.name == "dpo"
    assert model.api.engine is not None  # weights load and the adapter trains on first use
    assert model.api.method.train_stats["steps"] == 1
    with pytest.raises(ValueError, match="lr must be > 0"):
        get_model(f"dpo/{tiny_model_dir}", lr=0)


def test_artifact_sha_is_the_weights_only(tmp_path):
    """Two trainings with the same weights share the artifact sha256 (and so the settings key) although their
    folders differ in timings and peft's module order."""
    from steerboard.methods.base import file_sha256
    from steerboard.methods.dpo import weights_file

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, stats, modules in ((a, '{"seconds": 1.0}', '["q_proj", "v_proj"]'), (b, '{"seconds": 2.5}', '["v_proj", "q_proj"]')):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"same weights")
        (folder / "train_stats.json").write_text(stats)
        (folder / "adapter_config.json").write_text(f'{{"target_modules": {modules}}}')
    assert file_sha256(a) != file_sha256(b)
    assert file_sha256(weights_file(a)) == file_sha256(weights_file(b))
    (b / "adapter_model.safetensors").write_bytes(b"other weights")
    assert file_sha256(weights_file(a)) != file_sha256(weights_file(b))


def test_max_pairs_is_a_seeded_stratified_sample_not_a_prefix(tmp_path):
    from steerboard.methods.dpo import DPOConfig, load_pairs

    rows = [{"prompt": f"harmful request number {i}?", "chosen": "No.", "rejected": "Sure.", "stratum": "harmful:x"}
            for i in range(30)]
    rows += [{"prompt": f"benign request number {i}?", "chosen": "Yes.", "rejected": "No.", "stratum": "benign:y"}
             for i in range(10)]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = load_pairs(DPOConfig(pairs_file=str(f), max_pairs=8))
    assert len(a) == 8
    assert sum(p["stratum"] == "benign:y" for p in a) == 2  # 10/40 of 8, although the file starts with 30 harmful
    assert [p["prompt"] for p in a] != [r["prompt"] for r in rows[:8]]
    assert a == load_pairs(DPOConfig(pairs_file=str(f), max_pairs=8))  # seeded
    assert a != load_pairs(DPOConfig(pairs_file=str(f), max_pairs=8, seed=1))


def test_adapter_sha256_mismatch_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from steerboard.engine import Engine
    from steerboard.methods.dpo import DPOConfig, DPOMethod, weights_file

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}) + "\n")
    cfg = DPOConfig.from_dict({"pairs_file": str(f), "batch_size": 1, "max_length": 64})
    m = DPOMethod(cfg, "tiny")
    m.prepare(Engine.load(tiny_model_dir))
    manifest = json.loads((Path(m.artifact) / "manifest.json").read_text())
    assert manifest["sha256"] and manifest["config_fingerprint"] == cfg.fingerprint()
    w = weights_file(m.artifact)
    w.write_bytes(w.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        DPOMethod(cfg, "tiny").prepare(Engine.load(tiny_model_dir))


def test_heldout_pairs_are_not_trained_and_are_measured(tiny_model_dir, tmp_path, monkeypatch):
    from steerboard.engine import Engine
    from steerboard.methods.dpo import DPOConfig, DPOMethod

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    rows = [{"prompt": f"Question {i}?", "chosen": "Answer.", "rejected": "No.", "stratum": "benign:t",
             "split": "heldout" if i < 2 else "train"} for i in range(6)]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = DPOMethod(DPOConfig.from_dict({"pairs_file": str(f), "batch_size": 2, "max_length": 64, "lr": 5e-3}), "tiny")
    m.prepare(Engine.load(tiny_model_dir))
    st = m.train_stats
    assert st["train_pairs"] == 4 and st["heldout_pairs"] == 2 and st["steps"] == 2
    h = st["heldout"]
    assert h["pairs"] == 2 and 0 <= h["preference_accuracy"] <= 1 and h["kl_pairs"] == 2
    assert h["kl_to_base_benign_per_token"] > 0  # the adapter moved the policy
    assert st["curve"] and "loss" in st["curve"][0]


def test_shipped_adapter_is_loaded_without_training(tiny_model_dir, tmp_path, monkeypatch):
    """``python -m steerboard.methods.dpo train --ship`` writes the adapter + manifest; the method then loads it for
    the embedded model instead of training, checks its sha256, and retrains when an option changes training."""
    import steerboard.methods.dpo as dpo
    from steerboard.engine import Engine

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dpo, "ARTIFACT_DIR", tmp_path / "artifacts")
    monkeypatch.setattr(dpo, "EMBEDDED_MODEL_NAMES", (tiny_model_dir,))
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": "Answer.", "rejected": "No.",
                                     "split": "heldout" if i == 0 else "train"}) + "\n" for i in range(3)))
    opts = ["-M", f"pairs_file={f}", "-M", "batch_size=1", "-M", "max_length=64"]
    assert dpo.main(["train", "--model", tiny_model_dir, "--ship", *opts]) == 0
    ship = tmp_path / "artifacts" / "dpo-smollm2-135m"
    assert (ship / "manifest.json").exists() and (ship / "train_stats.json").exists()

    def no_training(*a, **k):
        raise AssertionError("trained although a matching adapter is shipped")

    from steerboard.methods.training import preference

    monkeypatch.setattr(preference, "train_adapter", no_training)
    cfg = dpo.DPOConfig.from_dict({"pairs_file": str(f), "batch_size": 1, "max_length": 64})
    m = dpo.DPOMethod(cfg, tiny_model_dir)
    m.prepare(Engine.load(tiny_model_dir))
    assert m.shipped and m.artifact == str(ship) and m.train_stats["heldout"]["pairs"] == 1
    assert m.describe()["artifacts"]["adapter"]["shipped"] is True
    with pytest.raises(AssertionError, match="trained although"):  # another beta: retrains
        dpo.DPOMethod(dpo.DPOConfig.from_dict({**cfg.to_dict(), "beta": 0.3}), tiny_model_dir).prepare(
            Engine.load(tiny_model_dir))
    w = dpo.weights_file(ship)
    w.write_bytes(b"\x00" + w.read_bytes()[1:])
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        dpo.DPOMethod(cfg, tiny_model_dir).prepare(Engine.load(tiny_model_dir))


def test_tune_grid_is_validated_before_any_model_work(monkeypatch):
    """``python -m steerboard.methods.dpo tune``: a malformed grid, a key fixed twice, an unknown key or a bad value
    fail with one line before any engine loads."""
    from steerboard.methods.dpo import DPOConfig
    from steerboard.methods.training import preference

    def no_load(*a, **k):
        raise AssertionError("loaded a model before validating the grid")

    monkeypatch.setattr("steerboard.engine.Engine.load", no_load)
    combos = preference.parse_grid(["beta=0.1,0.5", "lr=5e-5, 2e-4"], DPOConfig, {"max_pairs": "500"})
    assert combos[0] == {"max_pairs": "500", "beta": "0.1", "lr": "5e-5"} and len(combos) == 4
    assert combos[-1] == {"max_pairs": "500", "beta": "0.5", "lr": "2e-4"}
    for grid, fixed, msg in ((["beta"], {}, "expected KEY=V1,V2"), (["beta=0.1", "beta=0.2"], {}, "given twice"),
                             (["beta=0.1"], {"beta": "0.2"}, "given twice"), ([], {}, "at least one --grid"),
                             (["betta=0.1"], {}, "unknown -M option"), (["beta=0.1,-1"], {}, "beta")):
        with pytest.raises(ValueError, match=msg):
            preference.parse_grid(grid, DPOConfig, fixed)
    with pytest.raises(ValueError, match="given twice"):
        preference.main(["tune", "--grid", "beta=0.1", "-M", "beta=0.2"])


def test_tune_screens_dev_prompts_no_pair_contains():
    """The dev screen leaves out every dev prompt that is, or is inside, a shipped pair's prompt (the pairs are built
    from the whole fit pool)."""
    from steerboard.methods import fitdata
    from steerboard.methods.dpo import DPOConfig, load_pairs
    from steerboard.methods.training.preference import dev_prompts

    pairs = load_pairs(DPOConfig())
    harmful, benign = dev_prompts(pairs)
    seen = [p["prompt"].strip() for p in pairs]
    for p in harmful + benign:
        assert not any(p.strip() in q for q in seen)
    assert len(harmful) >= 80 and len(benign) >= 80
    in_pairs = [p for p in fitdata.harmful_prompts("dev") if p.strip() in set(seen)]
    assert in_pairs and not set(in_pairs) & set(harmful)  # the overlap exists and is removed


def test_tune_trains_each_option_set_and_picks_the_best_dev_score(tiny_model_dir, tmp_path, monkeypatch):
    """Each grid point trains once (cached: a second tune trains nothing) and the report's chosen options are the
    row with the highest dev score."""
    from steerboard.methods.training import gates, preference

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": "Answer.", "rejected": "No.",
                                     "split": "heldout" if i == 0 else "train"}) + "\n" for i in range(3)))
    monkeypatch.setattr(preference, "dev_prompts", lambda pairs: (["How do I pick a lock?"], ["How do I bake bread?"]))
    scores = iter([0.0, 0.2, 0.7, 0.0, 0.2, 0.7])  # base, lr=1e-3, lr=5e-3 (twice)

    def fake_row(self, engine, intervention, harmful, benign):
        assert intervention is None and harmful == ["How do I pick a lock?"]
        return {"refusal_harmful": 0.0, "refusal_benign": 0.0, "degenerate": 0.0, "judge_errors": 0,
                "score": next(scores), "sample": ""}

    monkeypatch.setattr(gates.DevScreen, "row", fake_row)
    combos = preference.parse_grid(["lr=1e-3,5e-3"], preference.DPOConfig,
                                   {"pairs_file": str(f), "batch_size": "1", "max_length": "64"})
    rep = preference.tune_adapter("dpo", tiny_model_dir, combos, progress=False)
    assert rep["chosen"]["lr"] == "5e-3" and len(rep["rows"]) == 3 and rep["rows"][0]["options"] is None
    assert all(r["steps"] == 2 and r["heldout"]["preference_accuracy"] is not None for r in rep["rows"][1:])
    assert "(chosen)" in preference._tune_table(rep).splitlines()[-1]

    def no_training(*a, **k):
        raise AssertionError("retrained a cached grid point")

    monkeypatch.setattr(preference, "train_artifact", no_training)
    assert preference.tune_adapter("dpo", tiny_model_dir, combos, progress=False)["chosen"]["lr"] == "5e-3"
