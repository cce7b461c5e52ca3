"""Video decoding (PyAV) and the frame-grid geometry shared by frames, maps and masks.

Why these choices:

- **Two passes, one decode.** Uniform sampling needs the frame count before decoding, and container
  metadata lies (WebM stores none; some MP4s are off by a few). A demux-only pass reads packet
  timestamps (no decoding, so it is cheap) and gives the exact count and each frame's time; the
  decode pass then converts only the wanted frames to RGB and stops after the last one.
- **Remote files are read into memory once** (fsspec), so both passes cost one download; local
  paths are handed to FFmpeg directly so it can seek.
- **Plain torch geometry** (no torchvision, which has no CPU wheel here): one
  :func:`resize_center_crop` is used for frames, annotation masks and rendered boxes, so all of
  them land on exactly the same pixel grid.

Frame spans: ``start_frame``/``end_frame`` are 0-based and **inclusive** (a MultiSports tube's first
and last annotated frame); ``start_sec``/``end_sec`` select frames whose presentation time ``t``
(from the first frame) satisfies ``start_sec <= t < end_sec``.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

from a2o.errors import VideoDecodeError

__all__ = ["decode_clip", "uniform_indices", "resize_center_crop", "resize_shorter_side", "multi_clip_views"]

log = logging.getLogger(__name__)

# Frames resized per interpolate call: bounds the float32 working memory for long 720p clips.
_RESIZE_CHUNK = 16


def uniform_indices(count: int, num_frames: int, offset: int = 0) -> np.ndarray:
    """``num_frames`` indices spread uniformly over ``count`` frames (segment centres).

    With fewer frames than asked, indices repeat in order (padding by repetition), so a 5-frame
    video sampled to 8 gives ``[0, 0, 1, 2, 2, 3, 4, 4]`` rather than failing.
    """
    if count < 1:
        raise ValueError(f"cannot sample {num_frames} frames from an empty span")
    positions = ((np.arange(num_frames) + 0.5) * count / num_frames).astype(np.int64)
    return offset + np.minimum(positions, count - 1)


def _open_source(uri: str) -> Any:
    """A path or an in-memory file PyAV can open (fsspec for anything remote)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return path
    with fs.open(path, "rb") as fh:
        return io.BytesIO(fh.read())


def _rewind(source: Any) -> Any:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return source


def _frame_times(source: Any) -> np.ndarray:
    """Presentation times (seconds from the first frame) of every video frame, in display order."""
    import av

    with av.open(_rewind(source)) as container:
        if not container.streams.video:
            raise VideoDecodeError("has no video stream")
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        time_base = float(stream.time_base) if stream.time_base else 1.0
    if not pts:
        raise VideoDecodeError("has no video frames")
    ordered = np.sort(np.asarray(pts, dtype=np.int64))
    return (ordered - ordered[0]) * time_base


def _select_span(
    times: np.ndarray,
    start_sec: float | None,
    end_sec: float | None,
    start_frame: int | None,
    end_frame: int | None,
) -> tuple[int, int]:
    """(first, count) of the frames inside the requested span."""
    total = len(times)
    if start_frame is not None or end_frame is not None:
        first = max(0, int(start_frame or 0))
        last = total - 1 if end_frame is None else min(int(end_frame), total - 1)
        if first > last:
            raise VideoDecodeError(
                f"frame span [{start_frame}, {end_frame}] is outside the video's {total} frames"
            )
        return first, last - first + 1
    if start_sec is not None or end_sec is not None:
        lo = -np.inf if start_sec is None else float(start_sec)
        hi = np.inf if end_sec is None else float(end_sec)
        inside = np.flatnonzero((times >= lo) & (times < hi))
        if inside.size == 0:
            raise VideoDecodeError(
                f"time span [{start_sec}, {end_sec}) s holds no frames (video lasts {times[-1]:.2f} s)"
            )
        return int(inside[0]), int(inside.size)
    return 0, total


def _decode_indices(source: Any, wanted: np.ndarray) -> np.ndarray:
    """Decode the frames at display-order ``wanted`` indices -> (T, H, W, 3) uint8."""
    import av

    targets = sorted(set(int(i) for i in wanted))
    last_target = targets[-1]
    kept: dict[int, np.ndarray] = {}
    latest: np.ndarray | None = None
    with av.open(_rewind(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        target_set = set(targets)
        for index, frame in enumerate(container.decode(stream)):
            if index in target_set:
                latest = frame.to_ndarray(format="rgb24")
                kept[index] = latest
            if index >= last_target:
                break
    if not kept:
        raise VideoDecodeError("decoded no frames")
    # The demuxer may count a frame the decoder drops (corrupt tail): repeat the last good frame.
    missing = [i for i in targets if i not in kept]
    if missing:
        log.debug("%d sampled frames missing after decode; repeating the last decoded frame", len(missing))
        for i in missing:
            earlier = [k for k in kept if k < i]
            kept[i] = kept[max(earlier)] if earlier else kept[min(kept)]
    return np.stack([kept[int(i)] for i in wanted])


def _reason(exc: BaseException) -> str:
    """An FFmpeg/OS error's reason alone: ``str()`` of one reads "[Errno 1094995529] Invalid data
    found when processing input: '/path'", whose errno is noise and whose path the caller names."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)


def decode_clip(
    uri: str,
    num_frames: int,
    *,
    start_sec: float | None = None,
    end_sec: float | None = None,
    start_frame: int | None = None,
    end_frame: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``num_frames`` frames sampled uniformly over the clip (or its span).

    Returns ``frames`` (T, H, W, 3) uint8 at the source resolution and ``frame_indices`` (T,)
    int64, the 0-based display-order index of each frame in the video file (repeats when the span
    is shorter than ``num_frames``). Raises :class:`VideoDecodeError` naming ``uri`` when the file
    is missing, empty, undecodable or the span holds no frames.
    """
    import av

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    try:
        source = _open_source(uri)
        times = _frame_times(source)
        first, count = _select_span(times, start_sec, end_sec, start_frame, end_frame)
        indices = uniform_indices(count, num_frames, offset=first)
        frames = _decode_indices(source, indices)
    except VideoDecodeError as exc:
        raise VideoDecodeError(f"video {uri}: {exc}. Check or re-download the file.") from exc
    except FileNotFoundError as exc:
        raise VideoDecodeError(f"video {uri} not found: check data.root / data.video_dir") from exc
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise VideoDecodeError(
            f"video {uri} cannot be decoded ({type(exc).__name__}: {_reason(exc)}). "
            "Re-download or re-encode it (for example to H.264 MP4)."
        ) from exc
    return frames, indices


def resize_shorter_side(array: np.ndarray, size: int, *, mode: str = "bilinear") -> np.ndarray:
    """Resize (T, H, W[, C]) so its shorter side is ``size``, keeping the aspect ratio."""
    import torch
    import torch.nn.functional as F

    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    squeeze = array.ndim == 3
    if squeeze:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"expected (T, H, W, C) or (T, H, W), got shape {array.shape}")
    t, h, w, c = array.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) == (h, w):
        out = array
    else:
        # "nearest-exact" samples pixel centres (like PIL); torch's "nearest" shifts by half a pixel,
        # which would misalign masks against the bilinear-resized frames.
        torch_mode = "bilinear" if mode == "bilinear" else "nearest-exact"
        antialias = mode == "bilinear" and scale < 1.0
        chunks = []
        for start in range(0, t, _RESIZE_CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(array[start : start + _RESIZE_CHUNK]))
            x = x.permute(0, 3, 1, 2).to(torch.float32)  # (t, C, H, W)
            kwargs = {"align_corners": False, "antialias": antialias} if torch_mode == "bilinear" else {}
            y = F.interpolate(x, size=(new_h, new_w), mode=torch_mode, **kwargs)
            chunks.append(y.permute(0, 2, 3, 1))  # (t, new_h, new_w, C)
        resized = torch.cat(chunks)
        if np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(array.dtype)
            resized = resized.round_().clamp_(info.min, info.max)
        elif array.dtype == np.bool_:
            resized = resized > 0.5
        out = resized.numpy().astype(array.dtype, copy=False)
    return out[..., 0] if squeeze else out


def resize_center_crop(array: np.ndarray, size: int, *, mode: str = "bilinear") -> np.ndarray:
    """Shorter-side resize to ``size`` then centre crop: (T, H, W[, C]) -> (T, size, size[, C]).

    Works for uint8 frames, float likelihood maps and uint8/bool masks, keeping the dtype; use
    ``mode="nearest"`` for label masks so values stay in their set.
    """
    resized = resize_shorter_side(array, size, mode=mode)
    h, w = resized.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(resized[:, top : top + size, left : left + size])


def multi_clip_views(
    frames: np.ndarray, segments: int, views: int, num_frames: int, size: int
) -> np.ndarray:
    """Evaluation views: (T, H, W, 3) -> (S*V, num_frames, size, size, 3), segment-major.

    Like V-JEPA2's evaluation: the clip is cut into ``segments`` equal temporal segments, each
    sampled uniformly to ``num_frames``; each is cropped at ``views`` positions spread along the
    longer side after a shorter-side resize (3 views = left/top, centre, right/bottom; 1 = centre).
    """
    if segments < 1 or views < 1:
        raise ValueError(f"segments and views must be >= 1, got {segments}, {views}")
    total = frames.shape[0]
    resized = resize_shorter_side(frames, size)  # (T, H', W', 3), min(H', W') == size
    h, w = resized.shape[1:3]
    long_extent = max(h, w) - size
    if views == 1:
        offsets = [long_extent // 2]
    else:
        offsets = [round(i * long_extent / (views - 1)) for i in range(views)]
    clips = []
    for s in range(segments):
        seg_start = (s * total) // segments
        seg_end = max(seg_start + 1, ((s + 1) * total) // segments)
        indices = uniform_indices(seg_end - seg_start, num_frames, offset=seg_start)
        segment = resized[indices]  # (num_frames, H', W', 3)
        for offset in offsets:
            if h >= w:
                top, left = offset, (w - size) // 2
            else:
                top, left = (h - size) // 2, offset
            clips.append(segment[:, top : top + size, left : left + size])
    return np.stack(clips)  # (S*V, num_frames, size, size, 3)
