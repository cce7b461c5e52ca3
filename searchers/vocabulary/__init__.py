"""The shipped generic candidate vocabulary: common English nouns a detector could be asked for.

Vocabulary searchers (optuna, random) and the ICRL fallback use it when ``search.vocabulary`` is
empty, so a baseline is not handed the test world's own object names. What the list holds and how
it was chosen is written in the header of :data:`GENERIC_NOUNS_FILE`.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["GENERIC_NOUNS_FILE", "GENERIC_NOUNS_PATH", "generic_vocabulary"]

GENERIC_NOUNS_FILE = "generic_nouns.txt"
"""File name of the list inside the ``searchers.vocabulary`` package."""

GENERIC_NOUNS_PATH = f"searchers/vocabulary/{GENERIC_NOUNS_FILE}"
"""Where the list lives in the source tree (for logs and messages)."""


@functools.cache
def _generic_nouns() -> tuple[str, ...]:
    text = resources.files(__name__).joinpath(GENERIC_NOUNS_FILE).read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def generic_vocabulary() -> list[str]:
    """The generic nouns in file order (read once, then cached; a fresh list each call)."""
    return list(_generic_nouns())
