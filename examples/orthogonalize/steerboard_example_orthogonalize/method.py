"""``ex_orthogonalize/``: project a unit direction out of what the MLPs of chosen layers write.

A weight-edit method: ``private_weights = True`` gives it its own copy of the model, and
:meth:`Orthogonalize.prepare` changes that copy's weights once, before the first request. Each chosen
block's ``mlp.down_proj`` weight ``W`` (``[hidden_size, intermediate_size]``) becomes ``(I - v v^T) W``, so
that MLP can no longer write along ``v``. This is the weight form of directional ablation (Arditi et al.
2024 orthogonalise every writing matrix against a fitted refusal direction); here ``v`` is a seeded random
direction, the control such a method is compared with. A real method fits ``v`` in ``prepare`` (for
example with ``engine.hidden_states``) and caches it under ``self.artifact_path(engine, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steerboard.methods.base import Method, MethodConfig, sweep_field

if TYPE_CHECKING:  # annotations only
    from steerboard.engine import Engine


@dataclass
class OrthogonalizeConfig(MethodConfig):
    """Options (``-M key=value``), validated before any weights load.

    Attributes:
        layers: decoder blocks to edit (``-M layers=4,5,6``); empty = every block.
        seed: seed of the random direction.
        strength: 1 removes the direction completely, 0.5 halves it, 0 leaves the weights as they are (a sweep
            axis on the leaderboard: ``sweep_field``).
    """

    layers: list[int] = field(default_factory=list)
    seed: int = 0
    strength: float = sweep_field(1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"-M strength must be in [0, 1], got {self.strength}")


class Orthogonalize(Method):
    """Removes a seeded random direction from the MLP output weights of ``layers``."""

    name = "ex_orthogonalize"
    config_class = OrthogonalizeConfig
    private_weights = True  # this method changes weights: it gets its own model copy

    def prepare(self, engine: Engine) -> None:
        """Edit the weights in place, then tell the engine (it re-casts its low-precision copies)."""
        import torch

        cfg = self.config
        assert isinstance(cfg, OrthogonalizeConfig)
        blocks = engine.decoder_layers()
        self.edited = list(cfg.layers) or list(range(len(blocks)))
        for i in self.edited:
            engine.layer_module_name(i)  # raises naming the valid range
        hidden = int(engine.model.config.hidden_size)
        v = torch.randn(hidden, generator=torch.Generator().manual_seed(cfg.seed))
        v = v / v.norm()
        with torch.no_grad():
            for i in self.edited:
                w = blocks[i].mlp.down_proj.weight  # [hidden_size, intermediate_size]
                u = v.to(w.device, w.dtype)
                w.sub_(cfg.strength * torch.outer(u, u @ w))
        engine.weights_changed()

    def describe(self) -> dict[str, Any]:
        """What the eval log records: the config plus the edited layers."""
        return {**super().describe(), "edited_layers": getattr(self, "edited", None)}
