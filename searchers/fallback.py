"""The visible fallback of the LLM searchers: a small, seeded edit of the best set so far.

Used when the LLM gives no usable, new proposal after the re-asks, or cannot be reached. The
caller logs a warning and counts it; this module only decides the edit.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence

from a2o.detect.classes import ClassSet, normalise_text
from a2o.records import TrialRecord

__all__ = ["DEFAULT_VOCABULARY", "fallback_class_set", "fallback_edit"]

logger = logging.getLogger(__name__)

# Generic, dataset-agnostic fallback words (objects, body parts, scene elements). Only used when a
# fallback edit needs a class that neither the vocabulary nor the history provides.
DEFAULT_VOCABULARY = (
    "person", "hand", "face", "arm", "leg", "foot", "head", "ball", "floor", "table", "chair",
    "door", "cup", "bottle", "phone", "box", "book", "bag", "paper", "wall", "grass", "water",
    "court", "net", "car", "bicycle", "knife", "towel",
)


def fallback_class_set(
    *,
    records: Sequence[TrialRecord],
    injected: Sequence[TrialRecord] = (),
    best: TrialRecord | None,
    start: Sequence[str],
    tried: Iterable[ClassSet],
    vocabulary: Sequence[str],
    action_names: Iterable[str],
    mode: str,
    rng: random.Random,
    max_classes: int,
    target_classes: int,
) -> ClassSet:
    """The LLM searchers' fallback: an untried edit of the best set so far.

    Args:
        records: This run's finished trials (their classes are candidate words, their rewards
            the classes' strength).
        injected: Another run's records (the OOD baseline): also words and strength, and the base
            when this run has no scored trial yet.
        best: This run's best record, or None.
        start: The base when nothing scored yet: the initial classes or the last suggested set.
        tried: Every set suggested so far (the edit must differ from each).
        vocabulary: Words to add first (already checked by the class-text rule).
        action_names: Never added.
        mode: ``"max"`` or ``"min"``: which reward is better.
        rng: The searcher's own seeded stream.
        max_classes: ``C_max``.
        target_classes: Size of a set drawn from nothing.
    """
    sign = 1.0 if mode == "max" else -1.0
    if best is None and injected:
        scored = [r for r in injected if r.scored]
        best = max(scored, key=lambda r: sign * r.val_accuracy) if scored else None
    base = list(best.class_set) if best else list(start)
    actions = {normalise_text(a) for a in action_names}
    words: list[str] = []
    for source in (vocabulary, *[r.class_set for r in (*records, *injected)], DEFAULT_VOCABULARY):
        for word in source:
            if word not in words and word not in actions:
                words.append(word)
    rewards: dict[str, list[float]] = {}
    for record in (*records, *injected):
        if record.scored:
            for text in record.class_set:
                rewards.setdefault(text, []).append(sign * record.val_accuracy)
    strength = {text: sum(values) / len(values) for text, values in rewards.items()}
    edit = fallback_edit(base, words, tried={c.as_frozenset() for c in tried}, strength=strength, rng=rng,
                         max_classes=max_classes, target_classes=target_classes)
    return ClassSet(tuple(edit))


def fallback_edit(
    base: Sequence[str],
    words: Sequence[str],
    *,
    tried: set[frozenset],
    strength: Mapping[str, float],
    rng: random.Random,
    max_classes: int,
    target_classes: int,
    attempts: int = 50,
) -> list[str]:
    """An untried edit of ``base``.

    The first try swaps the weakest-looking class (lowest ``strength``: mean reward of the trials
    that used it; unknown classes count as strongest, so proven-weak ones go first) for an unused
    word; later tries swap, drop or add at random. An empty ``base`` becomes a random
    ``target_classes``-word sample. When every try repeats a tried set, the last one is returned
    with a warning rather than failing.
    """
    candidate = list(base)
    for attempt in range(attempts):
        candidate = list(base)
        unused = [w for w in words if w not in candidate]
        if not candidate:
            candidate = rng.sample(list(words), min(target_classes, len(words)))
        elif attempt == 0 and unused:
            weakest = min(candidate, key=lambda c: (strength.get(c, math.inf), candidate.index(c)))
            candidate[candidate.index(weakest)] = rng.choice(unused)
        else:
            op = rng.choice(("swap", "drop", "add"))
            if op == "drop" and len(candidate) > 1:
                candidate.pop(rng.randrange(len(candidate)))
            elif op == "add" and unused and len(candidate) < max_classes:
                candidate.append(rng.choice(unused))
            elif unused:
                candidate[rng.randrange(len(candidate))] = rng.choice(unused)
        candidate = candidate[:max_classes]
        if frozenset(candidate) not in tried:
            return candidate
    logger.warning("Fallback could not find an untried class set; repeating %s", candidate)
    return candidate
