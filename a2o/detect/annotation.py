"""The annotation detector: likelihood maps from a dataset's own masks or boxes.

It serves oracle runs (how good can object cues get?), offline runs with no model weights, and
tests. Two sources, read from :class:`~a2o.detect.base.VideoMeta`:

- ``masks_uri`` (A2O-Synth): an ``.npz`` with one (T_src, H_src, W_src) uint8 {0, 1} array per
  object name, on the video file's own frames. We index it with the clip's ``frame_indices`` and
  pass it through the same :func:`a2o.data.video.resize_center_crop` as the frames, so a map is
  pixel-aligned with its frame by construction.
- ``boxes`` (MultiSports tubes): JSON ``{"width", "height", "tubes": {class: [[frame, x1, y1, x2,
  y2], ...]}}`` in source pixels, frame numbers 0-based like ``frame_indices``. Boxes of the
  sampled frames are rendered filled at source resolution, then resized/cropped like masks.

Class names are compared after the same normalisation as class texts (lowercase, collapsed
spaces). A class the annotations do not know gets an all-zero map: for the search that is a
useless cue, which is the honest answer.

Optional noise simulates a weaker detector: ``miss_prob`` drops a frame's map, ``box_jitter``
shifts and scales boxes (masks are shifted) by a Gaussian with that fraction of the object's
size. Noise is drawn from a generator seeded by (noise_seed, video_id, class), so it is identical
across processes, reruns and the set of other classes asked together.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from a2o.data.video import resize_center_crop
from a2o.detect.base import VideoMeta
from a2o.detect.classes import normalise_text
from a2o.errors import DetectionError

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DetectConfig
    from a2o.runtime import Runtime

__all__ = ["AnnotationDetector"]

log = logging.getLogger(__name__)


def _noise_rng(noise_seed: int, video_id: str, class_text: str) -> np.random.Generator:
    """A generator that depends only on (seed, video, class): stable across processes (no hash())."""
    digest = hashlib.sha256(f"{video_id}\0{class_text}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([int(noise_seed), *words])


class AnnotationDetector:
    """Maps from annotations (see module docstring); no model, so the runtime is ignored."""

    def __init__(
        self,
        *,
        miss_prob: float = 0.0,
        box_jitter: float = 0.0,
        noise_seed: int = 0,
        fingerprint: str | None = None,
    ):
        self.miss_prob = float(miss_prob)
        self.box_jitter = float(box_jitter)
        self.noise_seed = int(noise_seed)
        if fingerprint is None:
            from a2o.config import DetectConfig

            fingerprint = self.fingerprint_for(
                DetectConfig(miss_prob=miss_prob, box_jitter=box_jitter, noise_seed=noise_seed)
            )
        self.fingerprint = fingerprint
        self._masks_cache: tuple[str, dict[str, np.ndarray]] | None = None

    @classmethod
    def from_config(cls, detect_cfg: DetectConfig, runtime: Runtime | None = None) -> AnnotationDetector:
        return cls(
            miss_prob=detect_cfg.miss_prob,
            box_jitter=detect_cfg.box_jitter,
            noise_seed=detect_cfg.noise_seed,
            fingerprint=cls.fingerprint_for(detect_cfg),
        )

    @staticmethod
    def fingerprint_for(detect_cfg: DetectConfig) -> str:
        """The noise settings only when there is noise, so noise-free runs share one cache."""
        fields: dict[str, Any] = {"detector": "annotation", "version": 1}
        if detect_cfg.miss_prob > 0 or detect_cfg.box_jitter > 0:
            fields.update(
                miss_prob=detect_cfg.miss_prob,
                box_jitter=detect_cfg.box_jitter,
                noise_seed=detect_cfg.noise_seed,
            )
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    # ------------------------------------------------------------------------------------------

    def detect(self, frames: np.ndarray, class_texts: Sequence[str], *, video: VideoMeta) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> maps (T, C, H, W) float32 in [0, 1]."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DetectionError(f"frames must be (T, H, W, 3), got {frames.shape}")
        num_frames, height, width = frames.shape[:3]
        if height != width:
            raise DetectionError(f"the frame grid is square; got {height}x{width} for {video.video_id}")
        frame_indices = np.asarray(video.frame_indices, dtype=np.int64)
        if frame_indices.shape != (num_frames,):
            raise DetectionError(
                f"{video.video_id}: {len(frame_indices)} frame indices for {num_frames} frames"
            )
        maps = np.zeros((num_frames, len(class_texts), height, width), dtype=np.float32)
        masks = self._load_masks(video.masks_uri) if video.masks_uri else {}
        tubes, box_w, box_h = self._parse_boxes(video)
        for c, text in enumerate(class_texts):
            name = normalise_text(text)
            rng = _noise_rng(self.noise_seed, video.video_id, name)
            if name in masks:
                source = self._mask_frames(masks[name], frame_indices, video.video_id, rng)
            elif name in tubes:
                source = self._render_boxes(tubes[name], frame_indices, video, box_w, box_h, rng)
            else:
                continue  # unknown class: an all-zero map
            # (T, H_src, W_src) float32 -> (T, size, size), the frames' own geometry.
            maps[:, c] = resize_center_crop(source[..., None], height, mode="bilinear")[..., 0]
            if self.miss_prob > 0:
                dropped = rng.random(num_frames) < self.miss_prob
                maps[dropped, c] = 0.0
        return np.clip(maps, 0.0, 1.0)

    # ------------------------------------------------------------------------------------------

    def _load_masks(self, masks_uri: str) -> dict[str, np.ndarray]:
        """Read a masks npz once per video (detect is called once per video with many classes)."""
        if self._masks_cache is not None and self._masks_cache[0] == masks_uri:
            return self._masks_cache[1]
        import fsspec

        try:
            with fsspec.open(masks_uri, "rb") as fh:
                payload = fh.read()
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                masks = {normalise_text(k): np.asarray(npz[k]) for k in npz.files}
        except (OSError, ValueError) as exc:
            raise DetectionError(f"cannot read masks {masks_uri}: {exc}") from exc
        self._masks_cache = (masks_uri, masks)
        return masks

    def _mask_frames(
        self, mask: np.ndarray, frame_indices: np.ndarray, video_id: str, rng: np.random.Generator
    ) -> np.ndarray:
        if mask.ndim != 3:
            raise DetectionError(f"{video_id}: masks must be (T, H, W), got {mask.shape}")
        if frame_indices.size and (frame_indices.min() < 0 or frame_indices.max() >= mask.shape[0]):
            raise DetectionError(
                f"{video_id}: frame indices up to {frame_indices.max()} but the masks have "
                f"{mask.shape[0]} frames; regenerate the dataset or the frame store"
            )
        selected = (mask[frame_indices] > 0).astype(np.float32)  # (T, H_src, W_src)
        if self.box_jitter > 0:
            selected = np.stack([self._shift_mask(m, rng) for m in selected])
        return selected

    def _shift_mask(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Translate a mask by Gaussian offsets scaled by its bounding box (zero fill)."""
        ys, xs = np.nonzero(mask)
        dy_dx = rng.normal(0.0, self.box_jitter, size=2)  # drawn even when empty: stable stream
        if ys.size == 0:
            return mask
        dy = int(round(dy_dx[0] * (ys.max() - ys.min() + 1)))
        dx = int(round(dy_dx[1] * (xs.max() - xs.min() + 1)))
        shifted = np.zeros_like(mask)
        h, w = mask.shape
        src_y = slice(max(0, -dy), min(h, h - dy))
        dst_y = slice(max(0, dy), min(h, h + dy))
        src_x = slice(max(0, -dx), min(w, w - dx))
        dst_x = slice(max(0, dx), min(w, w + dx))
        if src_y.start < src_y.stop and src_x.start < src_x.stop:
            shifted[dst_y, dst_x] = mask[src_y, src_x]
        return shifted

    @staticmethod
    def _parse_boxes(video: VideoMeta) -> tuple[dict[str, list[Any]], float, float]:
        if not video.boxes:
            return {}, float(video.source_width), float(video.source_height)
        try:
            payload = json.loads(video.boxes)
            tubes = {normalise_text(k): v for k, v in payload.get("tubes", {}).items()}
            box_w = float(payload.get("width") or video.source_width)
            box_h = float(payload.get("height") or video.source_height)
        except (ValueError, AttributeError, TypeError) as exc:
            raise DetectionError(f"{video.video_id}: malformed boxes JSON: {exc}") from exc
        return tubes, box_w, box_h

    def _render_boxes(
        self,
        rows: list[Any],
        frame_indices: np.ndarray,
        video: VideoMeta,
        box_w: float,
        box_h: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Filled boxes of the sampled frames at source resolution: (T, H_src, W_src) float32."""
        src_h, src_w = int(video.source_height), int(video.source_width)
        # A tube list may be flat [[f, x1, y1, x2, y2], ...] or a list of such tubes.
        flat: list[Any] = []
        for row in rows:
            if len(row) and isinstance(row[0], (list, tuple)):
                flat.extend(row)
            else:
                flat.append(row)
        table = np.asarray(flat, dtype=np.float64).reshape(-1, 5)  # (N, 5): frame, x1, y1, x2, y2
        scale = np.array([src_w / box_w, src_h / box_h, src_w / box_w, src_h / box_h])
        out = np.zeros((len(frame_indices), src_h, src_w), dtype=np.float32)
        for t, frame in enumerate(frame_indices):
            for box in table[table[:, 0].astype(np.int64) == int(frame), 1:] * scale:
                x1, y1, x2, y2 = box
                if self.box_jitter > 0:
                    bw, bh = x2 - x1, y2 - y1
                    jitter = rng.normal(0.0, self.box_jitter, size=4) * np.array([bw, bh, bw, bh])
                    x1, y1, x2, y2 = box + jitter
                left, right = int(np.floor(max(0.0, min(x1, x2)))), int(np.ceil(min(src_w, max(x1, x2))))
                top, bottom = int(np.floor(max(0.0, min(y1, y2)))), int(np.ceil(min(src_h, max(y1, y2))))
                if right > left and bottom > top:
                    out[t, top:bottom, left:right] = 1.0
        return out
