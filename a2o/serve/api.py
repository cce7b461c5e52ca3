"""The HTTP API (FastAPI): routes, response schemas, upload limits and JSON errors.

Endpoints
- ``POST /v1/predict[?top_k=k]``: the body is the video, either raw (``Content-Type: video/*`` or
  ``application/octet-stream``) or a ``multipart/form-data`` upload with the field ``file``.
  Returns :class:`PredictResponse`: the top-k action labels with their probabilities, and a
  ``warning`` when the model is served in a mode whose predictions do not match its offline
  metrics (an annotation-oracle detector served with ``--allow-oracle-detector``).
- ``GET /v1/model``: :class:`ModelInfo` (object classes, labels, metrics, detector fingerprint).
- ``GET /healthz``: ``{"status": "ok"}``.
- ``GET /openapi.json``, ``GET /docs``: the OpenAPI spec and its browser.

Every error is ``{"error": {"code": ..., "message": ...}}`` (:class:`ErrorResponse`) with a 4xx
status for bad requests; messages are one line, say how to fix the request and never carry server
paths, errno codes or tracebacks. Anything that is not a video the model can judge (an empty body,
a still image, random or truncated bytes, a clip with fewer decodable frames than the model's
``num_frames``) is a 422 (:mod:`a2o.serve.upload` holds those checks). Uploads over
``serve.max_upload_mb`` are refused from ``Content-Length`` before the body is read, and by
counting bytes while it streams (chunked uploads), before any decoding.

The app is built per ingress replica by :func:`create_api` around a :class:`PredictionBackend`
(the Ray deployments in production, anything with the same method in tests).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from a2o.errors import DetectionError, VideoDecodeError
from a2o.serve.upload import min_upload_frames, one_line, upload_hint

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import ServeConfig
    from a2o.serve.best import BestModel

__all__ = [
    "PredictionBackend",
    "Prediction",
    "PredictResponse",
    "ModelInfo",
    "GeometryInfo",
    "HealthResponse",
    "ErrorDetail",
    "ErrorResponse",
    "create_api",
    "model_info",
]

log = logging.getLogger(__name__)

API_VERSION = "1"
DEFAULT_TOP_K = 5
_RAW_TYPES = ("application/octet-stream",)
_MULTIPART = "multipart/form-data"
_QUERY_PARAMS = {"top_k"}


class PredictionBackend(Protocol):
    """Turns upload bytes into class probabilities; raises VideoDecodeError / DetectionError."""

    async def probabilities(self, video: bytes) -> tuple[np.ndarray, str]:
        """(K,) probabilities in label order, and the upload's sha256 hex digest."""
        ...


# ---------------------------------------------------------------------------------------------
# response schemas


class Prediction(BaseModel):
    label: str = Field(description="Action label name.")
    label_id: int = Field(description="Index of the label in the model's label list (/v1/model).")
    probability: float = Field(description="Mean softmax over the S×V clips, in [0, 1].")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="The top_k labels, most probable first.")
    top_k: int = Field(description="Number of predictions returned (top_k, at most the number of labels).")
    clips: int = Field(description="Clips ensembled: temporal segments × spatial views.")
    sha256: str = Field(description="SHA-256 of the uploaded video bytes.")
    warning: str | None = Field(
        None,
        description="Set when predictions cannot match the model's offline metrics (e.g. its detector "
        "is an annotation oracle, so every object map of an upload is empty); null otherwise.",
    )


class GeometryInfo(BaseModel):
    num_frames: int = Field(description="Frames per clip (T).")
    segments: int = Field(description="Temporal segments per video (S).")
    views: int = Field(description="Spatial views per segment (V).")
    grid_resolution: int = Field(description="Side of the frame grid the detector sees.")
    resolution: int = Field(description="Side of the model input crops.")


class ModelInfo(BaseModel):
    classes: list[str] = Field(description="Object classes whose likelihood maps the model fuses.")
    labels: list[str] = Field(description="Action labels, in label_id order.")
    metrics: dict[str, Any] = Field(
        description="best/metrics.json: validation and test metrics of the model."
    )
    detector: str = Field(description="Detector name (detect.detector).")
    detector_fingerprint: str = Field(description="Fingerprint of the serving detector (models, thresholds).")
    trained_detector_fingerprint: str | None = Field(
        description="Fingerprint of the detector used in training (from metrics.json), if recorded."
    )
    geometry: GeometryInfo = Field(description="How a video becomes model inputs.")
    max_top_k: int = Field(description="Largest accepted top_k.")
    max_upload_mb: float = Field(description="Largest accepted upload, in MiB.")
    warning: str | None = Field(
        None, description="The warning every /v1/predict response carries, if any (see PredictResponse)."
    )


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' when the application is serving.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. 'invalid_video', 'payload_too_large'.")
    message: str = Field(description="What went wrong and how to fix the request.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


def model_info(best: BestModel, detector_fingerprint: str) -> ModelInfo:
    """The /v1/model payload of a best/ directory."""
    cfg = best.config
    geometry = best.geometry
    return ModelInfo(
        classes=list(best.classes),
        labels=best.labels,
        metrics=best.metrics,
        detector=cfg.detect.detector,
        detector_fingerprint=detector_fingerprint,
        trained_detector_fingerprint=best.trained_detector_fingerprint,
        geometry=GeometryInfo(
            num_frames=geometry.num_frames,
            segments=geometry.segments,
            views=geometry.views,
            grid_resolution=geometry.grid_resolution,
            resolution=geometry.resolution,
        ),
        max_top_k=cfg.serve.max_top_k,
        max_upload_mb=cfg.serve.max_upload_mb,
        warning=best.warning,
    )


# ---------------------------------------------------------------------------------------------
# errors


class APIError(Exception):
    """A request the API refuses: rendered as ``{"error": {code, message}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(status_code=status, content=body.model_dump())


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
            parts.append(
                f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid"))
            )
        return _error(422, "invalid_parameter", "; ".join(parts) or "invalid request parameters")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return _error(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in a request")
        return _error(500, "internal", "internal server error; the server log has the details")


# ---------------------------------------------------------------------------------------------
# reading the upload


def _limit_bytes(serve_cfg: ServeConfig) -> int:
    return int(serve_cfg.max_upload_mb * 1024 * 1024)


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        "payload_too_large",
        f"the upload is larger than serve.max_upload_mb ({limit / 2**20:g} MiB); send a shorter or "
        "more compressed clip",
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as the header or the streamed count passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise APIError(400, "bad_request", "Content-Length is not an integer") from None
        if declared_bytes > limit:
            raise _too_large(limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _file_from_multipart(request: Request, body: bytes) -> bytes:
    """The bytes of the multipart field ``file`` (the body was already size-checked)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    parser = MultiPartParser(request.headers, _single_chunk(body), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise APIError(400, "invalid_multipart", f"malformed multipart body: {exc.message}") from None
    except (ValueError, KeyError, AssertionError):  # python-multipart's own parse errors
        raise APIError(400, "invalid_multipart", "malformed multipart body") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(
                400, "missing_file", "a multipart upload must carry the video as the file field 'file'"
            )
        return await upload.read()
    finally:
        await form.close()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# the app

_PREDICT_BODY = {
    "description": "The video: raw bytes (video/* or application/octet-stream) or a multipart upload "
    "with the field 'file'.",
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        "video/webm": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}

_ERRORS = {
    400: {"model": ErrorResponse, "description": "Malformed multipart upload or Content-Length."},
    413: {"model": ErrorResponse, "description": "Upload larger than serve.max_upload_mb."},
    415: {"model": ErrorResponse, "description": "Content-Type is not video/*, octet-stream or multipart."},
    422: {
        "model": ErrorResponse,
        "description": "Not a video the model can judge (empty, a still image, truncated or corrupt, "
        "fewer decodable frames than the model's num_frames), or an invalid top_k.",
    },
    500: {"model": ErrorResponse, "description": "Server-side failure (details in the server log)."},
}


def create_api(backend: PredictionBackend, info: ModelInfo, serve_cfg: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``backend`` (see the module docstring for the endpoints)."""
    limit = _limit_bytes(serve_cfg)
    min_frames = min_upload_frames(info.geometry)
    num_labels = len(info.labels)
    default_top_k = min(DEFAULT_TOP_K, serve_cfg.max_top_k)
    app = FastAPI(
        title="A2O action recognition",
        version=API_VERSION,
        description="Top-k action labels of a video, from an A2O model (object-map adapter + V-JEPA2).",
    )
    _install_error_handlers(app)

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness")
    async def healthz() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get("/v1/model", response_model=ModelInfo, summary="The served model")
    async def get_model() -> ModelInfo:
        return info

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        summary="Top-k action labels of a video",
        responses=_ERRORS,
        openapi_extra={"requestBody": _PREDICT_BODY},
    )
    async def predict(
        request: Request,
        top_k: int = Query(
            default_top_k,
            ge=1,
            le=serve_cfg.max_top_k,
            description=f"Labels to return (1..{serve_cfg.max_top_k}; more than the model has returns all).",
        ),
    ) -> PredictResponse:
        unknown = sorted(set(request.query_params) - _QUERY_PARAMS)
        if unknown:
            raise APIError(
                422, "invalid_parameter", f"unknown query parameter(s) {unknown}; valid: ['top_k']"
            )
        media_type = _media_type(request)
        is_multipart = media_type == _MULTIPART
        if not (is_multipart or media_type.startswith("video/") or media_type in _RAW_TYPES):
            raise APIError(
                415,
                "unsupported_media_type",
                f"Content-Type {media_type or '(none)'!r} is not accepted: send the video as "
                "video/* or application/octet-stream, or as multipart/form-data field 'file'",
            )
        body = await _read_limited(request, limit)
        video = await _file_from_multipart(request, body) if is_multipart else body
        if not video:  # 422 like any other non-video: the request is well-formed, its content is not
            raise APIError(422, "empty_body", f"the upload is empty: {upload_hint(min_frames)}")
        try:
            probabilities, sha256 = await backend.probabilities(video)
        except VideoDecodeError as exc:
            raise APIError(422, "invalid_video", one_line(str(exc))) from None
        except DetectionError:
            raise APIError(500, "detection_failed", "the detector could not process this video") from None
        probabilities = np.asarray(probabilities, dtype=np.float64)
        k = min(top_k, num_labels)
        order = np.argsort(-probabilities, kind="stable")[:k]
        return PredictResponse(
            predictions=[
                Prediction(label=info.labels[i], label_id=int(i), probability=float(probabilities[i]))
                for i in order
            ],
            top_k=k,
            clips=info.geometry.segments * info.geometry.views,
            sha256=sha256,
            warning=info.warning,
        )

    return app
