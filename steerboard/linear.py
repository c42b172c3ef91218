"""Logistic regression on fixed feature vectors: the one linear classifier the gates share.

:class:`LinearProbe` is ``sigmoid(w . standardise(x) + b)``, fitted by torch L-BFGS with an L2 penalty, stored
as JSON (``weight``, ``bias``, ``mean``, ``std``). The steering gate probe (residual-stream features,
:mod:`steerboard.methods.steering`) and the prompt-text classifier gate (sentence embeddings,
:mod:`steerboard.methods.prompt_gate`) both use it. Hand-written (a few lines of torch) so the ``sae``/``actadd``
methods do not need scikit-learn; torch is imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class LinearProbe:
    """Binary logistic regression ``sigmoid(w . standardise(x) + b)`` on feature vectors.

    Attributes:
        weight: one weight per (standardised) feature.
        bias: the intercept.
        mean: per-feature mean of the fit data (standardisation).
        std: per-feature standard deviation of the fit data (floored at 1e-6).
    """

    weight: list[float]
    bias: float
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, steps: int = 200) -> LinearProbe:
        """Fit on ``x`` ``[n, d]`` and 0/1 labels ``y`` ``[n]``."""
        import torch

        x = x.float()
        mean = x.mean(0)
        std = x.std(0).clamp(min=1e-6)
        z = (x - mean) / std
        w = torch.zeros(z.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
        yf = y.float()

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = z @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yf) + l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return cls(w.detach().tolist(), float(b.detach()), mean.tolist(), std.tolist())

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(label 1) for each row of ``x`` ``[n, d]`` (on the CPU)."""
        import torch

        w = torch.tensor(self.weight)
        z = (x.float().cpu() - torch.tensor(self.mean)) / torch.tensor(self.std)
        return torch.sigmoid(z @ w + self.bias)

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearProbe:
        return cls(list(d["weight"]), float(d["bias"]), list(d["mean"]), list(d["std"]))


def load_or_fit_linear(shipped: Path, cached: Path, fit: Callable[[], LinearProbe]) -> LinearProbe:
    """A :class:`LinearProbe` from ``shipped``, else ``cached``, else ``fit()`` written to ``cached`` (atomically)."""
    for p in (shipped, cached):
        if p.is_file():
            return LinearProbe.from_dict(json.loads(p.read_text()))
    probe = fit()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{id(probe)}.tmp")
    tmp.write_text(json.dumps(probe.to_dict()))
    tmp.replace(cached)
    return probe
