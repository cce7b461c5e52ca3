"""The recognizer: adapter shapes, zero-init identity, gradients, freezing, C = 0, save/load."""

from __future__ import annotations

import os

import pytest
import torch

from a2o.config import ModelConfig
from a2o.errors import A2OError, ConfigError
from a2o.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    A2ORecognizer,
    MapAdapter,
    MapFusion,
    build_recognizer,
    frames_to_pixel_values,
    load_recognizer,
    maps_to_float,
    save_recognizer,
    save_tiny_checkpoint,
)

DEVICE = torch.device(os.environ.get("A2O_TEST_DEVICE", "cpu"))
LABELS = ["jump", "run", "throw"]
CLASSES = ("ball", "hand", "racket")  # object classes of the map channels, in channel order
T, SIZE = 4, 32


def tiny_cfg(**overrides) -> ModelConfig:
    values = dict(tiny_hidden=32, tiny_layers=2, tiny_patch=8, adapter_dim=8, adapter_depth=1)
    values.update(overrides)
    return ModelConfig(**values)


def make_recognizer(num_classes_in: int = 3, **overrides) -> A2ORecognizer:
    model = build_recognizer(
        tiny_cfg(**overrides), classes=CLASSES[:num_classes_in], labels=LABELS, num_frames=T, resolution=SIZE
    )
    return model.to(DEVICE)


def make_inputs(num_classes_in: int = 3, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, T, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)
    maps = torch.rand(batch, T, num_classes_in, SIZE, SIZE, generator=generator)
    return frames.to(DEVICE), maps.to(DEVICE)


def randomize_projection(model: A2ORecognizer, seed: int = 1) -> None:
    """Stand-in for a trained step: a non-zero projection lets the maps change the input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.fusion.projection.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).to(param.device) * 0.1)


# ---------------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_adapter_shapes_and_depth(depth):
    adapter = MapAdapter(num_classes=3, dim=5, depth=depth)
    maps = torch.rand(2, 4, 3, 6, 7)  # (B, T, C, H, W)
    assert adapter(maps).shape == (2, 4, 5, 6, 7)
    convs = [m for m in adapter.modules() if isinstance(m, torch.nn.Conv2d)]
    relus = [m for m in adapter.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(convs) == depth + 1 and len(relus) == depth
    assert all(conv.kernel_size == (1, 1) for conv in convs)
    fused = MapFusion(3, 5, depth)(torch.randn(2, 4, 3, 6, 7), maps)
    assert fused.shape == (2, 4, 3, 6, 7)


def test_adapter_is_position_independent():
    adapter = MapAdapter(num_classes=2, dim=4, depth=1)
    maps = torch.rand(1, 2, 2, 5, 5)
    shifted = torch.roll(maps, shifts=(2, 3), dims=(3, 4))
    assert torch.allclose(torch.roll(adapter(maps), shifts=(2, 3), dims=(3, 4)), adapter(shifted))


def test_adapter_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="3 map channels"):
        MapAdapter(3, 4)(torch.rand(1, 2, 2, 4, 4))


# ------------------------------------------------------------------------------- preprocess


def test_frames_to_pixel_values_layout_and_normalisation():
    frames = torch.zeros(1, 2, 4, 5, 3, dtype=torch.uint8)
    frames[0, 1, 2, 3] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    pixels = frames_to_pixel_values(frames)
    assert pixels.shape == (1, 2, 3, 4, 5) and pixels.dtype == torch.float32
    expected = [
        (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
        (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
    ]
    assert torch.allclose(pixels[0, 1, :, 2, 3], torch.tensor(expected))
    # float input in [0, 1] is the same image as uint8 / 255
    assert torch.allclose(frames_to_pixel_values(frames.float() / 255.0), pixels)
    with pytest.raises(ValueError, match="channels-last"):
        frames_to_pixel_values(torch.zeros(1, 2, 3, 4, 5))


def test_maps_to_float_scales_and_resizes():
    maps = torch.full((1, 2, 3, 8, 8), 255, dtype=torch.uint8)
    out = maps_to_float(maps, (16, 16))
    assert out.shape == (1, 2, 3, 16, 16) and torch.allclose(out, torch.ones_like(out))
    same = torch.rand(1, 2, 3, 16, 16)
    assert torch.equal(maps_to_float(same, (16, 16)), same)


# ------------------------------------------------------------------------------- recognizer


def test_zero_init_fused_input_is_exactly_rgb():
    model = make_recognizer(3).eval()
    frames, maps = make_inputs(3)
    assert torch.equal(model.fuse(frames, maps), frames_to_pixel_values(frames))
    # ... so at step 0 the recognizer is exactly the pretrained V-JEPA2 (here: the same tiny init).
    baseline = make_recognizer(0).eval()
    with torch.no_grad():
        assert torch.equal(model(frames, maps), baseline(frames))


@pytest.mark.parametrize("depth", [0, 2])
def test_fusion_leaves_pixels_without_detections_unchanged(depth):
    # Even once trained (non-zero projection, biased adapter), a pixel whose maps are all zero keeps
    # its RGB; a pixel with a detection does not.
    model = make_recognizer(3, adapter_depth=depth).eval()
    randomize_projection(model)
    frames, maps = make_inputs(3)
    maps[:, :, :, : SIZE // 2] = 0.0  # top half: nothing detected
    with torch.no_grad():
        fused = model.fuse(frames, maps)
    rgb = frames_to_pixel_values(frames)
    assert torch.allclose(fused[..., : SIZE // 2, :], rgb[..., : SIZE // 2, :], atol=1e-6)
    assert (fused[..., SIZE // 2 :, :] - rgb[..., SIZE // 2 :, :]).abs().max() > 1e-3


@pytest.mark.parametrize("depth", [0, 2])
def test_every_trainable_parameter_gets_a_gradient(depth):
    model = make_recognizer(3, adapter_depth=depth)
    frames, maps = make_inputs(3)
    targets = torch.tensor([0, 2], device=DEVICE)

    # Step 0: the projection is zero, so only it (not the adapter behind it) can get a gradient.
    torch.nn.functional.cross_entropy(model(frames, maps), targets).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.fusion.projection.weight.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    randomize_projection(model)
    logits = model(frames, maps)
    assert logits.shape == (2, len(LABELS)) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, targets).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_predictor_is_frozen():
    model = make_recognizer(3)
    predictor = model.backbone.vjepa2.predictor
    assert all(not p.requires_grad for p in predictor.parameters())
    assert any(p.requires_grad for p in model.backbone.vjepa2.encoder.parameters())
    frames, maps = make_inputs(3)
    model(frames, maps).sum().backward()
    assert all(p.grad is None for p in predictor.parameters())


def test_frozen_backbone_trains_only_adapter_and_probe():
    model = make_recognizer(3, freeze_backbone=True)
    randomize_projection(model)
    frames, maps = make_inputs(3)
    torch.nn.functional.cross_entropy(model(frames, maps), torch.tensor([1, 0], device=DEVICE)).backward()
    for name, param in model.backbone.vjepa2.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    for module in (model.fusion, model.backbone.pooler, model.backbone.classifier):
        for param in module.parameters():
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0
    # gradients reach the adapter through the frozen encoder
    assert all(p.grad.abs().sum() > 0 for p in model.fusion.adapter.parameters())


def test_rgb_only_path_without_maps():
    model = make_recognizer(0)
    assert model.fusion is None and model.num_classes_in == 0
    frames, _ = make_inputs(0)
    logits = model(frames)
    assert logits.shape == (2, len(LABELS)) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="maps=None"):
        model(frames, torch.rand(2, T, 2, SIZE, SIZE, device=DEVICE))


def test_forward_validates_inputs():
    model = make_recognizer(2)
    frames, maps = make_inputs(2)
    with pytest.raises(ValueError, match="pass maps"):
        model(frames)
    with pytest.raises(ValueError, match="crop_size"):
        model(frames[:, :, :16, :16], maps)
    with pytest.raises(ValueError, match="tubelet"):
        model(frames[:, :3], maps[:, :3])
    # coarser uint8 maps from the map cache are scaled and resized to the frame grid
    coarse = (maps[..., ::2, ::2] * 255).to(torch.uint8)
    assert model(frames, coarse).shape == (2, len(LABELS))


def test_build_recognizer_config_errors():
    with pytest.raises(ConfigError, match="data.resolution"):
        build_recognizer(tiny_cfg(), classes=["ball"], labels=LABELS, num_frames=T, resolution=36)
    with pytest.raises(ConfigError, match="data.num_frames"):
        build_recognizer(tiny_cfg(), classes=["ball"], labels=LABELS, num_frames=5, resolution=SIZE)
    with pytest.raises(ConfigError, match="unique"):
        build_recognizer(tiny_cfg(), classes=["ball"], labels=["a", "a"], num_frames=T, resolution=SIZE)
    with pytest.raises(TypeError, match="not one string"):
        build_recognizer(tiny_cfg(), classes="ball", labels=LABELS, num_frames=T, resolution=SIZE)


def test_tiny_checkpoint_dir_loads_like_a_published_one(tmp_path):
    from transformers import VJEPA2ForVideoClassification

    save_tiny_checkpoint(
        str(tmp_path / "ckpt"), num_labels=2, num_frames=T, resolution=16, model_cfg=tiny_cfg()
    )
    frames, _ = make_inputs(0)
    pixels = frames_to_pixel_values(frames[:, :, :16, :16])  # the saved checkpoint's crop_size
    first = VJEPA2ForVideoClassification.from_pretrained(str(tmp_path / "ckpt")).eval()
    second = VJEPA2ForVideoClassification.from_pretrained(str(tmp_path / "ckpt")).eval()
    with torch.no_grad():
        assert torch.equal(
            first(pixel_values_videos=pixels).logits, second(pixel_values_videos=pixels).logits
        )

    # The local dir as model.checkpoint: crop_size/frames_per_clip follow the input, and a probe of
    # another size (2 labels saved, 3 wanted) is re-initialised.
    model = build_recognizer(
        tiny_cfg(checkpoint=str(tmp_path / "ckpt")),
        classes=["ball"],
        labels=LABELS,
        num_frames=T,
        resolution=SIZE,
    )
    assert model.resolution == SIZE and model.num_frames == T and model.labels == LABELS
    assert model.backbone.config.crop_size == SIZE and model.backbone.config.frames_per_clip == T
    encoder = model.backbone.vjepa2.encoder.state_dict()
    for key, value in first.vjepa2.encoder.state_dict().items():
        assert torch.equal(encoder[key], value), key
    assert model(frames, torch.rand(2, T, 1, SIZE, SIZE)).shape == (2, 3)


@pytest.mark.parametrize("num_classes_in", [2, 0])
def test_save_and_load_recognizer_round_trip(tmp_path, num_classes_in):
    model = make_recognizer(num_classes_in, freeze_backbone=num_classes_in == 0).eval()
    if model.fusion is not None:
        randomize_projection(model)
    frames, maps = make_inputs(num_classes_in)
    maps = maps if num_classes_in else None
    classes = list(CLASSES[:num_classes_in])
    assert model.classes == tuple(classes) and model.num_classes_in == num_classes_in
    save_recognizer(model, str(tmp_path / "best"), extra={"val_accuracy": 0.5})
    loaded, meta = load_recognizer(str(tmp_path / "best"), classes=classes)
    loaded = loaded.to(DEVICE)
    with torch.no_grad():
        assert torch.equal(model(frames, maps), loaded(frames, maps))
    assert loaded.classes == tuple(classes)
    assert meta["classes"] == classes and meta["labels"] == LABELS
    assert (
        meta["adapter_dim"] == 8 and meta["adapter_depth"] == 1 and meta["num_classes_in"] == num_classes_in
    )
    assert meta["extra"] == {"val_accuracy": 0.5}
    assert loaded.freeze_backbone == (num_classes_in == 0)


def test_load_checks_the_channel_order_and_rejects_incomplete_dirs(tmp_path):
    """A loader that feeds maps in another order (or of another set) would fuse each channel as
    the wrong object without any shape error: loading with the caller's class set refuses it."""
    from a2o.detect.classes import ClassSet

    model = make_recognizer(2)
    save_recognizer(model, str(tmp_path / "x"))
    loaded, _ = load_recognizer(str(tmp_path / "x"), classes=ClassSet.parse(["ball", "hand"]))
    assert loaded.classes == ("ball", "hand")
    with pytest.raises(A2OError, match="channel order"):
        load_recognizer(str(tmp_path / "x"), classes=["hand", "ball"])
    with pytest.raises(A2OError, match="channel order"):
        load_recognizer(str(tmp_path / "x"), classes=["ball"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(A2OError, match="recognizer.json"):
        load_recognizer(str(tmp_path / "empty"))
