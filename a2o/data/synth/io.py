"""Byte-deterministic, atomic writers for A2O-Synth clips and masks.

Why: the same seed must give the same bytes (tests and caches compare them), and an interrupted
generation must never leave a half-written file under its final name. ``np.savez_compressed``
stamps each zip entry with the current time, so the masks are zipped here with a fixed date; x264
is pinned to one thread because its output depends on the thread count, which differs by machine.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

__all__ = ["write_mp4", "write_masks_npz"]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_mp4(path: str, frames: np.ndarray, *, fps: int, crf: int) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264/yuv420p mp4 at ``path`` (atomically)."""
    import av

    tmp = f"{path}.tmp"
    container = av.open(tmp, mode="w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    os.replace(tmp, path)


def write_masks_npz(path: str, masks: dict[str, np.ndarray]) -> None:
    """Write ``{name: (T, H, W) uint8}`` as a compressed ``.npz`` readable by ``np.load`` (atomically)."""
    tmp = f"{path}.tmp"
    with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(masks):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(masks[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    os.replace(tmp, path)
