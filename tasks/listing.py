"""The task listing: ``tasks/listing.yaml`` -> validated dict (the format is in ``docs/contract.md``).

This is the one loader and validator of the listing format; the leaderboard builds its typed view
(:mod:`steerboard.leaderboard.listing`) from what :func:`validate_listing` accepts. ``load_listing()`` returns ``{"tasks": {<task>: {title, description, paper, version, metrics: [...]}}}``
where each metric has ``name``, ``scorer``, ``title``, ``higher_is_better``, ``headline``, ``axis``
(safety | overrefusal | capability), ``sample_value`` (Score.value key or null) and ``sample_filter``, and
optionally ``unit`` and ``chance``. The listing's ``axes`` section (the fixed metric set of each axis) is checked
by the leaderboard's view, :func:`steerboard.leaderboard.listing.parse_listing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LISTING_FILE = Path(__file__).parent / "listing.yaml"
AXES = ("safety", "overrefusal", "capability")
TASK_FIELDS = ("title", "description", "paper", "version", "metrics")
METRIC_FIELDS = ("name", "scorer", "title", "higher_is_better", "headline", "axis", "sample_value", "sample_filter")
OPTIONAL_METRIC_FIELDS = ("unit", "chance")


#: Tasks whose data is gated: how to give it. ``steerboard run`` skips them with a note when it is not given;
#: ``steerboard submit check`` passes a submission without them, with a note.
GATED_TASKS = {
    "wildguard": "its data is gated: set HF_TOKEN (after accepting the dataset's terms) or give "
    "-T wildguard.data_file=PATH",
}


class ListingError(ValueError):
    """The listing is malformed (names the task/metric and what is valid)."""


#: Optional metric field ``unit``: ``rate`` (default: a share in 0-1, shown in %), ``nats`` (a cost per
#: token, shown as is; on its axis it enters as ``exp(-cost)``) or ``count`` (e.g. turns; shown as is, left out
#: of axis scores).
UNITS = ("rate", "nats", "count")


def validate_listing(data: Any, source: str = "listing") -> dict[str, Any]:
    """Check the listing's structure: every task and metric field present and of the right type.

    Returns:
        The same data (``{"tasks": {...}}``).

    Raises:
        ListingError: naming the task/metric and the field.
    """
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise ListingError(f"{source}: expected a mapping 'tasks: {{<task>: {{...}}}}' with at least one task")
    for tname, t in data["tasks"].items():
        if not isinstance(t, dict):
            raise ListingError(f"{source}: task {tname!r} must be a mapping")
        missing = [f for f in TASK_FIELDS if f not in t]
        if missing:
            raise ListingError(f"{source}: task {tname!r} lacks {missing}")
        if not isinstance(t["metrics"], list) or not t["metrics"]:
            raise ListingError(f"{source}: task {tname!r} needs a non-empty metrics list")
        if not any(m.get("headline") for m in t["metrics"] if isinstance(m, dict)):
            raise ListingError(f"{source}: task {tname!r} has no headline metric")
        seen: set[tuple[str, str]] = set()
        for i, m in enumerate(t["metrics"]):
            where = f"{source}: task {tname!r} metric #{i + 1}"
            if not isinstance(m, dict):
                raise ListingError(f"{where}: must be a mapping")
            missing = [f for f in METRIC_FIELDS if f not in m]
            if missing:
                raise ListingError(f"{where} ({m.get('name')}): lacks {missing}")
            if m["axis"] not in AXES:
                raise ListingError(f"{where} ({m['name']}): axis {m['axis']!r} is not one of {', '.join(AXES)}")
            for flag in ("higher_is_better", "headline"):
                if not isinstance(m[flag], bool):
                    raise ListingError(f"{where} ({m['name']}): {flag} must be true or false")
            if m["sample_value"] is not None and not isinstance(m["sample_value"], str):
                raise ListingError(f"{where} ({m['name']}): sample_value must be a string or null")
            if m.get("unit", "rate") not in UNITS:
                raise ListingError(f"{where} ({m['name']}): unit {m['unit']!r} is not one of {', '.join(UNITS)}")
            chance = m.get("chance")
            if chance is not None and (isinstance(chance, bool) or not isinstance(chance, int | float)):
                raise ListingError(f"{where} ({m['name']}): chance must be a number or null, not {chance!r}")
            if not isinstance(m["sample_filter"], dict):
                raise ListingError(f"{where} ({m['name']}): sample_filter must be a mapping")
            key = (m["scorer"], m["name"])
            if key in seen:
                raise ListingError(f"{where}: duplicate metric {m['scorer']}/{m['name']}")
            seen.add(key)
    return data


def load_listing(path: str | Path | None = None) -> dict[str, Any]:
    """Load and validate a listing YAML file (default: the shipped ``tasks/listing.yaml``).

    Raises:
        FileNotFoundError: no such file.
        ListingError: not YAML, or not a valid listing.
    """
    import yaml

    p = Path(path) if path is not None else LISTING_FILE
    if not p.is_file():
        raise FileNotFoundError(f"listing file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as ex:
        raise ListingError(f"listing {p}: not valid YAML: {ex}") from ex
    return validate_listing(data, str(p))
