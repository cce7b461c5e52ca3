"""Is an upload a video the model can judge? The strict check that runs before decoding it.

Offline decoding (:func:`a2o.data.video.decode_clip`) is lenient on purpose: a dataset clip that is
shorter than the sampled frame count is padded by repeating frames, a corrupt tail is patched with
the last good frame, and FFmpeg's image demuxers open a PNG, JPEG or GIF as a one-frame "video".
Each of those leniencies keeps an evaluation running over a large dataset, but turns a non-video
upload into a confident-looking 200. So the server first checks, on the same temp file:

- the container is not a still image (``image2``, ``png_pipe``, ``gif`` ...);
- it has a video stream of a sane size (a corrupt header must not make us allocate gigabytes);
- at least :func:`min_upload_frames` frames actually decode (not merely demux).

Every refusal is a :class:`~a2o.errors.VideoDecodeError` whose message is one line for the client:
what is wrong and how to fix it, without FFmpeg's ``[Errno N]`` prefix or any server path.
"""

from __future__ import annotations

import os
import re
from typing import Any

from a2o.errors import VideoDecodeError

__all__ = [
    "MAX_PIXELS",
    "check_upload",
    "min_upload_frames",
    "upload_hint",
    "client_reason",
    "decode_failure",
    "one_line",
]

MAX_PIXELS = 4096 * 4096
"""Largest accepted frame (width × height): a 4K frame is about half of it. A mutated header can
claim 65536 × 65536 px, and decoding S×T such frames to RGB would exhaust the replica's memory."""

_IMAGE_DEMUXERS = frozenset({"image2", "image2pipe", "gif", "apng", "ico", "alias_pix", "brender_pix"})
"""FFmpeg demuxers that read still images; every ``*_pipe`` demuxer (png_pipe, jpeg_pipe ...) is one too."""

_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def min_upload_frames(geometry: Any) -> int:
    """Fewest decodable frames an upload must have: the frames of one temporal segment (T).

    Why T and not S×T: offline evaluation samples S×T frames and pads a shorter clip by
    repetition, and the model was evaluated that way on short dataset clips, so a clip of T..S×T
    frames is judged as it would be offline. Below T even a single segment repeats frames, and a
    1- or 2-frame "video" (a still image in a video container) has no motion to recognise.
    """
    return int(geometry.num_frames)


def upload_hint(min_frames: int) -> str:
    """The fix every refusal names."""
    return f"upload an mp4/webm clip of at least {min_frames} frames"


def one_line(text: str) -> str:
    """``text`` on one line, whitespace runs collapsed (FFmpeg log lines can carry newlines)."""
    return " ".join(str(text).split())


_PLAIN_REASONS = {
    "PatchWelcomeError": "it uses a feature FFmpeg cannot decode",  # FFmpeg: "patches welcome"
    "UnicodeDecodeError": "its metadata is not valid text",  # PyAV decodes container tags as UTF-8
}


def _ffmpeg_reason(exc: BaseException) -> str:
    """What FFmpeg/the OS said, without the errno prefix or the file name (ours, not the client's)."""
    if type(exc).__name__ in _PLAIN_REASONS:
        return _PLAIN_REASONS[type(exc).__name__]
    reason = getattr(exc, "strerror", None) or str(exc)
    reason = _ERRNO.sub("", str(reason))
    filename = getattr(exc, "filename", None)
    if filename:
        reason = reason.replace(f": {filename!r}", "").replace(str(filename), "")
    reason = one_line(reason).rstrip(" :.")
    return reason[:1].lower() + reason[1:] if reason else type(exc).__name__


def client_reason(message: str, directory: str) -> str:
    """A message fit for the client: no errno, no path under ``directory`` (the temp dir), one line."""
    message = _ERRNO.sub("", message)
    message = re.sub(re.escape(directory) + r"[^\s'\"),:]*", "the upload", message)
    return one_line(message.replace("video the upload", "the upload"))


def decode_failure(exc: VideoDecodeError, directory: str, min_frames: int) -> VideoDecodeError:
    """The client's version of a :func:`~a2o.data.video.decode_clip` error on an upload in ``directory``.

    decode_clip's message names the file (our temp path) and suggests offline fixes (re-download,
    data.root); the client gets the underlying reason and the upload fix instead.
    """
    cause = exc.__cause__
    if isinstance(cause, VideoDecodeError):
        reason = str(cause)
    elif cause is not None:
        reason = _ffmpeg_reason(cause)
    else:
        reason = str(exc)
    reason = client_reason(reason, directory).rstrip(" .")
    return VideoDecodeError(f"the upload cannot be decoded ({reason}): {upload_hint(min_frames)}")


def _format_names(container: Any) -> list[str]:
    return [name.strip() for name in (container.format.name or "").split(",") if name.strip()]


def _is_image(names: list[str]) -> bool:
    return any(name in _IMAGE_DEMUXERS or name.endswith("_pipe") for name in names)


def _count_decodable(container: Any, stream: Any, wanted: int) -> int:
    """Frames that decode, counting up to ``wanted`` (so a long clip costs only ``wanted`` decodes).

    A decode error after some good frames ends the count rather than failing: whether that is
    enough frames is the caller's call.
    """
    import av

    count = 0
    try:
        for frame in container.decode(stream):
            _check_size(frame.width, frame.height)  # the header may have lied
            count += 1
            if count >= wanted:
                break
    except av.FFmpegError:
        if count == 0:
            raise
    return count


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise VideoDecodeError(
            f"the upload's frames are {width}x{height} px, more than the server decodes "
            f"({MAX_PIXELS // 10**6} megapixels): downscale the clip, e.g. to 1280x720"
        )


def _check_open(container: Any, min_frames: int) -> None:
    hint = upload_hint(min_frames)
    names = _format_names(container)
    if _is_image(names):
        kind = names[0].removesuffix("_pipe")
        raise VideoDecodeError(f"the upload is a still image ({kind}), not a video: {hint}")
    if not container.streams.video:
        raise VideoDecodeError(f"the upload has no video stream: {hint}")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for the stream's codec tag
        raise VideoDecodeError(f"the upload's video codec is unknown to the server: re-encode it and {hint}")
    _check_size(stream.codec_context.width, stream.codec_context.height)
    decoded = _count_decodable(container, stream, min_frames)
    if decoded == 0:
        raise VideoDecodeError(f"the upload holds no decodable video frame: {hint}")
    if decoded < min_frames:
        raise VideoDecodeError(
            f"the upload has only {decoded} decodable frame{'s' if decoded != 1 else ''} but the model "
            f"needs at least {min_frames}: {hint}"
        )


def check_upload(path: str, min_frames: int) -> None:
    """Raise :class:`VideoDecodeError` (a one-line client message) unless ``path`` is a video with
    at least ``min_frames`` decodable frames; see the module docstring for what is refused."""
    import av

    hint = upload_hint(min_frames)
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"the upload is empty: {hint}")
    try:
        with av.open(path) as container:
            _check_open(container, min_frames)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError, UnicodeDecodeError, EOFError) as exc:
        raise VideoDecodeError(
            f"the upload is not a readable video ({_ffmpeg_reason(exc)}): {hint}"
        ) from None
