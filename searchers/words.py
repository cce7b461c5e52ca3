"""A user's word list (``search.vocabulary``) checked with the one class-text rule."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from a2o.detect.classes import normalise_text, validate_class_text
from a2o.errors import ClassTextError

__all__ = ["usable_words"]

logger = logging.getLogger(__name__)


def usable_words(words: Iterable[str], *, action_names: Iterable[str] = (), where: str = "vocabulary") -> list[str]:
    """The normalised words that pass :func:`a2o.detect.classes.validate_class_text`, in order.

    Entries that break the rule or name a target action are dropped, and how many (with the first
    few reasons) is logged as a warning; a repeated entry is skipped.
    """
    actions = {normalise_text(a) for a in action_names}
    kept: list[str] = []
    dropped: list[str] = []
    for word in words:
        try:
            text = validate_class_text(str(word))
        except ClassTextError as exc:
            dropped.append(str(exc))
            continue
        if text in actions:
            dropped.append(f"{text!r} is a target action name")
        elif text not in kept:
            kept.append(text)
    if dropped:
        logger.warning("%s: dropped %d entr%s that break the class-text rule or name an action (%s)", where,
                       len(dropped), "y" if len(dropped) == 1 else "ies", "; ".join(dropped[:3]))
    return kept
