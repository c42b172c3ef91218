"""Inspect entry point: importing this registers steerboard's model providers and tasks.

Imports only: providers load torch/transformers lazily when used.
"""

# ruff: noqa: F401
from steerboard.methods.registry import register_methods as _register_methods

_METHODS = _register_methods()

# the hook that writes eval.metadata["steerboard"] (resolved settings of the provider that ran)
from steerboard.methods.provenance import ProvenanceHooks  # noqa: E402

# tasks (addressable as steerboard/<name>)
from steerboard.tasks.crescendo import crescendo  # noqa: E402
from steerboard.tasks.gsm8k import gsm8k  # noqa: E402
from steerboard.tasks.jbb_refusal import jbb_refusal  # noqa: E402
from steerboard.tasks.mmlu import mmlu  # noqa: E402
from steerboard.tasks.phtest import phtest  # noqa: E402
from steerboard.tasks.safeedit import safeedit  # noqa: E402
from steerboard.tasks.side_effects import side_effects  # noqa: E402
from steerboard.tasks.truthfulqa import truthfulqa  # noqa: E402
from steerboard.tasks.wildguard import wildguard  # noqa: E402
from steerboard.tasks.xstest import xstest  # noqa: E402
