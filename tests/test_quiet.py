"""Library noise users cannot act on is filtered once a steerboard provider loads a model."""

from __future__ import annotations

import logging
import warnings

import pytest


@pytest.fixture()
def fresh_quiet(monkeypatch: pytest.MonkeyPatch):
    from steerboard.methods import provider

    monkeypatch.setattr(provider, "_QUIET", False)
    monkeypatch.delenv("STEERBOARD_LIBRARY_NOISE", raising=False)
    gen_logger = logging.getLogger("transformers.utils.generic")
    before = list(gen_logger.filters)
    from transformers.utils import logging as hf_logging

    yield provider
    gen_logger.filters[:] = before
    hf_logging.enable_progress_bar()


def test_engine_forward_prints_no_deprecation_noise(fresh_quiet, tiny_engine) -> None:
    from transformers.utils import logging as hf_logging

    from steerboard.engine import GenerationRequest

    ids = tiny_engine.chat_ids([{"role": "user", "content": "hello"}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh_quiet.quiet_library_noise()
        tiny_engine.generate([GenerationRequest(input_ids=ids, max_new_tokens=3)])
        msg = "`past_key_values` is deprecated and will be removed in version 9 for `X.forward`."
        warnings.warn(msg, FutureWarning, stacklevel=1)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    assert not hf_logging.is_progress_bar_enabled()
    record = logging.LogRecord("transformers.utils.generic", logging.WARNING, "", 0,
                               "`past_key_values`/`cache_params` are deprecated. Use `cache` instead.", None, None)
    assert not logging.getLogger("transformers.utils.generic").filter(record)
    other = logging.LogRecord("transformers.utils.generic", logging.WARNING, "", 0, "something else", None, None)
    assert logging.getLogger("transformers.utils.generic").filter(other)


def test_noise_can_be_kept(fresh_quiet, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("STEERBOARD_LIBRARY_NOISE", "1")
    fresh_quiet.quiet_library_noise()
    assert hf_logging.is_progress_bar_enabled()
