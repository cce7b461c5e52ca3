"""Object-class texts and class sets: one rule set, written once.

Class texts come from an LLM reply, a YAML file or the command line, and end up in three sensitive
places: a GroundingDINO prompt, a cache key and log lines. :func:`validate_class_text` is the only
rule; every entry point (the LLM reply parser in :mod:`searchers.parsing`, user config, the trial
config a searcher hands to Tune) builds a :class:`ClassSet` through it, and everything downstream
(map cache, trial loop, adapter, serving) takes the ``ClassSet`` and never checks again.

The rule (every violation raises :class:`~a2o.errors.ClassTextError` naming it):

1. *normalise*: Unicode NFKC, lowercase (``str.lower``), collapse runs of spaces, strip. "Tennis
   Ball" and "tennis  ball" are the same class and share cache entries.
2. *safe characters*: Unicode letters, ASCII digits, space, apostrophe and hyphen only. This
   rejects control characters, path syntax (``/``, ``\\``, ``..``), shell and markup characters
   (`````, ``$``, ``<``, ``|``, ``*``, ``#``), and the ``.`` and ``,`` separators of GroundingDINO
   prompts (``"a. b."``) and the ``--classes`` flag, so a class never splits into two.
3. *bounded*: 1 to ``MAX_WORDS`` (4) words and at most ``MAX_CLASS_CHARS`` (48) characters; a raw
   input longer than ``MAX_RAW_CHARS`` is rejected before any processing.
4. *one noun phrase*: no conjunction anywhere ("fork and knife" is two classes), and no article,
   preposition or pronoun at either end ("and also the floor", "knife on", "the cup" are fragments
   of a sentence, not class names).

Cache paths never contain the text: the key is the sha256 of the normalised text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from a2o.errors import ClassTextError

__all__ = [
    "MAX_CLASS_CHARS",
    "MAX_RAW_CHARS",
    "MAX_WORDS",
    "ClassSet",
    "normalise_text",
    "validate_class_text",
    "class_key",
]

MAX_CLASS_CHARS = 48
MAX_RAW_CHARS = 256
MAX_WORDS = 4
_EXTRA_ALLOWED = frozenset(" '-")
_DIGITS = frozenset("0123456789")
# Words that make a phrase a sentence fragment rather than an object name.
_CONJUNCTIONS = frozenset({"and", "or", "also", "but", "nor", "plus", "then", "etc", "versus", "vs"})
_EDGE_WORDS = frozenset({
    "a", "an", "the", "of", "on", "in", "at", "to", "for", "with", "by", "from", "into", "onto",
    "this", "that", "these", "those", "it", "its", "their", "his", "her", "my", "your", "our",
    "some", "any", "each", "every", "is", "are", "be",
})


def _describe(text: str) -> str:
    """A short, log-safe rendering of a (possibly hostile) text for error messages."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    return ascii(shown)


def normalise_text(text: str) -> str:
    """A class text or a lexicon key as compared: NFKC, lowercase, collapsed whitespace.

    The comparison form only; :func:`validate_class_text` also applies the rest of the rule.
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
    lowered = unicodedata.normalize("NFKC", text).lower()
    for ch in lowered:
        if ch.isalpha() or ch in _DIGITS or ch in _EXTRA_ALLOWED:
            continue
        name = unicodedata.name(ch, f"U+{ord(ch):04X}")
        raise ClassTextError(
            f"class text {_describe(text)} contains {ascii(ch)} ({name}); allowed are letters, "
            "digits 0-9, space, apostrophe and hyphen (rule: safe characters)."
        )
    normalised = " ".join(part for part in lowered.split(" ") if part)  # collapse, strip
    if not any(ch.isalpha() or ch in _DIGITS for ch in normalised):
        raise ClassTextError(f"class text {_describe(text)} has no letter or digit (rule: non-empty).")
    if len(normalised) > MAX_CLASS_CHARS:
        raise ClassTextError(
            f"class text {_describe(text)} is {len(normalised)} characters after normalisation; "
            f"the limit is {MAX_CLASS_CHARS} (rule: bounded)."
        )
    words = normalised.split(" ")
    if len(words) > MAX_WORDS:
        raise ClassTextError(
            f"class text {_describe(text)} has {len(words)} words; the limit is {MAX_WORDS} "
            "(rule: bounded). Name one object, e.g. 'paint roller'."
        )
    joiner = next((w for w in words if w.strip("'-") in _CONJUNCTIONS), None)
    if joiner is not None:
        raise ClassTextError(
            f"class text {_describe(text)} contains {joiner!r} (rule: one noun phrase); give each "
            "object as its own class."
        )
    for edge in (words[0], words[-1]):
        if edge.strip("'-") in _EDGE_WORDS:
            raise ClassTextError(
                f"class text {_describe(text)} starts or ends with {edge!r}, a fragment of a sentence "
                "(rule: one noun phrase); write the object's name alone, e.g. 'cup'."
            )
    return normalised


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def class_key(text: str) -> str:
    """sha256 hex digest of the *normalised* class text: the only form a class takes in a path."""
    return _sha256(validate_class_text(text))


@dataclass(frozen=True)
class ClassSet(Sequence):
    """An ordered set of valid class texts: channel ``i`` of the maps is ``texts[i]``.

    Build it with :meth:`parse` (strict: raises on the first bad text) where text enters; the
    constructor is for code that already holds validated texts (:meth:`parse` and the reply
    parser). The cache keys are computed once, here. It iterates and indexes like the tuple of its
    texts, so ``list(class_set)`` is the JSON form a Tune config carries; two sets are equal when
    their texts are, in the same order (use :meth:`as_frozenset` for order-free identity).
    """

    texts: tuple[str, ...] = ()
    """Normalised class texts, in channel order, without duplicates."""
    keys: tuple[str, ...] = ()
    """sha256 of each text (the cache key), same order."""

    def __post_init__(self) -> None:
        if not self.keys and self.texts:
            object.__setattr__(self, "keys", tuple(_sha256(t) for t in self.texts))
        assert len(self.keys) == len(self.texts), "ClassSet keys and texts differ in length"

    @classmethod
    def parse(cls, texts: Iterable[str] | ClassSet, *, action_names: Iterable[str] = (),
              max_classes: int | None = None, where: str = "class set") -> ClassSet:
        """The strict entry point: every text must pass the rule; duplicates are an error.

        Args:
            texts: Raw texts (a list; a single comma-separated string is refused).
            action_names: Target action names; a class equal to one is an error (a detector
                prompt that names the action leaks the label).
            max_classes: When given, more classes than this is an error.
            where: Names the source in error messages (a config key, e.g. ``search.initial_classes``).

        Returns an already-built ``ClassSet`` unchanged: it was checked when it was built.
        """
        if isinstance(texts, ClassSet):
            return texts
        if isinstance(texts, str):
            raise ClassTextError(
                f"{where}: must be a list of texts, got the string {_describe(texts)}; "
                "split a comma-separated list first"
            )
        try:
            normalised = [validate_class_text(t) for t in texts]
        except ClassTextError as exc:
            raise ClassTextError(f"{where}: {exc}") from None
        seen: dict[str, int] = {}
        actions = {normalise_text(a) for a in action_names}
        for index, text in enumerate(normalised):
            if text in seen:
                raise ClassTextError(
                    f"{where}: {text!r} appears twice (positions {seen[text]} and {index}) after "
                    "normalisation (lowercase, collapsed spaces); remove the duplicate."
                )
            if text in actions:
                raise ClassTextError(f"{where}: {text!r} is a target action name, not an object; remove it.")
            seen[text] = index
        if max_classes is not None and len(normalised) > max_classes:
            raise ClassTextError(f"{where}: {len(normalised)} classes, more than the limit {max_classes}.")
        return cls(tuple(normalised))

    # ---- sequence behaviour (the tuple of texts)
    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]

    def __contains__(self, text: object) -> bool:
        return text in self.texts

    def __bool__(self) -> bool:
        return bool(self.texts)

    def key_of(self, text: str) -> str:
        """The cache key of one member."""
        return self.keys[self.texts.index(text)]

    def as_frozenset(self) -> frozenset[str]:
        """Order-free identity: two sets with the same members are the same proposal."""
        return frozenset(self.texts)

    def __str__(self) -> str:
        return ", ".join(self.texts) or "(no classes: RGB only)"


ClassSet.EMPTY = ClassSet()  # type: ignore[attr-defined]
