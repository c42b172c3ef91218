"""The leaderboard's typed view of the task listing (``tasks/listing.yaml``; format in ``docs/contract.md``).

The listing is read and validated by :mod:`steerboard.tasks.listing` (the one loader); this module turns it into
:class:`Listing` / :class:`TaskSpec` / :class:`MetricSpec`. The leaderboard reads the shipped listing, or a YAML
file in the same format (``--listing PATH``; tests use a fixture listing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerboard.tasks.listing import AXES, ListingError, load_listing, validate_listing

#: The unsteered control method: other rows are compared with its runs (deltas, paired tests).
CONTROL_METHOD = "base"

__all__ = ["AXES", "CONTROL_METHOD", "Listing", "ListingError", "MetricSpec", "TaskSpec", "load_listing_file", "parse_listing"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of one task, as the listing describes it."""

    task: str
    name: str
    scorer: str
    title: str
    higher_is_better: bool
    headline: bool
    axis: str
    sample_value: str | None
    sample_filter: tuple[tuple[str, Any], ...] = ()
    unit: str = "rate"
    chance: float | None = None
    chance_declared: bool = False

    @property
    def key(self) -> str:
        """Stable id ``task/scorer/name``."""
        return f"{self.task}/{self.scorer}/{self.name}"


@dataclass(frozen=True)
class TaskSpec:
    """One task of the listing."""

    name: str
    title: str
    description: str
    paper: str
    version: int | str | None
    metrics: tuple[MetricSpec, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Listing:
    """All tasks of the listing, in listing order, and the fixed metric set of each axis.

    ``axes`` maps each of :data:`AXES` to the keys (``task/scorer/name``) of the metrics its score is made of; a
    row gets an axis score only when it covers every one of them (``docs/leaderboard.md``).
    """

    tasks: dict[str, TaskSpec]
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def metric(self, key: str) -> MetricSpec:
        """The metric with key ``task/scorer/name``."""
        return {m.key: m for m in self.metrics}[key]

    def axis_metrics(self, axis: str) -> list[MetricSpec]:
        """The metrics of ``axis``'s fixed set, in listing order."""
        by_key = {m.key: m for m in self.metrics}
        return [by_key[k] for k in self.axes.get(axis, ())]

    @property
    def metrics(self) -> list[MetricSpec]:
        """Every metric of every task."""
        return [m for t in self.tasks.values() for m in t.metrics]

    @property
    def headline(self) -> list[MetricSpec]:
        """The headline metrics (the main table's columns), in listing order."""
        return [m for m in self.metrics if m.headline]

    def to_dict(self) -> dict[str, Any]:
        """The listing back in the YAML format (for storing and display)."""
        out: dict[str, Any] = {"axes": {a: list(ks) for a, ks in self.axes.items()}, "tasks": {}}
        for t in self.tasks.values():
            out["tasks"][t.name] = {
                "title": t.title,
                "description": t.description,
                "paper": t.paper,
                "version": t.version,
                "metrics": [
                    {
                        "name": m.name,
                        "scorer": m.scorer,
                        "title": m.title,
                        "higher_is_better": m.higher_is_better,
                        "headline": m.headline,
                        "axis": m.axis,
                        "sample_value": m.sample_value,
                        "sample_filter": dict(m.sample_filter),
                        "unit": m.unit,
                        **({"chance": m.chance} if m.chance_declared else {}),
                    }
                    for m in t.metrics
                ],
            }
        return out


def _plain(obj: Any) -> Any:
    """Turn dataclasses / pydantic models / mappings into plain dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):
        return _plain(obj.model_dump())
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def parse_listing(data: Any, source: str = "listing") -> Listing:
    """Validate a listing given as the parsed YAML (or an object with the same fields).

    Args:
        data: ``{"tasks": {name: {...}}}``, the ``tasks`` mapping itself, or a list of task entries that carry
            their own ``name``.
        source: where it came from, for messages.

    Returns:
        The listing.

    Raises:
        ListingError: naming the task and field that is wrong (:func:`steerboard.tasks.listing.validate_listing`).
    """
    data = _plain(data)
    axes_data: Any = None
    if isinstance(data, dict) and "tasks" in data and isinstance(data["tasks"], dict | list):
        axes_data = data.get("axes")
        data = data["tasks"]
    if isinstance(data, list):  # a list of task entries that carry their own name
        data = {str(t.get("name")): {k: v for k, v in t.items() if k != "name"} for t in data if isinstance(t, dict)}
    tasks_data = validate_listing({"tasks": data}, source)["tasks"]
    tasks: dict[str, TaskSpec] = {}
    for tname, t in tasks_data.items():
        metrics = tuple(
            MetricSpec(
                task=str(tname),
                name=str(m["name"]),
                scorer=str(m["scorer"]),
                title=str(m["title"]),
                higher_is_better=m["higher_is_better"],
                headline=m["headline"],
                axis=m["axis"],
                sample_value=m["sample_value"] or None,
                sample_filter=tuple(sorted((str(k), v) for k, v in m["sample_filter"].items())),
                unit=str(m.get("unit", "rate")),
                chance=None if m.get("chance") is None else float(m["chance"]),
                chance_declared="chance" in m,
            )
            for m in t["metrics"]
        )
        tasks[str(tname)] = TaskSpec(
            name=str(tname), title=str(t["title"]), description=str(t["description"]), paper=str(t["paper"]),
            version=t["version"], metrics=metrics,
        )
    return Listing(tasks=tasks, axes=_parse_axes(axes_data, tasks, source))


def _parse_axes(data: Any, tasks: dict[str, TaskSpec], source: str) -> dict[str, tuple[str, ...]]:
    """Check the listing's ``axes`` section: every axis names existing metrics of that axis, each with its
    chance level and direction declared.

    Raises:
        ListingError: naming the axis or metric and the field to add.
    """
    if not isinstance(data, dict):
        raise ListingError(
            f"{source}: lacks 'axes': add a mapping from each of {', '.join(AXES)} to the metric keys "
            "(task/scorer/name) its score is made of"
        )
    unknown = sorted(set(data) - set(AXES))
    if unknown:
        raise ListingError(f"{source}: axes: unknown axis {unknown}; valid: {', '.join(AXES)}")
    by_key = {m.key: m for t in tasks.values() for m in t.metrics}
    out: dict[str, tuple[str, ...]] = {}
    for axis in AXES:
        keys = data.get(axis)
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ListingError(f"{source}: axes.{axis} must be a non-empty list of metric keys (task/scorer/name)")
        for k in keys:
            m = by_key.get(k)
            if m is None:
                raise ListingError(f"{source}: axes.{axis}: no metric {k!r}; valid keys: {', '.join(sorted(by_key))}")
            if m.axis != axis:
                raise ListingError(f"{source}: axes.{axis}: metric {k} has axis {m.axis!r}, not {axis!r}")
            if not m.chance_declared:
                raise ListingError(
                    f"{source}: metric {k} (axis {axis}) lacks 'chance': add chance: <level> (the value a "
                    "random answer scores, in the metric's unit) or chance: null where no chance level applies"
                )
            if axis == "capability" and m.unit == "rate" and m.chance is None:
                raise ListingError(
                    f"{source}: metric {k} (axis capability) needs a numeric 'chance' (retention is measured "
                    "above chance)"
                )
            if axis == "capability" and m.unit == "nats" and m.higher_is_better:
                raise ListingError(
                    f"{source}: metric {k} (axis capability, unit nats) must set higher_is_better: false "
                    "(a cost per token enters capability as the perplexity ratio exp(-change))"
                )
            if m.unit == "count":
                raise ListingError(f"{source}: metric {k} has unit 'count', which no axis score can average")
        out[axis] = tuple(keys)
    return out


def load_listing_file(path: str | Path) -> Listing:
    """Read and validate a listing YAML file.

    Raises:
        FileNotFoundError: no such file.
        ListingError: not YAML, or not a valid listing.
    """
    return parse_listing(load_listing(path), str(path))


def load_default_listing() -> Listing:
    """The project's listing (the shipped ``tasks/listing.yaml``)."""
    return parse_listing(load_listing(), "tasks/listing.yaml")


def resolve_listing(path: str | Path | None) -> Listing:
    """``path`` if given, else the project's listing."""
    return load_listing_file(path) if path else load_default_listing()
