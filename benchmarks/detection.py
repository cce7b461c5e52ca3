"""How much detection does the map cache save on an ICRL-like search?

Replays a trajectory of class sets shaped like the paper's ICRL runs (8 -> 10 -> 12 -> 12 -> 15
classes, each step keeping most classes and swapping or adding a few) over a set of videos, and
prints per step: (video, class) pairs the detector computed versus the naive count |a_t| x videos,
the cache hit ratio, and the time to detect a pair versus the time to read one cached pair back
(the cache only pays off if reading is much cheaper: target < 10%).

    python -m benchmarks.detection                       # tiny Grounded SAM2 (random weights, CPU)
    python -m benchmarks.detection --detector annotation # maps from synthetic masks

``--iou`` measures something else: how well the learned detector of an A2O-Synth world sees
pixels. It builds the world (``--preset``, default household), trains or reuses its detector, runs
it through the product's detector factory on every val clip, and prints per class the IoU at
threshold 0.5 against the generator's masks, with precision and recall, and then how text maps to
channels (a synonym, a hypernym at half weight, a word the world does not know):

    python -m benchmarks.detection --iou [--preset household] [--work-dir DIR]

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

    def __call__(self, runtime=None):
        inner = self.factory(runtime)
        counter = self

        class Counting:
            fingerprint = inner.fingerprint

            def detect(self, frames, class_texts, *, video):
                counter.calls += 1
                counter.pairs += len(class_texts)
                return inner.detect(frames, class_texts, video=video)

        return Counting()


def learned_iou_report(work_dir: str, preset: str) -> dict:
    """Per-class val IoU of a world's learned detector, through the product's detector factory.

    Prints the table and returns ``{"iou": {class: IoU}, "probes": {word: (inside, outside)}}``.
    """
    from a2o.data.framestore import FrameStore, grid_key
    from a2o.data.synthetic import load_dataset_info
    from a2o.detect.annotation import AnnotationDetector
    from a2o.detect.base import ConfigDetectorFactory, VideoMeta
    from a2o.detect.learned import read_detector_metadata
    from a2o.runtime import Runtime
    from benchmarks._common import build_experiment

    started = time.perf_counter()
    cfg = build_experiment(work_dir, preset=preset, detector="learned")
    meta = read_detector_metadata(cfg.detect.learned_model)
    info = load_dataset_info(cfg.data.root)
    vocabulary = info["vocabulary"]
    kinds = {name: "agent" for name in vocabulary["agent"]}
    kinds.update({name: "tool" for name in vocabulary["tools"]})
    kinds.update({name: "bystander" for name in vocabulary["bystanders"]})
    kinds.update({name: "region" for name in vocabulary["regions"]})
    channels = list(meta["channels"])
    detector = ConfigDetectorFactory(cfg.detect)(Runtime.cpu())
    oracle = AnnotationDetector()
    store = FrameStore(cfg.storage.path("frames", grid_key(cfg.data)))
    rows = [r for r in store.manifest().select(["video_id", "split", "boxes", "masks_uri"]).to_pylist()
            if r["split"] == "val" and r["video_id"] in store]
    # Lexicon probes: each word's map, scored inside and outside its members' true masks.
    probes = _lexicon_probes(info)
    inter = np.zeros(len(channels))
    pred_sum = np.zeros(len(channels))
    true_sum = np.zeros(len(channels))
    probe_in = np.zeros(len(probes))
    probe_out = np.zeros(len(probes))
    probe_in_n = np.zeros(len(probes))
    probe_out_n = np.zeros(len(probes))
    detect_s = 0.0
    for row in sorted(rows, key=lambda r: r["video_id"]):
        record = store.read(row["video_id"])
        video = VideoMeta(
            video_id=row["video_id"], frame_indices=np.asarray(record.frame_indices, dtype=np.int64),
            source_height=int(record.source_height), source_width=int(record.source_width),
            boxes=row["boxes"], masks_uri=row["masks_uri"],
        )
        t0 = time.perf_counter()
        predicted = detector.detect(record.frames, channels + [word for word, _, _ in probes], video=video)
        detect_s += time.perf_counter() - t0
        truth = oracle.detect(record.frames, channels, video=video) >= 0.5  # (T, K, H, W)
        hits = predicted[:, : len(channels)] >= 0.5
        inter += (hits & truth).sum(axis=(0, 2, 3))
        pred_sum += hits.sum(axis=(0, 2, 3))
        true_sum += truth.sum(axis=(0, 2, 3))
        for p, (_, _, members) in enumerate(probes):
            inside = np.zeros(truth[:, 0].shape, dtype=bool)
            for member in members:
                inside |= truth[:, channels.index(member)]
            probe_map = predicted[:, len(channels) + p]
            probe_in[p] += probe_map[inside].sum()
            probe_in_n[p] += inside.sum()
            probe_out[p] += probe_map[~inside].sum()
            probe_out_n[p] += (~inside).sum()

    union = pred_sum + true_sum - inter
    print(f"learned detector of A2O-Synth '{preset}': {cfg.detect.learned_model}")
    print(f"trained on {meta['data']['train_clips']} train clips in {meta['training_seconds']:.0f} s "
          f"({meta['epochs_run']} epochs, width {meta['architecture']['width']}, seed {meta['seed']}); "
          f"evaluated on {len(rows)} val clips at {cfg.data.resolution}px through the detector factory "
          f"({detect_s:.1f} s)")
    header = f"{'class':<14} {'kind':<10} {'IoU':>6} {'precision':>9} {'recall':>7} {'true px':>8}"
    print(header)
    print("-" * len(header))
    scored, result = [], {"iou": {}, "probes": {}}
    order = sorted(range(len(channels)), key=lambda k: (["agent", "tool", "bystander", "region"].index(
        kinds.get(channels[k], "region")), channels[k]))
    for k in order:
        iou = inter[k] / union[k] if union[k] else float("nan")
        precision = inter[k] / pred_sum[k] if pred_sum[k] else float("nan")
        recall = inter[k] / true_sum[k] if true_sum[k] else float("nan")
        if union[k]:
            scored.append(iou)
            result["iou"][channels[k]] = float(iou)
        print(f"{channels[k]:<14} {kinds.get(channels[k], '?'):<10} {iou:>6.2f} {precision:>9.2f} "
              f"{recall:>7.2f} {int(true_sum[k]):>8d}")
    print("-" * len(header))
    by_kind = {}
    for k, name in enumerate(channels):
        if union[k]:
            by_kind.setdefault(kinds.get(name, "?"), []).append(inter[k] / union[k])
    print(f"mean IoU {np.mean(scored):.2f} over {len(scored)} classes; "
          + ", ".join(f"{kind} {np.mean(v):.2f}" for kind, v in by_kind.items()))
    print()
    print("text -> channels (mean likelihood inside / outside the named objects' true masks):")
    for p, (word, how, members) in enumerate(probes):
        inside = probe_in[p] / max(1.0, probe_in_n[p])
        outside = probe_out[p] / max(1.0, probe_out_n[p])
        result["probes"][word] = (float(inside), float(outside))
        print(f"  {word!r:<18} {how:<26} inside {inside:.3f}  outside {outside:.3f}  ({', '.join(members)})")
    print(f"wall {time.perf_counter() - started:.0f} s (includes building the world and the detector on first use)")
    return result


def _lexicon_probes(info: dict) -> list[tuple[str, str, list[str]]]:
    """(word, how it resolves, member channels) for a synonym, a hypernym and an unknown word."""
    probes: list[tuple[str, str, list[str]]] = []
    tools = list(info["vocabulary"]["tools"])
    for name, entries in info["lexicon"].items():
        targets = [t for t, _ in entries]
        weights = [w for _, w in entries]
        if len(targets) == 1 and weights[0] == 1.0 and name != targets[0] and targets[0] in tools:
            probes.append((name, f"synonym of {targets[0]}", targets))
            break
    for name, entries in info["lexicon"].items():
        if len(entries) > 1:
            probes.append((name, f"hypernym, weight {entries[0][1]:g}", [t for t, _ in entries]))
            break
    probes.append(("giraffe", "unknown: empty map", [tools[0]]))
    return probes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iou", action="store_true",
                        help="per-class val IoU of an A2O-Synth world's learned detector instead")
    parser.add_argument("--preset", default="household", help="with --iou: world preset or spec path")
    parser.add_argument("--work-dir", default="", help="with --iou: where the world and detector go "
                        "(default: a temp dir)")
    parser.add_argument("--detector", choices=["grounded_sam2", "annotation"], default="grounded_sam2")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame grid side (maps are cached at it)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.iou:
        if args.work_dir:
            learned_iou_report(args.work_dir, args.preset)
        else:
            with tempfile.TemporaryDirectory(prefix="a2o-bench-iou-") as tmp:
                learned_iou_report(tmp, args.preset)
        return 0

    from a2o.config import DetectConfig
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import MapCache
    from a2o.detect.classes import ClassSet
    from a2o.detect.stage import InProcessRunner
    from a2o.runtime import Runtime

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
        runner = InProcessRunner(Runtime.cpu())
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
            reader = cache.ensure_maps(ClassSet.parse(class_set, where="trajectory"), store, factory, runner=runner)
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
