"""The task listing (contract 2): ``tasks/listing.yaml`` -> validated dict.

``load_listing()`` returns ``{"tasks": {<task>: {title, description, paper, version, metrics: [...]}}}``
where each metric has ``name``, ``scorer``, ``title``, ``higher_is_better``, ``headline``, ``axis``
(safety | overrefusal | capability), ``sample_value`` (Score.value key or null) and ``sample_filter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LISTING_FILE = Path(__file__).parent / "listing.yaml"
AXES = ("safety", "overrefusal", "capability")
TASK_FIELDS = ("title", "description", "paper", "version", "metrics")
METRIC_FIELDS = ("name", "scorer", "title", "higher_is_better", "headline", "axis", "sample_value", "sample_filter")


def validate_listing(data: Any, source: str = "listing") -> dict[str, Any]:
    """Check the listing's structure; raises ValueError naming the task/metric and the field.

    Returns:
        The same data (``{"tasks": {...}}``).
    """
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise ValueError(f"{source}: expected a mapping 'tasks: {{<task>: {{...}}}}' with at least one task")
    for tname, t in data["tasks"].items():
        if not isinstance(t, dict):
            raise ValueError(f"{source}: task {tname!r} must be a mapping")
        missing = [f for f in TASK_FIELDS if f not in t]
        if missing:
            raise ValueError(f"{source}: task {tname!r} lacks {missing}")
        if not isinstance(t["metrics"], list) or not t["metrics"]:
            raise ValueError(f"{source}: task {tname!r} needs a non-empty metrics list")
        if not any(m.get("headline") for m in t["metrics"] if isinstance(m, dict)):
            raise ValueError(f"{source}: task {tname!r} has no headline metric")
        seen: set[tuple[str, str]] = set()
        for i, m in enumerate(t["metrics"]):
            where = f"{source}: task {tname!r} metric #{i + 1}"
            if not isinstance(m, dict):
                raise ValueError(f"{where}: must be a mapping")
            missing = [f for f in METRIC_FIELDS if f not in m]
            if missing:
                raise ValueError(f"{where} ({m.get('name')}): lacks {missing}")
            if m["axis"] not in AXES:
                raise ValueError(f"{where} ({m['name']}): axis {m['axis']!r} not in {AXES}")
            for flag in ("higher_is_better", "headline"):
                if not isinstance(m[flag], bool):
                    raise ValueError(f"{where} ({m['name']}): {flag} must be true or false")
            if m["sample_value"] is not None and not isinstance(m["sample_value"], str):
                raise ValueError(f"{where} ({m['name']}): sample_value must be a string or null")
            if not isinstance(m["sample_filter"], dict):
                raise ValueError(f"{where} ({m['name']}): sample_filter must be a mapping")
            key = (m["scorer"], m["name"])
            if key in seen:
                raise ValueError(f"{where}: duplicate metric {m['scorer']}/{m['name']}")
            seen.add(key)
    return data


def load_listing(path: str | Path | None = None) -> dict[str, Any]:
    """Load and validate the task listing (default: the shipped ``tasks/listing.yaml``)."""
    import yaml

    p = Path(path) if path is not None else LISTING_FILE
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return validate_listing(data, str(p))
