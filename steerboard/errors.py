"""User errors said in one line, by ``steerboard`` and by ``inspect eval`` alike.

A low-level module (standard library and :mod:`steerboard.inspect_private` only) so that every layer of the
package (tasks, methods, scorers) can raise it without importing another.
"""

from __future__ import annotations

from steerboard.inspect_private import PrerequisiteError


class UserError(ValueError, PrerequisiteError):
    """Bad input, said in one line: ``steerboard`` prints a ValueError's message alone, and ``inspect eval``
    prints this class's message alone (its ``PrerequisiteError`` handling) instead of a traceback."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.message = message
