"""Reading JSON-lines text: one JSON object per line, every problem named by file and line.

Shared by the task data readers, the judge command's input check and the gold-set files, so that a bad line
reads the same everywhere (``data.jsonl, line 3: malformed JSON (...)``). Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def json_objects(
    lines: Iterable[str], source: str | Path, error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``lines`` (an open text file), numbered from 1.

    Args:
        lines: the text, line by line.
        source: what the messages call it (the file's path).
        error: the exception type raised (a caller's own ``ValueError`` subclass).

    Raises:
        error: a line is not valid JSON, or holds JSON other than an object; the message names ``source``,
            the line and what was wrong.
    """
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as ex:
            raise error(f"{source}, line {lineno}: malformed JSON ({ex.msg} at column {ex.colno})") from ex
        if not isinstance(obj, dict):
            raise error(f"{source}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj
