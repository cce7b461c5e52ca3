"""Final test evaluation with clip × view ensembling, and the per-clip prediction serving reuses.

A video is decoded into S temporal segments of T frames each; each segment goes onto the frame
grid exactly as the frame store does it (shorter-side resize + centre crop to the grid side), the
detector computes its maps, and the maps are quantised like cached maps. V spatial views are then
crops of the model's input size spread across the grid, applied jointly to frames and maps. The
prediction is the mean of the S×V softmaxes (as V-JEPA2 evaluates). Serving calls
:func:`predict_clip`, so a served prediction equals the offline one for the same clip.

The forward runs on a :class:`~a2o.runtime.Runtime` its caller's entry point decided (the final
evaluation's driver, a Serve replica): its device, under its autocast. Without one, it follows the
model's device in fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from a2o.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalGeometry:
    """How a clip becomes model inputs: T frames per segment, grid side, input side, S, V."""

    num_frames: int
    grid_resolution: int
    resolution: int
    map_resolution: int
    segments: int
    views: int

    @classmethod
    def from_config(cls, cfg) -> EvalGeometry:
        """The final test evaluation's geometry from an :class:`~a2o.config.ExperimentConfig`."""
        return cls(
            num_frames=cfg.data.num_frames,
            grid_resolution=cfg.data.grid_resolution,
            resolution=cfg.data.resolution,
            map_resolution=cfg.detect.map_resolution or cfg.data.grid_resolution,
            segments=cfg.train.eval_segments,
            views=cfg.train.eval_views,
        )


def view_offsets(grid: int, size: int, views: int) -> list[int]:
    """Left offsets of ``views`` crops of ``size`` spread across ``grid`` (1 view = centre)."""
    extent = grid - size
    if views == 1 or extent == 0:
        return [extent // 2] * views
    return [round(i * extent / (views - 1)) for i in range(views)]


def clip_inputs(
    frames: np.ndarray,
    frame_indices: np.ndarray,
    detector: Any,
    class_texts: Sequence[str],
    geometry: EvalGeometry,
    *,
    video_id: str,
    boxes: str | None = None,
    masks_uri: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded frames (S*T, H, W, 3) → model inputs for the S×V clips.

    Returns frames (S*V, T, R, R, 3) uint8 and maps (S*V, T, C, R, R) uint8 (C may be 0).
    """
    from a2o.data.video import resize_center_crop
    from a2o.detect.base import VideoMeta
    from a2o.detect.cache import quantize_maps
    from a2o.train.data import align_maps

    g = geometry
    source_height, source_width = frames.shape[1:3]
    clip_frames, clip_maps = [], []
    top = (g.grid_resolution - g.resolution) // 2
    offsets = view_offsets(g.grid_resolution, g.resolution, g.views)
    for s in range(g.segments):
        segment = slice(s * g.num_frames, (s + 1) * g.num_frames)
        grid = resize_center_crop(frames[segment], g.grid_resolution)  # (T, G, G, 3)
        grid_t = torch.from_numpy(grid)
        if class_texts:
            meta = VideoMeta(video_id, frame_indices[segment], source_height, source_width, boxes, masks_uri)
            maps = detector.detect(grid, list(class_texts), video=meta)  # (T, C, G, G) float
            maps_t = align_maps(
                torch.from_numpy(quantize_maps(maps, g.map_resolution)), g.grid_resolution, g.grid_resolution
            )
        else:
            maps_t = torch.zeros((g.num_frames, 0, g.grid_resolution, g.grid_resolution), dtype=torch.uint8)
        for left in offsets:
            clip_frames.append(grid_t[:, top : top + g.resolution, left : left + g.resolution])
            clip_maps.append(maps_t[:, :, top : top + g.resolution, left : left + g.resolution])
    return torch.stack(clip_frames), torch.stack(clip_maps)


def forward_logits(
    model: torch.nn.Module, frames: torch.Tensor, maps: torch.Tensor, runtime: Runtime | None = None
) -> np.ndarray:
    """Logits (N, K) float32 of frames (N, T, R, R, 3) and maps (N, T, C, R, R), C may be 0.

    On ``runtime`` (its device, under its autocast), else on the model's device in fp32. The model
    must already live on that device.
    """
    import contextlib

    model.eval()
    device = runtime.device if runtime is not None else next(model.parameters()).device
    autocast = runtime.autocast() if runtime is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        logits = model(frames.to(device), maps.to(device) if maps.shape[2] else None)  # (N, K)
    return logits.float().cpu().numpy()


def predict_clip(
    model: torch.nn.Module,
    frames: torch.Tensor,
    maps: torch.Tensor,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Mean softmax over the S×V clips: frames (N, T, R, R, 3), maps (N, T, C, R, R) → (K,)."""
    from a2o.train.metrics import ensemble_probabilities

    return ensemble_probabilities(forward_logits(model, frames, maps, runtime)[None])[0]


def predict_video(
    model: torch.nn.Module,
    detector: Any,
    class_texts: Sequence[str],
    geometry: EvalGeometry,
    *,
    uri: str,
    video_id: str,
    start_sec: float | None = None,
    end_sec: float | None = None,
    start_frame: int | None = None,
    end_frame: int | None = None,
    boxes: str | None = None,
    masks_uri: str | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Decode, detect, ensemble: the class probabilities (K,) of one video."""
    from a2o.data.video import decode_clip

    # S*T frames uniformly over the span; segment s is the s-th run of T of them.
    frames, indices = decode_clip(
        uri,
        geometry.segments * geometry.num_frames,
        start_sec=start_sec,
        end_sec=end_sec,
        start_frame=start_frame,
        end_frame=end_frame,
    )
    clip_frames, clip_maps = clip_inputs(
        frames, indices, detector, class_texts, geometry, video_id=video_id, boxes=boxes, masks_uri=masks_uri
    )
    return predict_clip(model, clip_frames, clip_maps, runtime)


def predict_row(
    model: torch.nn.Module,
    detector: Any,
    class_texts: Sequence[str],
    geometry: EvalGeometry,
    row: dict[str, Any],
    runtime: Runtime | None = None,
) -> np.ndarray:
    """:func:`predict_video` of one manifest row (its span, boxes and masks): (K,) probabilities.

    The test evaluation calls it per row, and so does the serving agreement benchmark.
    """
    return predict_video(
        model,
        detector,
        class_texts,
        geometry,
        uri=row["uri"],
        video_id=row["video_id"],
        start_sec=row.get("start_sec"),
        end_sec=row.get("end_sec"),
        start_frame=row.get("start_frame"),
        end_frame=row.get("end_frame"),
        boxes=row.get("boxes"),
        masks_uri=row.get("masks_uri"),
        runtime=runtime,
    )


def evaluate_videos(
    model: torch.nn.Module,
    detector: Any,
    class_texts: Sequence[str],
    geometry: EvalGeometry,
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Top-1, class-wise accuracy and confusion over manifest ``rows`` (undecodable ones skipped).

    ``runtime``: where and in which precision the model runs (the entry point's decision); the
    model is moved to its device here. None: the model's device, fp32.
    """
    from a2o.errors import VideoDecodeError
    from a2o.train.metrics import evaluate_predictions

    if runtime is not None:
        model.to(runtime.device)
    predictions, targets, skipped = [], [], []
    started = time.perf_counter()
    for i, row in enumerate(rows):
        try:
            probs = predict_row(model, detector, class_texts, geometry, row, runtime)
        except VideoDecodeError as exc:
            log.warning("test evaluation: skipping %s: %s", row["video_id"], exc)
            skipped.append(row["video_id"])
            continue
        predictions.append(int(np.argmax(probs)))
        targets.append(int(row["label_id"]))
        if (i + 1) % 50 == 0:
            log.info("test evaluation: %d/%d videos", i + 1, len(rows))
    if not predictions:
        raise VideoDecodeError("no test video could be decoded; check the dataset files")
    metrics = evaluate_predictions(np.array(predictions), np.array(targets), list(labels)).to_dict()
    metrics.update(
        skipped=skipped,
        segments=geometry.segments,
        views=geometry.views,
        seconds=time.perf_counter() - started,
    )
    return metrics
