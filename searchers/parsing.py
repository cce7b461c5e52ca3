"""Turn an LLM reply into a :class:`~a2o.detect.classes.ClassSet`: the entry point of untrusted text.

The reply parser only *unwraps* list formatting; whether a phrase is a class is decided by the one
rule, :func:`a2o.detect.classes.validate_class_text`:

- JSON replies (``{"classes": [...]}``, a bare list, optionally inside a code fence) and plain
  text (one phrase per line, or comma/semicolon separated) are both accepted;
- list decorations are removed: bullets, numbering, wrapping quotes, ``**bold**`` around a whole
  phrase, trailing punctuation, parentheticals, one leading article ("a spoon"), ``_`` for space;
- code and markup are **not** unwrapped: a phrase holding a backtick, ``$``, ``<`` or similar is
  rejected, so "`id`" never becomes the class "id";
- phrases equal to a target action name are dropped, as are duplicates; the set is cut to
  ``max_classes`` in the reply's order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from a2o.detect.classes import MAX_RAW_CHARS, ClassSet, normalise_text, validate_class_text
from a2o.errors import ClassTextError

__all__ = ["ParsedReply", "parse_reply", "parse_class_reply", "clean_phrase", "split_reply", "clip_reply", "strip_fence", "reply_json"]

_LEAD = re.compile(r"^\s*(?:[-+>\u2022\u00b7\u2013\u2014]+|\*(?=\s)|\(?\d{1,3}[.):\]]|\(?[a-z][.)](?=\s)|\[\s*\])+\s*")
_PAREN = re.compile(r"\([^)`$<>]*\)|\[[^\]`$<>]*\]")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_QUOTES = "\"'\u201c\u201d\u2018\u2019"
_ARTICLE = re.compile(r"^(?:a|an|the) +(?=\S)", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedReply:
    """What a reply yielded: the class set, and each rejected phrase with the reason."""

    class_set: ClassSet
    rejected: tuple[tuple[str, str], ...] = ()


def clip_reply(text: str, limit: int = 300) -> str:
    """A reply cut to ``limit`` characters, for echoing back to the LLM in a re-ask."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters cut]"


def clean_phrase(candidate: str) -> str:
    """Undo list formatting around one phrase (bullets, numbers, quotes, bold, article, period).

    Raises:
        ClassTextError: the phrase breaks the rule of :mod:`a2o.detect.classes`.
    """
    phrase = str(candidate).strip()
    if len(phrase) > MAX_RAW_CHARS:
        return validate_class_text(phrase)  # raises with the 'bounded' rule
    phrase = _PAREN.sub(" ", phrase).strip()
    for _ in range(3):  # "1. - **ball**" has nested decorations
        stripped = _LEAD.sub("", phrase).strip()
        if len(stripped) > 4 and stripped.startswith("**") and stripped.endswith("**"):
            stripped = stripped[2:-2].strip()
        stripped = stripped.strip(_QUOTES).strip().rstrip(" .:;!?").strip()
        if stripped == phrase:
            break
        phrase = stripped
    # Only spaces are collapsed here: a tab or newline inside one phrase is for the rule to refuse.
    phrase = _ARTICLE.sub("", phrase.replace("_", " "), count=1)
    return validate_class_text(phrase)


def strip_fence(text: str) -> str:
    """The reply without a surrounding Markdown code fence."""
    return _FENCE.sub("", str(text).strip()).strip()


def reply_json(text: str) -> Any:
    """The reply's JSON object or list (a code fence around it is fine), or None when it has none."""
    body = strip_fence(text)
    if body[:1] not in ("[", "{"):
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def split_reply(text: str) -> list[str]:
    """Candidate phrases of a reply: the JSON list if it parses, else lines split on , and ;."""
    body = strip_fence(text)
    data = reply_json(body)
    if data is not None:
        if isinstance(data, dict):
            data = data.get("classes", data.get("objects"))
        if isinstance(data, list):
            return [str(item) for item in data if isinstance(item, (str, int, float))]
    parts: list[str] = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.endswith(":"):  # a header such as "Here are the classes:"
            continue
        parts.extend(p for p in re.split(r"[,;]", line) if p.strip())
    return parts


def parse_reply(
    text: str,
    *,
    action_names: Iterable[str] = (),
    max_classes: int,
    allowed: Sequence[str] | None = None,
) -> ParsedReply:
    """Class set of an LLM reply (possibly empty), with the reasons for every rejected phrase.

    Args:
        text: The reply (JSON or plain text).
        action_names: Target action names; phrases equal to one are dropped.
        max_classes: C_max; the set is cut to this length, keeping the reply's order.
        allowed: When given, keep only phrases in this set (the prompt-pool baseline).
    """
    actions = {normalise_text(a) for a in action_names}
    allowed_set = {normalise_text(a) for a in allowed} if allowed is not None else None
    kept: list[str] = []
    rejected: list[tuple[str, str]] = []
    for candidate in split_reply(text):
        shown = candidate.strip()[:60]
        try:
            phrase = clean_phrase(candidate)
        except ClassTextError as exc:
            rejected.append((shown, str(exc)))
            continue
        if phrase in actions:
            rejected.append((shown, "it is a target action name, not an object"))
        elif allowed_set is not None and phrase not in allowed_set:
            rejected.append((shown, "it is not in the object pool"))
        elif phrase not in kept:
            kept.append(phrase)
        if len(kept) >= max_classes:
            break
    return ParsedReply(ClassSet(tuple(kept)), tuple(rejected))


def reply_uses(text: str, *, action_names: Iterable[str] = (), max_classes: int) -> Optional[ClassSet]:
    """The objects of a small-prompt reply's own ``uses`` pairs (action -> object), checked by the
    class-text rule like any class; None when the reply has no ``uses`` list."""
    data = reply_json(text)
    uses = data.get("uses") if isinstance(data, dict) else None
    if not isinstance(uses, list):
        return None
    objects = [str(u["object"]) for u in uses if isinstance(u, dict) and isinstance(u.get("object"), (str, int, float))]
    return parse_reply(json.dumps({"classes": objects}), action_names=action_names, max_classes=max_classes).class_set


def parse_reply_filled(text: str, *, action_names: Iterable[str] = (), max_classes: int, fill_to: int) -> ParsedReply:
    """``parse_reply``, then the set is filled up to ``fill_to`` classes with the objects of the
    reply's own ``uses`` pairs that it left out (``search.fill_from_uses``): the model's own words,
    from the same reply, for a model that names the right objects per action and then proposes
    category words ("tools", "utensils") that no detector finds."""
    action_names = tuple(action_names)
    parsed = parse_reply(text, action_names=action_names, max_classes=max_classes)
    uses = reply_uses(text, action_names=action_names, max_classes=max(max_classes, 1) * 4)
    kept = list(parsed.class_set)
    for obj in uses or ():
        if len(kept) >= min(fill_to, max_classes):
            break
        if obj not in kept:
            kept.append(obj)
    return ParsedReply(ClassSet(tuple(kept)) if kept else parsed.class_set, parsed.rejected)


def parse_class_reply(text: str, *, action_names: Iterable[str] = (), max_classes: int,
                      allowed: Sequence[str] | None = None) -> ClassSet:
    """Shorthand for ``parse_reply(...).class_set``."""
    return parse_reply(text, action_names=action_names, max_classes=max_classes, allowed=allowed).class_set
