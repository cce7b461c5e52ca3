"""Detection: class texts -> per-frame likelihood maps, cached per (detector, class, video).

Imports are lazy (PEP 562) so ``import a2o.detect`` does not pull in torch, transformers or ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Detector",
    "VideoMeta",
    "ConfigDetectorFactory",
    "create_detector",
    "detector_fingerprint",
    "ClassSet",
    "validate_class_text",
    "class_key",
    "MapCache",
    "MapReader",
    "EnsureStats",
    "InProcessRunner",
    "RayDataRunner",
    "AnnotationDetector",
    "GroundedSam2Detector",
    "LearnedDetector",
    "ensure_learned_detector",
]

_WHERE = {
    "Detector": "a2o.detect.base",
    "VideoMeta": "a2o.detect.base",
    "ConfigDetectorFactory": "a2o.detect.base",
    "create_detector": "a2o.detect.base",
    "detector_fingerprint": "a2o.detect.base",
    "ClassSet": "a2o.detect.classes",
    "validate_class_text": "a2o.detect.classes",
    "class_key": "a2o.detect.classes",
    "MapCache": "a2o.detect.cache",
    "MapReader": "a2o.detect.cache",
    "EnsureStats": "a2o.detect.cache",
    "InProcessRunner": "a2o.detect.stage",
    "RayDataRunner": "a2o.detect.stage",
    "AnnotationDetector": "a2o.detect.annotation",
    "GroundedSam2Detector": "a2o.detect.grounded_sam2",
    "LearnedDetector": "a2o.detect.learned",
    "ensure_learned_detector": "a2o.detect.learned_train",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'a2o.detect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
