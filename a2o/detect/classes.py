"""Object-class texts: validation, normalisation and hashing.

Class texts come from an LLM, a YAML file or the command line, and end up in three sensitive
places: a GroundingDINO prompt, a cache key and log lines. One rule covers all three.

The rule (every violation raises :class:`~a2o.errors.ClassTextError` naming it):

1. *normalise*: Unicode NFKC, then lowercase (``str.lower``), then collapse runs of spaces and
   strip. This matches the searchers' case-insensitive comparison, so "Tennis  Ball" and
   "tennis ball" are the same class and share cache entries.
2. *non-empty*: at least one letter or digit after normalisation.
3. *bounded*: at most ``MAX_CLASS_CHARS`` (64) characters after normalisation; raw inputs longer
   than ``MAX_RAW_CHARS`` are rejected before any processing.
4. *safe characters*: Unicode letters, ASCII digits, space, apostrophe and hyphen only. This
   rejects control characters (newlines, tabs, NUL), path syntax (``/``, ``\\``, ``..``), shell
   metacharacters, and the ``.`` and ``,`` separators that GroundingDINO prompts (``"a. b."``)
   and the ``--classes`` flag use, so a class can never split into two or inject another.

Cache paths never contain the text: :func:`class_key` is the sha256 of the normalised text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from a2o.errors import ClassTextError

__all__ = [
    "MAX_CLASS_CHARS",
    "MAX_RAW_CHARS",
    "normalise_text",
    "validate_class_text",
    "validate_class_set",
    "class_key",
]

MAX_CLASS_CHARS = 64
MAX_RAW_CHARS = 256
_EXTRA_ALLOWED = frozenset(" '-")
_DIGITS = frozenset("0123456789")


def _describe(text: str) -> str:
    """A short, log-safe rendering of a (possibly hostile) text for error messages."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    return ascii(shown)


def normalise_text(text: str) -> str:
    """A class text or a lexicon key as compared: NFKC, lowercase, collapsed whitespace.

    The comparison form only; :func:`validate_class_text` also checks length and characters.
    """
    return " ".join(unicodedata.normalize("NFKC", str(text)).lower().split())


def validate_class_text(text: str) -> str:
    """Return the normalised class text, or raise :class:`ClassTextError` naming the broken rule."""
    if not isinstance(text, str):
        raise ClassTextError(f"class text must be a string, got {type(text).__name__}")
    if len(text) > MAX_RAW_CHARS:
        raise ClassTextError(
            f"class text {_describe(text)} is {len(text)} characters; the limit is "
            f"{MAX_CLASS_CHARS} (rule: bounded). Use a short noun phrase such as 'tennis ball'."
        )
    normalised = unicodedata.normalize("NFKC", text).lower()
    for ch in normalised:
        if ch.isalpha() or ch in _DIGITS or ch in _EXTRA_ALLOWED:
            continue
        name = unicodedata.name(ch, f"U+{ord(ch):04X}")
        raise ClassTextError(
            f"class text {_describe(text)} contains {ascii(ch)} ({name}); allowed are letters, "
            "digits 0-9, space, apostrophe and hyphen (rule: safe characters)."
        )
    normalised = " ".join(part for part in normalised.split(" ") if part)  # collapse, strip
    if not any(ch.isalpha() or ch in _DIGITS for ch in normalised):
        raise ClassTextError(
            f"class text {_describe(text)} has no letter or digit (rule: non-empty)."
        )
    if len(normalised) > MAX_CLASS_CHARS:
        raise ClassTextError(
            f"class text {_describe(text)} is {len(normalised)} characters after normalisation; "
            f"the limit is {MAX_CLASS_CHARS} (rule: bounded)."
        )
    return normalised


def validate_class_set(texts: Iterable[str]) -> list[str]:
    """Normalise every class of a set, keeping order; duplicates after normalisation are an error.

    Duplicates are rejected rather than dropped so that the channel order a caller asked for is
    exactly the order of the maps it gets back.
    """
    if isinstance(texts, str):
        raise ClassTextError(
            f"class set must be a list of texts, got the string {_describe(texts)}; "
            "split a comma-separated list first"
        )
    normalised = [validate_class_text(t) for t in texts]
    seen: dict[str, int] = {}
    for index, text in enumerate(normalised):
        if text in seen:
            raise ClassTextError(
                f"class set has {text!r} twice (positions {seen[text]} and {index}) after "
                "normalisation (lowercase, collapsed spaces); remove the duplicate."
            )
        seen[text] = index
    return normalised


def class_key(text: str) -> str:
    """sha256 hex digest of the *normalised* class text: the only form a class takes in a path."""
    return hashlib.sha256(validate_class_text(text).encode("utf-8")).hexdigest()
