"""Where steerboard keeps caches (models, fitted method artifacts, judge weights)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the steerboard cache.

    The root is ``$STEERBOARD_CACHE`` when set, else ``$XDG_CACHE_HOME/steerboard``, else
    ``~/.cache/steerboard``.

    Args:
        *parts: sub-folders under the cache root.

    Returns:
        The folder path, created if missing.
    """
    root = os.environ.get("STEERBOARD_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "steerboard"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
