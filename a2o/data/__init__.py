"""The data layer: manifests and splits, PyAV decoding, the frame store.

Public names resolve lazily (PEP 562), so ``import a2o.data.schema`` stays light: torch and PyAV
load only when a decoding function is first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MANIFEST_SCHEMA": "a2o.data.schema",
    "make_manifest": "a2o.data.schema",
    "load_manifest": "a2o.data.manifest",
    "write_manifest": "a2o.data.manifest",
    "read_manifest": "a2o.data.manifest",
    "decode_clip": "a2o.data.video",
    "resize_center_crop": "a2o.data.video",
    "multi_clip_views": "a2o.data.video",
    "FrameStore": "a2o.data.framestore",
    "FrameRecord": "a2o.data.framestore",
    "PrepareSummary": "a2o.data.framestore",
    "prepare_frame_store": "a2o.data.framestore",
    "grid_key": "a2o.data.framestore",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'a2o.data' has no attribute {name!r}")
