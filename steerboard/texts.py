"""Text identity shared across the package: the normalised form of a prompt and its short hash.

Method fit data keeps evaluation prompts out by these keys (:mod:`steerboard.methods.fitdata`) and the
cross-fitted judges look items up by them (:mod:`steerboard.scorers.embed`), so "the same prompt" means the
same thing everywhere. Standard library only.
"""

from __future__ import annotations

import hashlib
import re

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Normalised form used for de-duplication: lower case, runs of non-alphanumerics -> one space."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def text_hash(text: str) -> str:
    """10 hex digits of SHA-1 of the normalised text (40 bits: collisions are negligible here)."""
    return hashlib.sha1(normalize(text).encode()).hexdigest()[:10]
