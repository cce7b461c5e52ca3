"""The detector contract, the per-video metadata detectors may use, and the name -> class lookup.

A detector turns a clip's frames and a list of class texts into likelihood maps. Everything
downstream (the map cache, the Ray Data stage, training) depends only on :class:`Detector`, so a
test or an oracle run can swap Grounded SAM2 for the annotation detector without other changes.

``fingerprint`` is part of the contract because the map cache is keyed by it: two detectors with
equal fingerprints must produce the same maps for the same frames and class. It is computable
from the config alone (:func:`detector_fingerprint`) so the driver can look up the cache without
loading any model. Detector modules import this one (``VideoMeta``); it finds them by name, at
call time (:data:`DETECTORS`), so neither needs the other at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DetectConfig
    from a2o.runtime import Runtime

__all__ = [
    "Detector",
    "VideoMeta",
    "DetectorFactory",
    "ConfigDetectorFactory",
    "create_detector",
    "detector_fingerprint",
    "DETECTORS",
]


@runtime_checkable
class Detector(Protocol):
    """Frames + class texts -> likelihood maps.

    ``fingerprint`` identifies everything that changes the output: model ids, thresholds,
    resolution, noise parameters. Implementations load their models once, in ``__init__``.
    """

    fingerprint: str

    def detect(self, frames: np.ndarray, class_texts: Sequence[str], *, video: VideoMeta) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> likelihood maps (T, C, H, W) float32 in [0, 1]."""
        ...


@dataclass(frozen=True)
class VideoMeta:
    """What a detector may know about a clip besides its pixels.

    ``frame_indices`` are the 0-based source-frame indices of the T frames (from the frame store),
    ``source_height``/``source_width`` the decoded video's size before the grid resize.
    ``boxes`` is the manifest's JSON box string and ``masks_uri`` its masks file; both are None for
    datasets without annotations (only the annotation detector reads them).
    """

    video_id: str
    frame_indices: np.ndarray  # (T,) int64
    source_height: int
    source_width: int
    boxes: str | None = None
    masks_uri: str | None = None


# Builds a detector for a given runtime (None: CPU); must be picklable (it travels to Ray actors).
DetectorFactory = Callable[["Runtime | None"], Detector]

# name -> "module:class". Each class has ``from_config(detect_cfg, runtime)`` and
# ``fingerprint_for(detect_cfg)``: a detector owns its fingerprint. Imports stay lazy: transformers
# is only imported when a Grounded SAM2 detector is actually built, and this module imports no
# detector (they import this contract).
DETECTORS: dict[str, str] = {
    "annotation": "a2o.detect.annotation:AnnotationDetector",
    "grounded_sam2": "a2o.detect.grounded_sam2:GroundedSam2Detector",
    "learned": "a2o.detect.learned:LearnedDetector",
}


def _detector_class(name: str) -> Any:
    import importlib

    try:
        target = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; valid names: {sorted(DETECTORS)}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_detector(detect_cfg: DetectConfig, runtime: Runtime | None = None) -> Detector:
    """Build the detector named by ``detect_cfg.detector`` for ``runtime`` (the caller picks it; None: CPU)."""
    from a2o.runtime import Runtime

    if runtime is None:
        runtime = Runtime.cpu()
    elif not isinstance(runtime, Runtime):
        raise TypeError(
            f"create_detector takes an a2o.runtime.Runtime (e.g. Runtime.cpu(), Runtime.for_ray_actor()), "
            f"got {type(runtime).__name__}"
        )
    return _detector_class(detect_cfg.detector).from_config(detect_cfg, runtime)


def detector_fingerprint(detect_cfg: DetectConfig) -> str:
    """The fingerprint the configured detector will report, computed without loading models.

    Each detector class computes its own (``fingerprint_for``): only the fields that change its
    maps are included, so e.g. ``batch_size`` does not split the cache.
    """
    return _detector_class(detect_cfg.detector).fingerprint_for(detect_cfg)


class ConfigDetectorFactory:
    """A picklable :data:`DetectorFactory` for a :class:`DetectConfig`.

    It carries the expected fingerprint so the cache can be keyed before any model is loaded, and
    checks on build that the detector agrees (a mismatch would poison the cache).
    """

    def __init__(self, detect_cfg: DetectConfig):
        self.detect_cfg = detect_cfg
        self.fingerprint = detector_fingerprint(detect_cfg)

    def __call__(self, runtime: Runtime | None = None) -> Detector:
        detector = create_detector(self.detect_cfg, runtime)
        if detector.fingerprint != self.fingerprint:  # internal invariant
            raise AssertionError(
                f"detector fingerprint {detector.fingerprint!r} != configured {self.fingerprint!r}"
            )
        return detector
