"""The detector contract, the per-video metadata detectors may use, and the name -> class lookup.

A detector turns a clip's frames and a list of class texts into likelihood maps. Everything
downstream (the map cache, the Ray Data stage, training) depends only on :class:`Detector`, so a
test or an oracle run can swap Grounded SAM2 for the annotation detector without other changes.

``fingerprint`` is part of the contract because the map cache is keyed by it: two detectors with
equal fingerprints must produce the same maps for the same frames and class. It is computable
from the config alone (:func:`detector_fingerprint`) so the driver can look up the cache without
loading any model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from a2o.config import DetectConfig

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


# Builds a detector on a given device; must be picklable (it travels to Ray actors).
DetectorFactory = Callable[["torch.device"], Detector]

# name -> "module:callable taking (detect_cfg, device)". Imports stay lazy: transformers is only
# imported when a Grounded SAM2 detector is actually built.
DETECTORS: dict[str, str] = {
    "annotation": "a2o.detect.annotation:AnnotationDetector.from_config",
    "grounded_sam2": "a2o.detect.grounded_sam2:GroundedSam2Detector.from_config",
    "learned": "a2o.detect.learned:LearnedDetector.from_config",
}


def _resolve(target: str) -> Callable[..., Any]:
    import importlib

    module_name, attr_path = target.split(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def create_detector(detect_cfg: DetectConfig, *, device: torch.device | str | None = None) -> Detector:
    """Build the detector named by ``detect_cfg.detector`` on ``device`` (the caller picks it)."""
    import torch

    try:
        target = DETECTORS[detect_cfg.detector]
    except KeyError:
        raise ValueError(
            f"unknown detector {detect_cfg.detector!r}; valid names: {sorted(DETECTORS)}"
        ) from None
    device = torch.device(device) if device is not None else torch.device("cpu")
    return _resolve(target)(detect_cfg, device=device)


def _checkpoint_identity(model: str) -> str:
    """A model id as is; a local dir as its path plus a digest of its config and file sizes.

    Hashing full weights would cost seconds for published checkpoints on every driver start; the
    config plus the weight files' names and sizes changes whenever a different model is saved there.
    """
    if not os.path.isdir(model):
        return model
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model)):
        path = os.path.join(model, name)
        if not os.path.isfile(path):
            continue
        digest.update(name.encode())
        if name.endswith(".json"):
            with open(path, "rb") as fh:
                digest.update(fh.read())
        else:
            digest.update(str(os.path.getsize(path)).encode())
    return f"dir:{os.path.abspath(model)}:{digest.hexdigest()[:16]}"


def detector_fingerprint(detect_cfg: DetectConfig) -> str:
    """The fingerprint the configured detector will report, computed without loading models.

    Only the fields that change the maps are included, so e.g. ``batch_size`` or the noise seed of
    a noise-free annotation detector do not split the cache.
    """
    if detect_cfg.detector == "annotation":
        fields: dict[str, Any] = {"detector": "annotation", "version": 1}
        if detect_cfg.miss_prob > 0 or detect_cfg.box_jitter > 0:
            fields.update(
                miss_prob=detect_cfg.miss_prob,
                box_jitter=detect_cfg.box_jitter,
                noise_seed=detect_cfg.noise_seed,
            )
    elif detect_cfg.detector == "grounded_sam2":
        from a2o.detect.grounded_sam2 import MAX_BOXES_PER_CLASS

        fields = {
            "detector": "grounded_sam2",
            "version": 1,
            "grounding_dino": _checkpoint_identity(detect_cfg.grounding_dino),
            "sam2": _checkpoint_identity(detect_cfg.sam2),
            "box_threshold": detect_cfg.box_threshold,
            "text_threshold": detect_cfg.text_threshold,
            "detect_resolution": detect_cfg.detect_resolution,
            "max_boxes_per_class": MAX_BOXES_PER_CLASS,
        }
    elif detect_cfg.detector == "learned":
        # Content, not path: built from the trained folder's detector.json (world spec, seed,
        # training settings, weights sha256), so a copy such as best/detector/ matches. Raises
        # DetectorModelError (saying how to train it) when the folder is not trained yet.
        from a2o.detect.learned import fingerprint_of_dir

        return fingerprint_of_dir(detect_cfg.learned_model)
    else:
        raise ValueError(f"unknown detector {detect_cfg.detector!r}; valid names: {sorted(DETECTORS)}")
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class ConfigDetectorFactory:
    """A picklable :data:`DetectorFactory` for a :class:`DetectConfig`.

    It carries the expected fingerprint so the cache can be keyed before any model is loaded, and
    checks on build that the detector agrees (a mismatch would poison the cache).
    """

    def __init__(self, detect_cfg: DetectConfig):
        self.detect_cfg = detect_cfg
        self.fingerprint = detector_fingerprint(detect_cfg)

    def __call__(self, device: torch.device | str | None = None) -> Detector:
        detector = create_detector(self.detect_cfg, device=device)
        if detector.fingerprint != self.fingerprint:  # internal invariant
            raise AssertionError(
                f"detector fingerprint {detector.fingerprint!r} != configured {self.fingerprint!r}"
            )
        return detector
