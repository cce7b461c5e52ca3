"""The recognizer: object-map adapter fused into V-JEPA2 (see ``recognizer.py`` for the contract)."""

from a2o.model.adapter import MapAdapter, MapFusion
from a2o.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, frames_to_pixel_values, maps_to_float
from a2o.model.recognizer import (
    A2ORecognizer,
    build_recognizer,
    load_recognizer,
    save_recognizer,
    save_tiny_checkpoint,
)

__all__ = [
    "A2ORecognizer",
    "build_recognizer",
    "save_recognizer",
    "load_recognizer",
    "save_tiny_checkpoint",
    "MapAdapter",
    "MapFusion",
    "frames_to_pixel_values",
    "maps_to_float",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
