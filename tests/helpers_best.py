"""A small but complete ``best/`` directory and real video clips, for the serving tests.

``build_best_dir`` writes the layout of docs/INTERFACES.md ("best/") the way the search service
does: a tiny random V-JEPA2 recognizer built with :func:`a2o.model.build_recognizer` and saved with
:func:`a2o.model.save_recognizer`, the full experiment config as YAML (annotation detector) and a
``metrics.json``. The fusion weights are randomised (seeded) so the adapter path changes the
logits, as it does in a trained model (a fresh one is zero-initialised).

``write_clip`` writes a short moving-pattern clip with PyAV (mp4/H.264, webm/VP9, or a zero-frame
file), so uploads go through the real demux + decode path.

``build_learned_world`` prepares an A2O-Synth ``tiny`` world with a quickly trained learned
detector (the pieces a search has before its final step), and ``save_random_recognizer`` the
seeded random recognizer both builders use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BEST_CLASSES",
    "BEST_LABELS",
    "LEARNED_CLASSES",
    "build_best_dir",
    "build_learned_world",
    "save_random_recognizer",
    "write_clip",
    "best_config_values",
]

BEST_CLASSES = ("person", "ball")
BEST_LABELS = ("jumping", "running", "throwing", "waving")
# Object classes of the tiny world's learned-detector model: three it knows and one it does not.
LEARNED_CLASSES = ("ball", "box", "hand", "person")


def best_config_values(*, serve: dict | None = None) -> dict:
    """Nested config values of the tiny model: T=4 frames, 32 px input on a 40 px grid, 2x2 views."""
    return {
        "data": {"dataset": "synthetic", "num_frames": 4, "resolution": 32, "store_resolution": 40},
        "detect": {"detector": "annotation"},
        "model": {
            "checkpoint": "tiny",
            "tiny_hidden": 32,
            "tiny_layers": 1,
            "tiny_patch": 8,
            "adapter_dim": 8,
        },
        "train": {"eval_segments": 2, "eval_views": 2},
        "serve": dict(serve or {}),
    }


def build_best_dir(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] = BEST_CLASSES,
    labels: Sequence[str] = BEST_LABELS,
    serve: dict | None = None,
    values: dict | None = None,
    seed: int = 0,
) -> str:
    """Write ``root/best`` (model/, config.yaml, metrics.json) and return its path.

    ``values`` (nested config dict) replaces :func:`best_config_values` entirely, e.g. to build the
    default-size tiny model for the serving benchmark.
    """
    import yaml

    from a2o.config import config_from_dict, config_to_dict
    from a2o.detect.base import detector_fingerprint

    best = os.path.join(str(root), "best")
    os.makedirs(best, exist_ok=True)
    cfg = config_from_dict(values if values is not None else best_config_values(serve=serve))
    save_random_recognizer(os.path.join(best, "model"), cfg, classes=classes, labels=labels, seed=seed)
    with open(os.path.join(best, "config.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    metrics = {
        "val_accuracy": 0.5,
        "test": {
            "accuracy": 0.25,
            "classwise_accuracy": {label: 0.25 for label in labels},
            "confusion_matrix": np.eye(len(labels), dtype=int).tolist(),
        },
        "classes": list(classes),
        "labels": list(labels),
        "detector_fingerprint": detector_fingerprint(cfg.detect),
        "trial_id": "trial_0001",
    }
    with open(os.path.join(best, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)
    return best


def save_random_recognizer(model_dir: str, cfg, *, classes: Sequence[str], labels: Sequence[str], seed: int = 0) -> str:
    """Save a tiny random recognizer of ``cfg`` to ``model_dir``; its fusion weights are randomised
    (seeded) so the maps change the logits, as in a trained model (a fresh one is zero-initialised)."""
    import torch

    from a2o.model import build_recognizer, save_recognizer

    model = build_recognizer(
        cfg.model,
        classes=classes,
        labels=list(labels),
        num_frames=cfg.data.num_frames,
        resolution=cfg.data.resolution,
    )
    if model.fusion is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.fusion.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    save_recognizer(model, model_dir)
    return model_dir


def build_learned_world(root: str | os.PathLike, *, serve: dict | None = None):
    """A2O-Synth ``tiny`` under ``root/synth``, its frame store and a learned detector trained on it.

    Returns ``(cfg, manifest, labels)``: ``cfg`` (paths resolved, ``detect.learned_model`` the
    trained folder under ``root/storage/detectors/``) has the geometry of :func:`best_config_values`.
    The detector trains for 1 epoch (a few seconds): a real pixel detector, not a good one.
    """
    from a2o.config import config_from_dict, resolve_paths
    from a2o.data.framestore import grid_key, prepare_frame_store
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import generate_synth
    from a2o.detect import ensure_learned_detector
    from a2o.train.trial import label_names

    root = str(root)
    synth = generate_synth(os.path.join(root, "synth"), "tiny", seed=0)
    values = best_config_values(serve=serve)
    values["data"].update(root=synth, synth_preset="tiny", store_resolution=0)
    values["detect"] = {"detector": "learned", "learned_epochs": 1, "learned_width": 8}
    values["storage"] = {"root": os.path.join(root, "storage")}
    cfg = resolve_paths(config_from_dict(values))
    manifest = load_manifest(cfg.data)
    prepare_frame_store(manifest, cfg.data, cfg.storage.path("frames", grid_key(cfg.data)), use_ray=False)
    ensure_learned_detector(cfg)
    return cfg, manifest, label_names(manifest)


def _pattern(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured square moving over a gradient, different per seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 3)
    for t in range(num_frames):
        for c in range(3):
            frames[t, :, :, c] = (base[c] + 3 * x + 2 * y + 5 * t * (c + 1)) % 256
        top = (t * 3) % max(1, height - side)
        left = (t * 5) % max(1, width - side)
        frames[t, top : top + side, left : left + side] = (255, 255 - 10 * t % 256, 0)
    return frames


def write_clip(
    path: str | os.PathLike,
    *,
    num_frames: int = 20,
    width: int = 56,
    height: int = 48,
    fps: int = 10,
    seed: int = 0,
) -> str:
    """Write a clip to ``path``: H.264 for .mp4, VP9 for .webm; ``num_frames=0`` gives no frames."""
    import av

    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    codec = {".mp4": "libx264", ".webm": "libvpx-vp9"}[os.path.splitext(path)[1]]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        else:
            stream.options = {"crf": "12", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        if num_frames == 0:
            container.start_encoding()  # header only: a valid container holding no frame
        for array in _pattern(num_frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
