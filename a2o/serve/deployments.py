"""The Ray Serve deployments: clip detector, batched recognizer, and the HTTP ingress.

One request flows ingress → :class:`ClipDetector` → :class:`ClipRecognizer` → ingress:

- the detector replica decodes the upload's S×T frames with :func:`a2o.data.video.decode_clip`
  (from a temp file, the same local-file path offline evaluation takes) and turns them into the
  S×V model inputs and their likelihood maps with :func:`a2o.train.evaluate.clip_inputs`;
- the recognizer replica runs :func:`a2o.train.evaluate.predict_clip` (one request) or the same
  forward + ensemble over a ``@serve.batch`` of requests (several at once, one forward pass).

So a served prediction is the offline :func:`a2o.train.evaluate.predict_video` of the same clip.
The pure functions (:func:`prepare_upload`, :func:`predict_batch`) hold all of that logic; the
deployment classes only load models and move arrays. Each replica decides its
:class:`~a2o.runtime.Runtime` once (:meth:`Runtime.for_ray_actor`: its GPU when Ray assigned one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve

from a2o.errors import DetectionError, VideoDecodeError

if TYPE_CHECKING:  # pragma: no cover
    from a2o.runtime import Runtime
    from a2o.serve.best import BestModel

__all__ = [
    "ClipInputs",
    "ClipRejected",
    "prepare_upload",
    "predict_batch",
    "ClipDetector",
    "ClipRecognizer",
    "PredictIngress",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipInputs:
    """Model inputs of one upload: frames (N, T, R, R, 3) uint8, maps (N, T, C, R, R) uint8, N = S×V."""

    frames: np.ndarray
    maps: np.ndarray
    sha256: str


@dataclass(frozen=True)
class ClipRejected:
    """Why an upload gives no inputs. ``kind`` is 'invalid_video' (client) or 'detection_failed'."""

    kind: str
    message: str


def upload_video_id(sha256: str) -> str:
    """The ``video_id`` an upload is detected under: content-derived, so a seeded detector's noise
    (and thus the prediction) is the same for the same bytes, and equal to an offline run that uses it."""
    return f"upload-{sha256[:16]}"


def prepare_upload(video: bytes, detector: Any, class_texts: Sequence[str], geometry: Any) -> ClipInputs:
    """Upload bytes → :class:`ClipInputs`, exactly as :func:`a2o.train.evaluate.predict_video`.

    The upload is first held to :func:`a2o.serve.upload.check_upload` (a real video of at least
    T decodable frames): offline decoding pads and patches what it is given, which would turn a
    still image or a 1-frame clip into a prediction. Raises :class:`VideoDecodeError` with a
    one-line message (no server path, no errno) for anything that is not such a video.
    """
    from a2o.data.video import decode_clip
    from a2o.serve.upload import check_upload, decode_failure, min_upload_frames
    from a2o.train.evaluate import clip_inputs

    sha256 = hashlib.sha256(video).hexdigest()
    min_frames = min_upload_frames(geometry)
    with tempfile.TemporaryDirectory(prefix="a2o-serve-") as directory:
        path = os.path.join(directory, "upload")
        with open(path, "wb") as fh:
            fh.write(video)
        check_upload(path, min_frames)
        try:
            # S*T frames uniformly over the clip; segment s is the s-th run of T (as predict_video).
            frames, indices = decode_clip(path, geometry.segments * geometry.num_frames)
        except VideoDecodeError as exc:
            # Rare after check_upload (a clip whose later frames fail to decode).
            raise decode_failure(exc, directory, min_frames) from None
    clip_frames, clip_maps = clip_inputs(
        frames, indices, detector, class_texts, geometry, video_id=upload_video_id(sha256)
    )
    return ClipInputs(frames=clip_frames.numpy(), maps=clip_maps.numpy(), sha256=sha256)


def as_tensor(array: np.ndarray) -> Any:
    """A tensor over ``array``, copied only when it is read-only.

    Ray hands a replica the numpy arrays of a :class:`ClipInputs` argument as zero-copy, read-only
    views of its object store; ``torch.from_numpy`` on those shares memory torch may not write and
    warns "The given NumPy array is not writable" on the first request. One copy of an upload's
    clips is small next to the forward pass. (Concatenating a batch copies already.)
    """
    import torch

    return torch.from_numpy(np.require(array, requirements=("C_CONTIGUOUS", "WRITEABLE")))


def predict_batch(model: Any, clips: Sequence[ClipInputs], runtime: Runtime | None = None) -> list[np.ndarray]:
    """Class probabilities (K,) of each upload, the model running on ``runtime`` (None: its device, fp32).

    One upload goes through :func:`a2o.train.evaluate.predict_clip` itself. Several share one
    forward pass over their stacked clips (all uploads have the same S×V clip geometry); the
    logits are then ensembled per upload by the same :func:`ensemble_probabilities`, so batching
    changes nothing but float rounding inside the forward.
    """
    import torch

    from a2o.train.evaluate import forward_logits, predict_clip
    from a2o.train.metrics import ensemble_probabilities

    if len(clips) == 1:
        return [predict_clip(model, as_tensor(clips[0].frames), as_tensor(clips[0].maps), runtime)]
    per_upload = clips[0].frames.shape[0]  # N = S×V clips per upload
    frames = torch.from_numpy(np.concatenate([c.frames for c in clips]))  # (B*N, T, R, R, 3)
    maps = torch.from_numpy(np.concatenate([c.maps for c in clips]))  # (B*N, T, C, R, R)
    logits = forward_logits(model, frames, maps, runtime)  # (B*N, K)
    logits = logits.reshape(len(clips), per_upload, -1)  # (B, N, K)
    return list(ensemble_probabilities(logits))


class ClipDetector:
    """Decodes an upload and computes its model inputs and likelihood maps (the model's class set)."""

    def __init__(self, best: BestModel) -> None:
        from a2o.detect.base import create_detector
        from a2o.runtime import Runtime
        from a2o.serve.best import check_detector_fingerprint

        self.best = best
        self.geometry = best.geometry
        self.detector = create_detector(best.config.detect, Runtime.for_ray_actor())
        # The loaded detector's own fingerprint: a learned one that is not the trained one fails here.
        check_detector_fingerprint(best, self.detector.fingerprint)

    def prepare(self, video: bytes) -> ClipInputs | ClipRejected:
        try:
            return prepare_upload(video, self.detector, self.best.classes, self.geometry)
        except VideoDecodeError as exc:
            return ClipRejected("invalid_video", str(exc))
        except DetectionError as exc:
            log.error("detection failed on an upload: %s", exc)
            return ClipRejected("detection_failed", "the detector could not process this video")


class ClipRecognizer:
    """Adapter + V-JEPA2 on batches of uploads (``@serve.batch``, sizes from ServeConfig)."""

    def __init__(self, best: BestModel) -> None:
        from a2o.model import load_recognizer
        from a2o.runtime import Runtime

        # The class set the detector replica computes maps for, in the same channel order.
        model, _ = load_recognizer(best.model_dir, classes=best.classes)
        self.runtime = Runtime.for_ray_actor(best.config.train.precision)
        self.model = model.to(self.runtime.device)
        serve_cfg = best.config.serve
        self.predict.set_max_batch_size(serve_cfg.max_batch_size)
        self.predict.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def predict(self, clips: list[ClipInputs]) -> list[np.ndarray]:
        # The forward runs in a worker thread so the replica keeps accepting requests (and thus
        # fills the next batch) meanwhile; max_concurrent_batches=1 keeps one forward at a time.
        log.debug("recognizer batch: %d upload(s)", len(clips))
        return await asyncio.to_thread(predict_batch, self.model, clips, self.runtime)


@serve.ingress()
class PredictIngress:
    """The FastAPI ingress (app from :func:`a2o.serve.api.create_api`), composing the two handles."""

    def __init__(self, detector: Any, recognizer: Any, best: BestModel, detector_fingerprint: str) -> None:
        self._detector = detector
        self._recognizer = recognizer
        self._best = best
        self._detector_fingerprint = detector_fingerprint

    def __serve_build_asgi_app__(self) -> Any:
        from a2o.serve.api import create_api, model_info

        return create_api(self, model_info(self._best, self._detector_fingerprint), self._best.config.serve)

    async def probabilities(self, video: bytes) -> tuple[np.ndarray, str]:
        """(K,) probabilities and the upload's sha256; raises VideoDecodeError / DetectionError."""
        prepared = await self._detector.prepare.remote(video)
        if isinstance(prepared, ClipRejected):
            error = VideoDecodeError if prepared.kind == "invalid_video" else DetectionError
            raise error(prepared.message)
        probabilities = await self._recognizer.predict.remote(prepared)
        return probabilities, prepared.sha256
