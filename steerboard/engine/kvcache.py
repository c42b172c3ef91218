"""The engine's KV cache: a transformers ``DynamicCache`` whose layers edit preallocated buffers in place,
and the row-level edits continuous batching makes on it (stacking joined rows, trimming shared left padding).
"""

from __future__ import annotations

import functools
from typing import Any


class _GrowingMixin:
    """The engine's KV-cache layer: keys/values in preallocated buffers, edited in place.

    :func:`_growing_layer` mixes it into transformers' ``DynamicLayer``.

    transformers' ``DynamicLayer`` copies the whole layer cache whenever it changes: ``update`` concatenates
    on every decode step (41 % of decode time on the embedded model once its matmuls run in bfloat16,
    profiled), ``batch_select_indices`` gathers the kept rows into a new tensor, and a slice or a merge hands
    it a tensor it then copies again. In continuous batching that happens every time a row finishes or
    joins; with long prompts and a float64 store (36 SafeEdit rows of ~450 tokens: ~0.75 GB a copy) the
    copies dominated the run. Here the layer owns buffers with spare columns and rows:

    * ``update`` writes the new keys/values into spare columns (grown by half plus 64 when full);
    * ``batch_select_indices`` with ascending indices (the rows that stay, in order) moves only the rows
      after a finished one, in place;
    * ``trim_left`` drops leading columns by moving an offset;
    * ``stack`` appends another cache's rows (left-padded to a common width) in one copy;
    * every buffer starts with :data:`SLACK` zeroed columns, and columns left of the live view only ever hold
      zeros or keys/values written earlier: the batch-invariant decode attention widens its view to the left
      over them (:func:`steerboard.precision._aligned_decode_attention`) without copying, and masked columns
      must be finite.

    Attention sees views of the buffers with the same strides as before, so results are unchanged. Anything
    else that replaces ``keys``/``values`` is adopted (copied into a new buffer) on the next ``update``.
    """

    _kbuf: Any = None
    _vbuf: Any = None
    _kview: Any = None
    _lo = 0  # buffer column of the first live column
    store_dtype: Any = None  # keep keys/values in this dtype (float64 for the float64 decode-attention fallback)
    SLACK = 64  # zeroed columns before the first usable one (= steerboard.precision.DECODE_ALIGN)

    def _owned(self) -> bool:
        return self._kbuf is not None and self.keys is self._kview

    def _view(self, rows: int, lo: int, hi: int) -> None:
        self._lo = lo
        self.keys = self._kbuf[:rows, ..., lo:hi, :]
        self.values = self._vbuf[:rows, ..., lo:hi, :]
        self._kview = self.keys

    def _alloc(self, like: Any, rows: int, cols: int) -> None:
        """New buffers of ``cols`` usable columns after :data:`SLACK` zeroed ones (see the class docstring)."""
        dtype = self.store_dtype or like.dtype
        shape = (rows, *like.shape[1:-2], self.SLACK + cols, like.shape[-1])
        self._kbuf = like.new_empty(shape, dtype=dtype)
        self._vbuf = like.new_empty(shape, dtype=dtype)
        self._kbuf[..., : self.SLACK, :] = 0
        self._vbuf[..., : self.SLACK, :] = 0
        from steerboard.precision import register_slack

        register_slack(self._kbuf, self.SLACK)
        register_slack(self._vbuf, self.SLACK)

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows = key_states.shape[0]
        n = self.keys.shape[-2] if self.keys.numel() else 0
        new = key_states.shape[-2]
        lo = self._lo
        if not self._owned() or lo + n + new > self._kbuf.shape[-2]:
            keys, values = self.keys, self.values
            self._alloc(key_states, rows, n + new + max(64, (n + new) // 2))
            lo = self.SLACK
            if n:
                self._kbuf[:, ..., lo : lo + n, :] = keys
                self._vbuf[:, ..., lo : lo + n, :] = values
        self._kbuf[:rows, ..., lo + n : lo + n + new, :] = key_states
        self._vbuf[:rows, ..., lo + n : lo + n + new, :] = value_states
        self._view(rows, lo, lo + n + new)
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        keep = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        if not self._owned() or any(b <= a for a, b in zip(keep, keep[1:])):
            super().batch_select_indices(indices)
            return
        lo, hi = self._lo, self._lo + self.keys.shape[-2]
        # ascending sources: row j's source is >= j and no later source is j, so moving in order is safe
        for j, src in enumerate(keep):
            if src != j:
                self._kbuf[j, ..., lo:hi, :] = self._kbuf[src, ..., lo:hi, :]
                self._vbuf[j, ..., lo:hi, :] = self._vbuf[src, ..., lo:hi, :]
        self._view(len(keep), lo, hi)

    def trim_left(self, start: int) -> None:
        """Drop the first ``start`` columns (left padding no live row uses)."""
        if self._owned():
            self._view(self.keys.shape[0], self._lo + start, self._lo + self.keys.shape[-2])
        else:
            self.keys = self.keys[..., start:, :]
            self.values = self.values[..., start:, :]

    def stack(self, keys: Any, values: Any) -> None:
        """Append rows ``keys``/``values`` below this layer's, both right-aligned to the wider width;
        the padding columns are zeros (masked, but attention must never read uninitialised memory)."""
        mine_k, mine_v = self.keys, self.values
        ra, la, rb, lb = mine_k.shape[0], mine_k.shape[-2], keys.shape[0], keys.shape[-2]
        width = max(la, lb)
        self._alloc(mine_k, ra + rb, width + max(64, width // 2))
        s = self.SLACK
        for buf, a, b in ((self._kbuf, mine_k, keys), (self._vbuf, mine_v, values)):
            buf[:ra, ..., s : s + width - la, :] = 0
            buf[:ra, ..., s + width - la : s + width, :] = a
            buf[ra:, ..., s : s + width - lb, :] = 0
            buf[ra:, ..., s + width - lb : s + width, :] = b
        self._view(ra + rb, s, s + width)


@functools.lru_cache(maxsize=1)
def _growing_layer() -> type:
    """transformers' ``DynamicLayer`` with :class:`_GrowingMixin`'s in-place edits (imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    return type("GrowingLayer", (_GrowingMixin, DynamicLayer), {})


def new_kv_cache(config: Any, dtype: Any = None) -> Any:
    """A ``DynamicCache`` for ``config`` whose full-attention layers append without re-copying.

    With ``dtype`` those layers store keys/values in it (whatever dtype the model hands them in).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    grow = _growing_layer()
    layers = getattr(cache, "layers", None)
    if layers:
        for i, layer in enumerate(layers):
            if type(layer) is DynamicLayer:
                layers[i] = grow()
                layers[i].store_dtype = dtype
    return cache


def trim_padding(cache: Any, mask: Any) -> Any:
    """Drop leading KV-cache columns that are padding in every live row; returns the trimmed mask.

    In continuous batching the cache is as wide as its longest-lived row, and rows joining later are
    left-padded to that width; without trimming, the width only grows (every step adds a column and
    merges keep the wider side), so attention and cache writes get steadily costlier over a long run
    (measured: a batch-16 decode step at 73 ms under Inspect vs 42 ms for a fresh batch). Positions
    are carried separately (``position_ids``), so cutting left padding changes no result.
    """
    import torch

    used = mask.any(dim=0)
    if bool(used[0]):
        return mask
    start = int(torch.argmax(used.to(torch.int8)))
    if start == 0:  # no live column at all (cannot happen with live rows)
        return mask
    for layer in cache.layers:
        if getattr(layer, "trim_left", None) is not None:
            layer.trim_left(start)
        else:
            layer.keys = layer.keys[..., start:, :]
            layer.values = layer.values[..., start:, :]
    return mask[:, start:]


def move_padding_left(cache: Any, mask: Any, prefix_len: int, pads: list[int]) -> Any:
    """Rearrange every row of ``cache`` from ``[prefix][padding][rest]`` (``mask`` ``[rows, width]``, 1 = live)
    to ``[padding][prefix][rest]`` in place (``pads[i]``: row i's padding columns); returns the matching mask.
    A cache with a layer of another width than ``mask`` (a sliding-window layer) is left as it is.

    A preamble prefill writes the shared prefix at the same columns in every row and left-pads the rest after
    it, so a row's live keys had a hole whose width depended on its batch neighbours. The batch-invariant
    decode attention relies on a row's live keys being contiguous and right-aligned (the same columns modulo
    :data:`steerboard.precision.DECODE_ALIGN` whatever the batch's width): with a hole, a row's float32 sums
    met other partial sums in another batch and near-tie tokens flipped (measured on the embedded model: a
    reply generated beside 23 others differed from the same request alone). The padding columns hold finite
    keys/values of pad tokens and stay masked.
    """
    import torch

    if any(layer.keys.shape[-2] != mask.shape[1] for layer in cache.layers):
        return mask  # a layer keeps another width (a sliding window): its columns are not the mask's; leave all
    width = mask.shape[1]
    cols = torch.arange(width, device=mask.device)
    pad = torch.tensor(pads, device=mask.device).unsqueeze(1)
    src = torch.where(cols < pad, prefix_len + cols, torch.where(cols < pad + prefix_len, cols - pad, cols))
    if any(pads):
        for layer in cache.layers:
            idx = src[:, None, :, None].expand_as(layer.keys)
            layer.keys.copy_(layer.keys.gather(2, idx))
            layer.values.copy_(layer.values.gather(2, idx))
    return (cols >= pad).to(mask.dtype)


def merge_caches(cache_a: Any, mask_a: Any, cache_b: Any, mask_b: Any) -> tuple[Any, Any]:
    """Stack two KV caches (and masks) along the batch, left-padding the shorter one."""
    import torch

    la, lb = mask_a.shape[1], mask_b.shape[1]
    width = max(la, lb)

    def lpad(t: Any, n: int) -> Any:
        if n == 0:
            return t
        shape = list(t.shape)
        shape[-2] = n
        return torch.cat([t.new_zeros(shape), t], dim=-2)

    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers):
        if getattr(layer_a, "stack", None) is not None:
            layer_a.stack(layer_b.keys, layer_b.values)
            continue
        layer_a.keys = torch.cat([lpad(layer_a.keys, width - la), lpad(layer_b.keys, width - lb)], dim=0)
        layer_a.values = torch.cat([lpad(layer_a.values, width - la), lpad(layer_b.values, width - lb)], dim=0)
    mask = torch.cat(
        [
            torch.cat([mask_a.new_zeros((mask_a.shape[0], width - la)), mask_a], dim=1),
            torch.cat([mask_b.new_zeros((mask_b.shape[0], width - lb)), mask_b], dim=1),
        ],
        dim=0,
    )
    return cache_a, mask
