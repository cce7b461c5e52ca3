"""The likelihood-map cache: compute each (video, class) map once per detector, reuse it forever.

Layout (under the run's storage, any fsspec URI)::

    ROOT/<fp>/fingerprint.json                 the full detector fingerprint (for humans and audits)
    ROOT/<fp>/r<res>/<kk>/<key>/class.json     the normalised class text (content, never a path)
    ROOT/<fp>/r<res>/<kk>/<key>/<video>.npy    maps (T, res, res) uint8, np.save format
    ROOT/<fp>/r<res>/<kk>/<key>/<video>.done   completion marker: JSON with sha256, nbytes, shape
    ROOT/<fp>/r<res>/<kk>/<key>/.lock          compute lock (exclusive create: O_EXCL or If-None-Match)

``fp`` is the first 24 hex digits of sha256(fingerprint), ``key`` the sha256 of the normalised
class text (``kk`` its first two digits, to keep directories small), ``video`` the video id when it
is file-name safe, else ``_`` + its sha256. No user text ever reaches a path.

Why one file per (class, video): it is exactly the unit a search needs and reuses (a trial asks for
a class set over the same videos, the next trial swaps a class or two), exactly the unit of
recompute when an entry is corrupt, and it is write-once: no entry is ever read-modify-written,
so concurrent trials adding different classes (or a new video) never contend for an object, and
the layout works unchanged on object stores without append or atomic rename. The cost is many
small files (V x C); a 16x64x64 uint8 map is 64 KiB, which local disks and object stores serve
well. Maps are stored as uint8 (probability x 255, rounded) at ``map_resolution``: 4x smaller than
float32 and far below the detector's own error.

Atomicity: on a local filesystem data and marker are each written to a temporary name and renamed
(atomic). Object stores have no rename (``fs.mv`` is a copy and a delete), but a single PUT is
all-or-nothing, so each object is written in place and appears whole or not at all. The marker is
written last and holds the data's sha256, so it is the source of truth on every store: data without
a marker, data whose size or checksum disagrees with its marker, or an unreadable marker is
*corrupt*: logged as a warning, deleted and recomputed, never read.

Concurrency guarantee: at most one process computes a given (detector, resolution, class) at a
time. ``ensure_maps`` takes ``<key>/.lock`` with an exclusive create (:mod:`a2o.detect.locks`):
``O_CREAT | O_EXCL`` on a local filesystem, a conditional PUT (``If-None-Match: *``) on S3 and
S3-compatible stores. The holder refreshes the lock's heartbeat after every batch; a lock whose
heartbeat is older than ``lock_stale_s``, or whose holder process is gone from this host, counts as
abandoned (a killed trial, a dead node) and is taken over. A second trial that needs the same class
computes its other classes first, then waits for the lock and reuses the result. Where a store
cannot create exclusively (probed once; other fsspec protocols), two trials may compute the same
entry: both write complete entries, and should two writers interleave so that a marker vouches for
the other writer's data, the checksum exposes it and the entry is recomputed: never silently wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from a2o.detect.classes import ClassSet, class_key
from a2o.detect.locks import lock_store_for
from a2o.detect.stage import DetectionTask, FrameStoreLike, InProcessRunner, Runner, detect_tasks
from a2o.errors import CacheError, DetectionError
from a2o.progress import progress

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DataConfig, DetectConfig, StorageConfig
    from a2o.detect.base import DetectorFactory

__all__ = [
    "map_cache_for",
    "MapCache",
    "MapReader",
    "EnsureStats",
    "quantize_maps",
    "video_key",
]

log = logging.getLogger(__name__)

_SAFE_VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_CACHE_KEY = re.compile(r"[0-9a-f]{64}")
_MARKER_FORMAT = 1
VERIFY_MODES = ("checksum", "marker")


@dataclasses.dataclass
class EnsureStats:
    """Counters of one ``ensure_maps`` call ((video, class) pairs unless named otherwise)."""

    requested_pairs: int = 0
    computed_pairs: int = 0  # computed by this call
    reused_pairs: int = 0  # found complete (including ones another process finished meanwhile)
    corrupt_pairs: int = 0  # found corrupt or partial, deleted and recomputed
    detector_videos: int = 0  # detect() calls made (one per video with anything missing)
    failed_pairs: int = 0
    check_seconds: float = 0.0  # listing and verifying existing entries
    compute_seconds: float = 0.0  # running the detector and writing entries
    wait_seconds: float = 0.0  # waiting for another process's lock

    @property
    def hit_ratio(self) -> float:
        return self.reused_pairs / self.requested_pairs if self.requested_pairs else 1.0


def _key(key_or_class: str) -> str:
    """A cache key as is (64 hex digits, longer than any class text may be), else ``class_key(text)``."""
    if len(key_or_class) == 64 and _CACHE_KEY.fullmatch(key_or_class):
        return key_or_class
    return class_key(key_or_class)


def video_key(video_id: str) -> str:
    """The file stem of a video: its id when file-name safe, else ``_`` + sha256 (injective)."""
    if _SAFE_VIDEO_ID.fullmatch(video_id) and ".." not in video_id:
        return video_id
    return "_" + hashlib.sha256(video_id.encode("utf-8")).hexdigest()


def quantize_maps(maps: np.ndarray, resolution: int) -> np.ndarray:
    """maps (T, C, H, W) float in [0, 1] -> (T, C, resolution, resolution) uint8 (x255, rounded)."""
    if maps.ndim != 4:
        raise DetectionError(f"detector maps must be (T, C, H, W), got {maps.shape}")
    if not np.isfinite(maps).all():
        raise DetectionError("detector returned non-finite likelihood maps")
    maps = maps.astype(np.float32, copy=False)
    if maps.shape[-2:] != (resolution, resolution):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(maps))  # (T, C, H, W)
        antialias = resolution < min(maps.shape[-2:])
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=antialias)
        maps = x.numpy()
    return np.rint(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)


class MapCache:
    """Maps of one detector (``fingerprint``) at one resolution, under ``root_uri``.

    Args:
        root_uri: fsspec URI of the cache root (the command uses ``storage/maps/<grid_key>``:
            maps are only valid for the frame grid they were computed on).
        fingerprint: the detector's fingerprint (``ConfigDetectorFactory(cfg).fingerprint``).
        map_resolution: side of the stored maps.
        lock_stale_s: a compute lock not refreshed for this long counts as abandoned.
        lock_wait_s: longest wait for another process's lock before giving up with CacheError.
        poll_s: how often a waiting process re-checks a held lock.
        storage_options: passed to fsspec.
    """

    def __init__(
        self,
        root_uri: str,
        fingerprint: str,
        map_resolution: int,
        *,
        lock_stale_s: float = 600.0,
        lock_wait_s: float = 6 * 3600.0,
        poll_s: float = 1.0,
        storage_options: dict | None = None,
    ):
        import fsspec

        if map_resolution < 1:
            raise ValueError(f"map_resolution must be >= 1, got {map_resolution}")
        self.root_uri = root_uri.rstrip("/")
        self.fingerprint = fingerprint
        self.map_resolution = int(map_resolution)
        self.lock_stale_s = float(lock_stale_s)
        self.lock_wait_s = float(lock_wait_s)
        self.poll_s = float(poll_s)
        self.storage_options = dict(storage_options or {})
        self.fs, root_path = fsspec.core.url_to_fs(self.root_uri, **self.storage_options)
        self.fp_key = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:24]
        self.base = f"{root_path.rstrip('/')}/{self.fp_key}/r{self.map_resolution}"
        self._local = bool(_protocols(self.fs) & {"file", "local"})
        self.locks = lock_store_for(self.fs, self.lock_stale_s, probe_dir=root_path)
        self._made_dirs: set[str] = set()

    # pickling: fsspec filesystems pickle, but the memo of created dirs is per process
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_made_dirs"] = set()
        return state

    # ------------------------------------------------------------------------------------------
    # paths

    # Public methods take a class text or its cache key (``ClassSet.keys``); the private ones take
    # the key, so a reader of a ClassSet never hashes or re-validates a text.

    def class_dir(self, key_or_class: str) -> str:
        return self._class_dir(_key(key_or_class))

    def entry_paths(self, key_or_class: str, video_id: str) -> tuple[str, str]:
        """(data path, marker path) of one entry."""
        return self._entry_paths(_key(key_or_class), video_id)

    def _class_dir(self, key: str) -> str:
        return f"{self.base}/{key[:2]}/{key}"

    def _entry_paths(self, key: str, video_id: str) -> tuple[str, str]:
        stem = f"{self._class_dir(key)}/{video_key(video_id)}"
        return stem + ".npy", stem + ".done"

    def _ensure_dir(self, key: str, class_text: str) -> str:
        """The class's folder, created with its class.json (the text, for humans) on first use."""
        directory = self._class_dir(key)
        if directory not in self._made_dirs:
            self.fs.makedirs(directory, exist_ok=True)
            info_path = f"{directory}/class.json"
            if not self.fs.exists(info_path):
                self._atomic_put(info_path, json.dumps({"class": class_text}).encode())
            fp_path = f"{self.base.rsplit('/', 1)[0]}/fingerprint.json"
            if not self.fs.exists(fp_path):
                self._atomic_put(fp_path, json.dumps({"fingerprint": self.fingerprint}).encode())
            self._made_dirs.add(directory)
        return directory

    def _atomic_put(self, path: str, payload: bytes) -> None:
        """Write ``path`` so that no reader ever sees part of it.

        Local: a temporary name, then rename (atomic). Object stores have no rename (``mv`` is a
        copy and a delete), but a single PUT is all-or-nothing: the object appears whole or not at
        all, so the payload is written in place.
        """
        if not self._local:
            self.fs.pipe_file(path, payload)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(payload)
        self.fs.mv(tmp, path)

    # ------------------------------------------------------------------------------------------
    # entries

    def write_maps(self, classes: ClassSet, video_id: str, maps: np.ndarray) -> None:
        """Quantise a detector's maps (T, C, H, W) float in [0, 1] and store one entry per class."""
        quantised = quantize_maps(maps, self.map_resolution)  # (T, C, res, res) uint8
        for c, (key, text) in enumerate(zip(classes.keys, classes.texts, strict=True)):
            self._write(key, text, video_id, quantised[:, c])

    def write_entry(self, class_text: str, video_id: str, maps: np.ndarray) -> None:
        """Store maps (T, res, res) uint8 of one (class, video): data first, marker last."""
        classes = ClassSet.parse([class_text], where="write_entry class_text")
        self._write(classes.keys[0], classes.texts[0], video_id, maps)

    def _write(self, key: str, class_text: str, video_id: str, maps: np.ndarray) -> None:
        if maps.dtype != np.uint8 or maps.ndim != 3 or maps.shape[1:] != (self.map_resolution,) * 2:
            raise CacheError(
                f"entry maps must be (T, {self.map_resolution}, {self.map_resolution}) uint8, "
                f"got {maps.shape} {maps.dtype}"
            )
        self._ensure_dir(key, class_text)
        data_path, marker_path = self._entry_paths(key, video_id)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(maps), allow_pickle=False)
        payload = buffer.getvalue()
        marker = {
            "format": _MARKER_FORMAT,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "nbytes": len(payload),
            "shape": list(maps.shape),
            "video_key": video_key(video_id),
            "class_key": key,
        }
        # An old marker must never vouch for data being replaced (copy-based mv on object stores).
        if self.fs.exists(marker_path):
            self.fs.rm(marker_path)
        self._atomic_put(data_path, payload)
        self._atomic_put(marker_path, json.dumps(marker).encode())

    def _read_marker(self, marker_path: str) -> dict:
        try:
            with self.fs.open(marker_path, "rb") as fh:
                marker = json.loads(fh.read())
        except FileNotFoundError:
            raise CacheError(f"missing completion marker {marker_path}") from None
        except (ValueError, OSError) as exc:
            raise CacheError(f"unreadable completion marker {marker_path}: {exc}") from exc
        if not isinstance(marker, dict) or marker.get("format") != _MARKER_FORMAT:
            raise CacheError(f"completion marker {marker_path} has an unknown format")
        return marker

    def read_entry(self, key_or_class: str, video_id: str) -> np.ndarray:
        """maps (T, res, res) uint8 of one entry; raises CacheError if missing, partial or corrupt."""
        return self._read(_key(key_or_class), video_id)

    def _read(self, key: str, video_id: str) -> np.ndarray:
        data_path, marker_path = self._entry_paths(key, video_id)
        marker = self._read_marker(marker_path)
        try:
            with self.fs.open(data_path, "rb") as fh:
                payload = fh.read()
        except FileNotFoundError:
            raise CacheError(f"marker without data: {data_path}") from None
        if len(payload) != marker.get("nbytes"):
            raise CacheError(f"truncated entry {data_path}: {len(payload)} of {marker.get('nbytes')} bytes")
        if hashlib.sha256(payload).hexdigest() != marker.get("sha256"):
            raise CacheError(f"checksum mismatch in {data_path}")
        try:
            maps = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError as exc:  # pragma: no cover - a valid checksum over bad bytes
            raise CacheError(f"undecodable entry {data_path}: {exc}") from exc
        if list(maps.shape) != marker.get("shape") or maps.dtype != np.uint8:
            raise CacheError(f"entry {data_path} has shape {maps.shape}, marker says {marker.get('shape')}")
        return maps

    def discard_entry(self, key_or_class: str, video_id: str) -> None:
        """Delete an entry (marker first, so it stops counting as complete at once)."""
        for path in reversed(self.entry_paths(key_or_class, video_id)):
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass

    def missing(
        self, key_or_class: str, video_ids: Sequence[str], *, verify: str = "checksum", discard: bool = True
    ) -> tuple[list[str], int]:
        """Videos whose entry for a class is absent or unusable, and how many were corrupt.

        ``verify="checksum"`` reads and checks every entry; ``"marker"`` only checks that the marker
        is readable and the data file has the size it records (cheap; bit flips are then caught by
        :meth:`MapReader.read`, which recomputes). ``discard=False`` leaves unusable entries in place:
        without the class's lock, a data file without its marker may be another process's write in
        progress (deleting it there made that class be computed twice).
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        key = _key(key_or_class)
        directory = self._class_dir(key)
        try:
            listing = {
                os.path.basename(item["name"].rstrip("/")): item.get("size")
                for item in self.fs.ls(directory, detail=True)
            }
        except FileNotFoundError:
            return list(video_ids), 0
        missing, corrupt = [], 0
        for video_id in video_ids:
            stem = video_key(video_id)
            has_data, has_marker = f"{stem}.npy" in listing, f"{stem}.done" in listing
            if not has_data and not has_marker:
                missing.append(video_id)
                continue
            try:
                if not has_marker:
                    raise CacheError(f"missing completion marker for {directory}/{stem}.npy")
                if verify == "checksum":
                    self._read(key, video_id)
                else:
                    _, marker_path = self._entry_paths(key, video_id)
                    marker = self._read_marker(marker_path)
                    if listing.get(f"{stem}.npy") != marker.get("nbytes"):
                        raise CacheError(f"truncated or missing data for {marker_path}")
            except CacheError as exc:
                if discard:
                    log.warning("map cache: %s; recomputing", exc)
                    self.discard_entry(key, video_id)
                    corrupt += 1
                missing.append(video_id)
        return missing, corrupt

    # ------------------------------------------------------------------------------------------
    # locks

    def lock_path(self, key_or_class: str) -> str:
        """The class's compute lock file (see the module docstring and :mod:`a2o.detect.locks`)."""
        return f"{self._class_dir(_key(key_or_class))}/.lock"

    def _try_lock(self, key: str, class_text: str) -> bool:
        """Take the class's compute lock (:mod:`a2o.detect.locks`); False while another process holds it."""
        self._ensure_dir(key, class_text)
        return self.locks.acquire(self.lock_path(key))

    def _touch_locks(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.locks.refresh(self.lock_path(key))

    def _release_locks(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.locks.release(self.lock_path(key))

    def _is_locked(self, key: str) -> bool:
        return self.locks.is_held(self.lock_path(key))

    # ------------------------------------------------------------------------------------------

    def ensure_maps(
        self,
        class_set: ClassSet | Sequence[str],
        store: FrameStoreLike,
        detector_factory: DetectorFactory,
        *,
        runner: Runner | None = None,
        verify: str = "checksum",
        video_ids: Sequence[str] | None = None,
    ) -> MapReader:
        """Make every (video, class) map of ``class_set`` present; compute only what is missing.

        Args:
            class_set: a :class:`ClassSet`; a list of texts is parsed once (``ClassSet.parse``).
            store: the frame store (``video_ids``, ``read``, ``manifest``).
            detector_factory: builds the detector where the work runs (``Runtime -> Detector``);
                its ``fingerprint`` must equal this cache's.
            runner: executes detection tasks; default in-process on CPU
                (:class:`a2o.detect.stage.InProcessRunner`); a cluster uses
                :class:`a2o.detect.stage.RayDataRunner`.
            verify: how existing entries are checked (see :meth:`missing`).
            video_ids: restrict to these videos (default: every video in the store).

        Returns:
            a :class:`MapReader` whose ``stats`` count computed vs reused pairs.

        Raises:
            ClassTextError: a class text breaks the rules of :mod:`a2o.detect.classes`.
            DetectionError: some videos failed; every other entry is written and kept.
        """
        classes = ClassSet.parse(class_set, where="ensure_maps class_set")
        key_of = dict(zip(classes.texts, classes.keys, strict=True))
        factory_fp = getattr(detector_factory, "fingerprint", None)
        if factory_fp is not None and factory_fp != self.fingerprint:
            raise CacheError(
                "the detector factory's fingerprint differs from the cache's; build the MapCache "
                "with fingerprint=detector_factory.fingerprint"
            )
        runner = runner or InProcessRunner()
        videos = list(video_ids) if video_ids is not None else list(store.video_ids())
        annotations = _annotations(store)
        stats = EnsureStats(requested_pairs=len(videos) * len(classes))
        started = time.perf_counter()

        computed_by_us: set[tuple[str, str]] = set()
        failures: dict[tuple[str, str], str] = {}
        pending = list(classes)
        deadline = time.monotonic() + self.lock_wait_s
        while pending:
            check_start = time.perf_counter()
            missing_by_class: dict[str, list[str]] = {}
            for text in pending:
                # No lock held here: look, but leave half-written entries to their writer.
                missing, corrupt = self.missing(key_of[text], videos, verify=verify, discard=False)
                stats.corrupt_pairs += corrupt
                missing = [v for v in missing if (v, text) not in failures]
                if missing:
                    missing_by_class[text] = missing
            stats.check_seconds += time.perf_counter() - check_start
            if not missing_by_class:
                break
            locked = [text for text in missing_by_class if self._try_lock(key_of[text], text)]
            locked_keys = [key_of[text] for text in locked]
            if locked:
                try:
                    # Re-check under the lock what the pre-check flagged: another process may have
                    # finished it meanwhile, and only now may an unusable entry be discarded.
                    work: dict[str, list[str]] = {}
                    for text in locked:
                        missing, corrupt = self.missing(key_of[text], missing_by_class[text], verify=verify)
                        stats.corrupt_pairs += corrupt
                        missing = [v for v in missing if (v, text) not in failures]
                        if missing:
                            work[text] = missing
                    tasks = _tasks_from(work, videos, annotations, classes)
                    compute_start = time.perf_counter()
                    with progress(len(tasks), f"detecting {len(work)} new classes", log, unit="videos") as bar:
                        for result in runner(tasks, store, detector_factory, self):
                            self._touch_locks(locked_keys)
                            stats.detector_videos += 1
                            bar.update(1)
                            for text in result["computed"]:
                                computed_by_us.add((result["video_id"], text))
                            if result.get("error"):
                                for text in result["failed"]:
                                    failures[(result["video_id"], text)] = result["error"]
                                log.warning("map cache: %s failed: %s", result["video_id"], result["error"])
                    stats.compute_seconds += time.perf_counter() - compute_start
                finally:
                    self._release_locks(locked_keys)
                pending = [text for text in missing_by_class if text not in locked]
            else:
                if time.monotonic() > deadline:
                    raise CacheError(
                        f"waited {self.lock_wait_s:.0f} s for other processes computing "
                        f"{len(missing_by_class)} classes; rerun, or remove stale .lock files"
                    )
                wait_start = time.perf_counter()
                while any(self._is_locked(key_of[t]) for t in missing_by_class) and time.monotonic() < deadline:
                    time.sleep(self.poll_s)
                stats.wait_seconds += time.perf_counter() - wait_start
                pending = list(missing_by_class)

        stats.computed_pairs = len(computed_by_us)
        stats.failed_pairs = len(failures)
        stats.reused_pairs = stats.requested_pairs - stats.computed_pairs - stats.failed_pairs
        log.info(
            "maps for %d classes x %d videos: computed %d pairs (%d videos through the detector), "
            "reused %d (hit ratio %.2f), %d corrupt recomputed, in %.2f s",
            len(classes),
            len(videos),
            stats.computed_pairs,
            stats.detector_videos,
            stats.reused_pairs,
            stats.hit_ratio,
            stats.corrupt_pairs,
            time.perf_counter() - started,
        )
        if failures:
            examples = "; ".join(f"{v} / {c}: {e}" for (v, c), e in list(failures.items())[:3])
            raise DetectionError(
                f"{len(failures)} (video, class) maps could not be computed (the other "
                f"{stats.requested_pairs - len(failures)} are cached): {examples}"
            )
        return MapReader(self, classes, stats, store=store, detector_factory=detector_factory)


class MapReader:
    """Reads the cached maps of one class set: ``read(video_id) -> (T, C, res, res) uint8``.

    Entries are addressed by the set's precomputed keys: a read hashes and validates nothing.
    An entry that turns out corrupt at read time is logged, deleted and recomputed in-process
    when the reader has a store and detector factory (``ensure_maps`` gives it both); otherwise
    :class:`CacheError` is raised. Never returns unverified bytes.
    """

    def __init__(
        self,
        cache: MapCache,
        class_set: ClassSet | Sequence[str],
        stats: EnsureStats | None = None,
        *,
        store: FrameStoreLike | None = None,
        detector_factory: DetectorFactory | None = None,
    ):
        self.cache = cache
        self.class_set = ClassSet.parse(class_set, where="MapReader class_set")
        self.stats = stats or EnsureStats()
        self.repaired_pairs = 0
        self._store = store
        self._factory = detector_factory
        self._detector = None

    def __getstate__(self) -> dict:  # a built detector never travels (e.g. into a Ray worker)
        state = dict(self.__dict__)
        state["_detector"] = None
        return state

    def read(self, video_id: str) -> np.ndarray:
        """maps (T, C, res, res) uint8 of ``video_id`` in class-set order."""
        planes = []
        for key, text in zip(self.class_set.keys, self.class_set.texts, strict=True):
            try:
                planes.append(self.cache._read(key, video_id))  # (T, res, res)
            except CacheError as exc:
                planes.append(self._repair(key, text, video_id, exc))
        if not planes:
            raise CacheError("the class set is empty: there are no maps to read")
        return np.stack(planes, axis=1)  # (T, C, res, res)

    def _repair(self, key: str, class_text: str, video_id: str, error: CacheError) -> np.ndarray:
        if self._store is None or self._factory is None:
            raise CacheError(f"{error}; run ensure_maps again to recompute it") from error
        log.warning("map cache: %s; recomputing %s in-process", error, video_id)
        if self._detector is None:
            self._detector = self._factory(None)  # in-process, on the CPU
        self.cache.discard_entry(key, video_id)
        annotations = _annotations(self._store)
        task = _tasks_from({class_text: [video_id]}, [video_id], annotations, self.class_set)[0]
        result = detect_tasks(self._detector, self._store, self.cache, [task])[0]
        if result.get("error"):
            raise DetectionError(f"recomputing {video_id}: {result['error']}") from error
        self.repaired_pairs += 1
        return self.cache._read(key, video_id)


def map_cache_for(storage_cfg: StorageConfig, data_cfg: DataConfig, detect_cfg: DetectConfig, **kwargs: Any) -> MapCache:
    """The run's map cache for the configured detector: ``<storage.maps_root or root/maps>/<grid_key>``.

    Maps are only valid on the frame grid they were computed from, hence the grid key (same
    ``t<num_frames>_r<grid_resolution>`` convention as the frame store) in the root.
    """
    from a2o.detect.base import detector_fingerprint

    grid_key = f"t{data_cfg.num_frames}_r{data_cfg.grid_resolution}"
    resolution = detect_cfg.map_resolution or data_cfg.grid_resolution
    base = getattr(storage_cfg, "maps_root", "") or storage_cfg.path("maps")
    return MapCache("/".join([base.rstrip("/"), grid_key]), detector_fingerprint(detect_cfg), resolution, **kwargs)


# ----------------------------------------------------------------------------------------------


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return set(protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _annotations(store: FrameStoreLike) -> dict[str, tuple[str | None, str | None]]:
    """video_id -> (boxes JSON, masks_uri) from the store's manifest (absent columns -> None)."""
    table = store.manifest()
    ids = table.column("video_id").to_pylist()
    names = set(table.column_names)
    boxes = table.column("boxes").to_pylist() if "boxes" in names else [None] * len(ids)
    masks = table.column("masks_uri").to_pylist() if "masks_uri" in names else [None] * len(ids)
    return {vid: (b, m) for vid, b, m in zip(ids, boxes, masks, strict=True)}


def _tasks_from(
    work: dict[str, list[str]],
    videos: Sequence[str],
    annotations: dict[str, tuple[str | None, str | None]],
    classes: ClassSet,
) -> list[DetectionTask]:
    """Group missing (class text -> videos) of ``classes`` into one task per video, in store order."""
    by_video: dict[str, list[int]] = {}
    for text, missing in work.items():
        index = classes.texts.index(text)
        for video_id in missing:
            by_video.setdefault(video_id, []).append(index)
    tasks = []
    for video_id in videos:
        if video_id in by_video:
            boxes, masks_uri = annotations.get(video_id, (None, None))
            indices = by_video[video_id]
            subset = ClassSet(tuple(classes.texts[i] for i in indices), tuple(classes.keys[i] for i in indices))
            tasks.append(DetectionTask(video_id, subset, boxes, masks_uri))
    return tasks
