"""The ScoringModel protocol: the capability check on models that lack one, and steerboard's providers having it."""

from __future__ import annotations

import asyncio
import contextlib
import types
from typing import Any

import pytest

from steerboard.protocol import (
    CAPABILITIES,
    CapabilityError,
    ScoringModel,
    has_capability,
    providers_with,
    require_capability,
)


class _FullAPI:
    """Every member of the protocol, as a plug-in provider would write it."""

    supports_loglik = True
    supports_edit = True
    edit_prompt_suffix = ""

    async def loglik(self, input: Any, continuations: Any, **kw: Any) -> list[Any]:
        return []

    async def reference_reply(self, input: Any, max_tokens: int) -> list[int]:
        return []

    def decode(self, token_ids: Any) -> str:
        return ""

    @contextlib.asynccontextmanager
    async def edit(self, instance: Any):
        yield {}


class _Named:
    """An Inspect-``Model``-like object: ``api`` plus a name."""

    def __init__(self, api: Any, name: str) -> None:
        self.api, self._name = api, name

    def __str__(self) -> str:
        return self._name


def test_model_without_loglik_gets_one_line_naming_capability_providers_and_fallback():
    model = _Named(types.SimpleNamespace(), "hf/some-model")  # Inspect's hf/ has no loglik member
    with pytest.raises(CapabilityError) as info:
        require_capability(model, "loglik", task="mmlu (format=cloze)", fallback="-T format=letters")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("mmlu (format=cloze): model 'hf/some-model' cannot return log-likelihoods")
    assert "capability 'loglik'" in message
    assert "providers that can: base/, actadd/, dinm/, dpo/, prompt/, sae/, sft/ (or a plug-in method" in message
    assert message.endswith("or run -T format=letters, which needs none")
    assert isinstance(info.value, ValueError)  # `steerboard` prints a ValueError's message alone


def test_a_member_without_its_flag_or_a_flag_without_its_member_is_not_the_capability():
    opted_out = _FullAPI()
    opted_out.supports_loglik = False  # a method with supports_loglik = False
    assert isinstance(opted_out, ScoringModel) and not has_capability(opted_out, "loglik")
    flag_only = types.SimpleNamespace(supports_loglik=True, loglik=None)  # not callable
    assert not has_capability(flag_only, "loglik")
    no_suffix = types.SimpleNamespace(supports_edit=True, edit=lambda instance: None)
    assert not has_capability(no_suffix, "edit")
    with pytest.raises(CapabilityError, match="cannot return log-likelihoods of the unsteered model's own reply"):
        require_capability(_Named(opted_out, "x/y"), "reference", task="side_effects")


def test_a_full_provider_passes_and_comes_back_as_the_protocol():
    api = _FullAPI()
    model = _Named(api, "plugin/model")
    for capability in CAPABILITIES:
        assert require_capability(model, capability, task="t") is api
    assert require_capability(api, "loglik", task="t") is api  # a ModelAPI itself works too
    assert isinstance(api, ScoringModel) and not isinstance(types.SimpleNamespace(), ScoringModel)


def test_edit_is_offered_by_editing_providers_only():
    assert "dinm/" in providers_with("edit") and "base/" not in providers_with("edit")
    with pytest.raises(CapabilityError) as info:
        require_capability(_Named(types.SimpleNamespace(), "mockllm/model"), "edit",
                           task="safeedit (protocol=per_instance)", fallback="-T protocol=standard")
    message = str(info.value)
    assert "cannot edit its weights per instance" in message and "providers that can: dinm/" in message
    assert "apply_edit and restore" in message and message.endswith("or run -T protocol=standard, which needs none")


def test_unknown_capability_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown capability 'logits'; valid capabilities: loglik, reference, edit"):
        has_capability(_FullAPI(), "logits")


def test_inspect_models_without_the_members_lack_every_capability():
    from inspect_ai.model import get_model

    model = get_model("mockllm/model")
    assert not isinstance(model.api, ScoringModel)
    assert not any(has_capability(model, c) for c in CAPABILITIES)


def test_builtin_provider_satisfies_the_protocol(tiny_model_dir):
    from inspect_ai.model import get_model

    import steerboard._registry  # noqa: F401  (registers the method providers)

    base = get_model(f"base/{tiny_model_dir}")
    assert isinstance(base.api, ScoringModel)
    assert has_capability(base, "loglik") and has_capability(base, "reference") and not has_capability(base, "edit")
    api = require_capability(base, "reference", task="side_effects")
    msgs = [{"role": "user", "content": "Hello"}]

    async def go() -> tuple[list[int], Any, str]:
        reply = await api.reference_reply(msgs, 4)
        (scored,) = await api.loglik(msgs, [reply], reference=True)
        return reply, scored, api.decode(reply)

    reply, scored, text = asyncio.run(go())
    assert 1 <= len(reply) <= 5 and list(scored.token_ids) == reply and len(scored.logprobs) == len(reply)
    engine = base.api.engine
    assert text == engine.tokenizer.decode(reply, skip_special_tokens=True)
    assert base.api.edit_prompt_suffix == ""


def test_editing_provider_has_the_edit_capability(tiny_model_dir):
    from inspect_ai.model import get_model

    import steerboard._registry  # noqa: F401

    dinm = get_model(f"dinm/{tiny_model_dir}")  # built only: the method fits on first use
    assert isinstance(dinm.api, ScoringModel) and has_capability(dinm, "edit")
    assert isinstance(dinm.api.edit_prompt_suffix, str)
