"""How much detection does the map cache save on an ICRL-like search?

Replays a trajectory of class sets shaped like the paper's ICRL runs (8 -> 10 -> 12 -> 12 -> 15
classes, each step keeping most classes and swapping or adding a few) over a set of videos, and
prints per step: (video, class) pairs the detector computed versus the naive count |a_t| x videos,
the cache hit ratio, and the time to detect a pair versus the time to read one cached pair back
(the cache only pays off if reading is much cheaper: target < 10%).

    python -m benchmarks.detection                       # tiny Grounded SAM2 (random weights, CPU)
    python -m benchmarks.detection --detector annotation # maps from synthetic masks

Everything is built in a temporary directory (tiny checkpoints, an in-memory frame store, masks,
the cache), so the command runs offline and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

VOCABULARY = [
    "person", "ball", "racket", "net", "court", "floor", "hand", "foot", "head", "arm",
    "leg", "shoe", "goal", "grass", "table", "chair", "cup", "bottle", "door", "window",
    "bag", "phone", "book", "car", "tree",
]


def trajectory() -> list[list[str]]:
    """Five class sets: 8 -> 10 -> 12 -> 12 -> 15, with gradual swaps (as the ICRL prompt asks)."""
    a1 = VOCABULARY[:8]
    a2 = a1 + ["arm", "leg"]
    a3 = [c for c in a2 if c not in ("floor",)] + ["shoe", "goal", "grass"]
    a4 = [c for c in a3 if c not in ("grass", "foot")] + ["table", "chair"]
    a5 = a4 + ["cup", "bottle", "door"]
    sets = [a1, a2, a3, a4, a5]
    assert [len(s) for s in sets] == [8, 10, 12, 12, 15], [len(s) for s in sets]
    return sets


@dataclass
class _Record:
    video_id: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    frame_indices: np.ndarray
    source_height: int
    source_width: int


class _MemoryStore:
    """Duck-types FrameStore: random frames, plus a masks npz per video for the annotation detector."""

    def __init__(self, root: str, num_videos: int, num_frames: int, size: int, seed: int = 0):
        from a2o.data.schema import make_manifest

        rng = np.random.default_rng(seed)
        self.records: dict[str, _Record] = {}
        rows = []
        for i in range(num_videos):
            vid = f"video{i:03d}"
            masks_uri = os.path.join(root, f"{vid}.npz")
            masks = {c: (rng.random((num_frames, size, size)) > 0.6).astype(np.uint8) for c in VOCABULARY[::2]}
            np.savez(masks_uri, **masks)
            frames = rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
            self.records[vid] = _Record(vid, frames, np.arange(num_frames), size, size)
            rows.append(dict(video_id=vid, uri=f"{vid}.mp4", label="x", label_id=0, split="train",
                             masks_uri=masks_uri))
        self._manifest = make_manifest(rows)

    def video_ids(self) -> list[str]:
        return sorted(self.records)

    def read(self, video_id: str) -> _Record:
        return self.records[video_id]

    def manifest(self):
        return self._manifest


class _CountingFactory:
    """Wraps a factory; counts detect() calls and (video, class) pairs computed."""

    def __init__(self, factory):
        self.factory = factory
        self.fingerprint = factory.fingerprint
        self.calls = 0
        self.pairs = 0

    def __call__(self, device=None):
        inner = self.factory(device)
        counter = self

        class Counting:
            fingerprint = inner.fingerprint

            def detect(self, frames, class_texts, *, video):
                counter.calls += 1
                counter.pairs += len(class_texts)
                return inner.detect(frames, class_texts, video=video)

        return Counting()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", choices=["grounded_sam2", "annotation"], default="grounded_sam2")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame grid side (maps are cached at it)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from a2o.config import DetectConfig
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import MapCache
    from a2o.detect.stage import InProcessRunner

    with tempfile.TemporaryDirectory(prefix="a2o-bench-detect-") as tmp:
        if args.detector == "grounded_sam2":
            sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
            from tiny_models import tiny_detect_config

            detect_cfg = tiny_detect_config(os.path.join(tmp, "models"))
        else:
            detect_cfg = DetectConfig(detector="annotation")
        os.makedirs(os.path.join(tmp, "masks"))
        store = _MemoryStore(os.path.join(tmp, "masks"), args.videos, args.frames, args.size)
        factory = _CountingFactory(ConfigDetectorFactory(detect_cfg))
        cache = MapCache(os.path.join(tmp, "cache"), factory.fingerprint, args.size)
        runner = InProcessRunner(device="cpu")
        runner([], store, factory, cache)  # nothing to do; the detector loads on first real task

        print(f"detector: {args.detector}   videos: {args.videos}   frames: {args.frames}   "
              f"grid: {args.size}px   maps cached at {args.size}px uint8")
        header = (f"{'step':>4} {'|a_t|':>5} {'new':>4} {'naive':>6} {'computed':>8} {'calls':>5} "
                  f"{'hit':>5} {'detect s':>9} {'read s':>7} {'ms/pair det':>11} {'ms/pair read':>12} "
                  f"{'read/det':>8}")
        print(header)
        print("-" * len(header))
        totals = dict(naive=0, computed=0, calls=0, detect=0.0, read=0.0, read_pairs=0)
        seen: set[str] = set()
        for step, class_set in enumerate(trajectory(), start=1):
            calls_before, pairs_before = factory.calls, factory.pairs
            reader = cache.ensure_maps(class_set, store, factory, runner=runner)
            stats = reader.stats
            read_start = time.perf_counter()
            for vid in store.video_ids():
                maps = reader.read(vid)  # (T, C, r, r) uint8
                assert maps.shape[1] == len(class_set)
            read_s = time.perf_counter() - read_start
            naive = len(class_set) * args.videos
            computed = factory.pairs - pairs_before
            assert computed == stats.computed_pairs
            new = len(set(class_set) - seen)
            seen.update(class_set)
            det_ms = 1000 * stats.compute_seconds / computed if computed else float("nan")
            read_ms = 1000 * read_s / naive
            ratio = read_ms / det_ms if computed else float("nan")
            print(f"{step:>4} {len(class_set):>5} {new:>4} {naive:>6} {computed:>8} "
                  f"{factory.calls - calls_before:>5} {stats.hit_ratio:>5.2f} {stats.compute_seconds:>9.2f} "
                  f"{read_s:>7.3f} {det_ms:>11.2f} {read_ms:>12.3f} {ratio:>8.3f}")
            totals["naive"] += naive
            totals["computed"] += computed
            totals["calls"] += factory.calls - calls_before
            totals["detect"] += stats.compute_seconds
            totals["read"] += read_s
            totals["read_pairs"] += naive
        det_ms = 1000 * totals["detect"] / max(1, totals["computed"])
        read_ms = 1000 * totals["read"] / max(1, totals["read_pairs"])
        print("-" * len(header))
        print(f"total: computed {totals['computed']} of naive {totals['naive']} pairs "
              f"({totals['computed'] / totals['naive']:.0%}; cache hit ratio "
              f"{1 - totals['computed'] / totals['naive']:.2f}); {totals['calls']} detect() calls "
              f"vs {len(trajectory()) * args.videos} naive")
        print(f"time per (video, class) pair: detect {det_ms:.2f} ms, read cached {read_ms:.3f} ms "
              f"-> read/detect = {read_ms / det_ms:.3f} (target < 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
