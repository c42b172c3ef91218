"""bfloat16 linear layers inside ``batch_invariant``: a row's bits do not depend on its batch, whatever oneDNN's ISA.

Run under both ``ONEDNN_MAX_CPU_ISA=ALL`` (AMX where the CPU has it: fixed row blocks) and the default.
"""

from __future__ import annotations

import pytest
import torch

from steerboard import precision

SHAPES = [(576, 576), (576, 1536), (1536, 576)]  # SmolLM2-135M's decoder linear layers


@pytest.mark.parametrize(("width", "out"), SHAPES)
def test_a_row_gets_the_same_bits_for_any_row_count_and_order(width: int, out: int) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(width, out, bias=False))
    precision.enable(lin, "bfloat16")
    x = torch.randn(150, width) * 0.3
    perm = torch.randperm(150)
    with torch.inference_mode(), precision.batch_invariant():
        full = lin(x)
        bad = [m for m in (*range(1, 70), 100, 127, 128, 129) if not torch.equal(lin(x[:m]), full[:m])]
        shuffled = lin(x[perm])
        # 3-D input: rows are batch x tokens after flattening
        three = lin(x[:120].reshape(8, 15, width))
        three_part = lin(x[30:75].reshape(3, 15, width))
    assert bad == []
    assert torch.equal(shuffled, full[perm])
    assert three.shape == (8, 15, out)
    assert torch.equal(three.reshape(120, out), full[:120])
    assert torch.equal(three_part.reshape(45, out), full[30:75])


def test_screened_head_and_float32_head_are_row_invariant() -> None:
    """The greedy head's bfloat16 screen (oneDNN) and the float32 head (MKL, padded to 16 rows) per row."""
    torch.manual_seed(1)
    head = torch.nn.Linear(576, 4096, bias=False)
    h = torch.randn(80, 576)
    with torch.inference_mode(), precision.batch_invariant():
        tok = precision.screened_greedy(h, head)[0]
        logits = precision.row_invariant(lambda t: t @ head.weight.T, h)
        for m in (1, 2, 5, 16, 33, 64):
            assert torch.equal(precision.screened_greedy(h[:m], head)[0], tok[:m])
            assert torch.equal(precision.row_invariant(lambda t: t @ head.weight.T, h[:m]), logits[:m])


def test_row_blocks_pads_and_trims() -> None:
    calls: list[int] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[0])
        return t * 2

    x = torch.arange(70.0).reshape(35, 2)
    assert torch.equal(precision.row_blocks(fn, x, block=16), x * 2)
    assert calls == [16, 16, 16]


@pytest.mark.parametrize(
    ("cap", "allows"),
    [(None, True), ("", True), ("ALL", True), ("all", True), ("AVX512_CORE_AMX", True),
     ("AVX512_CORE_AMX_FP16", True), ("AVX512_CORE_BF16", False), ("AVX2", False)],
)
def test_cap_parsing(cap: str | None, allows: bool) -> None:
    assert precision._cap_allows_amx(cap) is allows


def test_decode_steps_use_their_own_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERBOARD_AMX_BLOCK_ROWS", raising=False)
    monkeypatch.delenv("STEERBOARD_AMX_DECODE_BLOCK_ROWS", raising=False)
    assert precision._block_rows() == precision.AMX_BLOCK_ROWS
    with precision.decode_blocks():
        assert precision._block_rows() == precision.AMX_BLOCK_ROWS  # default: the same size
    monkeypatch.setenv("STEERBOARD_AMX_DECODE_BLOCK_ROWS", "16")
    with precision.decode_blocks():
        assert precision._block_rows() == 16
    assert precision._block_rows() == precision.AMX_BLOCK_ROWS
    monkeypatch.setenv("STEERBOARD_AMX_BLOCK_ROWS", "32")
    monkeypatch.delenv("STEERBOARD_AMX_DECODE_BLOCK_ROWS")
    with precision.decode_blocks():
        assert precision._block_rows() == 32
