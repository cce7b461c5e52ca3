"""Fuzzing /v1/predict with uploads that are not videos the model can judge (issue 17).

Over real HTTP (the app and fixtures of tests/test_serve.py, one Serve app for the module): still
images posted as video, clips with fewer frames than the model's T, empty bodies, truncated and
random bytes, text; plus a seeded set of truncations and byte mutations of a valid mp4.

Properties: never a 5xx; never a 200 for a non-video; every 422 carries a one-line message with
the fix ("upload an mp4/webm clip of at least 4 frames"), no ``Errno`` and no server path; real
clips of T or more frames still get a 200. Run with ``-s`` to print the table of every input, its
status and reason (the issue note's table).

Without Ray: the client-facing rewrite of decode errors, decode_clip's errno-free message, and the
recognizer's tensors over the read-only arrays Ray hands a replica (no "not writable" warning).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_serve  # noqa: E402
from helpers_best import write_clip  # noqa: E402

# tests/test_serve.py's module fixtures: the same best/ dir, clips and app, started once for this module.
best_dir, clips, server, client = test_serve.best_dir, test_serve.clips, test_serve.server, test_serve.client

httpx = pytest.importorskip("httpx")

MIN_FRAMES = 4  # the tiny model's T (data.num_frames in helpers_best.best_config_values)
HINT = f"upload an mp4/webm clip of at least {MIN_FRAMES} frames"
FUZZ_SEED = 17
FUZZ_CASES = 20  # half truncations, half byte mutations

# What a response to an input may be.
REJECT = "reject"  # a non-video: 422 only
ACCEPT = "accept"  # a real clip of >= T frames: 200 only
EITHER = "either"  # a mutated mp4 may still be a (glitchy) video: 200 or 422, never 5xx


@dataclass(frozen=True)
class Upload:
    name: str
    body: bytes
    content_type: str
    expect: str
    multipart: bool = False


# ---------------------------------------------------------------------------------------------
# crafted inputs


def _image(path: str, codec: str, frames: int = 1, fmt: str | None = None) -> bytes:
    """A still image (or an animated GIF) written with PyAV: no image library needed."""
    import av

    pix_fmt = {"png": "rgb24", "mjpeg": "yuvj420p", "gif": "rgb8", "bmp": "bgr24"}[codec]
    pattern = (np.arange(48 * 56 * 3, dtype=np.uint32).reshape(48, 56, 3) % 251).astype(np.uint8)
    with av.open(path, "w", format=fmt or "image2") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 56, 48, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(pattern, 3 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame.reformat(format=pix_fmt)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with open(path, "rb") as fh:
        return fh.read()


def _crafted(root, clips: dict[str, bytes]) -> list[Upload]:
    def clip(name: str, **kwargs) -> bytes:
        with open(write_clip(os.path.join(root, name), **kwargs), "rb") as fh:
            return fh.read()

    mp4 = clips["mp4"]
    png = _image(os.path.join(root, "still.png"), "png")
    text = b"Action recognition notes\nthis file is plain text, not a video.\n" * 20
    return [
        Upload("valid mp4 (20 frames)", mp4, "video/mp4", ACCEPT),
        Upload("valid webm (17 frames)", clips["webm"], "video/webm", ACCEPT),
        Upload(
            f"mp4 of exactly T={MIN_FRAMES} frames", clip("t.mp4", num_frames=MIN_FRAMES), "video/mp4", ACCEPT
        ),
        Upload("empty body", b"", "video/mp4", REJECT),
        Upload("empty multipart file", b"", "video/mp4", REJECT, multipart=True),
        Upload("mp4 with zero frames", clips["zero_frames"], "video/mp4", REJECT),
        Upload("mp4 of 1 frame", clip("one.mp4", num_frames=1), "video/mp4", REJECT),
        Upload("mp4 of 2 frames", clip("two.mp4", num_frames=2), "video/mp4", REJECT),
        Upload(
            f"webm of {MIN_FRAMES - 1} frames",
            clip("three.webm", num_frames=MIN_FRAMES - 1),
            "video/webm",
            REJECT,
        ),
        Upload("PNG as video/mp4", png, "video/mp4", REJECT),
        Upload("PNG as multipart", png, "image/png", REJECT, multipart=True),
        Upload("JPEG as video/mp4", _image(os.path.join(root, "still.jpg"), "mjpeg"), "video/mp4", REJECT),
        Upload(
            "GIF as video/mp4", _image(os.path.join(root, "still.gif"), "gif", fmt="gif"), "video/mp4", REJECT
        ),
        Upload(
            "animated GIF (6 frames)",
            _image(os.path.join(root, "anim.gif"), "gif", frames=6, fmt="gif"),
            "video/mp4",
            REJECT,
        ),
        Upload(
            "BMP as octet-stream",
            _image(os.path.join(root, "still.bmp"), "bmp"),
            "application/octet-stream",
            REJECT,
        ),
        Upload("text file", text, "application/octet-stream", REJECT),
        Upload("JSON", b'{"video": "clip.mp4", "frames": 20}', "video/mp4", REJECT),
        Upload("random bytes (5000)", np.random.default_rng(0).bytes(5000), "video/mp4", REJECT),
        Upload("mp4 cut in half", mp4[: len(mp4) // 2], "video/mp4", REJECT),
        Upload("mp4 header only (64 B)", mp4[:64], "video/mp4", REJECT),
        Upload("mp4 without its first 64 B", mp4[64:], "video/mp4", REJECT),
        Upload("mp4 with an unknown codec tag", mp4.replace(b"avc1", b"zzzz"), "video/mp4", REJECT),
    ]


def _top_level_box(mp4: bytes, kind: bytes) -> tuple[int, int]:
    """(start, end) of the top-level ISO-BMFF box ``kind`` (e.g. b"moov") in ``mp4``."""
    position = 0
    while position + 8 <= len(mp4):
        size = int.from_bytes(mp4[position : position + 4], "big")
        if mp4[position + 4 : position + 8] == kind:
            return position, position + size
        if size < 8:
            break
        position += size
    raise AssertionError(f"no {kind!r} box in the clip")


def _mutations(mp4: bytes, seed: int = FUZZ_SEED, count: int = FUZZ_CASES) -> list[Upload]:
    """``count`` seeded variants of ``mp4``: half truncations, half byte mutations.

    The clip's index (moov) is at the end of the file, so every truncation loses it: no video.
    Half the mutations hit anywhere (mostly pixel data: a glitchy but decodable video is fine),
    half hit the moov box, whose sample tables, sizes and codec header the demuxer trusts.
    """
    rng = np.random.default_rng(seed)
    moov = _top_level_box(mp4, b"moov")
    uploads = []
    truncations = count // 2
    for i in range(truncations):
        cut = int(rng.integers(1, len(mp4)))
        uploads.append(
            Upload(f"fuzz {i:02d}: truncated to {cut}/{len(mp4)} B", mp4[:cut], "video/mp4", REJECT)
        )
    for i in range(truncations, count):
        low, high = moov if i >= (truncations + count) // 2 else (0, len(mp4))
        body = bytearray(mp4)
        positions = rng.choice(np.arange(low, high), size=int(rng.integers(1, 9)), replace=False)
        for position in positions:
            body[position] = int(rng.integers(0, 256))
        where = ",".join(str(int(p)) for p in sorted(positions))
        region = "moov " if low else ""
        uploads.append(
            Upload(f"fuzz {i:02d}: {region}bytes at {where} mutated", bytes(body), "video/mp4", EITHER)
        )
    return uploads


# ---------------------------------------------------------------------------------------------
# the HTTP fuzz

RESULTS: list[tuple[str, int, str]] = []


@pytest.fixture(scope="module")
def uploads(clips, tmp_path_factory) -> dict[str, Upload]:
    root = str(tmp_path_factory.mktemp("fuzz-inputs"))
    crafted = _crafted(root, clips) + _mutations(clips["mp4"])
    return {upload.name: upload for upload in crafted}


@pytest.fixture(scope="module", autouse=True)
def results_table():
    """Prints every input's status and reason after the module (shown with ``pytest -s``)."""
    yield RESULTS
    if RESULTS:
        width = max(len(name) for name, _, _ in RESULTS)
        print(f"\n{'input':<{width}}  status  reason")
        for name, status, reason in RESULTS:
            print(f"{name:<{width}}  {status:<6}  {reason}")


def _post(http, upload: Upload):
    if upload.multipart:
        files = {"file": ("upload.bin", upload.body, upload.content_type)}
        return http.post("/v1/predict", files=files)
    return http.post("/v1/predict", content=upload.body, headers={"Content-Type": upload.content_type})


def _check(upload: Upload, response) -> None:
    assert response.status_code < 500, (upload.name, response.text)
    payload = response.json()
    if response.status_code == 200:
        RESULTS.append((upload.name, 200, f"top-1 {payload['predictions'][0]['label']}"))
        assert upload.expect != REJECT, f"{upload.name}: a non-video got a 200"
        assert payload["predictions"] and payload["clips"] == 4
        return
    message = payload["error"]["message"]
    RESULTS.append((upload.name, response.status_code, f"{payload['error']['code']}: {message}"))
    assert upload.expect != ACCEPT, (upload.name, response.text)
    assert response.status_code == 422, (upload.name, response.text)
    assert payload["error"]["code"] in ("invalid_video", "empty_body")
    assert message and "\n" not in message and "\r" not in message
    assert HINT in message or "downscale the clip" in message, message
    for leak in ("Errno", "/tmp", "a2o-serve", "/upload", "Traceback", "re-download", "data.root"):
        assert leak.lower() not in message.lower(), (leak, message)


CRAFTED_NAMES = [
    "valid mp4 (20 frames)",
    "valid webm (17 frames)",
    f"mp4 of exactly T={MIN_FRAMES} frames",
    "empty body",
    "empty multipart file",
    "mp4 with zero frames",
    "mp4 of 1 frame",
    "mp4 of 2 frames",
    f"webm of {MIN_FRAMES - 1} frames",
    "PNG as video/mp4",
    "PNG as multipart",
    "JPEG as video/mp4",
    "GIF as video/mp4",
    "animated GIF (6 frames)",
    "BMP as octet-stream",
    "text file",
    "JSON",
    "random bytes (5000)",
    "mp4 cut in half",
    "mp4 header only (64 B)",
    "mp4 without its first 64 B",
    "mp4 with an unknown codec tag",
]


@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_crafted_input(client, uploads, name):
    _check(uploads[name], _post(client, uploads[name]))


def test_seeded_truncations_and_mutations(client, uploads):
    fuzzed = [upload for upload in uploads.values() if upload.name.startswith("fuzz ")]
    assert len(fuzzed) == FUZZ_CASES
    for upload in fuzzed:
        _check(upload, _post(client, upload))
    assert (
        client.post(
            "/v1/predict",
            content=uploads["valid mp4 (20 frames)"].body,
            headers={"Content-Type": "video/mp4"},
        ).status_code
        == 200
    )  # still serving


def test_crafted_names_cover_every_crafted_input(uploads):
    assert set(CRAFTED_NAMES) == {name for name in uploads if not name.startswith("fuzz ")}


# ---------------------------------------------------------------------------------------------
# the pieces, without Ray


def _raise_from(cause: BaseException) -> Callable[[], None]:
    def fail() -> None:
        from a2o.errors import VideoDecodeError

        raise VideoDecodeError("video /tmp/a2o-serve-x/upload cannot be decoded (...)") from cause

    return fail


def test_decode_failure_keeps_the_reason_and_drops_errno_and_paths():
    import av

    from a2o.errors import VideoDecodeError
    from a2o.serve.upload import decode_failure

    directory = "/tmp/a2o-serve-abc123"
    cause = av.InvalidDataError(1094995529, "Invalid data found when processing input", f"{directory}/upload")
    try:
        _raise_from(cause)()
    except VideoDecodeError as exc:
        message = str(decode_failure(exc, directory, MIN_FRAMES))
    assert message == f"the upload cannot be decoded (invalid data found when processing input): {HINT}"
    inner = VideoDecodeError("has no video frames")
    try:
        _raise_from(inner)()
    except VideoDecodeError as exc:
        assert "(has no video frames)" in str(decode_failure(exc, directory, MIN_FRAMES))


def test_frames_over_the_pixel_limit_are_refused_before_decoding_the_clip(tmp_path, monkeypatch):
    """A corrupt header can claim 65536x65536 px; shown here with the limit lowered below 56x48."""
    import a2o.serve.upload
    from a2o.errors import VideoDecodeError
    from a2o.serve.upload import check_upload

    path = write_clip(tmp_path / "clip.mp4", num_frames=MIN_FRAMES)
    check_upload(path, MIN_FRAMES)  # accepted as it is
    monkeypatch.setattr(a2o.serve.upload, "MAX_PIXELS", 56 * 48 - 1)
    with pytest.raises(VideoDecodeError, match="56x48 px.*downscale the clip"):
        check_upload(path, MIN_FRAMES)


def test_decode_clip_message_has_no_errno(tmp_path):
    from a2o.data.video import decode_clip
    from a2o.errors import VideoDecodeError

    path = tmp_path / "notes.mp4"
    path.write_bytes(b"plain text, not a video\n" * 50)
    with pytest.raises(VideoDecodeError) as failed:
        decode_clip(str(path), 4)
    message = str(failed.value)
    assert "Errno" not in message and "Invalid data found when processing input" in message
    assert message.count(str(path)) == 1  # named once, by decode_clip itself


def test_recognizer_tensors_over_read_only_arrays_do_not_warn():
    """Ray deserializes a replica's numpy arguments as read-only views; torch must not warn."""
    import torch

    from a2o.serve.deployments import ClipInputs, as_tensor, predict_batch

    class Mean(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, frames, maps):
            return frames.float().mean(dim=(1, 2, 3)) * self.scale  # (N, 3) "logits"

    frames = np.random.default_rng(0).integers(0, 255, (4, 2, 8, 8, 3), dtype=np.uint8)
    maps = np.zeros((4, 2, 0, 8, 8), dtype=np.uint8)
    for array in (frames, maps):
        array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (probabilities,) = predict_batch(Mean(), [ClipInputs(frames, maps, "0" * 64)])
    assert probabilities.shape == (3,) and np.isclose(probabilities.sum(), 1.0)
    assert not frames.flags.writeable  # the caller's array is left alone
    # torch warns once per process, so check the cause too: a read-only array is copied, a
    # writable one (an offline caller's) is shared.
    assert not np.shares_memory(as_tensor(frames).numpy(), frames)
    writable = frames.copy()
    assert np.shares_memory(as_tensor(writable).numpy(), writable)
