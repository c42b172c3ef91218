"""Inspect entry point: importing this registers steerboard's model providers and tasks.

Imports only: providers load torch/transformers lazily when used.
"""

# ruff: noqa: F401
from steerboard.methods.registry import register_methods as _register_methods

_METHODS = _register_methods()

# tasks (addressable as steerboard/<name>)
from steerboard.tasks.crescendo import crescendo
from steerboard.tasks.gsm8k import gsm8k
from steerboard.tasks.jbb_refusal import jbb_refusal
from steerboard.tasks.mmlu import mmlu
from steerboard.tasks.safeedit import safeedit
from steerboard.tasks.truthfulqa import truthfulqa
from steerboard.tasks.wildguard import wildguard
from steerboard.tasks.xstest import xstest
