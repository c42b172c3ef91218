"""Shared fixtures: a tiny random-weight llama built offline, the embedded model (integration), mockllm
outputs and a rule-based fake judge."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from steerboard._runtime_env import configure_openmp

configure_openmp()  # before any test loads torch: the engine's OpenMP wait setting for the whole test process

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tests that ask for matmul_dtype=bfloat16 test the bfloat16 code path on every CPU (emulated by oneDNN where the
# CPU has no native bf16, as under `make test-avx2`); the fallback to float32 a user gets there is tested on its own
# (tests/test_precision.py, with this variable removed)
os.environ.setdefault("STEERBOARD_FORCE_BF16", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from steerboard.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: str):
    from steerboard.engine import Engine

    return Engine.load(tiny_model_dir)


@pytest.fixture
def prepare_again(tiny_model_dir: str):
    """Prepare a weight-changing method again on a fresh tiny engine, as a second use would.

    Returns ``run(method_class, config, artifact, weights) -> (engine, method)``, which checks that the
    method reused the cached ``artifact`` (no new fit) and serves exactly ``weights`` (name -> tensor).
    """

    def run(method_class: type, config: Any, artifact: str | None, weights: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        from steerboard.engine import Engine

        engine = Engine.load(tiny_model_dir)
        method = method_class(config, "tiny")
        method.prepare(engine)
        assert method.artifact == artifact
        for n, p in engine.model.named_parameters():
            assert torch.equal(p.detach(), weights[n]), n
        return engine, method

    return run


@pytest.fixture(scope="session")
def smol_engine():
    from steerboard.engine import Engine

    return Engine.load("smollm2-135m")


@pytest.fixture
def mock_outputs():
    """Turn texts into mockllm ``ModelOutput``s with token usage set (so Inspect needs no tokenizer download)."""
    from steerboard.tasks._testing import mock_output

    def make(texts: list[str]) -> list[Any]:
        return [mock_output(text) for text in texts]

    return make


class RuleJudge:
    """A judge for tests that decides by rules over (prompt, reply).

    ``fail`` gives a judge error (message ``error``); otherwise ``flag`` picks ``labels[0]`` (flagged, score
    1.0) or ``labels[1]`` (score 0.0).
    """

    def __init__(
        self,
        flag: Callable[[str, str], bool],
        labels: tuple[str, str],
        fail: Callable[[str, str], bool] = lambda prompt, reply: False,
        *,
        name: str = "fake",
        error: str = "fake failure",
    ) -> None:
        self.flag, self.labels, self.fail, self.name, self.error = flag, labels, fail, name, error

    async def judge(self, prompts: list[str], responses: list[str]) -> list[Any]:
        from steerboard.scorers.judges import Verdict

        out = []
        for p, r in zip(prompts, responses, strict=True):
            if self.fail(p, r):
                out.append(Verdict.failure(self.error))
            else:
                hit = bool(self.flag(p, r))
                out.append(Verdict(self.labels[0] if hit else self.labels[1], int(hit), float(hit)))
        return out


@pytest.fixture
def rule_judge() -> type[RuleJudge]:
    """The :class:`RuleJudge` class, for tests that swap a judge getter for a rule-based fake."""
    return RuleJudge


@pytest.fixture(scope="session")
def hostile_run():
    """Build a synthetic XSTest run whose method name, settings and every prompt and reply carry markup.

    Returns ``make(method, text, *, n_samples, seed, settings_key="note", **fields) -> SyntheticRun``; the
    leaderboard must show all of it as text.
    """
    from steerboard.leaderboard.synthetic import SyntheticRun

    def make(method: str, text: str, *, n_samples: int, seed: int, settings_key: str = "note", **fields: Any):
        return SyntheticRun(
            task="xstest", method=method, model_args={settings_key: text}, n_samples=n_samples, seed=seed,
            text_prefix=text, **fields,
        )

    return make


# Test modules whose assertions depend on the CPU's kernels (bit-exact batch invariance, thresholds on model
# scores, low-precision paths). `make test-avx2` runs them again with oneDNN and ATen capped to AVX2
# (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), the code path of an AVX2-only CPU, on whichever CPU is at
# hand; .ci/run does so after `make test`.
NUMERICS_MODULES = frozenset({
    "test_amx_blocks", "test_cost", "test_determinism", "test_engine", "test_precision", "test_prompt_gate",
    "test_sampling", "test_steering_gate", "test_actadd", "test_dinm",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in NUMERICS_MODULES:
            item.add_marker(pytest.mark.numerics)
