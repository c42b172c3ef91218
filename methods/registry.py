"""Registers one Inspect model provider per steerboard method (entry-point group ``steerboard.methods``).

Our own methods and third-party ones take the same path: an entry point ``name = "module:Class"``
becomes the provider ``name/<model>``. Nothing heavy is imported here: each provider factory imports
its method (and torch/transformers) only when Inspect instantiates it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from inspect_ai.model import modelapi

GROUP = "steerboard.methods"


def method_entry_points() -> dict[str, str]:
    """``{method name: "module:Class"}`` for every installed method."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def unknown_method_message(name: str) -> str:
    """A one-line error for a method name that no installed package registers.

    Lists the registered methods and says how a new one is registered (an entry point in the
    ``steerboard.methods`` group, read by Python only when the package is (re)installed).
    """
    known = method_entry_points()
    registered = ", ".join(sorted(known)) or "none (is steerboard installed?)"
    return (
        f"unknown method {name!r}; installed: {registered}. To add one, declare it in your package's "
        f'pyproject.toml under [project.entry-points."{GROUP}"] as {name} = "yourpkg.module:YourMethod" and '
        "(re)install the package (pip install -e PATH): entry points are read at install time "
        "(see docs/methods.md)"
    )


def check_method(name: str) -> str:
    """Return ``"module:Class"`` of a registered method.

    Raises:
        ValueError: the method is not registered (:func:`unknown_method_message`).
    """
    target = method_entry_points().get(name)
    if target is None:
        raise ValueError(unknown_method_message(name))
    return target


def _factory(name: str, target: str) -> Callable[[], Any]:
    def factory() -> Any:
        from steerboard.methods.provider import provider_class

        return provider_class(target)

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = f"steerboard method provider {name}/ ({target})"
    return factory


def register_methods() -> list[str]:
    """Register every installed method as an Inspect provider; returns the names."""
    names = []
    for name, target in sorted(method_entry_points().items()):
        modelapi(name=name)(_factory(name, target))
        names.append(name)
    return names
