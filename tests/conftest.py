"""Shared fixtures: a tiny random-weight llama built offline, and the embedded model (integration)."""

from __future__ import annotations

import os

import pytest

import steerboard  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from steerboard.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: str):
    from steerboard.engine import Engine

    return Engine.load(tiny_model_dir)


@pytest.fixture(scope="session")
def smol_engine():
    from steerboard.engine import Engine

    return Engine.load("smollm2-135m")


@pytest.fixture
def mock_outputs():
    """Turn texts into mockllm ``ModelOutput``s with token usage set (so Inspect needs no tokenizer download)."""
    from inspect_ai.model import ModelOutput, ModelUsage

    def make(texts: list[str]) -> list[ModelOutput]:
        outs = []
        for text in texts:
            o = ModelOutput.from_content("mockllm/model", text)
            o.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
            outs.append(o)
        return outs

    return make
