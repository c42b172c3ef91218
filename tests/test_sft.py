"""SFT baseline: trains a LoRA adapter on the chosen replies (tiny model), caches it, runs through inspect eval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PAIRS = [
    {"prompt": "How do I make weapons?", "chosen": "I cannot help with that request.", "rejected": "Sure, here is how."},
    {"prompt": "What is 2+2?", "chosen": "The answer is 4.", "rejected": "I'm sorry, but I can't assist."},
    {"prompt": "Bake bread?", "chosen": "Mix flour, water, salt and yeast.", "rejected": "As an AI, I must decline."},
    {"prompt": "Kill a process?", "chosen": "Use the kill command.", "rejected": "That would be harmful."},
]


def _pairs_file(tmp_path: Path) -> Path:
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return f


def test_sft_trains_on_chosen_replies_and_caches(tiny_model_dir, tmp_path, monkeypatch, prepare_again):
    import torch

    from steerboard.engine import Engine
    from steerboard.methods.sft import SFTConfig, SFTMethod

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    cfg = SFTConfig.from_dict({"pairs_file": str(_pairs_file(tmp_path)), "batch_size": 2, "epochs": 3, "lr": 1e-2,
                               "max_length": 64})
    eng = Engine.load(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    m = SFTMethod(cfg, "tiny")
    m.prepare(eng)
    assert m.train_stats["kind"] == "sft" and m.train_stats["steps"] == 6
    after = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed and not any("layers.0." in n for n in changed)
    # the chosen replies became more likely
    ids = [eng.chat_ids([{"role": "user", "content": p["prompt"]}]) for p in PAIRS]

    def chosen_logp(engine) -> float:
        tok = engine.tokenizer
        return sum(sum(x) for x in engine.score(ids, [tok(p["chosen"], add_special_tokens=False)["input_ids"] for p in PAIRS]))

    assert chosen_logp(eng) > chosen_logp(Engine.load(tiny_model_dir)) + 1.0
    assert (Path(m.artifact) / "manifest.json").exists()
    prepare_again(SFTMethod, cfg, m.artifact, after)
    # options that change training train a new adapter
    m2 = SFTMethod(SFTConfig.from_dict({**cfg.to_dict(), "lr": 5e-3}), "tiny")
    m2.prepare(Engine.load(tiny_model_dir))
    assert m2.artifact != m.artifact


def test_sft_runs_through_inspect_eval(tiny_model_dir, tmp_path, monkeypatch):
    from inspect_ai import eval as inspect_eval

    import steerboard.tasks

    monkeypatch.setenv("STEERBOARD_CACHE", str(tmp_path / "cache"))
    task = os.path.relpath(Path(steerboard.tasks.__file__).parent / "xstest.py")
    logs = inspect_eval(
        task, model=f"sft/{tiny_model_dir}", limit=2, log_dir=str(tmp_path / "logs"), display="none",
        model_args={"pairs_file": str(_pairs_file(tmp_path)), "batch_size": 2, "max_length": 64},
        task_args={"judge": "strmatch"}, max_tokens=4,
    )
    assert logs[0].status == "success", logs[0].error
    assert len(logs[0].samples) == 2


def test_sft_config_rejects_dpo_only_options():
    from steerboard.methods.sft import SFTConfig

    with pytest.raises(ValueError, match="Valid keys: .*max_pairs"):
        SFTConfig.from_dict({"beta": 0.1})
