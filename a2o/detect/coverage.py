"""Detection coverage: in what share of clips the detector found each class at all.

A thresholded open-vocabulary detector returns an empty map for a concept that is not in the scene
(A2O-Synth's learned detector does the same for a word its world does not know). A class whose map
is empty in almost every clip only adds a dead channel, and the validation accuracy alone cannot
tell the searcher so: it sees a set score, not which of its classes were ever seen. Coverage is
that missing fact, and any user's pipeline has it, since it is computed from the maps a trial
trains on (never from labels or annotations).

Cost: the maps of a deterministic sample of clips (``sample`` per trial, train split) are read once
on the driver; on a real dataset that is a few hundred small files per trial.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from a2o.detect.classes import ClassSet

__all__ = ["class_coverage", "unseen_classes", "FOUND_THRESHOLD", "DEFAULT_SAMPLE"]

FOUND_THRESHOLD = 128
"""A clip shows a class when some pixel of its map reaches this likelihood (uint8, 128 = 0.5)."""
DEFAULT_SAMPLE = 64
"""Clips read per trial."""


def class_coverage(maps: Any, class_set: ClassSet, video_ids: Sequence[str], *, sample: int = DEFAULT_SAMPLE,
                   seed: int = 0, threshold: int = FOUND_THRESHOLD) -> dict[str, float]:
    """``{class: share of sampled clips whose map reaches threshold}`` for ``class_set``.

    ``maps.read(video_id)`` returns the ``(T, C, h, w)`` uint8 maps of ``class_set`` (a
    :class:`~a2o.detect.cache.MapReader` or any reader with that method). The clips are a seeded
    sample of ``video_ids`` (all when fewer than ``sample``), so the figure is deterministic.
    """
    if not class_set or not video_ids:
        return {}
    ids = list(video_ids)
    if len(ids) > sample:
        ids = sorted(random.Random(seed).sample(ids, sample))
    found = np.zeros(len(class_set), dtype=np.int64)
    for video_id in ids:
        planes = np.asarray(maps.read(video_id))  # (T, C, h, w)
        if planes.ndim != 4 or planes.shape[1] != len(class_set):
            raise ValueError(f"maps of {video_id!r} have shape {planes.shape}; expected (T, {len(class_set)}, h, w)")
        found += (planes.max(axis=(0, 2, 3)) >= threshold).astype(np.int64)
    return {text: float(count / len(ids)) for text, count in zip(class_set, found, strict=True)}


def unseen_classes(coverage: Mapping[str, float], *, below: float = 0.05) -> list[str]:
    """The classes found in fewer than ``below`` of the clips, in the given order."""
    return [text for text, share in coverage.items() if share < below]
