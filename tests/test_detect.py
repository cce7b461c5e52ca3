"""Detectors: the tiny Grounded SAM2 path, prompt splitting, the annotation detector, class texts."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tiny_models import tiny_detect_config  # noqa: E402

from a2o.config import DetectConfig  # noqa: E402
from a2o.data.video import resize_center_crop  # noqa: E402
from a2o.detect.annotation import AnnotationDetector  # noqa: E402
from a2o.detect.base import (  # noqa: E402
    ConfigDetectorFactory,
    Detector,
    VideoMeta,
    create_detector,
    detector_fingerprint,
)
from a2o.detect.classes import ClassSet, class_key, validate_class_text  # noqa: E402
from a2o.errors import ClassTextError  # noqa: E402
from a2o.runtime import Runtime  # noqa: E402


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> DetectConfig:
    return tiny_detect_config(str(tmp_path_factory.mktemp("tiny_gsam2")))


@pytest.fixture(scope="module")
def tiny_detector(tiny_cfg):
    return create_detector(tiny_cfg, Runtime.cpu())


def _frames(num_frames=3, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


def _meta(video_id="v0", num_frames=3, size=32, **kwargs) -> VideoMeta:
    return VideoMeta(video_id, np.arange(num_frames), size, size, **kwargs)


# -- Grounded SAM2 (tiny random checkpoints, CPU) ------------------------------------------------


def test_grounded_sam2_maps_shape_range_and_determinism(tiny_detector):
    assert isinstance(tiny_detector, Detector)
    frames = _frames()
    maps = tiny_detector.detect(frames, ["person", "ball", "tennis racket"], video=_meta())
    assert maps.shape == (3, 3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.0, "low thresholds on random weights must yield some boxes"
    assert tiny_detector.last_prompt_count == 1
    again = tiny_detector.detect(frames, ["person", "ball", "tennis racket"], video=_meta())
    np.testing.assert_array_equal(maps, again)


def test_grounded_sam2_splits_long_class_lists(tiny_detector):
    classes = [f"object number {i}" for i in range(80)]
    groups = tiny_detector.prompts_for(classes)
    assert len(groups) > 1, "80 multi-token classes exceed 256 tokens and must be split"
    assert sorted(i for g in groups for i in g) == list(range(80))
    for group in groups:
        prompt = " ".join(classes[i] + "." for i in group)
        assert len(tiny_detector.tokenizer(prompt)["input_ids"]) <= 256
    maps = tiny_detector.detect(_frames(2), classes, video=_meta(num_frames=2))
    assert maps.shape == (2, 80, 32, 32)
    assert tiny_detector.last_prompt_count == len(groups)
    assert 0.0 <= maps.min() and maps.max() <= 1.0


def test_grounded_sam2_fingerprint_matches_config(tiny_cfg, tiny_detector):
    assert tiny_detector.fingerprint == detector_fingerprint(tiny_cfg)
    other = detector_fingerprint(DetectConfig(**{**tiny_cfg.__dict__, "box_threshold": 0.5}))
    assert other != tiny_detector.fingerprint
    assert ConfigDetectorFactory(tiny_cfg).fingerprint == tiny_detector.fingerprint


def test_create_detector_unknown_name_lists_valid_names():
    cfg = DetectConfig()
    object.__setattr__(cfg, "detector", "yolo")
    with pytest.raises(ValueError, match="annotation"):
        create_detector(cfg)
    with pytest.raises(ValueError, match="annotation"):
        detector_fingerprint(cfg)


def test_detectors_take_a_runtime_from_the_caller(tiny_detector):
    assert tiny_detector.device.type == "cpu" and not tiny_detector.runtime.uses_bf16
    with pytest.raises(TypeError, match="Runtime"):
        create_detector(DetectConfig(), "cpu")  # a bare device name is not a runtime
    assert create_detector(DetectConfig(), Runtime.cpu()).fingerprint == detector_fingerprint(DetectConfig())


# -- annotation detector -----------------------------------------------------------------------


def _write_masks(tmp_path, masks: dict[str, np.ndarray]) -> str:
    path = tmp_path / "masks.npz"
    np.savez(path, **masks)
    return str(path)


def test_annotation_masks_are_ground_truth_exactly(tmp_path):
    rng = np.random.default_rng(1)
    src = {"ball": (rng.random((10, 32, 32)) > 0.7).astype(np.uint8),
           "Court Floor": (rng.random((10, 32, 32)) > 0.5).astype(np.uint8)}
    uri = _write_masks(tmp_path, src)
    indices = np.array([0, 3, 6, 9])
    meta = VideoMeta("v1", indices, 32, 32, masks_uri=uri)
    maps = AnnotationDetector().detect(_frames(4), ["ball", "court floor", "goalpost"], video=meta)
    assert maps.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(maps[:, 0], src["ball"][indices].astype(np.float32))
    np.testing.assert_array_equal(maps[:, 1], src["Court Floor"][indices].astype(np.float32))
    assert not maps[:, 2].any(), "a class the annotations do not know gives an all-zero map"


def test_annotation_masks_follow_the_frame_grid_geometry(tmp_path):
    rng = np.random.default_rng(2)
    src = {"ball": (rng.random((6, 48, 64)) > 0.6).astype(np.uint8)}  # non-square source
    uri = _write_masks(tmp_path, src)
    indices = np.array([1, 4])
    meta = VideoMeta("v2", indices, 48, 64, masks_uri=uri)
    maps = AnnotationDetector().detect(_frames(2, size=24), ["ball"], video=meta)
    expected = resize_center_crop(src["ball"][indices].astype(np.float32), 24, mode="bilinear")
    np.testing.assert_array_equal(maps[:, 0], expected)


def test_annotation_boxes_render_filled_boxes(tmp_path):
    boxes = {"width": 64, "height": 64, "tubes": {"player": [[0, 8, 8, 24, 40], [2, 0, 0, 64, 64]]}}
    meta = VideoMeta("v3", np.array([0, 1, 2]), 32, 32, boxes=json.dumps(boxes))
    maps = AnnotationDetector().detect(_frames(3), ["player"], video=meta)
    # source 32 px, annotation 64 px: box (8, 8, 24, 40) -> (4, 4, 12, 20)
    expected = np.zeros((32, 32), np.float32)
    expected[4:20, 4:12] = 1.0
    np.testing.assert_array_equal(maps[0, 0], expected)
    assert not maps[1, 0].any()  # no box on frame 1
    assert maps[2, 0].all()


def test_annotation_noise_is_deterministic_and_per_class(tmp_path):
    src = {"ball": np.ones((8, 16, 16), np.uint8), "bat": np.ones((8, 16, 16), np.uint8)}
    uri = _write_masks(tmp_path, src)
    meta = VideoMeta("v4", np.arange(8), 16, 16, masks_uri=uri)
    noisy = AnnotationDetector(miss_prob=0.5, noise_seed=3)
    a = noisy.detect(_frames(8, 16), ["ball", "bat"], video=meta)
    b = AnnotationDetector(miss_prob=0.5, noise_seed=3).detect(_frames(8, 16), ["bat"], video=meta)
    np.testing.assert_array_equal(a[:, 1], b[:, 0])  # same (seed, video, class) -> same noise
    dropped = ~a[:, 0].any(axis=(1, 2))
    assert 0 < dropped.sum() < 8
    other_seed = AnnotationDetector(miss_prob=0.5, noise_seed=4).detect(_frames(8, 16), ["ball"], video=meta)
    assert not np.array_equal(other_seed[:, 0], a[:, 0])
    assert noisy.fingerprint != AnnotationDetector().fingerprint


def test_annotation_box_jitter_moves_boxes(tmp_path):
    boxes = {"width": 32, "height": 32, "tubes": {"player": [[0, 8, 8, 24, 24]]}}
    meta = VideoMeta("v5", np.array([0]), 32, 32, boxes=json.dumps(boxes))
    clean = AnnotationDetector().detect(_frames(1), ["player"], video=meta)
    jittered = AnnotationDetector(box_jitter=0.3, noise_seed=0).detect(_frames(1), ["player"], video=meta)
    again = AnnotationDetector(box_jitter=0.3, noise_seed=0).detect(_frames(1), ["player"], video=meta)
    assert not np.array_equal(clean, jittered)
    np.testing.assert_array_equal(jittered, again)


# -- class texts -------------------------------------------------------------------------------


def test_class_text_normalisation():
    assert validate_class_text("  Tennis   Ball ") == "tennis ball"
    assert validate_class_text("Ｂａｌｌ") == "ball"  # NFKC folds full-width letters
    assert validate_class_text("café") == "café"
    assert validate_class_text("player's hand") == "player's hand"
    assert class_key("Tennis Ball") == class_key("tennis  ball")
    assert len(class_key("ball")) == 64


@pytest.mark.parametrize(
    "text, rule",
    [
        ("../../etc", "safe characters"),
        ("a" * 5000, "bounded"),
        ("b" * 65, "bounded"),
        ("ball\nrm -rf /", "safe characters"),
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("- '", "non-empty"),
        ("ball; rm -rf ~", "safe characters"),
        ("$(reboot)", "safe characters"),
        ("a. b", "safe characters"),
        ("ball,bat", "safe characters"),
        ("x\x00y", "safe characters"),
    ],
)
def test_hostile_class_texts_are_rejected_naming_the_rule(text, rule):
    with pytest.raises(ClassTextError, match=rule):
        validate_class_text(text)


def test_class_set_duplicates_after_normalisation_are_rejected():
    assert ClassSet.parse(["Ball", "bat"]).texts == ("ball", "bat")
    with pytest.raises(ClassTextError, match="twice"):
        ClassSet.parse(["Ball", "ball "])
    with pytest.raises(ClassTextError, match="list"):
        ClassSet.parse("ball,bat")
