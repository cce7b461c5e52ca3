"""Serving a model trained with the learned detector: the served maps come from the upload's pixels.

The best/ directory is written by the search service's own final step
(:func:`a2o.service.train_and_evaluate_best`) on an A2O-Synth ``tiny`` world whose learned detector
was trained for one epoch; only the recognizer's training is replaced by a seeded random one (the
Ray Train fit is what tests/test_trial.py covers). Properties: best/ carries the detector and says
so; an upload's prediction through the deployment's functions (and over HTTP, ``-m slow``) equals
the offline test evaluation of the same clip, with non-empty maps that change the prediction; a missing or
replaced detector fails with the fix named.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers_best import LEARNED_CLASSES, build_learned_world, save_random_recognizer  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_learned_world(tmp_path_factory.mktemp("learned-world"))


@pytest.fixture(scope="module")
def final(world, tmp_path_factory):
    """(best/ path, the metrics train_and_evaluate_best returned) for LEARNED_CLASSES."""
    import a2o.train.trial
    from a2o.service import train_and_evaluate_best
    from a2o.train.trial import TrialResult

    cfg, manifest, labels = world
    checkpoint = str(tmp_path_factory.mktemp("final-checkpoint"))

    def fit_trial(trial_cfg, classes, *, epochs=None, name=None, in_tune=False):
        save_random_recognizer(os.path.join(checkpoint, "model"), trial_cfg, classes=classes, labels=labels)
        return TrialResult({"val_accuracy": 0.5, "classwise_accuracy": {}}, checkpoint, {}, 0.0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(a2o.train.trial, "fit_trial", fit_trial)
        metrics = train_and_evaluate_best(cfg, list(LEARNED_CLASSES), labels, manifest)
    return os.path.join(cfg.storage.root, "best"), metrics


@pytest.fixture(scope="module")
def test_rows(world):
    rows = [row for row in world[1].to_pylist() if row["split"] == "test"]
    assert rows
    return rows


@pytest.fixture(scope="module")
def offline(final, test_rows):
    """video_id -> (K,) probabilities of the final test evaluation's per-video step, from best/."""
    from a2o.detect.base import create_detector
    from a2o.model import load_recognizer
    from a2o.serve.best import read_best
    from a2o.train.evaluate import predict_row

    best = read_best(final[0])
    model, _ = load_recognizer(best.model_dir)
    detector = create_detector(best.config.detect)
    return {
        row["video_id"]: predict_row(model, detector, best.classes, best.geometry, row) for row in test_rows
    }


def _upload(row: dict) -> bytes:
    with open(row["uri"], "rb") as fh:
        return fh.read()


def test_best_dir_carries_the_learned_detector(world, final):
    import yaml

    from a2o.detect.learned import fingerprint_of_dir
    from a2o.serve.best import read_best

    cfg = world[0]
    best_dir, metrics = final
    assert sorted(os.listdir(best_dir)) == ["config.yaml", "detector", "metrics.json", "model"]
    with open(os.path.join(best_dir, "config.yaml"), encoding="utf-8") as fh:
        assert yaml.safe_load(fh)["detect"]["learned_model"] == "detector"  # relative to best/
    with open(os.path.join(best_dir, "metrics.json"), encoding="utf-8") as fh:
        written = json.load(fh)
    assert written["detector"] == "learned"
    trained = fingerprint_of_dir(cfg.detect.learned_model)
    assert written["detector_fingerprint"] == trained == fingerprint_of_dir(os.path.join(best_dir, "detector"))
    best = read_best(best_dir)  # a learned model is not refused, and carries no warning
    assert best.warning is None
    assert best.config.detect.learned_model == os.path.join(best_dir, "detector")
    assert list(best.classes) == list(LEARNED_CLASSES)
    assert metrics["test"]["accuracy"] == written["test"]["accuracy"]


def test_uploads_are_predicted_like_the_offline_evaluation(final, test_rows, offline):
    import torch

    from a2o.detect.base import create_detector
    from a2o.model import load_recognizer
    from a2o.serve.best import read_best
    from a2o.serve.deployments import predict_batch, prepare_upload
    from a2o.train.evaluate import predict_clip

    best_dir, metrics = final
    best = read_best(best_dir)
    model, _ = load_recognizer(best.model_dir)
    detector = create_detector(best.config.detect)  # what ClipDetector builds from best/
    uploads = [prepare_upload(_upload(row), detector, best.classes, best.geometry) for row in test_rows]
    batched = predict_batch(model, uploads)
    maps_changed_a_prediction = False
    for row, upload, together in zip(test_rows, uploads, batched, strict=True):
        expected = offline[row["video_id"]]
        served = predict_batch(model, [upload])[0]
        for probabilities in (served, together):
            assert int(np.argmax(probabilities)) == int(np.argmax(expected)), row["video_id"]
            np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
        known = upload.maps[:, :, : len(LEARNED_CLASSES) - 1]  # (N, T, C-1, R, R): the world's classes
        assert known.any(), f"{row['video_id']}: every served map of a known class is empty"
        assert not upload.maps[:, :, -1].any()  # 'person' is not in this world: an all-zero map
        blind = predict_clip(model, torch.from_numpy(upload.frames), torch.zeros_like(torch.from_numpy(upload.maps)))
        maps_changed_a_prediction |= bool(np.abs(blind - served).max() > 1e-3)
    assert maps_changed_a_prediction, "the maps never changed a prediction: the comparison proves nothing"
    labels = np.array([row["label_id"] for row in test_rows])
    predicted = np.array([int(np.argmax(offline[row["video_id"]])) for row in test_rows])
    assert metrics["test"]["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Starting Serve and three replicas costs about half a minute on two shared cores: opt-in. The
# default tier covers the same path through the deployment's functions above (and tests/test_serve.py
# covers the HTTP layer); `python -m benchmarks.serve --agreement` runs a whole split over HTTP.
@pytest.mark.slow
def test_http_upload_equals_offline(ray_local, final, test_rows, offline):
    import httpx
    from ray import serve

    from a2o.serve.app import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app({"model": final[0], "detector_cpus": 0.5, "recognizer_cpus": 0.5})
        serve.run(app, name="a2o-learned", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            info = client.get("/v1/model").json()
            assert info["detector"] == "learned" and info["warning"] is None
            assert info["detector_fingerprint"] == info["trained_detector_fingerprint"]
            row = test_rows[0]
            response = client.post(
                "/v1/predict", content=_upload(row), headers={"Content-Type": "video/mp4"}, params={"top_k": 4}
            )
    finally:
        serve.shutdown()
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["warning"] is None
    served = np.full(len(info["labels"]), np.nan)
    for item in payload["predictions"]:
        served[item["label_id"]] = item["probability"]
    np.testing.assert_allclose(served, offline[row["video_id"]], atol=1e-5, rtol=0)


def test_missing_detector_folder_is_a_clear_error(final, tmp_path):
    from a2o.errors import ConfigError
    from a2o.serve.best import read_best

    copy = shutil.copytree(final[0], tmp_path / "best")
    shutil.rmtree(copy / "detector")
    with pytest.raises(ConfigError, match=r"detector/ is missing.*detect\.detector: learned"):
        read_best(str(copy))


def test_a_detector_other_than_the_trained_one_is_an_error_naming_both(final, tmp_path):
    from a2o.detect.base import create_detector
    from a2o.errors import ConfigError
    from a2o.serve.app import build_app
    from a2o.serve.best import check_detector_fingerprint, read_best

    copy = shutil.copytree(final[0], tmp_path / "best")
    metrics_path = copy / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    actual = metrics["detector_fingerprint"]
    metrics["detector_fingerprint"] = actual.replace('"seed":0', '"seed":7')
    assert metrics["detector_fingerprint"] != actual
    metrics_path.write_text(json.dumps(metrics))
    best = read_best(str(copy))
    detector = create_detector(best.config.detect)
    with pytest.raises(ConfigError) as replaced:  # what ClipDetector runs in its replica
        check_detector_fingerprint(best, detector.fingerprint)
    assert actual in str(replaced.value) and metrics["detector_fingerprint"] in str(replaced.value)
    with pytest.raises(ConfigError, match="was trained with"):  # and the driver, before deploying
        build_app({"model": str(copy)})
