"""Seeded split carving, few-shot sampling and size caps on a manifest table.

Every function is a pure ``pa.Table -> pa.Table`` map that depends only on the table's contents
and the seed (never on row order, process or hash seed), so the same config gives the same
train/val/test on every machine and after every resume. Test rows are never moved or sampled
away: search must not see them.

Val is carved by *source video* (the ``uri``): MultiSports has several tubes per video, and a
tube-level split would put near-duplicate clips of one video in both train and val, inflating the
reward the searcher optimises.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["carve_val", "few_shot", "cap_per_split", "split_counts"]

log = logging.getLogger(__name__)


def _stable_order(keys: list[str], seed: int) -> list[str]:
    """``keys`` in a seeded random order that does not depend on their input order."""
    ordered = sorted(keys)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation]


def _val_target(count: int, fraction: float) -> int:
    """Val clips for a class of ``count`` train clips: >= 1 when it has 2+, always leaving 1 in train."""
    if count < 2:
        return 0
    return min(count - 1, max(1, int(np.floor(fraction * count + 0.5))))


def carve_val(table: pa.Table, fraction: float, seed: int) -> pa.Table:
    """Move a seeded, stratified ``fraction`` of the train rows to ``val``.

    Rows sharing a ``uri`` move together. Source videos are visited in a seeded order and moved
    while no class in them exceeds its val target, so with one clip per video every class gets
    exactly its target, and every class keeps at least one train clip.
    """
    splits = table.column("split").to_pylist()
    labels = table.column("label").to_pylist()
    uris = table.column("uri").to_pylist()
    train_rows = [i for i, s in enumerate(splits) if s == "train"]
    if not train_rows:
        return table
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i in train_rows:
        rows_of[uris[i]].append(i)
    train_count = Counter(labels[i] for i in train_rows)
    target = {label: _val_target(n, fraction) for label, n in train_count.items()}
    taken: Counter = Counter()
    new_splits = list(splits)
    for uri in _stable_order(list(rows_of), seed):
        group = Counter(labels[i] for i in rows_of[uri])
        if all(taken[label] + n <= target[label] for label, n in group.items()):
            taken.update(group)
            for i in rows_of[uri]:
                new_splits[i] = "val"
    short = sorted(label for label in target if taken[label] < target[label])
    if short:
        log.info("val carve: %d classes got fewer val clips than targeted (videos hold several)", len(short))
    index = table.schema.get_field_index("split")
    return table.set_column(index, table.schema.field(index), pa.array(new_splits, pa.string()))


def few_shot(table: pa.Table, k: int, seed: int) -> pa.Table:
    """Keep ``k`` seeded train clips per class (all of a class with fewer); other splits untouched."""
    if k <= 0:
        return table
    splits = table.column("split").to_pylist()
    labels = table.column("label").to_pylist()
    video_ids = table.column("video_id").to_pylist()
    by_class: dict[str, list[str]] = defaultdict(list)
    for vid, label, split in zip(video_ids, labels, splits, strict=True):
        if split == "train":
            by_class[label].append(vid)
    keep: set[str] = set()
    for offset, label in enumerate(sorted(by_class)):
        keep.update(_stable_order(by_class[label], seed + offset)[:k])
    mask = [split != "train" or vid in keep for vid, split in zip(video_ids, splits, strict=True)]
    return table.filter(pa.array(mask))


def cap_per_split(table: pa.Table, max_videos: int, seed: int) -> pa.Table:
    """At most ``max_videos`` rows per split, drawn round-robin over classes so all stay covered."""
    if max_videos <= 0:
        return table
    splits = table.column("split").to_pylist()
    labels = table.column("label").to_pylist()
    video_ids = table.column("video_id").to_pylist()
    keep: set[str] = set()
    for split in sorted(set(splits)):
        by_class: dict[str, list[str]] = defaultdict(list)
        for vid, label, s in zip(video_ids, labels, splits, strict=True):
            if s == split:
                by_class[label].append(vid)
        # rank within class first, then a seeded class order: round-robin over classes.
        class_order = {label: r for r, label in enumerate(_stable_order(list(by_class), seed))}
        ranked = []
        for label, vids in by_class.items():
            for rank, vid in enumerate(_stable_order(vids, seed)):
                ranked.append((rank, class_order[label], vid))
        keep.update(vid for _, _, vid in sorted(ranked)[:max_videos])
    mask = [vid in keep for vid in video_ids]
    return table.filter(pa.array(mask))


def split_counts(table: pa.Table) -> dict[str, tuple[int, int]]:
    """{split: (clips, classes)} for summaries."""
    out = {}
    for split in ("train", "val", "test"):
        part = table.filter(pc.equal(table.column("split"), split))
        out[split] = (part.num_rows, len(set(part.column("label").to_pylist())))
    return out
