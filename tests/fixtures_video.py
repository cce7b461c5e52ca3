"""Tiny synthetic videos for the data-layer tests, written with PyAV.

Each frame is a flat grey whose level encodes its index (``level(i) = 16 + 16 * i``), with a
bright square in the left third, so tests can check *which* frames were sampled and where a crop
came from despite lossy compression.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

# mp4 with H.264 or MPEG-4 part 2, webm with VP9 (what SSv2 ships).
CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


def level(index: int) -> int:
    """Grey level of frame ``index`` (distinct enough to survive compression)."""
    return 16 + 16 * int(index)


def make_frames(num_frames: int = 12, width: int = 32, height: int = 24) -> np.ndarray:
    """(T, H, W, 3) uint8: frame i is grey ``level(i)`` with a white square near the left edge."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = level(i)
    square = max(2, min(width, height) // 4)
    top = (height - square) // 2
    frames[:, top : top + square, 1 : 1 + square] = 255
    return frames


def write_video(
    path: str | os.PathLike,
    num_frames: int = 12,
    width: int = 32,
    height: int = 24,
    *,
    fps: int = 12,
    codec: str | None = None,
) -> str:
    """Write a clip of :func:`make_frames` to ``path`` (codec from the extension unless given)."""
    import av

    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    codec = codec or CODECS[os.path.splitext(path)[1]]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "10", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.bit_rate = 2_000_000
        for array in make_frames(num_frames, width, height):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_corrupt(path: str | os.PathLike, kind: str) -> str:
    """A bad video: ``kind`` is 'random' (garbage bytes) or 'empty' (zero bytes)."""
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as fh:
        if kind == "random":
            fh.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        elif kind != "empty":
            raise ValueError(f"kind must be 'random' or 'empty', got {kind!r}")
    return path


def write_multisports(
    root: Path,
    train: tuple[str, ...] = ("basketball/v_a1", "basketball/v_a2", "football/v_b1", "football/v_b2"),
    test: tuple[str, ...] = ("basketball/v_t1",),
    bad_label: bool = False,
) -> Path:
    """``trainval/multisports_GT.pkl`` + ``trainval/<sport>/<video>.mp4`` (the official release layout).

    Each video (12 frames) has two tubes of 5 frames (1-based: ``f..f+4`` and ``f+6..f+10``, ``f`` = 1 or 2);
    ``bad_label`` gives the second video a label index outside ``labels``.
    """
    labels = ["basketball dribble", "football pass", "football shoot"]
    gttubes, nframes, resolution = {}, {}, {}
    for n, video in enumerate(train + test):
        first = 1 + n % 2
        tube = np.array([[f, 2, 3, 20, 22] for f in range(first, first + 5)], dtype=np.float32)
        label_index = 0 if video.startswith("basketball") else 1 + n % 2
        gttubes[video] = {label_index: [tube, tube + np.array([6, 0, 0, 0, 0], np.float32)]}
        if bad_label and n == 1:
            gttubes[video] = {7: [tube]}
        nframes[video], resolution[video] = 12, (24, 32)
        write_video(root / "trainval" / f"{video}.mp4", num_frames=12)
    gt = {"labels": labels, "gttubes": gttubes, "nframes": nframes, "resolution": resolution,
          "train_videos": [list(train)], "test_videos": [list(test)]}
    (root / "trainval" / "multisports_GT.pkl").write_bytes(pickle.dumps(gt))
    return root
