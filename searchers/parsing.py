"""Turn an LLM reply into a clean list of object-class texts.

The detector needs simple single-concept prompts, and class texts end up in cache keys, logs and
results, so every proposal passes :func:`parse_class_reply`:

- JSON replies (``{"classes": [...]}``, a bare list, optionally inside a code fence) and plain
  text (one phrase per line, or comma/semicolon separated) are both accepted;
- bullets, numbering, markdown emphasis, quotes, trailing punctuation and parentheticals are
  stripped; text is NFKD-normalised to ASCII and lowercased;
- a phrase is kept only if it has 1-4 words of ``[a-z0-9 '-]`` and at most ``max_chars``
  characters (so ``"../../etc"`` or a 300-character line never survive);
- phrases equal to a target action name (copied back from the prompt) are dropped, duplicates
  removed, and the list is cut to ``max_classes``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["normalize_phrase", "sanitize_class_text", "parse_class_reply", "split_reply"]

MAX_WORDS = 4
MAX_CHARS = 40
_SAFE = re.compile(r"^[a-z0-9][a-z0-9 '\-]*$")
_LEAD = re.compile(r"^\s*(?:[-*+>\u2022\u00b7\u2013\u2014#]+|\(?\d{1,3}[.):\]]|\(?[a-z][.)](?=\s)|\[\s*\])+\s*")
_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def normalize_phrase(text: str) -> str:
    """NFKD to ASCII, lowercase, ``_`` to space, single spaces."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = text.replace("_", " ").lower()
    return " ".join(text.split())


def sanitize_class_text(text: str, *, max_chars: int = MAX_CHARS) -> str | None:
    """One candidate phrase -> a safe class text, or None when it is not one."""
    phrase = str(text).strip()
    if len(phrase) > 4 * max_chars:  # a paragraph, not a noun phrase
        return None
    # Parentheticals and markdown emphasis anywhere: "**racket** (held)" -> "racket".
    phrase = _PAREN.sub(" ", phrase).replace("*", "").replace("`", "").strip()
    for _ in range(3):  # "1. - ball" has nested decorations
        stripped = _LEAD.sub("", phrase).strip().strip("*`\"'\u201c\u201d\u2018\u2019").strip()
        if stripped == phrase:
            break
        phrase = stripped
    phrase = normalize_phrase(phrase).strip(" .,:;!?")
    if phrase.startswith(("a ", "an ", "the ")):
        phrase = phrase.split(" ", 1)[1]
    if not phrase or len(phrase) > max_chars or not _SAFE.match(phrase):
        return None
    if len(phrase.split()) > MAX_WORDS:
        return None
    return phrase


def split_reply(text: str) -> list[str]:
    """Candidate phrases of a reply: the JSON list if it parses, else lines split on , and ;."""
    body = _FENCE.sub("", text.strip()).strip()
    if body[:1] in "[{":
        try:
            data: Any = json.loads(body)
        except json.JSONDecodeError:
            data = None
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


def parse_class_reply(
    text: str,
    *,
    action_names: Iterable[str] = (),
    max_classes: int,
    allowed: Sequence[str] | None = None,
    max_chars: int = MAX_CHARS,
) -> list[str]:
    """Sanitised, de-duplicated class list from an LLM reply (possibly empty).

    Args:
        text: The reply (JSON or plain text).
        action_names: Target action names; phrases equal to one are dropped.
        max_classes: C_max; the list is cut to this length, keeping the reply's order.
        allowed: When given, keep only phrases in this set (the prompt-pool baseline).
        max_chars: Longest kept phrase.
    """
    actions = {normalize_phrase(a) for a in action_names}
    allowed_set = {normalize_phrase(a) for a in allowed} if allowed is not None else None
    kept: list[str] = []
    for candidate in split_reply(text):
        phrase = sanitize_class_text(candidate, max_chars=max_chars)
        if phrase is None or phrase in actions or phrase in kept:
            continue
        if allowed_set is not None and phrase not in allowed_set:
            continue
        kept.append(phrase)
        if len(kept) >= max_classes:
            break
    return kept
