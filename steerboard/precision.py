"""Reduced-precision matmuls for float32 models on CPUs with native bfloat16 (AMX / AVX512-BF16).

On the 2-core CPUs steerboard targets, decode time is ~70 % ``aten::mm`` in float32. Intel CPUs with AMX
(Sapphire Rapids and later) or AVX512-BF16 run bfloat16 matmuls through oneDNN at a multiple of the
float32 rate, and halve the weight bytes read per decode step. ``matmul_dtype="bfloat16"`` runs every
``nn.Linear`` of the decoder blocks in bfloat16 on weights cast **once** (kept beside the float32
ones), while everything else stays float32: the residual stream, norms, attention softmax and, by
default, the output head (the head decides greedy ties, so it is left exact). Measured on the embedded
model: ~1.5-2x decode throughput; greedy texts equal the float32 ones for roughly 60 % of prompts
(the rest diverge after a near-tie, typically many tokens in), see the README.

Why not ``torch.autocast``: CPU autocast re-casts weights on every call unless they are grad-requiring
leaves inside one long autocast region, also runs attention in bfloat16, and measured slower
(357 vs 445 tok/s) with fewer greedy matches (33 vs 40 of 64) than this.

Correctness rules:
* A weight changed in place (DINM edits, weight restore) is re-cast on the next call: the cached
  copy is keyed by the tensor's version counter and storage pointer. Writes through ``.data``
  bypass the counter: call :func:`refresh` (``Engine.weights_changed()``) after them -- the
  method provider does so after ``prepare()`` and around ``edit()`` of weight-changing methods.
* With autograd on (training, DINM's tuning steps, DPO), the layer runs exactly in float32.
* ``matmul_dtype="float32"`` (or ``disable``) restores plain ``nn.Linear`` behaviour.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MatmulDtype = Literal["auto", "float32", "bfloat16"]
MATMUL_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
_MARK = "_steerboard_lowp"
_LOCAL = threading.local()


@contextlib.contextmanager
def exact() -> Iterator[None]:
    """Within this block (this thread only), low-precision layers compute exactly in float32.

    For computations whose parts must agree to float32 precision, e.g. DINM's cached-prefix
    training, whose reference logits (no grad) and tuning steps (grad) must see the same model.
    """
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


# oneDNN ISA names (``$ONEDNN_MAX_CPU_ISA``) below which bfloat16 has no native dot product
_NO_BF16_ISAS = frozenset({
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
})
# ATen kernel levels (``$ATEN_CPU_CAPABILITY``) that stand for a CPU without AVX-512
_NO_AVX512_ATEN = frozenset({"default", "avx2"})


def isa_cap() -> str | None:
    """The oneDNN ISA cap in force (``$ONEDNN_MAX_CPU_ISA`` or ``$DNNL_MAX_CPU_ISA``, upper case), or None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def emulated_without_bf16() -> bool:
    """Whether the environment makes this process behave as on a CPU without native bfloat16.

    ``ONEDNN_MAX_CPU_ISA=AVX2`` (any ISA below ``AVX512_CORE_BF16``) caps oneDNN's kernels, and
    ``ATEN_CPU_CAPABILITY=avx2`` (or ``default``) caps ATen's; either one also turns off precision detection's
    bfloat16, so ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` runs an AVX-512/AMX machine down the code
    path of an AVX2-only CPU (float32 matmuls, no row blocks). Both variables are read by torch once, at its first
    use, so set them before the process starts (``make test-avx2`` does).
    """
    cap = isa_cap()
    aten = (os.environ.get("ATEN_CPU_CAPABILITY") or "").strip().lower()
    return (cap is not None and cap in _NO_BF16_ISAS) or aten in _NO_AVX512_ATEN


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16) and the environment does not
    cap the kernels below that (:func:`emulated_without_bf16`)."""
    import torch

    if emulated_without_bf16():
        return False
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - private torch API changed
            pass
    try:  # fallback for torch builds without the probes above
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
        return " amx_bf16" in flags or " avx512_bf16" in flags
    except OSError:  # pragma: no cover - non-Linux
        return False


def cpu_kind() -> str:
    """``amx``, ``avx512_bf16`` or ``no_bf16`` (an AVX2-only CPU, or one capped to behave as one): which of the
    engine's CPU code paths this process takes. Recorded in every log's runtime."""
    if not cpu_has_fast_bf16():
        return "no_bf16"
    return "amx" if _cap_allows_amx(isa_cap()) and _cpu_has_amx() else "avx512_bf16"


def native_matmul_note(requested: str | None, device: str | None) -> str | None:
    """The one-line note for an explicit ``matmul_dtype=bfloat16`` that this CPU cannot run natively, else None.

    Cheap (no weights): :class:`~steerboard.methods.base.MethodConfig` calls it before any model loads, and
    :func:`resolve_matmul_dtype` falls back to float32 with the same words.
    """
    if (requested or "auto") != "bfloat16" or not str(device or "cpu").startswith("cpu"):
        return None
    if cpu_has_fast_bf16():
        return None
    return (
        "matmul_dtype=bfloat16: this CPU has no native bfloat16 (no AVX512-BF16 or AMX"
        + (", or the kernels are capped by ONEDNN_MAX_CPU_ISA/ATEN_CPU_CAPABILITY" if emulated_without_bf16() else "")
        + "); running float32 matmuls instead (set STEERBOARD_FORCE_BF16=1 to emulate bfloat16 anyway, slowly)"
    )


def resolve_matmul_dtype(requested: str | None, device: str, model_dtype: Any) -> str:
    """The matmul dtype to use: ``auto`` -> bfloat16 for float32 models on CPUs with native bf16, else
    the model's own dtype (``float32``, ``bfloat16``, ``float16``). An explicit ``bfloat16`` for a float32 model
    on a CPU without native bf16 runs float32 (with a one-line warning, :func:`native_matmul_note`) unless
    ``$STEERBOARD_FORCE_BF16=1``.

    ``$STEERBOARD_MATMUL_DTYPE`` overrides ``auto`` (not an explicit request).

    Raises:
        ValueError: an unknown value (names the valid ones).
    """
    import torch

    value = requested or "auto"
    explicit = value != "auto"
    if value == "auto":
        value = os.environ.get("STEERBOARD_MATMUL_DTYPE", "auto") or "auto"
    if value not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}; got {value!r}")
    if value == "bfloat16" and model_dtype == torch.float32 and os.environ.get("STEERBOARD_FORCE_BF16") != "1":
        note = native_matmul_note(value, device)
        if note is not None:
            if explicit:
                logger.warning(note)
            return "float32"
    if value != "auto":
        return value
    if str(device).startswith("cpu") and model_dtype == torch.float32 and cpu_has_fast_bf16():
        return "bfloat16"
    return str(model_dtype).removeprefix("torch.")


def _version(t: torch.Tensor) -> tuple[int, int] | None:
    """(version counter, storage pointer): changes on any in-place write or re-assignment."""
    try:
        return (t._version, t.data_ptr())
    except RuntimeError:  # an inference-mode tensor has no version counter: never trust the cache
        return None


@functools.lru_cache(maxsize=4)
def packed_linear_available(dtype_name: str = "bfloat16") -> bool:
    """Whether oneDNN's prepacked linear (``mkldnn._linear_pointwise``) works here and equals ``F.linear``.

    ``F.linear`` on bfloat16 CPU tensors hands oneDNN a plain row-major weight, which it re-lays out into
    its blocked (AMX) format on every call; for decode-sized inputs that reorder costs about as much as
    the multiply. Packing each weight once (``mkldnn._reorder_linear_weight``, what inductor's CPU backend
    does) measured 2.0-2.4x faster on SmolLM2-135M's MLP matmuls at batch 16 and 1.3-2x at 64, with
    bit-identical results. The op is private to torch, so this probes it once and falls back to
    ``F.linear`` when it is missing or disagrees.
    """
    import torch
    import torch.nn.functional as F

    if os.environ.get("STEERBOARD_PACKED_LINEAR", "1") == "0":
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        dtype = getattr(torch, dtype_name)
        g = torch.Generator().manual_seed(0)
        w = torch.randn(48, 40, generator=g).to(dtype)
        b = torch.randn(48, generator=g).to(dtype)
        x = torch.randn(3, 5, 40, generator=g).to(dtype)
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
            return bool(torch.equal(y, F.linear(x, w, b)))
    except Exception:  # noqa: BLE001 - any failure means: use the plain path
        return False


def _cast_input(x: torch.Tensor, dtype: Any) -> torch.Tensor:
    """``x.to(dtype)``, reusing the previous call's cast when ``x`` is the very same tensor.

    q/k/v (and gate/up) projections are called one after another on the same hidden-state tensor; one
    cast instead of three saves ~25 us a call (90 casts a decode step on the embedded model). The cache
    holds one entry (per thread) and is keyed by identity, storage pointer and shape.
    """
    last = getattr(_LOCAL, "cast", None)
    if last is not None and last[0] is x and last[1] == (x.data_ptr(), x.shape, dtype):
        return last[2]
    xl = x.to(dtype)
    _LOCAL.cast = (x, (x.data_ptr(), x.shape, dtype), xl)
    return xl


def _lowp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    w = self.weight
    if torch.is_grad_enabled() or x.dtype != w.dtype or getattr(_LOCAL, "depth", 0):
        return F.linear(x, w, self.bias)  # training or an already-low-precision input: exact path
    dtype, key, wl, bl, packed = getattr(self, _MARK)
    now = (_version(w), None if self.bias is None else _version(self.bias))
    if key != now or (wl is None and packed is None) or now[0] is None:
        with torch.no_grad():
            wl = w.detach().to(dtype)
            bl = None if self.bias is None else self.bias.detach().to(dtype)
            packed = None
            if w.device.type == "cpu" and packed_linear_available(str(dtype).removeprefix("torch.")):
                packed = torch.ops.mkldnn._reorder_linear_weight(wl)
                wl = None  # the packed copy replaces the plain one
        object.__setattr__(self, _MARK, (dtype, now, wl, bl, packed))
    xl = _cast_input(x, dtype)
    if packed is not None:
        def fn(t: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(t, packed, bl, "none", [], "")
    else:
        def fn(t: torch.Tensor) -> torch.Tensor:
            return F.linear(t, wl, bl)
    if getattr(_LOCAL, "invariant", 0) and xl.device.type == "cpu":
        rows = xl.reshape(-1, xl.shape[-1])  # [batch, tokens, in] -> [batch * tokens, in]
        if row_blocks_needed():
            return row_blocks(fn, rows).reshape(*x.shape[:-1], -1).to(x.dtype)
        if rows.shape[0] == 1:
            # oneDNN multiplies a lone row with another kernel than two or more (it rounds differently: seen on
            # SmolLM2's 1536-wide down projection); a zero second row keeps a batch of one like any other
            return row_invariant(fn, rows, min_rows=2).reshape(*x.shape[:-1], -1).to(x.dtype)
    return fn(xl).to(x.dtype)


AMX_BLOCK_ROWS = 64
"""Rows per oneDNN call on the AMX path of :func:`batch_invariant` (``$STEERBOARD_AMX_BLOCK_ROWS`` overrides).

oneDNN's AMX bfloat16 kernels round a row differently depending on how many rows the call has (which counts
differ depends on the shape and the thread count), so under :func:`batch_invariant` the rows are multiplied in
blocks of exactly this many, the last one padded with zero rows: oneDNN then always sees the same shape and a
row's bits do not depend on the other rows (any row count and order on SmolLM2-135M's shapes, tested with
this size in tests/test_amx_blocks.py; 16 and 32 did as well). 64 against 32 (benchmarks/amx_blocks.py,
docs/engine.md): faster prefill, and faster generation at 64 prompts, ~6 % slower generation at 32."""


def _cap_allows_amx(cap: str | None) -> bool:
    """Whether a ``ONEDNN_MAX_CPU_ISA`` value lets oneDNN use AMX (unset, ``ALL`` or an ``*AMX*`` ISA)."""
    cap = (cap or "ALL").strip().upper()
    return cap == "ALL" or "AMX" in cap


def _cpu_has_amx() -> bool:
    import torch

    fn = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if fn is not None and fn():
            return True
    except Exception:  # pragma: no cover - private torch API changed
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
        return " amx_bf16" in flags
    except OSError:  # pragma: no cover - non-Linux
        return False


def _row_count_changes_bits() -> bool:
    """Probe: does a bfloat16 oneDNN linear (SmolLM2's 1536 -> 576 shape) give a row other bits at another row count?"""
    import torch

    if not packed_linear_available("bfloat16"):
        return False
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(576, 1536, generator=g) * 0.05).to(torch.bfloat16)
    x = (torch.randn(64, 1536, generator=g) * 0.3).to(torch.bfloat16)
    with torch.inference_mode():
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        full = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return any(
            not torch.equal(torch.ops.mkldnn._linear_pointwise(x[:m], packed, None, "none", [], ""), full[:m])
            for m in range(2, 64)
        )


@functools.lru_cache(maxsize=1)
def row_blocks_needed() -> bool:
    """Whether bfloat16 linear layers run in fixed row blocks (:data:`AMX_BLOCK_ROWS`) under :func:`batch_invariant`.

    True when oneDNN may use AMX here: the CPU has AMX and ``$ONEDNN_MAX_CPU_ISA`` (``$DNNL_MAX_CPU_ISA``)
    does not cap it below, or a probe finds a row's bits depending on the row count anyway (oneDNN reads the
    cap once, at its first use, so a value changed later is not what it runs with). ``$STEERBOARD_AMX_BLOCK_ROWS=0``
    turns the blocks off. Decided once per process.
    """
    if os.environ.get("STEERBOARD_AMX_BLOCK_ROWS", "").strip() == "0":
        return False
    try:
        return (_cap_allows_amx(isa_cap()) and _cpu_has_amx()) or _row_count_changes_bits()
    except Exception:  # noqa: BLE001 - a failed probe: block, which is only slower
        return True


AMX_DECODE_BLOCK_ROWS: int | None = None
"""Rows per oneDNN call on the AMX path in generation's one-token decode steps (inside :func:`decode_blocks`;
``$STEERBOARD_AMX_DECODE_BLOCK_ROWS`` overrides); ``None``: :data:`AMX_BLOCK_ROWS`. A decode step has one row
per live request, so a smaller size wastes less padding when few requests run at once and costs more calls
when many do: on the 2-core AMX machine, 16 rows gave +15 % generation at 16 prompts and -13 % at 64
(benchmarks/amx_blocks.py, docs/engine.md), so the default stays 64. Invariance holds with any value, since
every decode step of every request uses this size and every prefill or scoring pass the other one: which
size computes a position depends on the phase, never on the batch."""


def _env_rows(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


def _block_rows() -> int:
    rows = _env_rows("STEERBOARD_AMX_BLOCK_ROWS", AMX_BLOCK_ROWS)
    if getattr(_LOCAL, "decode", 0):
        return _env_rows("STEERBOARD_AMX_DECODE_BLOCK_ROWS", AMX_DECODE_BLOCK_ROWS or rows)
    return rows


@contextlib.contextmanager
def decode_blocks() -> Iterator[None]:
    """Within this block (this thread only), the AMX row blocks of :func:`batch_invariant` have
    :data:`AMX_DECODE_BLOCK_ROWS` rows: generation's decode steps run in it."""
    _LOCAL.decode = getattr(_LOCAL, "decode", 0) + 1
    try:
        yield
    finally:
        _LOCAL.decode -= 1


def row_blocks(fn: Any, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` on 2-D ``x`` ``[rows, in]``, computed ``block`` rows at a time (the last
    block padded with zero rows), so every call has the same shape and a row's bits do not depend on the others."""
    import torch

    block = block or _block_rows()
    n = x.shape[0]
    pad = -n % block
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], dim=0)
    if x.shape[0] == block:
        return fn(x)[:n]
    return torch.cat([fn(x[i : i + block]) for i in range(0, x.shape[0], block)], dim=0)[:n]


def enable(model: torch.nn.Module, dtype: str = "bfloat16", include_head: bool = False) -> int:
    """Run ``model``'s ``nn.Linear`` layers (except the output head) in ``dtype``; returns how many.

    Idempotent; :func:`disable` undoes it. The cast copies are made lazily on first use.
    """
    import torch

    lowp = getattr(torch, dtype)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    n = 0
    for mod in model.modules():
        if not isinstance(mod, torch.nn.Linear) or (mod is head and not include_head):
            continue
        object.__setattr__(mod, _MARK, (lowp, None, None, None, None))
        object.__setattr__(mod, "forward", types.MethodType(_lowp_forward, mod))
        n += 1
    return n


def refresh(model: torch.nn.Module) -> None:
    """Drop the cast copies so the next call re-casts from the float32 weights.

    Needed after weight writes the version counter cannot see (``param.data`` tricks, such as
    peft's ``merge_and_unload``); :meth:`steerboard.engine.Engine.weights_changed` calls it.
    """
    for mod in model.modules():
        mark = mod.__dict__.get(_MARK)
        if mark is not None:
            object.__setattr__(mod, _MARK, (mark[0], None, None, None, None))
        mod.__dict__.pop(_HEAD_MARK, None)


def disable(model: torch.nn.Module) -> int:
    """Undo :func:`enable`: plain float32 ``nn.Linear`` again (frees the cast copies)."""
    n = 0
    for mod in model.modules():
        if _MARK in mod.__dict__:
            del mod.__dict__[_MARK]
            mod.__dict__.pop("forward", None)
            n += 1
    return n


def active(model: torch.nn.Module) -> bool:
    """Whether :func:`enable` is in effect on ``model``."""
    return any(_MARK in m.__dict__ for m in model.modules())


MIN_INVARIANT_ROWS = 16
"""Float32 CPU matmuls (MKL) round a row differently when fewer than ~12 rows are multiplied at once (and the
count is not a multiple of 4); from 12 rows on, a row's result does not depend on the row count (measured on
SmolLM2-135M's output head for every count up to 128)."""


def row_invariant(fn: Any, x: torch.Tensor, min_rows: int = MIN_INVARIANT_ROWS) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` (a linear map over the last dim), with ``x`` padded by zero rows to
    ``min_rows`` rows first, so each row's result has the same bits in any batch.

    CPU only: the padding answers MKL's row-count-dependent rounding; on another device ``fn(x)`` as it is."""
    if x.shape[0] >= min_rows or x.device.type != "cpu":
        return fn(x)
    return row_blocks(fn, x, block=min_rows)  # one block: x padded to min_rows rows


# ---------------------------------------------------------------- screened greedy output head
_HEAD_MARK = "_steerboard_head_screen"
# Candidates kept by the bfloat16 screen: every token whose bfloat16 logit is within this many logits
# of the row's best. Measured on the embedded model (5,634 decode positions of 64 XSTest prompts):
# |bf16 logit - float32 logit| is at most 0.22 (median per-position max 0.11), and the float32 argmax
# was the bfloat16 argmax at every position. A proven bound (Cauchy-Schwarz on the rounding errors)
# would be ~5 logits there, keeping ~800 candidates a row and making the screen slower than the
# float32 head, so the margin is empirical, and checked at run time (see ``screened_greedy``).
HEAD_SCREEN_MARGIN = 1.0


def _head_copy(head: torch.nn.Linear, dtype: Any) -> tuple[Any, Any]:
    """(``dtype`` copy of the head weight, its oneDNN-packed form or None), cached until the weight changes."""
    import torch

    w = head.weight
    now = _version(w)
    mark = head.__dict__.get(_HEAD_MARK)
    if mark is None or mark[0] != now or now is None or mark[1].dtype != dtype:
        with torch.no_grad():
            wl = w.detach().to(dtype)
            packed = None
            if w.device.type == "cpu" and packed_linear_available(str(dtype).removeprefix("torch.")):
                packed = torch.ops.mkldnn._reorder_linear_weight(wl)
            mark = (now, wl, packed)
        object.__setattr__(head, _HEAD_MARK, mark)
    return mark[1], mark[2]


def screened_greedy(
    hidden: torch.Tensor, head: torch.nn.Linear, margin: float = HEAD_SCREEN_MARGIN, dtype: Any = None
) -> tuple[torch.Tensor, int, int]:
    """Greedy next tokens ``argmax(hidden @ W.T)``: the vocabulary screened in bfloat16, the winner picked in float32.

    The output head of a small model is a large share of a decode step (SmolLM2-135M: 49152 x 576, a
    fifth of the step's multiply-adds and, left in float32 by :func:`enable`, 12 of ~55 ms at batch 16).
    This computes all logits in bfloat16 (3.7 ms), keeps every token within ``margin`` of the row's
    best bfloat16 logit, re-scores just those in float32 and takes their argmax (ties to the lowest
    id, as ``argmax``). Run-time check: if any kept token's bfloat16 logit is off its float32 value by
    more than ``margin / 4`` -- so the margin may be too thin for this model -- the row falls back to
    full float32 logits. Why not ``topk``: a mask-and-compare is cheaper than a top-k over 49k
    logits (1.2-4.5 ms measured) and keeps all near-ties, however many.

    Args:
        hidden: [batch, hidden] float32 final hidden states (after the model's final norm).
        head: the output ``nn.Linear`` (no bias).
        margin: screening margin in logits.
        dtype: screening dtype (default bfloat16).

    Returns:
        (token ids [batch], candidates re-scored in float32, rows that fell back to the full head).
    """
    import torch

    dtype = dtype or torch.bfloat16
    wl, packed = _head_copy(head, dtype)
    h = hidden.float()
    blocks = getattr(_LOCAL, "invariant", 0) and h.device.type == "cpu" and row_blocks_needed()
    if packed is not None:  # [B, V] from the packed weight: 1.8 ms at batch 16 vs 3.3 for ``h @ W.T``
        def screen(t: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(t, packed, None, "none", [], "")

        low = row_blocks(screen, h.to(dtype)) if blocks else screen(h.to(dtype))
        best = low.amax(dim=1)
        rows, cols = (low >= (best.float() - margin).to(dtype).unsqueeze(1)).nonzero(as_tuple=True)
        low_at = low[rows, cols]
    else:  # [V, B]: the vocabulary-major product runs ~2x faster than [B, V] without packing
        low = row_blocks(lambda t: (wl @ t.T).T, h.to(dtype)).T if blocks else wl @ h.to(dtype).T
        best = low.amax(dim=0)
        cols, rows = (low >= (best.float() - margin).to(dtype)).nonzero(as_tuple=True)
        low_at = low[cols, rows]
    exact = (h[rows] * head.weight[cols]).sum(-1)
    b = h.shape[0]
    top = exact.new_full((b,), -math.inf).scatter_reduce(0, rows, exact, reduce="amax")
    win = exact == top[rows]
    tok = torch.full((b,), head.weight.shape[0], dtype=torch.long, device=h.device)
    tok = tok.scatter_reduce(0, rows[win], cols[win], reduce="amin")  # ties to the lowest id, as argmax
    err = exact.new_zeros(b).scatter_reduce(0, rows, (exact - low_at.float()).abs(), reduce="amax")
    bad = (err > margin / 4).nonzero(as_tuple=True)[0]
    if bad.numel():
        tok[bad] = row_invariant(lambda x: x @ head.weight.T, h[bad]).argmax(dim=-1)
    return tok, int(rows.numel()), int(bad.numel())


# ---------------------------------------------------------------- batch-invariant attention
EXACT_ATTENTION = "steerboard_exact"
"""Name of the attention implementation :func:`use_exact_attention` registers with transformers."""


@contextlib.contextmanager
def batch_invariant() -> Iterator[None]:
    """Within this block (this thread only), a row's result does not depend on the other rows of its batch.

    Why: with bfloat16 matmuls, a completion must not depend on which other requests share its batch, or
    runs do not repeat. Three places made it depend on them:

    * attention: under different left padding a row's keys sit at different columns, so float32 ``sdpa``
      adds its softmax and value sums in a different order, and a last-bit difference changes the bfloat16
      rounding of the next layer's input often enough to flip near-tie tokens. Models switched by
      :func:`use_exact_attention` attend in float64 here (products of float32 values are exact there; sums
      differ by ~1e-16 relative, which survives rounding to float32 and then bfloat16 with negligible
      probability);
    * oneDNN's bfloat16 matmuls: where it may use AMX (:func:`row_blocks_needed`), its kernels round a row
      differently by row count, so the linear layers and the greedy head's bfloat16 screen multiply fixed
      blocks of :data:`AMX_BLOCK_ROWS` rows (:func:`row_blocks`). Without AMX (AVX512-BF16) a lone row (a batch
      of one) gets another kernel than two or more rows: such an input gets a zero second row
      (:func:`row_invariant`); from two rows on each row gets the same bits for any row count and order (tested);
    * the float32 output head (MKL) rounds rows differently below ~12 rows:
      :meth:`steerboard.engine.Engine.head_logits` pads it to :data:`MIN_INVARIANT_ROWS`.
    """
    _LOCAL.invariant = getattr(_LOCAL, "invariant", 0) + 1
    try:
        yield
    finally:
        _LOCAL.invariant -= 1


def batch_invariant_active() -> bool:
    """Whether this thread is inside :func:`batch_invariant`."""
    return bool(getattr(_LOCAL, "invariant", 0))


def _exact_attention_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: float64 attention inside :func:`batch_invariant`, else ``sdpa``.

    Shapes follow transformers: query ``[B, heads, q, d]``, key/value ``[B, kv_heads, k, d]`` (grouped
    query heads share a key/value head), a boolean mask ``[B, 1, q, k]`` (True = attend) or None
    (causal, aligned to the last key); returns ``[B, q, heads, d]`` in the query's dtype.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (
        not getattr(_LOCAL, "invariant", 0)
        or query.device.type != "cpu"
        or torch.is_grad_enabled()
        or dropout
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or kwargs.get("sliding_window") is not None
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key.to(query.dtype), value.to(query.dtype), attention_mask,
            dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs,
        )
    q_len, dim = query.shape[2], query.shape[3]
    scale = scaling if scaling is not None else dim**-0.5
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask == 0  # an additive mask: 0 where attending
    if q_len > 1:  # a prefill: each row alone on its own tokens (float64 would cost ~4x on long prompts)
        return _rowwise_attention(query, key, value, attention_mask, scale), None
    if aligned_decode_invariant():
        return _aligned_decode_attention(query, key, value, attention_mask, scale), None
    return _float64_decode_attention(query, key, value, attention_mask, scale), None


DECODE_ALIGN = 64
"""Key columns a decode step's attention is widened to a multiple of (masked columns on the left)."""


_SLACK_STORAGES: dict[int, int] = {}
"""Storage pointer -> zeroed leading columns, of the KV-cache buffers registered by :func:`register_slack`."""


def register_slack(buffer: torch.Tensor, columns: int) -> None:
    """Declare that ``buffer`` ``[B, kv_heads, cols, d]`` keeps ``columns`` zeroed columns before any it hands out,
    and that columns left of a view it hands out hold only finite values (zeros or keys/values written earlier):
    :func:`_widen_left` may then widen views of it in place. Forgotten when the buffer is freed."""
    import weakref

    ptr = buffer.untyped_storage().data_ptr()
    _SLACK_STORAGES[ptr] = columns
    weakref.finalize(buffer, _SLACK_STORAGES.pop, ptr, None)


def _widen_left(t: torch.Tensor, extra: int) -> torch.Tensor:
    """``t`` ``[B, kv_heads, K, d]`` with ``extra`` more columns on the left: the columns before it in its own
    buffer when it is a view of a buffer registered with :func:`register_slack` (the engine's KV cache,
    :class:`steerboard.engine.kvcache._GrowingMixin`) with room there, else zeros (a copy). Whatever the columns
    hold is masked; it only has to be finite (masked probabilities are exactly 0, and ``0 * v`` is 0 only for
    finite ``v``)."""
    import torch

    b, h, k, d = t.shape
    sb, sh, sk, sd = t.stride()
    off = t.storage_offset() - extra * sk
    if sk == d and sd == 1 and off >= 0 and t.untyped_storage().data_ptr() in _SLACK_STORAGES:
        return t.as_strided((b, h, k + extra, d), (sb, sh, sk, sd), off)
    return torch.cat([t.new_zeros(b, h, extra, d), t], dim=2)


def _aligned_decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """One query per row (a decode step) in the model's float32, batch-invariant by alignment.

    A row's result must not depend on how many key columns its batch has (its neighbours' lengths set the
    width; its own keys sit right-aligned under left padding). The CPU kernels reduce over the key columns in
    lanes and blocks counted from the first column, so a row's keys would meet other partial sums whenever the
    width changed. Widening every step's keys on the left to a multiple of :data:`DECODE_ALIGN` columns (masked)
    puts a row's j-th key at the same column modulo the alignment whatever the width: measured bit-identical
    per row over batch sizes 1-64, widths up to 768 and every row length 1-513 (``tests/test_determinism.py``
    checks it on every run's CPU code path, and :func:`aligned_decode_invariant` probes it at first use, falling
    back to :func:`_float64_decode_attention` where it does not hold). Masked columns get the dtype's lowest
    value, so their probabilities are exactly 0. Shapes as in :func:`_exact_attention_forward`.
    """
    import torch

    b, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    rep = heads // kv_heads
    extra = (-k_len) % DECODE_ALIGN
    if mask is None:
        mask = torch.ones(b, k_len, dtype=torch.bool, device=query.device)
    else:  # [B or 1, 1, 1, K]
        mask = mask.reshape(mask.shape[0], k_len).expand(b, k_len)
    if extra:
        key, value = _widen_left(key, extra), _widen_left(value, extra)
        mask = torch.cat([mask.new_zeros(b, extra), mask], dim=-1)
    dtype = query.dtype
    q = query.reshape(b, kv_heads, rep, dim)
    scores = (q @ key.to(dtype).transpose(-1, -2)) * scale  # [B, kv_heads, rep, K]
    scores = scores.masked_fill(~mask.view(b, 1, 1, -1), torch.finfo(dtype).min)
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ value.to(dtype)).view(b, heads, q_len, dim)
    return out.transpose(1, 2).contiguous()


def _float64_decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """One query per row in float64: products of float32 values are exact there and the sums differ by ~1e-16
    relative whatever the padding, which survives rounding to float32 with negligible probability. The fallback
    of :func:`_aligned_decode_attention` on a CPU whose kernels fail its probe (about 4x slower)."""
    import torch

    b, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    rep = heads // kv_heads
    q = query.to(torch.float64).reshape(b, kv_heads, rep * q_len, dim)
    scores = (q @ key.to(torch.float64).transpose(-1, -2)).view(b, kv_heads, rep, q_len, k_len) * scale
    if mask is not None:
        if mask.dim() == 4:  # [B, 1, q, k] -> broadcast over kv heads and their query groups
            mask = mask[:, :, None]
        scores = scores.masked_fill(~mask, torch.finfo(torch.float64).min)
    probs = torch.softmax(scores, dim=-1).view(b, kv_heads, rep * q_len, k_len)
    out = (probs @ value.to(torch.float64)).view(b, heads, q_len, -1)
    return out.transpose(1, 2).contiguous().to(query.dtype)


@functools.lru_cache(maxsize=1)
def aligned_decode_invariant() -> bool:
    """Whether this CPU's kernels give :func:`_aligned_decode_attention` per-row results that do not depend on
    the batch or its width (probed once: one row's output compared bit for bit across batch sizes, widths and
    row lengths that cross the kernels' block sizes). ``$STEERBOARD_DECODE_ATTENTION=float64`` forces the
    float64 fallback."""
    import torch

    if os.environ.get("STEERBOARD_DECODE_ATTENTION", "").strip().lower() == "float64":
        return False
    g = torch.Generator().manual_seed(0)
    ok = True
    with torch.inference_mode():
        for n in (1, 2, 17, 63, 64, 65, 130, 300):
            q1 = torch.randn(1, 6, 1, 32, generator=g)
            k1 = torch.randn(1, 2, n, 32, generator=g)
            v1 = torch.randn(1, 2, n, 32, generator=g)
            ref = None
            for rows, extra in ((1, 0), (3, 5), (8, 70), (33, 200)):
                width = n + extra
                q = torch.randn(rows, 6, 1, 32, generator=g)
                k = torch.randn(rows, 2, width, 32, generator=g)
                v = torch.randn(rows, 2, width, 32, generator=g)
                mask = torch.rand(rows, 1, 1, width, generator=g) > 0.3
                i = rows // 2
                q[i], k[i, :, width - n :], v[i, :, width - n :] = q1[0], k1[0], v1[0]
                mask[i] = False
                mask[i, ..., width - n :] = True
                out = _aligned_decode_attention(q, k, v, mask, 0.17)[i]
                if ref is None:
                    ref = out
                elif not torch.equal(ref, out):
                    ok = False
    if not ok:
        logger.warning("float32 decode attention is not batch-invariant on this CPU; using float64 (slower)")
    return ok


def _rowwise_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Multi-query attention computed row by row on each row's own tokens: batch-invariant by construction.

    A row's real queries (those that attend their own position) and the keys they attend are gathered out of
    the padded batch, so the tensors handed to ``sdpa`` are the same bits whatever the row's neighbours and
    padding; padding queries get zeros (nothing reads them). ``sdpa`` here is float32 and about as fast as the
    batched call, where float64 attention over a long prompt is ~4x slower. Shapes as in
    :func:`_exact_attention_forward`; returns ``[B, q, heads, d]``.
    """
    import torch
    import torch.nn.functional as F

    b, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    rep = heads // kv_heads
    if mask is None:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        mask = mask.expand(b, 1, q_len, k_len)
    own = torch.arange(q_len, device=query.device)
    out = query.new_zeros(b, q_len, heads, dim)
    for i in range(b):
        m = mask[i, 0] if mask.shape[0] > 1 else mask[0, 0]
        real = m[own, own + (k_len - q_len)].nonzero().squeeze(1)
        if real.numel() == 0:
            continue
        sub = m.index_select(0, real)
        cols = sub.any(0).nonzero().squeeze(1)
        qi = query[i : i + 1].index_select(2, real)
        ki = key[i : i + 1].index_select(2, cols).to(query.dtype).repeat_interleave(rep, 1)
        vi = value[i : i + 1].index_select(2, cols).to(query.dtype).repeat_interleave(rep, 1)
        o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=sub.index_select(1, cols)[None, None], scale=scale)
        out[i].index_copy_(0, real, o[0].transpose(0, 1))
    return out


def use_exact_attention(model: torch.nn.Module) -> bool:
    """Switch ``model`` to the attention function of :func:`batch_invariant`; returns whether it took.

    Outside :func:`batch_invariant` (and with autograd on) the function is transformers' ``sdpa``, so
    scoring, hidden-state capture and training are unchanged. Models that do not dispatch attention
    through transformers' ``AttentionInterface`` keep theirs (returns False).

    CPU only: the float64 decode attention and row-wise prefill answer the CPU kernels' batch-dependent
    rounding at a cost that is small on a few CPU cores; on a GPU, float64 runs at a small fraction of the
    bfloat16 rate and the row-wise loop serialises the batch, so a model on any other device keeps its own
    attention (returns False).
    """
    config = getattr(model, "config", None)
    if config is None:
        return False
    try:
        on_cpu = next(model.parameters()).device.type == "cpu"
    except (StopIteration, AttributeError, TypeError):
        on_cpu = True
    if not on_cpu:
        return False
    if getattr(config, "_attn_implementation", None) == EXACT_ATTENTION:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False  # eager / flash / flex were chosen on purpose: leave them
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(EXACT_ATTENTION, _exact_attention_forward)
        AttentionMaskInterface.register(EXACT_ATTENTION, sdpa_mask)
        model.set_attn_implementation(EXACT_ATTENTION)
    except Exception as ex:  # noqa: BLE001 - older transformers or a model without the interface
        logger.warning("batch-invariant attention unavailable for %s (%s)", type(model).__name__, ex)
        return False
    return getattr(config, "_attn_implementation", None) == EXACT_ATTENTION
