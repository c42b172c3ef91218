"""Resource requests of a suite's method configurations (for the Ray executor) and their memory estimate.

A suite may say what each method configuration's worker needs::

    resources: {num_cpus: 2}                       # every configuration of the suite
    methods:
      - {name: dpo, resources: {num_gpus: 1, memory: 24GiB}}   # this method's configurations

Keys: ``num_cpus``, ``num_gpus`` (non-negative numbers) and ``memory`` (bytes, or a size such as ``8GiB``,
``512MB``, ``16e9``). A method entry's keys override the suite's; ``--ray-resources`` overrides both. Without
a ``memory`` request, the Ray executor asks for :func:`estimate_memory`'s figure. The local executor ignores
all of this.

:func:`estimate_memory` adds up, for one method configuration, without loading any weights (the parameter
count comes from the checkpoint's safetensors headers, or else from the model's config instantiated on
PyTorch's ``meta`` device):

* the model's weights: parameters x bytes of the dtype the engine loads (``dtype=auto``: float32 on CPU,
  bfloat16 on CUDA), plus the bfloat16 copy of the linear layers that ``matmul_dtype`` keeps on CPU;
* what the method adds, as the method class declares it (:meth:`~steerboard.methods.base.Method.memory_parts`,
  given a :class:`ModelShape`; a plug-in method overrides it the same way): by default a second copy of the
  weights for a method with ``private_weights`` (its own model beside the shared one); the built-in methods add
  the SAE's weights (``sae``), the trained adapters' training state (``dpo``, ``sft``: gradients and AdamW's two
  moments in float32 for the trained parameters -- the LoRA adapter or every weight -- and the activations of a
  training step) and DINM's tuning state for the edited layer;
* a KV-cache allowance: ``min(max_connections, max_batch_size)`` rows x ``context_tokens`` tokens x layers x
  keys and values (8 bytes each on CPU with deterministic generation: the store of the float64 decode attention
  that a worker whose CPU fails :func:`steerboard.precision.aligned_decode_invariant` falls back to, an upper
  bound for the float32 store the others use; else the model's dtype);
* a fixed allowance for the worker process itself (Python, torch, transformers, Inspect).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
PROCESS_BYTES = 1_500 * 1024**2
"""Allowance for a worker process before any model loads (Python, torch, transformers, Inspect, Ray)."""
SCORE_POSITIONS = 1024
"""Most positions one log-likelihood batch scores (``Engine.score_groups``' default ``max_positions``)."""
DEFAULT_CONTEXT_TOKENS = 1024
"""Tokens per KV-cache row in the estimate: a prompt allowance plus the completion."""
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
_SHARED_PARTS = ("process", "weights", "bf16_linear_copy", "kv_cache", "scoring_logits")
"""The parts of every configuration's estimate; a method's :meth:`memory_parts` adds others."""


def parse_memory(value: Any, where: str = "memory") -> int:
    """Bytes from a number or a size text (``8GiB``, ``512MB``, ``16e9``, ``1.5G``).

    Raises:
        ValueError: not a non-negative size, naming ``where`` and the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not a size; give bytes or a size such as 8GiB, 512MB, 16e9")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = _SIZE.match(str(value))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise ValueError(
                f"{where}: {value!r} is not a size; give bytes or a size such as 8GiB, 512MB, 16e9 "
                f"(units: {', '.join(u for u in ('B', 'KB', 'MB', 'GB', 'TB', 'KiB', 'MiB', 'GiB', 'TiB'))})"
            )
        n = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"{where}: {value!r} must be a size >= 0")
    return int(n)


def check_resources(value: Any, where: str) -> dict[str, float]:
    """Validate a ``resources:`` mapping (suite file or method entry); ``memory`` comes back in bytes.

    Raises:
        ValueError: not a mapping, an unknown key, or a bad value -- one line naming the key and the valid ones.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: resources must be a mapping with keys {', '.join(RESOURCE_KEYS)}, got {value!r}")
    out: dict[str, float] = {}
    for key, v in value.items():
        if key not in RESOURCE_KEYS:
            raise ValueError(f"{where}: resources: unknown key {key!r}; valid keys: {', '.join(RESOURCE_KEYS)}")
        if key == "memory":
            out[key] = parse_memory(v, f"{where}: resources.memory")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}: resources.{key} must be a number >= 0, got {v!r}")
        out[key] = float(v)
    return out


def parse_resources_text(text: str | None, flag: str = "--ray-resources") -> dict[str, float]:
    """``"num_cpus=1,num_gpus=0.5,memory=8GiB"`` -> a dict of resource requests (``memory`` in bytes).

    Raises:
        ValueError: an item that is not ``key=value``, an unknown key, or a bad value (naming the valid keys).
    """
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in RESOURCE_KEYS:
            raise ValueError(f"{flag}: bad item {item!r}; valid keys: {', '.join(RESOURCE_KEYS)} (key=value)")
        if key == "memory":
            out[key] = parse_memory(value.strip(), f"{flag} memory")
            continue
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"{flag}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{flag}: {key} must be >= 0, got {value!r}")
        out[key] = v
    return out


def merge_resources(*layers: dict[str, float] | None) -> dict[str, float]:
    """Later layers override earlier ones, key by key (suite, then method entry, then command line)."""
    out: dict[str, float] = {}
    for layer in layers:
        out.update(layer or {})
    return out


def format_bytes(n: float) -> str:
    """``1536*1024**2`` -> ``1.50 GiB``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass
class MemoryEstimate:
    """Bytes one method configuration needs, by part."""

    parts: dict[str, int] = field(default_factory=dict)
    params: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """``1.23 GiB (weights 0.50 GiB + kv_cache ...)``."""
        inner = " + ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items() if v)
        return f"{format_bytes(self.total)} ({inner})"


def model_dir(model_name: str) -> Path | None:
    """The local directory of a model alias or path, when its config is on disk (None for a hub id)."""
    from steerboard.models import ALIASES, default_model_dir

    path = default_model_dir() if model_name in ALIASES else Path(model_name).expanduser()
    return path if (path / "config.json").is_file() else None


_BLOCK = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def _safetensors_shapes(path: Path) -> dict[str, list[int]] | None:
    """Tensor name -> shape from the headers of a checkpoint's ``*.safetensors`` files (a few KB read per file,
    no weights, no torch); None when there are none or a header is unreadable."""
    import json
    import struct

    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, list[int]] = {}
    try:
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return shapes


def _meta_shapes(path: Path) -> dict[str, list[int]]:
    """Parameter name -> shape of the model built from its config on PyTorch's ``meta`` device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return {name: list(p.shape) for name, p in model.named_parameters()}  # tied weights listed once


@functools.lru_cache(maxsize=8)
def _model_shape(path: str) -> dict[str, Any]:
    """Parameter count and the shapes the estimate needs: tensor shapes from the checkpoint's safetensors
    headers (fast: no torch import), else from the config on the ``meta`` device; sizes from ``config.json``."""
    import json

    config = json.loads((Path(path) / "config.json").read_text())
    text = config.get("text_config") or config
    shapes = _safetensors_shapes(Path(path)) or _meta_shapes(Path(path))
    layers = int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    hidden = int(text["hidden_size"])
    linear: list[tuple[int, str, int, int]] = []  # (decoder block, module name, in, out)
    for name, shape in shapes.items():
        m = _BLOCK.search(f".{name}")
        if m and name.endswith(".weight") and len(shape) == 2:  # a decoder block's matrix: a linear layer
            linear.append((int(m.group(1)), name.rsplit(".", 2)[-2], int(shape[1]), int(shape[0])))
    return {
        "params": sum(math.prod(s) for s in shapes.values()),
        "linear_params": sum(i * o for _, _, i, o in linear),
        "linear": linear,
        "layers": layers,
        "hidden": hidden,
        "kv_heads": int(text.get("num_key_value_heads") or heads),
        "head_dim": int(text.get("head_dim") or hidden // heads),
        "max_positions": int(text.get("max_position_embeddings") or 0),
        "vocab": int(text.get("vocab_size") or 0),
    }


@dataclass(frozen=True)
class ModelShape:
    """What a method's :meth:`~steerboard.methods.base.Method.memory_parts` may read about the model and the
    engine that will run it (no weights loaded).

    Attributes:
        model_name: the model alias or path the configuration runs on.
        device: where it runs (``cpu``, ``cuda``...).
        dtype: the parameter dtype the engine loads (``auto`` resolved).
        dtype_bytes: bytes per parameter in ``dtype``.
        params: parameter count.
        linear_params: parameters of the decoder blocks' linear layers.
        linear: ``(decoder block, module name, in features, out features)`` of each of those layers.
        layers: decoder blocks.
        hidden: hidden size.
        kv_heads: key/value heads.
        head_dim: dimensions per head.
        max_positions: the model's context length (0: not stated).
        vocab: vocabulary size.
        loaded_weight_bytes: bytes of the weights the engine holds (the parameters plus any bfloat16 copy of the
            linear layers): what a private copy of the model costs.
    """

    model_name: str
    device: str
    dtype: str
    dtype_bytes: int
    params: int
    linear_params: int
    linear: tuple[tuple[int, str, int, int], ...]
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    max_positions: int
    vocab: int
    loaded_weight_bytes: int


def estimate_memory(
    method: str,
    args: dict[str, Any] | None,
    model_name: str,
    *,
    device: str | None = None,
    max_connections: int = 32,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
) -> MemoryEstimate | None:
    """Bytes one method configuration needs on ``device`` (see the module docstring for the parts).

    Args:
        method: method name (``base``, ``sae``, ``dpo``...).
        args: the configuration's method options (``-M``), as in the suite.
        model_name: model alias, local directory (a hub id not on disk gives None).
        device: where it runs: the method's own ``device`` option wins; else ``cuda`` or ``cpu`` (default cpu).
        max_connections: the suite's concurrent requests (KV-cache rows, capped at the engine's batch size).
        context_tokens: tokens per KV-cache row (prompt plus completion).

    Returns:
        The estimate, or None when the model's config is not on disk.

    Raises:
        ValueError: the method is not installed, its options are invalid, or its ``memory_parts`` returned a
            shared part's name or a value that is not a byte count.
    """
    from steerboard.methods.provider import method_class
    from steerboard.methods.registry import check_method

    args = dict(args or {})
    cls = method_class(check_method(method))  # an unknown name: one line naming the installed methods
    cfg = cls.config_class.from_dict(args)
    path = model_dir(model_name)
    if path is None:
        return None
    shape = _model_shape(str(path))
    dev = str(cfg.device or device or "cpu")
    on_cpu = dev.startswith("cpu")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if on_cpu else "bfloat16")
    wbytes = _DTYPE_BYTES[dtype]
    params = shape["params"]
    parts: dict[str, int] = {"process": PROCESS_BYTES, "weights": params * wbytes}
    # on CPU a float32 model may run its linear layers in bfloat16 on a copy cast once (steerboard.precision)
    if on_cpu and dtype == "float32" and cfg.matmul_dtype != "float32":
        parts["bf16_linear_copy"] = shape["linear_params"] * 2
    model = ModelShape(
        model_name=model_name, device=dev, dtype=dtype, dtype_bytes=wbytes, params=params,
        linear_params=shape["linear_params"], linear=tuple(shape["linear"]), layers=shape["layers"],
        hidden=shape["hidden"], kv_heads=shape["kv_heads"], head_dim=shape["head_dim"],
        max_positions=shape["max_positions"], vocab=shape["vocab"],
        loaded_weight_bytes=parts["weights"] + parts.get("bf16_linear_copy", 0),
    )
    for name, n in cls.memory_parts(cfg, model).items():  # what the method declares it adds
        if name in parts or name in _SHARED_PARTS:
            raise ValueError(f"{method}/: memory part {name!r} is one every configuration has; "
                             f"name the method's own part otherwise (shared parts: {', '.join(_SHARED_PARTS)})")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{method}/: memory part {name!r} must be a whole number of bytes >= 0, got {n!r}")
        parts[name] = n
    rows = min(max_connections, cfg.max_batch_size)
    ctx = min(context_tokens, shape["max_positions"]) if shape["max_positions"] else context_tokens
    kv_bytes = 8 if on_cpu and cfg.deterministic else wbytes  # the worker's CPU is unknown here: upper bound
    parts["kv_cache"] = rows * ctx * shape["layers"] * 2 * shape["kv_heads"] * shape["head_dim"] * kv_bytes
    # log-likelihood scoring: float32 logits of up to SCORE_POSITIONS positions, and their log-softmax
    parts["scoring_logits"] = 2 * SCORE_POSITIONS * shape["vocab"] * 4
    return MemoryEstimate(parts=parts, params=params, device=dev, dtype=dtype)


def context_tokens_for(generate_configs: Iterable[Mapping[str, Any]], prompt_tokens: int = 512) -> int:
    """Tokens per KV-cache row for a configuration: a prompt allowance plus the longest completion its tasks
    ask for.

    Args:
        generate_configs: the generate config of each of the configuration's tasks, as the eval gets it
            (:func:`steerboard.runner.suite.generate_config`: the suite's ``generate``, the task's ``config``,
            the command line's overrides); ``max_tokens`` unset: the provider's default.
        prompt_tokens: the prompt allowance.
    """
    from steerboard.methods.provider import DEFAULT_MAX_TOKENS

    longest = 0
    for gen in generate_configs:
        longest = max(longest, int(gen.get("max_tokens") or DEFAULT_MAX_TOKENS))
    return prompt_tokens + (longest or DEFAULT_MAX_TOKENS)
