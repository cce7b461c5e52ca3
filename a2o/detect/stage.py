"""Running detection tasks: in-process, or as a Ray Data stage with an actor pool of detectors.

Both runners share :func:`detect_tasks`, the per-batch function: read each video's frames from
the frame store, run the detector on the classes missing for that video, and hand the maps to the
sink (the map cache), which quantises and writes one entry per class. Actors write the cache
themselves (the storage is shared across the cluster), so only a small summary row per video
travels back to the driver; entries land as soon as a video is done, so an interrupted stage loses
at most the videos in flight.

The Ray stage is ``ray.data.from_items(tasks).map_batches(_DetectorActor, compute=
ActorPoolStrategy(size=concurrency), num_gpus=..., batch_size=...)``. On ray 2.60 ``concurrency=``
is deprecated for ``map_batches``; ``compute=ActorPoolStrategy`` is the current API. The model
loads once per actor, in ``__init__``, on ``Runtime.for_ray_actor()`` (the accelerator when Ray
gave the actor one). Ray Data shows its own progress bar while the driver consumes the results.
The library never calls ``ray.init``: the entry point connects first.

This module knows the cache only through :class:`MapSink`, so :mod:`a2o.detect.cache` imports it
and not the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from a2o.detect.base import Detector, VideoMeta
from a2o.detect.classes import ClassSet
from a2o.errors import A2OError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from a2o.detect.base import DetectorFactory
    from a2o.runtime import Runtime

__all__ = [
    "DetectionTask",
    "FrameStoreLike",
    "MapSink",
    "Runner",
    "detect_tasks",
    "InProcessRunner",
    "RayDataRunner",
]

log = logging.getLogger(__name__)


class FrameStoreLike(Protocol):
    """The part of :class:`a2o.data.framestore.FrameStore` detection uses."""

    def video_ids(self) -> list[str]: ...

    def read(self, video_id: str) -> Any: ...  # FrameRecord: frames, frame_indices, source_*

    def manifest(self) -> pa.Table: ...


class MapSink(Protocol):
    """Where detected maps go (:class:`a2o.detect.cache.MapCache`)."""

    def write_maps(self, classes: ClassSet, video_id: str, maps: np.ndarray) -> None:
        """maps (T, C, H, W) float in [0, 1], channel ``c`` is ``classes[c]``."""
        ...


@dataclasses.dataclass(frozen=True)
class DetectionTask:
    """One video and the classes missing for it: the unit fed to a detector."""

    video_id: str
    classes: ClassSet
    boxes: str | None = None
    masks_uri: str | None = None


# Executes tasks and yields one summary per video: video_id, computed, failed (class texts), error, seconds.
Runner = Callable[[list[DetectionTask], FrameStoreLike, "DetectorFactory", MapSink], Iterator[dict]]


def detect_tasks(
    detector: Detector, store: FrameStoreLike, sink: MapSink, tasks: Sequence[DetectionTask]
) -> list[dict[str, Any]]:
    """Detect and store every task; one summary per task: video_id, computed, failed, error, seconds.

    A failing video (undecodable frames, bad annotations, detector error) is reported in its
    summary rather than raised, so the rest of the batch still lands in the cache.
    """
    results = []
    for task in tasks:
        started = time.perf_counter()
        texts = list(task.classes)
        try:
            record = store.read(task.video_id)
            meta = VideoMeta(
                video_id=task.video_id,
                frame_indices=np.asarray(record.frame_indices, dtype=np.int64),
                source_height=int(record.source_height),
                source_width=int(record.source_width),
                boxes=task.boxes,
                masks_uri=task.masks_uri,
            )
            maps = detector.detect(record.frames, texts, video=meta)  # (T, C, H, W)
            expected = (record.frames.shape[0], len(texts))
            if maps.shape[:2] != expected:
                raise A2OError(f"detector returned maps {maps.shape}, expected (T, C) = {expected}")
            sink.write_maps(task.classes, task.video_id, maps)
            results.append(
                dict(video_id=task.video_id, computed=texts, failed=[], error="",
                     seconds=time.perf_counter() - started)
            )
        except (A2OError, OSError) as exc:
            results.append(
                dict(video_id=task.video_id, computed=[], failed=texts,
                     error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started)
            )
    return results


class InProcessRunner:
    """Runs tasks in this process on ``runtime`` (None: CPU) (tests, small runs, the reader's repairs).

    The detector is built on first use and kept, so consecutive ``ensure_maps`` calls with the
    same runner load the model once.
    """

    def __init__(self, runtime: Runtime | None = None, batch_size: int = 4):
        self.runtime = runtime
        self.batch_size = int(batch_size)
        self._detector: Detector | None = None
        self._factory: Any = None

    def __call__(
        self,
        tasks: list[DetectionTask],
        store: FrameStoreLike,
        detector_factory: DetectorFactory,
        sink: MapSink,
    ) -> Iterator[dict[str, Any]]:
        if not tasks:
            return
        if self._detector is None or self._factory is not detector_factory:
            self._detector = detector_factory(self.runtime)
            self._factory = detector_factory
        for start in range(0, len(tasks), self.batch_size):
            yield from detect_tasks(self._detector, store, sink, tasks[start : start + self.batch_size])


class _DetectorActor:
    """Ray Data callable class: one detector per actor, loaded once in ``__init__``."""

    def __init__(self, store: FrameStoreLike, detector_factory: DetectorFactory, sink: MapSink):
        from a2o.runtime import Runtime

        self.runtime = Runtime.for_ray_actor()
        self.detector = detector_factory(self.runtime)
        self.store = store
        self.sink = sink

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [
            DetectionTask(
                video_id=str(video_id),
                # texts and keys as the driver's ClassSet holds them: nothing is re-checked here
                classes=ClassSet(tuple(json.loads(texts)), tuple(json.loads(keys))),
                boxes=boxes or None,
                masks_uri=masks_uri or None,
            )
            for video_id, texts, keys, boxes, masks_uri in zip(
                batch["video_id"], batch["classes"], batch["keys"], batch["boxes"], batch["masks_uri"], strict=True
            )
        ]
        results = detect_tasks(self.detector, self.store, self.sink, tasks)
        return {
            "video_id": np.array([r["video_id"] for r in results], dtype=object),
            "computed": np.array([json.dumps(r["computed"]) for r in results], dtype=object),
            "failed": np.array([json.dumps(r["failed"]) for r in results], dtype=object),
            "error": np.array([r["error"] for r in results], dtype=object),
            "seconds": np.array([r["seconds"] for r in results], dtype=np.float64),
        }


class RayDataRunner:
    """Runs tasks as a Ray Data ``map_batches`` stage over an actor pool (needs a connected Ray).

    Args:
        batch_size: videos per actor call (``detect.batch_size``).
        concurrency: actors in the pool (``detect.concurrency``).
        num_gpus: GPUs per actor (``detect.num_gpus_per_actor``); 0 runs on CPU.
        num_cpus: CPUs per actor (``detect.num_cpus_per_actor``).
    """

    def __init__(self, *, batch_size: int = 4, concurrency: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0):
        self.batch_size = int(batch_size)
        self.concurrency = int(concurrency)
        self.num_gpus = float(num_gpus)
        self.num_cpus = float(num_cpus)

    @classmethod
    def from_config(cls, detect_cfg) -> RayDataRunner:
        return cls(
            batch_size=detect_cfg.batch_size,
            concurrency=detect_cfg.concurrency,
            num_gpus=detect_cfg.num_gpus_per_actor,
            num_cpus=detect_cfg.num_cpus_per_actor,
        )

    def __call__(
        self,
        tasks: list[DetectionTask],
        store: FrameStoreLike,
        detector_factory: DetectorFactory,
        sink: MapSink,
    ) -> Iterator[dict[str, Any]]:
        import ray

        if not tasks:
            return
        if not ray.is_initialized():
            raise A2OError("the Ray Data detection stage needs a connected Ray; call ray.init() first")
        items = [
            {
                "video_id": t.video_id,
                "classes": json.dumps(list(t.classes.texts)),
                "keys": json.dumps(list(t.classes.keys)),
                "boxes": t.boxes or "",
                "masks_uri": t.masks_uri or "",
            }
            for t in tasks
        ]
        # Several videos per block so batches are not split into single-row blocks.
        dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // self.batch_size)))
        results = dataset.map_batches(
            _DetectorActor,
            fn_constructor_kwargs={"store": store, "detector_factory": detector_factory, "sink": sink},
            compute=ray.data.ActorPoolStrategy(size=min(self.concurrency, len(items))),
            batch_size=self.batch_size,
            batch_format="numpy",
            num_gpus=self.num_gpus or None,
            num_cpus=self.num_cpus,
        )
        for row in results.iter_rows():
            yield {
                "video_id": row["video_id"],
                "computed": json.loads(row["computed"]),
                "failed": json.loads(row["failed"]),
                "error": row["error"],
                "seconds": float(row["seconds"]),
            }
