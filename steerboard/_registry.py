"""Inspect entry point: importing this registers steerboard's model providers and tasks.

Imports only: providers load torch/transformers lazily when used.
"""

# ruff: noqa: F401
from steerboard.methods.registry import register_methods as _register_methods

_METHODS = _register_methods()

# tasks (addressable as steerboard/<name>)
