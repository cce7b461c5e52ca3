"""Serving a best/ model with Ray Serve, over real HTTP on a loopback port.

Properties: a served prediction equals the offline evaluation of the same clip (mp4 and webm, raw
and multipart, one at a time and batched); every bad request gets the right 4xx JSON error with no
path or traceback, and the server keeps answering; the OpenAPI spec holds under fuzzing (no 5xx).

The model here uses the annotation detector (an oracle, blind on uploads), so it is served with
``allow_oracle_detector`` and every response must carry the warning; without the flag it is refused
before anything is deployed, and an RGB-only model is served without either. The learned detector's
serving path is tests/test_serve_learned.py.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers_best import BEST_CLASSES, BEST_LABELS, build_best_dir, write_clip  # noqa: E402

httpx = pytest.importorskip("httpx")

MAX_UPLOAD_MB = 0.25  # small, so the over-limit upload stays cheap
MAX_TOP_K = 6
TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def best_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("serve")
    return build_best_dir(
        root, serve={"max_upload_mb": MAX_UPLOAD_MB, "max_top_k": MAX_TOP_K, "max_batch_size": 4}
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("clips")
    paths = {
        "mp4": write_clip(root / "a.mp4", seed=1),
        "webm": write_clip(root / "b.webm", num_frames=17, width=48, height=64, seed=2),
        "mp4_b": write_clip(root / "c.mp4", num_frames=9, seed=3),
        "zero_frames": write_clip(root / "z.mp4", num_frames=0),
    }
    return {name: open(path, "rb").read() for name, path in paths.items()}


@pytest.fixture(scope="module")
def offline(best_dir, clips, tmp_path_factory):
    """name -> probabilities (K,) from a2o.train.evaluate.predict_video on the same files."""
    from a2o.config import load_config
    from a2o.detect.base import create_detector
    from a2o.model import load_recognizer
    from a2o.serve.best import eval_geometry
    from a2o.serve.deployments import upload_video_id
    from a2o.train.evaluate import predict_video

    cfg = load_config(os.path.join(best_dir, "config.yaml"))
    model, meta = load_recognizer(os.path.join(best_dir, "model"))
    detector = create_detector(cfg.detect)
    root = tmp_path_factory.mktemp("offline")
    results = {}
    for name in ("mp4", "webm", "mp4_b"):
        path = root / f"{name}.bin"
        path.write_bytes(clips[name])
        video_id = upload_video_id(hashlib.sha256(clips[name]).hexdigest())
        results[name] = predict_video(
            model, detector, meta["classes"], eval_geometry(cfg), uri=str(path), video_id=video_id
        )
    return results


@pytest.fixture(scope="module")
def server(ray_local, best_dir):
    """Base URL of the app served on a free loopback port (Serve shut down afterwards)."""
    from ray import serve

    from a2o.serve.app import APP_NAME, build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app(
            {"model": best_dir, "detector_cpus": 0.5, "recognizer_cpus": 0.5, "allow_oracle_detector": True}
        )
        serve.run(app, name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=TIMEOUT_S) as http:
        yield http


def _post_video(client, body: bytes, content_type: str = "video/mp4", **params):
    return client.post("/v1/predict", content=body, headers={"Content-Type": content_type}, params=params)


def _probabilities(payload: dict) -> np.ndarray:
    probabilities = np.full(len(BEST_LABELS), np.nan)
    for item in payload["predictions"]:
        probabilities[item["label_id"]] = item["probability"]
    return probabilities


def _assert_matches(payload: dict, expected: np.ndarray) -> None:
    from a2o.serve.best import ORACLE_WARNING

    assert payload["warning"] == ORACLE_WARNING  # every response of an oracle model says so
    assert payload["top_k"] == len(BEST_LABELS)
    assert [p["label"] for p in payload["predictions"]] == [
        BEST_LABELS[i] for i in np.argsort(-expected, kind="stable")
    ]
    np.testing.assert_allclose(_probabilities(payload), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# served == offline


@pytest.mark.parametrize("name,content_type", [("mp4", "video/mp4"), ("webm", "video/webm")])
def test_raw_upload_equals_offline_evaluation(client, clips, offline, name, content_type):
    response = _post_video(client, clips[name], content_type, top_k=MAX_TOP_K)
    assert response.status_code == 200, response.text
    payload = response.json()
    _assert_matches(payload, offline[name])
    assert payload["clips"] == 4  # 2 segments x 2 views
    assert payload["sha256"] == hashlib.sha256(clips[name]).hexdigest()


def test_multipart_and_octet_stream_equal_offline(client, clips, offline):
    files = {"file": ("clip.webm", clips["webm"], "video/webm")}
    response = client.post("/v1/predict", files=files, params={"top_k": MAX_TOP_K})
    assert response.status_code == 200, response.text
    _assert_matches(response.json(), offline["webm"])
    response = _post_video(client, clips["mp4"], "application/octet-stream", top_k=MAX_TOP_K)
    assert response.status_code == 200, response.text
    _assert_matches(response.json(), offline["mp4"])


def test_concurrent_requests_are_batched_without_changing_predictions(client, clips, offline):
    names = ["mp4", "webm", "mp4_b"] * 3
    with ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda n: _post_video(client, clips[n], top_k=MAX_TOP_K), names))
    for name, response in zip(names, responses, strict=True):
        assert response.status_code == 200, response.text
        _assert_matches(response.json(), offline[name])


def test_top_k_orders_and_truncates(client, clips, offline):
    response = _post_video(client, clips["mp4"], top_k=2)
    assert response.status_code == 200
    payload = response.json()
    assert payload["top_k"] == 2 and len(payload["predictions"]) == 2
    assert "annotation oracle" in payload["warning"]
    best_first = np.argsort(-offline["mp4"], kind="stable")[:2]
    assert [p["label_id"] for p in payload["predictions"]] == best_first.tolist()
    default = _post_video(client, clips["mp4"]).json()  # default top_k = min(5, max_top_k) > K labels
    assert default["top_k"] == len(BEST_LABELS)


# ---------------------------------------------------------------------------------------------
# model info, health, OpenAPI


def test_model_info_and_health(client, best_dir):
    from a2o.config import load_config
    from a2o.detect.base import detector_fingerprint

    info = client.get("/v1/model").json()
    assert info["classes"] == list(BEST_CLASSES)
    assert info["labels"] == list(BEST_LABELS)
    assert info["metrics"]["test"]["accuracy"] == 0.25
    fingerprint = detector_fingerprint(load_config(os.path.join(best_dir, "config.yaml")).detect)
    assert info["detector_fingerprint"] == fingerprint == info["trained_detector_fingerprint"]
    assert info["geometry"] == {
        "num_frames": 4,
        "segments": 2,
        "views": 2,
        "grid_resolution": 40,
        "resolution": 32,
    }
    assert info["max_top_k"] == MAX_TOP_K
    assert "annotation oracle" in info["warning"]
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/healthz"} <= set(spec["paths"])
    predict = spec["paths"]["/v1/predict"]["post"]
    assert {"application/octet-stream", "multipart/form-data"} <= set(predict["requestBody"]["content"])
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])


# ---------------------------------------------------------------------------------------------
# bad input: the right 4xx, no leak, and the server stays up


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b"\0" * min(size, total - sent)
        sent += size


OVER_LIMIT = int(MAX_UPLOAD_MB * 2**20) + 1


def _bad_requests(clips: dict[str, bytes]) -> dict[str, tuple[dict, int, str]]:
    mp4 = clips["mp4"]
    video = {"Content-Type": "video/mp4"}
    return {
        "non_video_bytes": (
            dict(content=b"this is plainly not a video" * 40, headers=video),
            422,
            "invalid_video",
        ),
        "random_bytes": (
            dict(content=np.random.default_rng(0).bytes(5000), headers=video),
            422,
            "invalid_video",
        ),
        "empty_body": (dict(content=b"", headers=video), 422, "empty_body"),
        "truncated_mp4": (dict(content=mp4[: len(mp4) // 2], headers=video), 422, "invalid_video"),
        "zero_frame_video": (dict(content=clips["zero_frames"], headers=video), 422, "invalid_video"),
        "over_limit_content_length": (
            dict(content=b"\0" * OVER_LIMIT, headers=video),
            413,
            "payload_too_large",
        ),
        "over_limit_chunked": (dict(content=_chunks(OVER_LIMIT), headers=video), 413, "payload_too_large"),
        "over_limit_multipart": (
            dict(files={"file": ("big.mp4", b"\0" * OVER_LIMIT, "video/mp4")}),
            413,
            "payload_too_large",
        ),
        "top_k_not_int": (
            dict(content=mp4, headers=video, params={"top_k": "abc"}),
            422,
            "invalid_parameter",
        ),
        "top_k_zero": (dict(content=mp4, headers=video, params={"top_k": 0}), 422, "invalid_parameter"),
        "top_k_over_max": (
            dict(content=mp4, headers=video, params={"top_k": MAX_TOP_K + 1}),
            422,
            "invalid_parameter",
        ),
        "unknown_parameter": (dict(content=mp4, headers=video, params={"topk": 3}), 422, "invalid_parameter"),
        "wrong_content_type": (
            dict(content=mp4, headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        "multipart_without_file": (
            dict(data={"note": "x"}, files={"other": ("a", b"12")}),
            400,
            "missing_file",
        ),
        "malformed_multipart": (
            dict(content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=zz"}),
            400,
            None,
        ),
    }


BAD_CASES = [
    "non_video_bytes",
    "random_bytes",
    "empty_body",
    "truncated_mp4",
    "zero_frame_video",
    "over_limit_content_length",
    "over_limit_chunked",
    "over_limit_multipart",
    "top_k_not_int",
    "top_k_zero",
    "top_k_over_max",
    "unknown_parameter",
    "wrong_content_type",
    "multipart_without_file",
    "malformed_multipart",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gets_4xx_json_and_server_stays_up(client, clips, offline, case):
    kwargs, status, code = _bad_requests(clips)[case]
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    if code is not None:
        assert error["code"] == code
    assert (
        "Traceback" not in response.text and "/tmp" not in response.text and "a2o-serve" not in response.text
    )
    good = _post_video(client, clips["mp4"], top_k=MAX_TOP_K)
    assert good.status_code == 200
    _assert_matches(good.json(), offline["mp4"])


def test_unknown_route_and_method_are_json_errors(client):
    response = client.get("/v2/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/predict")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------------------------------------
# fuzzing the served OpenAPI spec


def _fuzz_without_schemathesis(client) -> None:
    """Fallback: malformed requests of every shape; none may be a 5xx."""
    rng = np.random.default_rng(0)
    requests = [
        ("POST", "/v1/predict", dict(content=rng.bytes(int(n)), headers={"Content-Type": t}, params=p))
        for n, t, p in [
            (0, "video/x-unknown", {}),
            (17, "application/octet-stream", {"top_k": "1e3"}),
            (300, "multipart/form-data", {}),
            (64, "multipart/form-data; boundary=", {"top_k": ""}),
            (1000, "video/webm", {"top_k": "-1"}),
        ]
    ] + [("GET", "/v1/model", dict(params={"x": "y"})), ("DELETE", "/healthz", {}), ("GET", "/%00", {})]
    for method, path, kwargs in requests:
        response = client.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, response.text)
        assert "error" in response.json() or path != "/v1/predict"


def _fuzz_operation(operation, base_url: str, checks: list) -> None:
    """A bounded schemathesis run of one operation: few examples, no deadline, no example database."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def fuzz(case) -> None:
        case.call_and_validate(base_url=base_url, checks=checks, timeout=TIMEOUT_S)

    fuzz()


def test_openapi_fuzz_never_gives_5xx(server, client):
    try:
        import schemathesis
    except ImportError:
        _fuzz_without_schemathesis(client)
        return
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    for result in schema.get_all_operations():
        _fuzz_operation(result.ok(), server, checks)
    _fuzz_without_schemathesis(client)


# ---------------------------------------------------------------------------------------------
# driver-side checks (no Ray)


def test_read_best_rejects_a_wrong_directory(tmp_path):
    from a2o.errors import ConfigError
    from a2o.serve.best import read_best

    with pytest.raises(ConfigError, match="not a directory"):
        read_best(str(tmp_path / "missing"))
    (tmp_path / "best").mkdir()
    with pytest.raises(ConfigError, match="model/recognizer.json is missing"):
        read_best(str(tmp_path / "best"))


def test_serve_config_is_a_valid_serve_deploy_config(best_dir):
    from ray.serve.schema import ServeDeploySchema

    from a2o.errors import ConfigError
    from a2o.serve.app import serve_config

    with pytest.raises(ConfigError, match="--allow-oracle-detector"):
        serve_config({"model": best_dir})
    config = serve_config(
        {"model": best_dir, "overrides": ["serve.max_batch_size=2"], "allow_oracle_detector": True}, port=8123
    )
    parsed = ServeDeploySchema.model_validate(config)
    assert parsed.http_options.host == "127.0.0.1"
    assert parsed.applications[0].import_path == "a2o.serve.app:build_app"
    assert parsed.applications[0].args["allow_oracle_detector"] is True
    with pytest.raises(ConfigError, match="model"):
        serve_config({"modle": best_dir})


# ---------------------------------------------------------------------------------------------
# oracle (annotation) models: refused unless --allow-oracle-detector; RGB-only models are fine


def test_oracle_model_is_refused_with_the_fix_named(best_dir):
    from a2o.errors import ConfigError
    from a2o.serve.best import ORACLE_WARNING, read_best

    with pytest.raises(ConfigError) as refused:
        read_best(best_dir)
    message = str(refused.value)
    for part in ("annotation", "ground-truth", "empty", "offline", "learned", "grounded_sam2", "--allow-oracle-detector"):
        assert part in message, part
    assert read_best(best_dir, allow_oracle_detector=True).warning == ORACLE_WARNING


def test_serve_command_refuses_an_oracle_model_before_ray_starts(best_dir, monkeypatch, capsys):
    import a2o.commands.ray_session
    from a2o.cli import build_parser, main

    def no_ray(*args, **kwargs):
        raise AssertionError("a2o serve reached Ray with an oracle model and no --allow-oracle-detector")

    monkeypatch.setattr(a2o.commands.ray_session, "connect", no_ray)
    assert main(["serve", "--model", best_dir]) == 1
    assert "--allow-oracle-detector" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--model", best_dir, "--allow-oracle-detector"])
    assert args.allow_oracle_detector is True


class _FixedBackend:
    """A PredictionBackend returning fixed probabilities (the HTTP layer alone, no Ray)."""

    async def probabilities(self, video: bytes) -> tuple[np.ndarray, str]:
        return np.array([0.1, 0.2, 0.3, 0.4]), hashlib.sha256(video).hexdigest()


def test_rgb_only_annotation_model_is_served_without_warning(tmp_path, clips):
    from fastapi.testclient import TestClient

    from a2o.detect.base import detector_fingerprint
    from a2o.serve.api import create_api, model_info
    from a2o.serve.best import read_best

    best = read_best(build_best_dir(tmp_path, classes=()))  # annotation detector, no classes: not refused
    assert best.warning is None and list(best.classes) == []
    api = create_api(_FixedBackend(), model_info(best, detector_fingerprint(best.config.detect)), best.config.serve)
    with TestClient(api) as http:
        payload = _post_video(http, clips["mp4"]).json()
        assert payload["warning"] is None and payload["predictions"][0]["label"] == BEST_LABELS[3]
        assert http.get("/v1/model").json()["warning"] is None
