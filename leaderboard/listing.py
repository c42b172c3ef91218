"""The task listing the leaderboard is driven by (contract 2: ``tasks/listing.yaml``).

The leaderboard reads the tasks engineer's listing through ``steerboard.tasks.listing.load_listing()`` when
that exists, or a YAML file in the same format (``--listing PATH``; tests use a fixture listing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AXES = ("safety", "overrefusal", "capability")
#: The unsteered control method: other rows are compared with its runs (deltas, paired tests).
CONTROL_METHOD = "base"


class ListingError(ValueError):
    """The listing is malformed (names the task/metric and what is valid)."""


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
    """All tasks of the listing, in listing order."""

    tasks: dict[str, TaskSpec]

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
        out: dict[str, Any] = {"tasks": {}}
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


def parse_listing(data: Any) -> Listing:
    """Validate a listing given as the parsed YAML (or an object with the same fields).

    Args:
        data: ``{"tasks": {name: {...}}}`` or the ``tasks`` mapping itself.

    Returns:
        The listing.

    Raises:
        ListingError: naming the task and field that is wrong.
    """
    data = _plain(data)
    if isinstance(data, dict) and "tasks" in data and isinstance(data["tasks"], dict | list):
        data = data["tasks"]
    if isinstance(data, list):  # a list of task entries that carry their own name
        data = {str(t.get("name")): t for t in data if isinstance(t, dict)}
    if not isinstance(data, dict) or not data:
        raise ListingError("listing: expected a mapping 'tasks: {<task>: {...}}' with at least one task")
    tasks: dict[str, TaskSpec] = {}
    for tname, t in data.items():
        if not isinstance(t, dict):
            raise ListingError(f"listing: task {tname!r} must be a mapping, got {type(t).__name__}")
        metrics: list[MetricSpec] = []
        for i, m in enumerate(t.get("metrics") or []):
            where = f"listing: task {tname!r} metric #{i + 1}"
            if not isinstance(m, dict):
                raise ListingError(f"{where}: must be a mapping")
            for req in ("name", "scorer"):
                if not m.get(req):
                    raise ListingError(f"{where}: missing {req!r}")
            axis = m.get("axis", "safety")
            if axis not in AXES:
                raise ListingError(f"{where} ({m['name']}): axis {axis!r} is not one of {', '.join(AXES)}")
            filt = m.get("sample_filter") or {}
            if not isinstance(filt, dict):
                raise ListingError(f"{where} ({m['name']}): sample_filter must be a mapping, got {filt!r}")
            sv = m.get("sample_value")
            metrics.append(
                MetricSpec(
                    task=str(tname),
                    name=str(m["name"]),
                    scorer=str(m["scorer"]),
                    title=str(m.get("title") or m["name"]),
                    higher_is_better=bool(m.get("higher_is_better", True)),
                    headline=bool(m.get("headline", False)),
                    axis=axis,
                    sample_value=None if sv in (None, "", "null") else str(sv),
                    sample_filter=tuple(sorted((str(k), v) for k, v in filt.items())),
                )
            )
        tasks[str(tname)] = TaskSpec(
            name=str(tname),
            title=str(t.get("title") or tname),
            description=str(t.get("description") or ""),
            paper=str(t.get("paper") or ""),
            version=t.get("version"),
            metrics=tuple(metrics),
        )
    return Listing(tasks=tasks)


def load_listing_file(path: str | Path) -> Listing:
    """Read and validate a listing YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"listing file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as ex:
        raise ListingError(f"listing {p}: not valid YAML: {ex}") from ex
    return parse_listing(data)


def load_default_listing() -> Listing:
    """The project's listing (``steerboard.tasks.listing.load_listing()``, else ``tasks/listing.yaml``).

    Raises:
        FileNotFoundError: when the project has no listing yet (pass ``--listing PATH``).
    """
    try:
        from steerboard.tasks.listing import load_listing  # type: ignore[import-not-found]
    except ImportError:
        load_listing = None
    if load_listing is not None:
        return parse_listing(load_listing())
    from importlib.resources import files

    res = files("steerboard.tasks").joinpath("listing.yaml")
    if res.is_file():
        return load_listing_file(Path(str(res)))
    raise FileNotFoundError("no task listing: steerboard.tasks has no listing.yaml yet; pass --listing PATH")


def resolve_listing(path: str | Path | None) -> Listing:
    """``path`` if given, else the project's listing."""
    return load_listing_file(path) if path else load_default_listing()
