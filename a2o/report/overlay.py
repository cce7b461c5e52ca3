"""Frames of validation clips with the best set's cached likelihood maps, for the report.

Read-only: frames come from the run's frame store, maps from existing map-cache entries
(``MapCache.read_entry``); nothing is detected, recomputed or deleted. Anything missing becomes a
note the report shows instead of the overlay.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from a2o.detect.classes import normalise_text
from a2o.errors import A2OError

__all__ = ["OverlayData", "load_overlay", "region_classes", "REGION_COVERAGE"]

REGION_COVERAGE = 0.35
"""A class whose map covers at least this share of the shown frames (at level 0.5) is drawn as a
region even when no world vocabulary says so: a box detector's "table" or "floor" covers the frame."""

log = logging.getLogger(__name__)


@dataclass
class OverlayData:
    """What the overlay plot needs, or the reason it cannot be drawn."""

    classes: list[str]
    videos: list[tuple[str, str, np.ndarray, np.ndarray]] = field(default_factory=list)
    """(video_id, label, frames (N, H, W, 3) uint8, maps (N, C, H, W) uint8)."""
    notes: list[str] = field(default_factory=list)
    """Why some or all of the overlay is missing (shown in the report)."""
    regions: dict[str, str] = field(default_factory=dict)
    """Classes drawn as scene regions (apart from the objects), each with the reason why."""


def region_classes(
    classes: list[str],
    info: dict[str, Any] | None,
    videos: list[tuple[str, str, np.ndarray, np.ndarray]],
    *,
    coverage: float = REGION_COVERAGE,
) -> dict[str, str]:
    """Which of ``classes`` are scene regions, and why: {class text: reason}.

    A class is a region when the world's ``dataset.json`` (``info``; None for datasets without
    one) lists it under ``vocabulary.regions``, or its lexicon entry names only region channels
    (e.g. "countertop" -> counter); or, whatever the dataset, when its map covers at least
    ``coverage`` of the shown frames (``videos`` as in :class:`OverlayData`).
    """
    reasons: dict[str, str] = {}
    info = info if isinstance(info, dict) else {}
    vocabulary = info.get("vocabulary") if isinstance(info.get("vocabulary"), dict) else {}
    names = {normalise_text(r) for r in (vocabulary.get("regions") or [])}
    lexicon = {normalise_text(k): v for k, v in (info.get("lexicon") or {}).items()} if isinstance(info.get("lexicon"), dict) else {}
    for text in classes:
        if normalise_text(text) in names:
            reasons[text] = "a region of the world's vocabulary"
            continue
        targets = [str(entry[0]) for entry in (lexicon.get(normalise_text(text)) or []) if isinstance(entry, (list, tuple)) and entry]
        if names and targets and all(normalise_text(t) in names for t in targets):
            reasons[text] = f"the world's lexicon maps it to the region(s) {', '.join(targets)}"
    if videos:
        for index, text in enumerate(classes):
            if text in reasons:
                continue
            share = float(np.mean([(maps[:, index] >= 128).mean() for _, _, _, maps in videos]))
            if share >= coverage:
                reasons[text] = f"its map covers {share:.0%} of the shown frames"
    return reasons


def _dataset_info(cfg) -> dict[str, Any] | None:
    """The world's dataset.json for a synthetic dataset; None for other datasets or when unreadable."""
    if cfg.data.dataset != "synthetic" or not cfg.data.root:
        return None
    from a2o.data.synth.reader import load_dataset_info

    try:
        return load_dataset_info(cfg.data.root)
    except (OSError, ValueError, A2OError) as exc:
        log.debug("no dataset.json under %s: %s", cfg.data.root, exc)
        return None


def _storage_candidates(config: dict[str, Any], run_dir: str) -> list[str]:
    """Where the run's storage may be: the configured root (absolute or remote), then the run dir.

    ``a2o search`` writes results.json into its (local) storage root, so a run folder that was
    moved or given relative to another cwd is still found through ``run_dir``.
    """
    root = str((config.get("storage") or {}).get("root") or "")
    candidates = []
    if "://" in root or os.path.isabs(root):
        candidates.append(root)
    candidates.append(run_dir)
    return candidates


def _resize_nearest(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, height, width) by nearest neighbour (maps may be stored smaller)."""
    if maps.shape[-2:] == (height, width):
        return maps
    rows = (np.arange(height) * maps.shape[-2] // height).clip(0, maps.shape[-2] - 1)
    cols = (np.arange(width) * maps.shape[-1] // width).clip(0, maps.shape[-1] - 1)
    return maps[..., rows[:, None], cols[None, :]]


def load_overlay(
    results: dict[str, Any], run_dir: str, classes: Sequence[str], *, max_videos: int = 4, num_frames: int = 4
) -> OverlayData:
    """Frames and cached maps of up to ``max_videos`` val clips (one per label first) for ``classes``
    (the run's best set, :meth:`a2o.report.runs.RunRecord.best_classes`)."""
    from a2o.config import config_from_dict
    from a2o.data.framestore import FrameStore, grid_key
    from a2o.detect.cache import map_cache_for

    classes = [str(c) for c in classes]
    data = OverlayData(classes)
    if not classes:
        data.notes.append("the best set is empty (or no trial succeeded): there are no maps to overlay")
        return data
    try:
        cfg = config_from_dict(results.get("config") or {})
    except A2OError as exc:
        data.notes.append(f"the config in results.json cannot be read ({exc}): overlay skipped")
        return data

    store, used_root, errors = None, None, []
    for root in _storage_candidates(results.get("config") or {}, run_dir):
        storage = dataclasses.replace(cfg.storage, root=root)
        try:
            store = FrameStore(storage.path("frames", grid_key(cfg.data)))
        except A2OError as exc:
            errors.append(str(exc))
            continue
        used_root = storage
        break
    if store is None:
        data.notes.append("no frame store found for this run, overlay skipped: " + "; ".join(errors))
        return data
    cache = map_cache_for(used_root, cfg.data, cfg.detect)

    rows = [r for r in store.manifest().select(["video_id", "label", "split"]).to_pylist() if r["split"] == "val"]
    chosen, seen_labels = [], set()
    for row in rows:  # one clip per label first, then any
        if row["label"] not in seen_labels:
            chosen.append(row)
            seen_labels.add(row["label"])
    chosen += [r for r in rows if r not in chosen]
    missing: dict[str, int] = {}
    for row in chosen:
        if len(data.videos) >= max_videos:
            break
        planes = []
        for text in classes:
            try:
                planes.append(cache.read_entry(text, row["video_id"]))  # (T, h, w) uint8
            except A2OError as exc:  # CacheError (absent/corrupt) or ClassTextError
                log.debug("no cached map for %r on %s: %s", text, row["video_id"], exc)
                missing[text] = missing.get(text, 0) + 1
                planes = None
                break
        if planes is None:
            continue
        frames = store.read(row["video_id"]).frames  # (T, H, W, 3) uint8
        maps = np.stack(planes, axis=1)  # (T, C, h, w)
        picks = np.linspace(0, frames.shape[0] - 1, num=min(num_frames, frames.shape[0])).round().astype(int)
        maps = _resize_nearest(maps[picks], frames.shape[1], frames.shape[2])
        data.videos.append((row["video_id"], str(row["label"]), frames[picks], maps))
    if missing:
        detail = ", ".join(f"'{text}' ({count} clips)" for text, count in missing.items())
        data.notes.append(f"the map cache has no entry for {detail}; those clips are not shown")
    if not data.videos:
        data.notes.append("no val clip has cached maps for every class of the best set: overlay skipped")
        return data
    data.regions = region_classes(classes, _dataset_info(cfg), data.videos)
    return data
