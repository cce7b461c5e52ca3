"""GPU tier: the CUDA paths of training, detection and serving, against the CPU, with tiny models.

Every test is marked ``gpu`` and skips at once, before any model is built, when torch sees no CUDA
device (or an optional module is missing: the skip names it). Run on a GPU machine with
``make gpu-check`` (or ``python3 -m pytest -q -m gpu tests/test_gpu.py``). Models are tiny random
checkpoints of the real transformers classes, written with ``save_pretrained`` and loaded with
``from_pretrained(dir)``; frames are synthetic tensors (no video decoding, so no PyAV); nothing
needs Ray except the one ``predict_batch`` test, which skips without it. The device and precision
come from :class:`a2o.runtime.Runtime` only.

Tolerances. Comparisons of a fp32 GPU result with the CPU run with TF32 switched off (cuDNN
convolutions default to TF32, ~1e-3 relative): the tests check that the CUDA paths compute the same
function, not TF32 rounding. bf16 results are checked for shape and finiteness, the loss and the
served probabilities also for a loose agreement with fp32 (the maps for real, non-flat masks).
Each test that compares also checks that its data varies well beyond its tolerance, so the
comparison could fail.

``A2O_GPU_TEST_DEVICE=cpu`` runs the same tests with the CPU standing in for the GPU (a dry run of
this file's logic on a machine without CUDA; the comparisons are then CPU against CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the GPU tier needs torch")

_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _TESTS)  # tiny_models
sys.path.insert(0, os.path.dirname(_TESTS))  # the repo root: benchmarks, a2o (also from another cwd)

from benchmarks.gpu_smoke import SmokeGeometry, memory_trial_spec, smoke_model_config  # noqa: E402

DEVICE = os.environ.get("A2O_GPU_TEST_DEVICE", "cuda")
_NO_DEVICE = DEVICE.startswith("cuda") and not torch.cuda.is_available()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        _NO_DEVICE,
        reason="needs a CUDA GPU: torch.cuda.is_available() is False (run `make gpu-check` on a GPU machine)",
    ),
]

GEOMETRY = SmokeGeometry(num_frames=4, resolution=32, hidden=32, layers=2, patch=8, batch_size=4,
                         labels=("left", "right", "lift"))
CLASSES = list(GEOMETRY.classes)
TRAIN_CLIPS, VAL_CLIPS = 8, 4

# fp32 on the GPU (TF32 off) against the CPU: only summation order differs.
LOSS_RTOL = 1e-4  # first-step training loss
LOGIT_ATOL = LOGIT_RTOL = 1e-4  # recognizer logits
# Detector likelihood maps, in [0, 1]. The tiny random GroundingDINO is badly conditioned: scaling
# its weights by (1 + 1e-7 noise) on the CPU moves single map pixels by up to 3e-4 (mean 3e-6).
MAP_MEAN_ATOL = 1e-4  # mean |difference| over all pixels
MAP_MAX_ATOL = 5e-3  # largest |difference| of one pixel
PROB_ATOL = 1e-5  # served class probabilities, in [0, 1]
# bf16 autocast (8 mantissa bits) against fp32 on the CPU
BF16_LOSS_ATOL = 0.05
BF16_PROB_ATOL = 0.02


def _runtime(precision: str):
    from a2o.runtime import Runtime

    return Runtime.from_name(DEVICE, precision)


@contextlib.contextmanager
def ieee_fp32():
    """fp32 matmuls and convolutions without TF32 inside the block (restored after).

    Uses the ``fp32_precision`` switches (torch >= 2.9); mixing them with the legacy
    ``allow_tf32`` flags is an error in recent torch, so the legacy flags are only used without them.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        saved = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
    else:  # pragma: no cover - older torch
        saved = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------------------------
# a. training: one step and one evaluation through the trial loop's functions


def _train_one_step(runtime):
    """build_training + run_epochs (one epoch capped at one step, then the evaluation), as the
    Ray Train loop runs them; returns (training, metrics of the epoch, spec)."""
    pytest.importorskip("transformers", reason="the tiny V-JEPA2 is a transformers model")
    from a2o.train.epoch import build_training, run_epochs

    spec, frames, maps = memory_trial_spec(GEOMETRY, precision=runtime.precision, train_clips=TRAIN_CLIPS,
                                           val_clips=VAL_CLIPS, epochs=1, max_steps_per_epoch=1)
    torch.manual_seed(spec.train.seed)
    training = build_training(spec, frames, maps, wrap=lambda model: model.to(runtime.device))
    reported: list[dict] = []
    epochs = run_epochs(training, spec, runtime, on_epoch=lambda metrics: reported.append(metrics) or False)
    assert epochs == 1 and len(reported) == 1
    return training, reported[0], spec


@pytest.fixture(scope="module")
def cpu_step():
    from a2o.runtime import Runtime

    with ieee_fp32():
        return _train_one_step(Runtime.cpu("fp32"))


@pytest.fixture(scope="module")
def device_step():
    with ieee_fp32():
        return _train_one_step(_runtime("fp32"))


def _check_epoch_metrics(training, metrics) -> None:
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0, metrics["loss"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert sum(map(sum, metrics["confusion"])) == VAL_CLIPS, "every val clip is counted once"
    assert metrics["confusion_labels"] == list(GEOMETRY.labels) and metrics["classes"] == CLASSES
    assert training.scheduler.last_epoch == 1, "exactly one optimiser step"
    assert all(torch.isfinite(p).all() for p in training.core.parameters()), "non-finite weights after the step"
    # The projection starts at zero: a non-zero one got its gradient through the adapter on the device.
    assert training.core.fusion.projection.weight.abs().max() > 0, "the fusion path did not train"


def test_train_step_and_eval_in_fp32_on_gpu_match_the_cpu(device_step, cpu_step):
    training, metrics, _ = device_step
    assert next(training.core.parameters()).device.type == torch.device(DEVICE).type
    _check_epoch_metrics(training, metrics)
    # The loss of the first batch is computed before the update, from the same seeded weights.
    cpu_loss = cpu_step[1]["loss"]
    assert metrics["loss"] == pytest.approx(cpu_loss, rel=LOSS_RTOL), (
        f"fp32 loss on {DEVICE} {metrics['loss']:.6f} vs CPU {cpu_loss:.6f} (rel tolerance {LOSS_RTOL})"
    )


def test_train_step_and_eval_under_bf16_autocast_on_gpu(cpu_step):
    runtime = _runtime("bf16")
    assert runtime.uses_bf16
    training, metrics, _ = _train_one_step(runtime)
    _check_epoch_metrics(training, metrics)
    cpu_loss = cpu_step[1]["loss"]
    assert abs(metrics["loss"] - cpu_loss) <= BF16_LOSS_ATOL, (
        f"bf16 loss on {DEVICE} {metrics['loss']:.4f} vs fp32 CPU {cpu_loss:.4f} (abs tolerance {BF16_LOSS_ATOL})"
    )
    frames, maps, _ = next(iter(training.val_loader))
    with torch.no_grad(), runtime.autocast():
        logits = training.model(frames.to(runtime.device), maps.to(runtime.device))
    assert logits.dtype == torch.bfloat16, f"autocast did not run the recognizer in bf16 ({logits.dtype})"


def test_checkpoint_saved_on_gpu_loads_on_cpu_and_predicts_the_same(device_step, tmp_path):
    pytest.importorskip("safetensors", reason="save_recognizer writes the fusion weights with safetensors")
    from a2o.model import load_recognizer, save_recognizer

    training, metrics, _ = device_step
    saved = save_recognizer(training.core, str(tmp_path / "model"), extra={"metrics": metrics})
    loaded, meta = load_recognizer(saved, classes=CLASSES)
    assert meta["classes"] == CLASSES and meta["extra"]["metrics"]["epoch"] == 1
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    trained = {name: value.detach().cpu() for name, value in training.core.state_dict().items()}
    restored = loaded.state_dict()
    assert set(restored) == set(trained)
    for name, value in restored.items():
        assert torch.equal(value, trained[name]), f"{name} changed on the way from {DEVICE} to the CPU"

    frames, maps, _ = next(iter(training.val_loader))
    training.core.eval()
    with ieee_fp32(), torch.no_grad():
        on_device = training.core(frames.to(DEVICE), maps.to(DEVICE)).float().cpu()
        on_cpu = loaded(frames, maps)
    assert on_cpu.std() > 100 * LOGIT_ATOL, "logits too flat for the comparison to mean anything"
    torch.testing.assert_close(
        on_cpu, on_device, rtol=LOGIT_RTOL, atol=LOGIT_ATOL,
        msg=lambda m: f"logits of the checkpoint on the CPU vs the model on {DEVICE} (rtol = atol = "
                      f"{LOGIT_ATOL}): {m}",
    )


# ------------------------------------------------------------------------------------------------
# b. Grounded SAM2 on the GPU, built as the Ray Data detection stage builds it

DETECT_FRAMES, DETECT_SIZE = 4, 48


def _spread_weights(model, seed: int, gain: float) -> None:
    """Redraw every linear / conv weight with std gain/sqrt(fan_in) (in place).

    The tiny random SAM2 has the transformers init (std 0.02): its mask logits are ~1e-5, every map
    is 0.5 everywhere and a CPU/GPU comparison of maps could not fail. With gain 1.5 the mask
    logits are of order 1-10 and the maps span [0, 1] (std ~0.27 over pixels, frames and classes).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):  # weight (in, out, kh, kw)
                fan_in = module.weight.shape[0] * module.weight[0, 0].numel()
            elif isinstance(module, torch.nn.Linear | torch.nn.Conv2d):  # weight (out, in, ...)
                fan_in = module.weight[0].numel()
            else:
                continue
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * gain / math.sqrt(fan_in))


@pytest.fixture(scope="module")
def detect_cfg(tmp_path_factory):
    """Tiny GroundingDINO (8 queries, so every box passes the cap of 8 per class and no ranking of
    near-equal scores decides a map) + a tiny SAM2 with spread weights; low thresholds."""
    transformers = pytest.importorskip("transformers", reason="Grounded SAM2 is built from transformers classes")
    from tiny_models import build_tiny_grounding_dino, build_tiny_sam2

    from a2o.config import DetectConfig
    from a2o.detect.grounded_sam2 import MAX_BOXES_PER_CLASS

    root = tmp_path_factory.mktemp("gpu_gsam2")
    gdino = build_tiny_grounding_dino(str(root / "gdino"), num_queries=MAX_BOXES_PER_CLASS)
    sam2 = transformers.Sam2Model.from_pretrained(build_tiny_sam2(str(root / "sam2_init")))
    _spread_weights(sam2, seed=0, gain=1.5)
    sam2.save_pretrained(str(root / "sam2"))
    return DetectConfig(detector="grounded_sam2", grounding_dino=gdino, sam2=str(root / "sam2"),
                        box_threshold=0.05, text_threshold=0.05)


def _detector(detect_cfg, runtime):
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.grounded_sam2 import GroundedSam2Detector

    detector = ConfigDetectorFactory(detect_cfg)(runtime)  # what each Ray Data detection actor does
    assert isinstance(detector, GroundedSam2Detector)
    assert detector.device == runtime.device
    assert {p.device.type for p in detector.gdino.parameters()} == {runtime.device.type}
    assert {p.device.type for p in detector.sam2.parameters()} == {runtime.device.type}
    return detector


def _detect(detector) -> np.ndarray:
    from a2o.detect.base import VideoMeta

    frames = np.random.default_rng(0).integers(0, 256, (DETECT_FRAMES, DETECT_SIZE, DETECT_SIZE, 3), dtype=np.uint8)
    video = VideoMeta("gpu-test", np.arange(DETECT_FRAMES), DETECT_SIZE, DETECT_SIZE)
    maps = detector.detect(frames, CLASSES, video=video)
    assert maps.shape == (DETECT_FRAMES, len(CLASSES), DETECT_SIZE, DETECT_SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    return maps


@pytest.fixture(scope="module")
def cpu_detector(detect_cfg):
    from a2o.runtime import Runtime

    return _detector(detect_cfg, Runtime.cpu("fp32"))


@pytest.fixture(scope="module")
def cpu_maps(cpu_detector):
    with ieee_fp32():
        return _detect(cpu_detector)


def test_grounded_sam2_maps_on_gpu_equal_the_cpu_maps(detect_cfg, cpu_maps):
    assert cpu_maps.std() > 100 * MAP_MEAN_ATOL, "maps too flat for the comparison to mean anything"
    with ieee_fp32():
        maps = _detect(_detector(detect_cfg, _runtime("fp32")))
    difference = np.abs(maps - cpu_maps)
    assert difference.mean() <= MAP_MEAN_ATOL and difference.max() <= MAP_MAX_ATOL, (
        f"Grounded SAM2 maps on {DEVICE} (fp32) vs the CPU: mean |diff| {difference.mean():.2e} "
        f"(tolerance {MAP_MEAN_ATOL}), max |diff| {difference.max():.2e} (tolerance {MAP_MAX_ATOL})"
    )


def test_grounded_sam2_runs_in_bf16_on_gpu(detect_cfg):
    """Shape, dtype, finite and in [0, 1] (checked in ``_detect``), and real masks. No agreement
    with fp32 is asserted: the spread tiny SAM2 has mask logits in the tens, where bf16 rounding
    moves whole mask edges (the CPU's bf16 maps differ from its fp32 ones by ~0.1 on average)."""
    runtime = _runtime("bf16")  # on a GPU, 'auto' (the Ray Data actor's default) means the same
    assert runtime.uses_bf16
    maps = _detect(_detector(detect_cfg, runtime))
    assert maps.max() > 0.0, "no box passed the thresholds under bf16"
    assert maps.std() > 0.01, f"bf16 maps are flat (std {maps.std():.4f}): no mask was decoded"


# ------------------------------------------------------------------------------------------------
# c. the serving predict path, without Ray Serve


@pytest.fixture(scope="module")
def served_model_dir(tmp_path_factory):
    """A saved recognizer as a best/ model holds it: tiny V-JEPA2 + adapter, non-zero projection."""
    pytest.importorskip("transformers", reason="the tiny V-JEPA2 is a transformers model")
    pytest.importorskip("safetensors", reason="save_recognizer writes the fusion weights with safetensors")
    from a2o.model import build_recognizer, save_recognizer

    torch.manual_seed(0)
    model = build_recognizer(smoke_model_config(GEOMETRY), classes=CLASSES, labels=list(GEOMETRY.labels),
                             num_frames=GEOMETRY.num_frames, resolution=GEOMETRY.resolution)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # stands in for training: the maps change the input
        weight = model.fusion.projection.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * 0.1)
    return save_recognizer(model, str(tmp_path_factory.mktemp("gpu_served") / "model"))


def _upload_inputs(detector, seed: int):
    """One upload's S x V model inputs from synthetic decoded frames, through the serving code
    after decoding (:func:`a2o.train.evaluate.clip_inputs`: grid resize, detection, map quantisation)."""
    from a2o.train.evaluate import EvalGeometry, clip_inputs

    geometry = EvalGeometry(num_frames=GEOMETRY.num_frames, grid_resolution=40, resolution=GEOMETRY.resolution,
                            map_resolution=40, segments=2, views=2)
    decoded = np.random.default_rng(seed).integers(
        0, 256, (geometry.segments * geometry.num_frames, 48, 64, 3), dtype=np.uint8
    )
    frames, maps = clip_inputs(decoded, np.arange(len(decoded)), detector, CLASSES, geometry,
                               video_id=f"upload-{seed}")
    assert frames.shape == (4, GEOMETRY.num_frames, GEOMETRY.resolution, GEOMETRY.resolution, 3)
    assert maps.shape == (4, GEOMETRY.num_frames, len(CLASSES), GEOMETRY.resolution, GEOMETRY.resolution)
    return frames, maps


@pytest.fixture(scope="module")
def uploads(cpu_detector):
    """Two uploads' inputs, detected once on the CPU: the predict tests compare the recognizer only."""
    return [_upload_inputs(cpu_detector, seed) for seed in (0, 1)]


def _served(model_dir: str, runtime):
    """The model as a Serve recognizer replica holds it (load_recognizer, then to its device)."""
    from a2o.model import load_recognizer

    model, _ = load_recognizer(model_dir, classes=CLASSES)
    return model.to(runtime.device)


def _cpu_probabilities(model_dir: str, uploads) -> list[np.ndarray]:
    from a2o.runtime import Runtime
    from a2o.train.evaluate import predict_clip

    runtime = Runtime.cpu("fp32")
    model = _served(model_dir, runtime)
    with ieee_fp32():
        probabilities = [predict_clip(model, frames, maps, runtime) for frames, maps in uploads]
    for p in probabilities:
        assert p.shape == (len(GEOMETRY.labels),) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)
    # The comparisons below could fail: the two uploads get predictions that differ by far more
    # than the tolerance, and neither is uniform.
    assert np.abs(probabilities[0] - probabilities[1]).max() > 100 * PROB_ATOL
    assert all(np.abs(p - 1.0 / len(p)).max() > 100 * PROB_ATOL for p in probabilities)
    return probabilities


def test_predict_clip_on_gpu_equals_the_cpu(served_model_dir, uploads):
    from a2o.train.evaluate import predict_clip

    expected = _cpu_probabilities(served_model_dir, uploads)
    runtime = _runtime("fp32")
    model = _served(served_model_dir, runtime)
    with ieee_fp32():
        got = [predict_clip(model, frames, maps, runtime) for frames, maps in uploads]
    for upload, (g, e) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(
            g, e, rtol=0, atol=PROB_ATOL,
            err_msg=f"upload {upload}: predict_clip on {DEVICE} (fp32) vs the CPU, abs tolerance {PROB_ATOL}",
        )


def test_predict_clip_under_bf16_autocast_on_gpu(served_model_dir, uploads):
    from a2o.train.evaluate import predict_clip

    expected = _cpu_probabilities(served_model_dir, uploads)
    runtime = _runtime("bf16")  # a replica's default precision ('auto') on a GPU
    model = _served(served_model_dir, runtime)
    for upload, ((frames, maps), e) in enumerate(zip(uploads, expected, strict=True)):
        got = predict_clip(model, frames, maps, runtime)
        assert got.shape == e.shape and np.isfinite(got).all()
        np.testing.assert_allclose(
            got, e, rtol=0, atol=BF16_PROB_ATOL,
            err_msg=f"upload {upload}: predict_clip on {DEVICE} (bf16) vs the CPU (fp32), "
                    f"abs tolerance {BF16_PROB_ATOL}",
        )


def test_predict_batch_on_gpu_equals_the_cpu(served_model_dir, uploads):
    pytest.importorskip("ray", reason="a2o.serve.deployments imports Ray Serve at module level "
                                      "(predict_clip, which it calls per upload, is tested without Ray)")
    from a2o.serve.deployments import ClipInputs, predict_batch

    expected = _cpu_probabilities(served_model_dir, uploads)
    runtime = _runtime("fp32")
    model = _served(served_model_dir, runtime)
    clips = [ClipInputs(frames=f.numpy(), maps=m.numpy(), sha256=f"upload-{i}") for i, (f, m) in enumerate(uploads)]
    with ieee_fp32():
        batched = predict_batch(model, clips, runtime)  # both uploads in one forward pass
        single = predict_batch(model, clips[:1], runtime)  # one upload: predict_clip itself
    for upload, (g, e) in enumerate(zip([*batched, *single], [*expected, expected[0]], strict=True)):
        np.testing.assert_allclose(
            g, e, rtol=0, atol=PROB_ATOL,
            err_msg=f"predict_batch result {upload} on {DEVICE} vs predict_clip on the CPU, abs tolerance {PROB_ATOL}",
        )
