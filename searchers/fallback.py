"""The visible fallback of the LLM searchers: a small, seeded edit of the best set so far.

Used when the LLM gives no usable, new proposal after the re-asks, or cannot be reached. The
caller logs a warning and counts it; this module only decides the edit.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence

__all__ = ["fallback_edit"]

logger = logging.getLogger(__name__)


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
