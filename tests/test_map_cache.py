"""The map cache: reuse across class sets, corruption handling, safe paths, locks, the Ray stage."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from a2o.data.schema import make_manifest
from a2o.detect.annotation import AnnotationDetector
from a2o.detect.cache import MapCache, quantize_maps
from a2o.detect.stage import InProcessRunner, RayDataRunner
from a2o.errors import CacheError, ClassTextError

NUM_FRAMES, SIZE, RES = 4, 16, 8
CLASSES = ["ball", "bat", "court", "net"]


@dataclass
class Record:
    video_id: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    frame_indices: np.ndarray
    source_height: int
    source_width: int


class MemoryStore:
    """Duck-types FrameStore (video_ids / read / manifest) over arrays and an npz per video."""

    def __init__(self, root: str, num_videos: int = 3):
        self.records: dict[str, Record] = {}
        rows = []
        rng = np.random.default_rng(0)
        for i in range(num_videos):
            vid = f"vid{i}"
            masks = {c: (rng.random((NUM_FRAMES * 2, SIZE, SIZE)) > 0.5).astype(np.uint8) for c in CLASSES[:3]}
            masks_uri = os.path.join(root, f"{vid}.npz")
            np.savez(masks_uri, **masks)
            frames = rng.integers(0, 256, (NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
            self.records[vid] = Record(vid, frames, np.arange(0, NUM_FRAMES * 2, 2), SIZE, SIZE)
            rows.append(dict(video_id=vid, uri=f"{vid}.mp4", label="x", label_id=0, split="train",
                             masks_uri=masks_uri))
        self._manifest = make_manifest(rows)

    def video_ids(self) -> list[str]:
        return sorted(self.records)

    def read(self, video_id: str) -> Record:
        return self.records[video_id]

    def manifest(self):
        return self._manifest


class CountingFactory:
    """Builds annotation detectors whose detect() calls are counted (shared across instances)."""

    def __init__(self, miss_prob: float = 0.0, delay_s: float = 0.0):
        self.inner = AnnotationDetector(miss_prob=miss_prob, noise_seed=1)
        self.fingerprint = self.inner.fingerprint
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def __getstate__(self):  # travels to Ray actors; a lock does not pickle
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def __call__(self, runtime=None):
        factory = self

        class Counting:
            fingerprint = factory.fingerprint

            def detect(self, frames, class_texts, *, video):
                with factory._lock:
                    factory.calls.append((video.video_id, tuple(class_texts)))
                time.sleep(factory.delay_s)
                return factory.inner.detect(frames, class_texts, video=video)

        return Counting()

    def pairs(self, class_text: str) -> int:
        return sum(class_text in classes for _, classes in self.calls)


@pytest.fixture
def store(tmp_path):
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    return MemoryStore(str(masks_dir))


@pytest.fixture
def cache_root(tmp_path):
    return str(tmp_path / "cache")


def _expected(store: MemoryStore, video_id: str, classes: list[str], detector=None) -> np.ndarray:
    detector = detector or AnnotationDetector(miss_prob=0.0, noise_seed=1)
    record = store.read(video_id)
    masks_uri = dict(zip(*[store.manifest().column(c).to_pylist() for c in ("video_id", "masks_uri")], strict=True))
    from a2o.detect.base import VideoMeta

    meta = VideoMeta(video_id, record.frame_indices, SIZE, SIZE, masks_uri=masks_uri[video_id])
    return quantize_maps(detector.detect(record.frames, classes, video=meta), RES)


def _all_files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def test_second_class_set_computes_only_the_new_class(store, cache_root):
    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES)
    first = cache.ensure_maps(["ball", "bat"], store, factory)
    assert first.stats.computed_pairs == 6 and first.stats.reused_pairs == 0
    assert len(factory.calls) == 3

    factory.calls.clear()
    second = cache.ensure_maps(["Bat", "court"], store, factory)
    assert factory.pairs("court") == 3 and factory.pairs("bat") == 0, factory.calls
    assert second.stats.computed_pairs == 3 and second.stats.reused_pairs == 3
    assert second.stats.hit_ratio == pytest.approx(0.5)
    for vid in store.video_ids():
        maps = second.read(vid)
        assert maps.shape == (NUM_FRAMES, 2, RES, RES) and maps.dtype == np.uint8
        np.testing.assert_array_equal(maps, _expected(store, vid, ["bat", "court"]))

    factory.calls.clear()
    third = cache.ensure_maps(["court", "ball", "bat"], store, factory)
    assert factory.calls == [] and third.stats.hit_ratio == 1.0
    np.testing.assert_array_equal(third.read("vid0")[:, 1], first.read("vid0")[:, 0])


def test_unknown_class_is_cached_as_zero(store, cache_root):
    factory = CountingFactory()
    reader = MapCache(cache_root, factory.fingerprint, RES).ensure_maps(["net"], store, factory)
    assert not reader.read("vid1").any()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_marker", "bad_marker", "delete_data"])
def test_corrupt_entries_are_detected_and_recomputed(store, cache_root, damage, caplog):
    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES)
    cache.ensure_maps(["ball", "bat"], store, factory)
    data_path, marker_path = cache.entry_paths("bat", "vid1")
    if damage == "flip":
        payload = bytearray(open(data_path, "rb").read())
        payload[-5] ^= 0xFF
        open(data_path, "wb").write(bytes(payload))
    elif damage == "truncate":
        payload = open(data_path, "rb").read()
        open(data_path, "wb").write(payload[: len(payload) // 2])
    elif damage == "delete_marker":
        os.remove(marker_path)
    elif damage == "bad_marker":
        open(marker_path, "w").write("{not json")
    else:
        os.remove(data_path)
    factory.calls.clear()
    reader = cache.ensure_maps(["ball", "bat"], store, factory)
    assert factory.calls == [("vid1", ("bat",))]
    assert reader.stats.corrupt_pairs == 1 and reader.stats.computed_pairs == 1
    assert "recomputing" in caplog.text
    np.testing.assert_array_equal(reader.read("vid1"), _expected(store, "vid1", ["ball", "bat"]))


def test_reader_recomputes_entry_corrupted_after_ensure(store, cache_root):
    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES)
    reader = cache.ensure_maps(["ball"], store, factory, verify="marker")
    data_path, _ = cache.entry_paths("ball", "vid2")
    payload = bytearray(open(data_path, "rb").read())
    payload[-1] ^= 0x01  # same size: only the checksum can tell
    open(data_path, "wb").write(bytes(payload))
    assert cache.missing("ball", ["vid2"], verify="marker") == ([], 0)
    np.testing.assert_array_equal(reader.read("vid2"), _expected(store, "vid2", ["ball"]))
    assert reader.repaired_pairs == 1
    bare = type(reader)(cache, ["ball"])  # no store/factory: corruption is an error, not data
    open(data_path, "wb").write(bytes(payload))
    with pytest.raises(CacheError, match="checksum"):
        bare.read("vid2")


@pytest.mark.parametrize(
    "hostile",
    ["../../etc", "a" * 5000, "ball\nbat", "", "$(touch /tmp/pwned)", "..", "/abs/path", "a.b"],
)
def test_hostile_class_texts_never_create_paths(store, tmp_path, cache_root, hostile):
    factory = CountingFactory()
    before = _all_files(tmp_path)
    with pytest.raises(ClassTextError):
        MapCache(cache_root, factory.fingerprint, RES).ensure_maps(["ball", hostile], store, factory)
    assert _all_files(tmp_path) == before
    assert factory.calls == []


def test_unicode_class_is_stored_by_hash_only(store, tmp_path, cache_root):
    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES)
    reader = cache.ensure_maps(["ボール", "Café Table"], store, factory)
    assert reader.read("vid0").shape == (NUM_FRAMES, 2, RES, RES)
    for path in _all_files(tmp_path):
        assert path.startswith(str(tmp_path))
        rel = os.path.relpath(path, cache_root)
        assert "ボール" not in rel and "caf" not in rel.lower()
        assert all(ch.isascii() for ch in rel)


def test_concurrent_trials_compute_a_shared_class_once(store, cache_root):
    factory = CountingFactory(delay_s=0.05)
    readers = {}

    def trial(name, classes):
        cache = MapCache(cache_root, factory.fingerprint, RES, poll_s=0.02)
        readers[name] = cache.ensure_maps(classes, store, factory)

    threads = [threading.Thread(target=trial, args=("a", ["ball", "bat"])),
               threading.Thread(target=trial, args=("b", ["bat", "court"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert factory.pairs("bat") == 3, factory.calls  # computed by exactly one trial
    assert readers["a"].stats.computed_pairs + readers["b"].stats.computed_pairs == 9
    np.testing.assert_array_equal(readers["a"].read("vid0")[:, 1], readers["b"].read("vid0")[:, 0])
    assert not any(p.endswith(".lock") for p in _all_files(cache_root))


def test_stale_lock_is_broken(store, cache_root):
    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES, lock_stale_s=5.0, poll_s=0.01)
    lock = cache.lock_path("ball")
    os.makedirs(os.path.dirname(lock))
    open(lock, "w").write("{}")
    os.utime(lock, (time.time() - 60, time.time() - 60))  # holder died a minute ago
    reader = cache.ensure_maps(["ball"], store, factory)
    assert reader.stats.computed_pairs == 3 and not os.path.exists(lock)


def test_fingerprint_mismatch_is_refused(store, cache_root):
    factory = CountingFactory()
    with pytest.raises(CacheError, match="fingerprint"):
        MapCache(cache_root, "another detector", RES).ensure_maps(["ball"], store, factory)


def test_ray_data_stage_matches_in_process(store, tmp_path, ray_local):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    factory = CountingFactory(miss_prob=0.3)  # noise too: seeded per (video, class)
    ray_cache = MapCache(str(tmp_path / "ray_cache"), factory.fingerprint, RES)
    local_cache = MapCache(str(tmp_path / "local_cache"), factory.fingerprint, RES)
    runner = RayDataRunner(batch_size=2, concurrency=1, num_cpus=0.5)
    ray_reader = ray_cache.ensure_maps(["ball", "bat", "net"], store, factory, runner=runner)
    local_reader = local_cache.ensure_maps(["ball", "bat", "net"], store, factory, runner=InProcessRunner())
    assert ray_reader.stats.computed_pairs == local_reader.stats.computed_pairs == 9
    for vid in store.video_ids():
        np.testing.assert_array_equal(ray_reader.read(vid), local_reader.read(vid))
    again = ray_cache.ensure_maps(["ball", "bat"], store, factory, runner=runner)
    assert again.stats.computed_pairs == 0 and again.stats.reused_pairs == 6


def test_lock_of_a_dead_process_is_broken_at_once(store, cache_root):
    """A trial killed mid-detection leaves its lock; the next trial must not wait for it."""
    import json as _json
    import subprocess

    factory = CountingFactory()
    # Neither stale (an hour) nor waited for (lock_wait_s): only the dead holder lets this through.
    cache = MapCache(cache_root, factory.fingerprint, RES, lock_stale_s=3600, lock_wait_s=0.0, poll_s=0.01)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = cache.lock_path("ball")
    os.makedirs(os.path.dirname(lock))
    with open(lock, "w") as fh:
        _json.dump({"pid": int(dead.stdout), "host": os.uname().nodename, "time": time.time()}, fh)
    reader = cache.ensure_maps(["ball"], store, factory)
    assert reader.stats.computed_pairs == 3 and not os.path.exists(lock)


def test_reader_addresses_entries_by_key_without_hashing(store, cache_root, monkeypatch):
    """Reading a class set's maps neither hashes nor re-validates its texts (keys are precomputed)."""
    from a2o.detect import cache as cache_module
    from a2o.detect.classes import ClassSet

    factory = CountingFactory()
    cache = MapCache(cache_root, factory.fingerprint, RES)
    classes = ClassSet.parse(["Ball", "bat"])
    reader = cache.ensure_maps(classes, store, factory)
    assert reader.class_set is classes
    assert cache.read_entry(classes.keys[0], "vid0").tobytes() == cache.read_entry("ball", "vid0").tobytes()

    def no_hashing(text):
        raise AssertionError(f"class_key({text!r}) called on the read path")

    monkeypatch.setattr(cache_module, "class_key", no_hashing)
    maps = reader.read("vid0")  # (T, C, res, res)
    assert maps.shape[1] == 2
    np.testing.assert_array_equal(maps, _expected(store, "vid0", ["ball", "bat"]))
