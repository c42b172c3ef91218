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


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16)."""
    import torch

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


def resolve_matmul_dtype(requested: str | None, device: str, model_dtype: Any) -> str:
    """The matmul dtype to use: ``auto`` -> bfloat16 for float32 models on CPUs with native bf16, else
    the model's own dtype (``float32``, ``bfloat16``, ``float16``).

    ``$STEERBOARD_MATMUL_DTYPE`` overrides ``auto`` (not an explicit request).

    Raises:
        ValueError: an unknown value (names the valid ones).
    """
    import torch

    value = requested or "auto"
    if value == "auto":
        value = os.environ.get("STEERBOARD_MATMUL_DTYPE", "auto") or "auto"
    if value not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}; got {value!r}")
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


def _lowp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    w = self.weight
    if torch.is_grad_enabled() or x.dtype != w.dtype or getattr(_LOCAL, "depth", 0):
        return F.linear(x, w, self.bias)  # training or an already-low-precision input: exact path
    dtype, key, wl, bl = getattr(self, _MARK)
    now = (_version(w), None if self.bias is None else _version(self.bias))
    if key != now or wl is None or now[0] is None:
        with torch.no_grad():
            wl = w.detach().to(dtype)
            bl = None if self.bias is None else self.bias.detach().to(dtype)
        object.__setattr__(self, _MARK, (dtype, now, wl, bl))
    return F.linear(x.to(dtype), wl, bl).to(x.dtype)


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
        object.__setattr__(mod, _MARK, (lowp, None, None, None))
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
            object.__setattr__(mod, _MARK, (mark[0], None, None, None))


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
