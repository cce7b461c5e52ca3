"""PyAV decoding, uniform sampling with padding, and the shared frame-grid geometry."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from fixtures_video import level, write_corrupt, write_video

from a2o.data.video import decode_clip, multi_clip_views, resize_center_crop, uniform_indices
from a2o.errors import VideoDecodeError


def _grey(frames: np.ndarray) -> np.ndarray:
    """Grey level of each frame, read away from the bright square (right half)."""
    return frames[:, :, frames.shape[2] // 2 :, :].reshape(len(frames), -1).mean(axis=1)


@pytest.mark.parametrize("name, codec", [("a.mp4", "libx264"), ("b.mp4", "mpeg4"), ("c.webm", "libvpx-vp9")])
def test_decode_uniform_frames_every_codec(tmp_path, name, codec):
    path = write_video(tmp_path / name, num_frames=12, codec=codec)
    frames, indices = decode_clip(path, 4)
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [1, 4, 7, 10])  # segment centres of 12 frames
    np.testing.assert_allclose(_grey(frames), [level(i) for i in indices], atol=6)


def test_short_video_is_padded_by_repetition(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=5)
    frames, indices = decode_clip(path, 8)
    np.testing.assert_array_equal(indices, [0, 0, 1, 2, 2, 3, 4, 4])
    assert frames.shape[0] == 8
    np.testing.assert_allclose(_grey(frames), [level(i) for i in indices], atol=6)


def test_frame_span_is_inclusive_and_time_span_half_open(tmp_path):
    path = write_video(tmp_path / "v.webm", num_frames=12, fps=12)
    _, indices = decode_clip(path, 3, start_frame=6, end_frame=8)
    np.testing.assert_array_equal(indices, [6, 7, 8])
    frames, indices = decode_clip(path, 2, start_sec=0.25, end_sec=0.5)  # frames 3, 4, 5
    np.testing.assert_array_equal(indices, [3, 5])
    np.testing.assert_allclose(_grey(frames), [level(3), level(5)], atol=6)


def test_decode_from_fsspec_memory(tmp_path):
    path = write_video(tmp_path / "m.mp4", num_frames=6)
    fsspec.filesystem("memory").pipe("/videos-test/m.mp4", open(path, "rb").read())
    _, indices = decode_clip("memory://videos-test/m.mp4", 3)
    np.testing.assert_array_equal(indices, [1, 3, 5])


@pytest.mark.parametrize("kind", ["random", "empty", "missing"])
def test_bad_videos_raise_decode_error_naming_the_uri(tmp_path, kind):
    path = str(tmp_path / f"bad_{kind}.mp4")
    if kind != "missing":
        write_corrupt(path, kind)
    with pytest.raises(VideoDecodeError, match=f"bad_{kind}.mp4"):
        decode_clip(path, 4)


def test_span_outside_video_raises(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=6)
    with pytest.raises(VideoDecodeError, match="outside"):
        decode_clip(path, 2, start_frame=20, end_frame=30)
    with pytest.raises(VideoDecodeError, match="no frames"):
        decode_clip(path, 2, start_sec=50.0, end_sec=60.0)


def test_uniform_indices_cover_span_in_order():
    for count in (1, 3, 16, 101):
        for n in (1, 4, 16):
            idx = uniform_indices(count, n, offset=10)
            assert len(idx) == n and np.all(np.diff(idx) >= 0)
            assert idx.min() >= 10 and idx.max() <= 10 + count - 1
    with pytest.raises(ValueError):
        uniform_indices(0, 4)


def test_resize_center_crop_keeps_dtype_and_aligns_masks():
    frames = np.zeros((2, 24, 32, 3), np.uint8)
    frames[:, 8:16, 12:20] = 200  # a centred block
    mask = (frames[..., 0] > 0).astype(np.uint8)  # (T, H, W)
    out = resize_center_crop(frames, 12)
    assert out.shape == (2, 12, 12, 3) and out.dtype == np.uint8
    out_mask = resize_center_crop(mask, 12, mode="nearest")
    assert out_mask.shape == (2, 12, 12) and set(np.unique(out_mask)) <= {0, 1}
    # the block scales by 12/24 -> rows 4..8, cols 6..10, then the crop drops 2 columns on the left
    expected = np.zeros((12, 12), np.uint8)
    expected[4:8, 4:8] = 1
    np.testing.assert_array_equal(out_mask[0], expected)
    np.testing.assert_array_equal(out[0, ..., 0] > 100, expected.astype(bool))
    maps = np.random.default_rng(0).random((3, 20, 20, 2)).astype(np.float32)
    up = resize_center_crop(maps, 40)
    assert up.shape == (3, 40, 40, 2) and up.dtype == np.float32
    assert 0.0 <= up.min() and up.max() <= 1.0


def test_multi_clip_views_segments_and_crops():
    frames = np.zeros((12, 24, 48, 3), np.uint8)
    for i in range(12):
        frames[i] = level(i)
    frames[:, :, :8] = 255  # bright left edge
    views = multi_clip_views(frames, segments=2, views=3, num_frames=3, size=12)
    assert views.shape == (6, 3, 12, 12, 3) and views.dtype == np.uint8
    # segment-major: views 0..2 come from frames 0..5, views 3..5 from frames 6..11
    seg0, seg1 = views[:3, :, :, -1, 0].mean(), views[3:, :, :, -1, 0].mean()
    assert seg0 < seg1
    left, centre, right = views[0, 0, :, 0, 0], views[1, 0, :, 0, 0], views[2, 0, :, 0, 0]
    assert left.min() == 255 and centre.max() < 255 and right.max() < 255
    single = multi_clip_views(frames, segments=1, views=1, num_frames=4, size=12)
    assert single.shape == (1, 4, 12, 12, 3)
