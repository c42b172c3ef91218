"""``ex_randdir/``: add a seeded random unit direction to one decoder layer's residual stream.

An activation-hook method, built on the engine's public hook API the way ``sae/`` and ``actadd/`` are:

* :meth:`RandomDirection.prepare` fits the artifact (here: draws the direction) once per model;
* :meth:`RandomDirection.intervention` returns an :data:`steerboard.engine.Intervention`, which the engine
  enters around every generation batch; it registers a forward hook with :func:`steerboard.engine.hooks`
  on ``engine.layer_module_name(layer)``, and the hook edits the block's output with
  :func:`steerboard.engine.map_hidden` on every forward pass (the prompt prefill, then one decode step per
  generated token), reading :class:`steerboard.engine.BatchState` to know which pass it is.

A random direction is the usual control for steering methods: a real method fits its direction on data
in ``prepare`` (e.g. a difference of mean activations from ``engine.hidden_states``) and caches it under
``self.artifact_path(engine, ...)``.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steerboard.methods.base import Method, MethodConfig, sweep_field

if TYPE_CHECKING:  # the engine module imports torch lazily; annotations only
    from steerboard.engine import BatchState, Engine, Intervention
    from steerboard.resources import ModelShape


@dataclass
class RandomDirectionConfig(MethodConfig):
    """Options (``-M key=value``), validated before any weights load.

    Attributes:
        layer: decoder block whose output (the residual stream after it) is steered; -1 = the middle one.
        coefficient: norm of the added vector; declared a sweep axis (``sweep_field``): runs that differ only
            in it form a strength sweep on the leaderboard.
        seed: seed of the random direction.
        steer_on: ``all`` positions, only the ``prompt`` (prefill) or only ``generated`` tokens (decode).
    """

    layer: int = -1
    coefficient: float = sweep_field(8.0)
    seed: int = 0
    steer_on: typing.Literal["all", "prompt", "generated"] = "all"


class RandomDirection(Method):
    """Adds ``coefficient`` x a seeded random unit vector to the residual stream after block ``layer``."""

    name = "ex_randdir"
    config_class = RandomDirectionConfig

    @classmethod
    def memory_parts(cls, config: MethodConfig, model: ModelShape) -> dict[str, int]:
        """What this method adds to a worker's memory (the Ray executor's estimate): the direction, one float32
        vector of the hidden size (no weights loaded: ``model`` gives the sizes)."""
        return {**super().memory_parts(config, model), "direction": 4 * model.hidden}

    def prepare(self, engine: Engine) -> None:
        """Resolve the layer and draw the direction (``[hidden_size]``, unit norm) on the model's device."""
        import torch

        cfg = self.config
        assert isinstance(cfg, RandomDirectionConfig)
        n_layers = len(engine.decoder_layers())
        self.layer = n_layers // 2 if cfg.layer == -1 else cfg.layer
        self.module = engine.layer_module_name(self.layer)  # raises naming the valid range
        self.model = engine.model
        hidden = int(engine.model.config.hidden_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        direction = torch.randn(hidden, generator=gen)
        self.vector = (cfg.coefficient * direction / direction.norm()).to(engine.device)

    def intervention(self) -> Intervention | None:
        """The hooks entered around each batch (``None`` when there is nothing to add)."""
        from steerboard.engine import hooks, map_hidden

        cfg = self.config
        assert isinstance(cfg, RandomDirectionConfig)
        if cfg.coefficient == 0:
            return None

        @contextlib.contextmanager
        def steer(state: BatchState) -> Iterator[None]:
            def hook(module: Any, args: Any, output: Any) -> Any:
                # output's hidden states: [len(state.rows), seq, hidden_size]; seq = padded prompt length
                # in a prefill, 1 in a decode step
                if (cfg.steer_on == "prompt" and state.phase == "decode") or (
                    cfg.steer_on == "generated" and state.phase == "prefill"
                ):
                    return None  # keep the output
                return map_hidden(output, lambda h: h + self.vector.to(h.dtype))

            with hooks(self.model, {self.module: hook}):
                yield

        return steer

    def describe(self) -> dict[str, Any]:
        """What the eval log records: the config plus the resolved layer."""
        return {**super().describe(), "layer": getattr(self, "layer", None)}

