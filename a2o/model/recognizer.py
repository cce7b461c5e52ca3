"""The A2O recognizer: object-map adapter + V-JEPA2 video classifier (encoder, attentive probe).

Input contract of :meth:`A2ORecognizer.forward`:
- ``frames`` (B, T, H, W, 3) channels-last, ``uint8`` in [0, 255] or float in [0, 1]; H = W = the
  model's ``resolution`` (V-JEPA2 ``crop_size``), T a multiple of the tubelet size (2).
- ``maps`` (B, T, C, h, w) likelihood maps, float in [0, 1] or ``uint8`` in [0, 255], channel ``i``
  being the map of ``recognizer.classes[i]``; resized to H x W when the map grid is coarser. ``None``
  when the recognizer has no classes (C = 0: the RGB-only baseline runs through the same code).
Output: logits (B, num_labels).

The V-JEPA2 part is always a ``transformers`` ``VJEPA2ForVideoClassification`` obtained with
``from_pretrained(dir_or_id)``; the ``tiny`` preset is first saved to a directory with
:func:`save_tiny_checkpoint` so tests and published checkpoints share one loading path.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from a2o.errors import A2OError, ConfigError
from a2o.model.adapter import MapFusion
from a2o.model.preprocess import frames_to_pixel_values, maps_to_float

if TYPE_CHECKING:  # transformers is imported lazily: `import a2o.model` stays light.
    from transformers import VJEPA2ForVideoClassification

    from a2o.config import ModelConfig

__all__ = [
    "A2ORecognizer",
    "build_recognizer",
    "save_tiny_checkpoint",
    "save_recognizer",
    "load_recognizer",
]

logger = logging.getLogger(__name__)

_BACKBONE_DIR = "vjepa2"  # save_pretrained output inside a saved recognizer
_FUSION_FILE = "fusion.safetensors"  # adapter + projection weights (absent when C = 0)
_META_FILE = "recognizer.json"  # written last: its presence marks a complete save
_FORMAT_VERSION = 2  # 2: anchored fusion, projection without bias


class A2ORecognizer(nn.Module):
    """Maps -> adapter -> zero-init projection, added to normalised RGB -> V-JEPA2 classifier.

    Args:
        backbone: a loaded ``VJEPA2ForVideoClassification`` (encoder + predictor + pooler + linear).
        classes: the object class of each likelihood-map channel, in channel order (the trial's
            ``ClassSet`` texts); C = ``len(classes)``, and none builds no adapter (RGB-only baseline).
            Saved with the weights, so a loader can check its maps come in the same order.
        adapter_dim: D, adapter features per pixel.
        adapter_depth: hidden (1x1 conv + ReLU) layers of the adapter (0 = one linear 1x1).
        freeze_backbone: train only adapter, projection, pooler and classifier.
    """

    def __init__(
        self,
        backbone: VJEPA2ForVideoClassification,
        *,
        classes: Sequence[str],
        adapter_dim: int,
        adapter_depth: int,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(classes, str):
            raise TypeError("classes must be a sequence of class texts (e.g. a ClassSet), not one string")
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)
        self.adapter_dim = adapter_dim
        self.adapter_depth = adapter_depth
        self.freeze_backbone = freeze_backbone
        self.fusion = MapFusion(len(self.classes), adapter_dim, adapter_depth) if self.classes else None
        self.backbone = backbone
        # The predictor (JEPA pretraining head) never runs for classification; frozen so DDP does
        # not see parameters without gradients.
        backbone.vjepa2.predictor.requires_grad_(False)
        if freeze_backbone:
            # Frozen V-JEPA2 encoder; the attentive probe (backbone.pooler, backbone.classifier)
            # and the adapter stay trainable. Gradients still flow *through* the encoder to the maps.
            backbone.vjepa2.requires_grad_(False)

    @property
    def num_classes_in(self) -> int:
        """C, the likelihood-map channels the adapter fuses (0 = RGB only)."""
        return len(self.classes)

    @property
    def resolution(self) -> int:
        """Input side H = W (V-JEPA2 ``crop_size``; RoPE positions are computed from it)."""
        return int(self.backbone.config.crop_size)

    @property
    def num_frames(self) -> int:
        """T the model was configured for (V-JEPA2 ``frames_per_clip``)."""
        return int(self.backbone.config.frames_per_clip)

    @property
    def labels(self) -> list[str]:
        """Action label names in logit order."""
        id2label = self.backbone.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    def fuse(self, frames: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T, H, W, 3) [+ maps (B, T, C, h, w)] -> pixel_values_videos (B, T, 3, H, W)."""
        batch, num_frames, height, width = frames.shape[:4]
        if height != self.resolution or width != self.resolution:
            raise ValueError(
                f"frames are {height}x{width} but the recognizer was built for "
                f"{self.resolution}x{self.resolution} (V-JEPA2 crop_size): resize/crop the clips "
                "to data.resolution or rebuild the recognizer"
            )
        tubelet = int(self.backbone.config.tubelet_size)
        if num_frames % tubelet:
            raise ValueError(
                f"T={num_frames} frames is not a multiple of the tubelet size {tubelet}; "
                "the last frames would be dropped silently"
            )
        pixel_values = frames_to_pixel_values(frames)  # (B, T, 3, H, W)
        if self.fusion is None:
            if maps is not None and maps.shape[2] > 0:
                raise ValueError("this recognizer has no adapter (C = 0): call it with maps=None")
            return pixel_values
        if maps is None:
            raise ValueError(f"this recognizer fuses {self.num_classes_in} map channels: pass maps")
        if maps.shape[:2] != (batch, num_frames):
            raise ValueError(
                f"maps (B, T) = {tuple(maps.shape[:2])} do not match frames {(batch, num_frames)}"
            )
        maps = maps_to_float(maps.to(frames.device), (height, width))  # (B, T, C, H, W)
        return self.fusion(pixel_values, maps)  # (B, T, 3, H, W)

    def forward(self, frames: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T, H, W, 3) [+ maps (B, T, C, h, w)] -> logits (B, num_labels)."""
        pixel_values = self.fuse(frames, maps)  # (B, T, 3, H, W)
        return self.backbone(pixel_values_videos=pixel_values).logits


# --------------------------------------------------------------------------------------------
# building, saving, loading


def _tiny_heads(hidden: int) -> int:
    """Most heads with head size >= 16 (RoPE splits a head into 3 even parts) dividing ``hidden``."""
    for heads in range(max(1, hidden // 16), 0, -1):
        if hidden % heads == 0:
            return heads
    return 1


# The published V-JEPA2 ViT-L initialises with std 0.02 at width 1024: a per-matrix gain of
# 0.02 * sqrt(1024) = 0.64. The tiny preset keeps that gain at its own width.
_PUBLISHED_INIT_GAIN = 0.02 * 1024**0.5


def tiny_init_std(model_cfg: ModelConfig) -> float:
    """The tiny preset's weight std: ``model.tiny_init_std``, or 0.64 / sqrt(hidden) when it is 0.

    Why not transformers' default 0.02 at width 64: the gain per matrix is then 0.16, and through
    patch embedding, attention, pooler and classifier the logits start ~1e-4 of their useful scale.
    A *random* V-JEPA2 (no pretrained weights offline) then sits on a saddle where the probe sees
    almost no difference between videos and the zero-init fusion path gets no useful gradient;
    whether a trial ever leaves it depended on the seed (measured in benchmarks/maps_matter.py).
    """
    if model_cfg.tiny_init_std > 0:
        return float(model_cfg.tiny_init_std)
    return _PUBLISHED_INIT_GAIN / model_cfg.tiny_hidden**0.5


def save_tiny_checkpoint(
    directory: str,
    num_labels: int,
    num_frames: int,
    resolution: int,
    model_cfg: ModelConfig,
    *,
    seed: int = 0,
) -> str:
    """Save a random-init small ``VJEPA2ForVideoClassification`` to ``directory``; returns it.

    Size from ``model.tiny_hidden``, ``model.tiny_layers``, ``model.tiny_patch``; tubelet 2, one
    pooler layer, a one-layer predictor; weight std from :func:`tiny_init_std`. ``seed`` fixes the
    random weights without touching the global RNG.
    """
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification

    hidden = model_cfg.tiny_hidden
    heads = _tiny_heads(hidden)
    config = VJEPA2Config(
        patch_size=model_cfg.tiny_patch,
        crop_size=resolution,
        frames_per_clip=num_frames,
        tubelet_size=2,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=model_cfg.tiny_layers,
        mlp_ratio=2.0,
        num_pooler_layers=1,
        pred_hidden_size=hidden,
        pred_num_attention_heads=heads,
        pred_num_hidden_layers=1,
        pred_num_mask_tokens=1,
        initializer_range=tiny_init_std(model_cfg),
        id2label={i: f"label_{i}" for i in range(num_labels)},
        label2id={f"label_{i}": i for i in range(num_labels)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VJEPA2ForVideoClassification(config)
    model.save_pretrained(directory)
    return directory


def _load_backbone(path: str, labels: Sequence[str], num_frames: int, resolution: int):
    from transformers import VJEPA2ForVideoClassification

    # crop_size / frames_per_clip must describe the actual input: RoPE derives (t, h, w) positions
    # from the flat token index with crop_size // patch_size, so a mismatch is silently wrong.
    # ignore_mismatched_sizes: a backbone-only or other-dataset checkpoint gets a fresh probe.
    return VJEPA2ForVideoClassification.from_pretrained(
        path,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        crop_size=resolution,
        frames_per_clip=num_frames,
        ignore_mismatched_sizes=True,
    )


def build_recognizer(
    model_cfg: ModelConfig,
    *,
    classes: Sequence[str],
    labels: Sequence[str],
    num_frames: int,
    resolution: int,
) -> A2ORecognizer:
    """Build a recognizer from ``model.checkpoint`` ('tiny', a hub id or a local dir).

    Args:
        model_cfg: the ``model`` config section.
        classes: the trial's class set (a ``ClassSet``), in map-channel order; empty = RGB only.
        labels: action label names in label-id order (the probe's outputs).
        num_frames: T of the clips (``data.num_frames``), a multiple of the tubelet size 2.
        resolution: H = W of the clips (``data.resolution``), a multiple of the patch size.
    """
    labels = [str(label) for label in labels]
    if not labels or len(set(labels)) != len(labels):
        raise ConfigError(f"labels must be non-empty and unique, got {labels}")
    if num_frames < 2 or num_frames % 2:
        raise ConfigError(f"data.num_frames={num_frames}: V-JEPA2 needs an even number of frames >= 2")
    if model_cfg.checkpoint == "tiny":
        if resolution % model_cfg.tiny_patch:
            raise ConfigError(
                f"data.resolution={resolution} is not a multiple of model.tiny_patch={model_cfg.tiny_patch}"
            )
        with tempfile.TemporaryDirectory(prefix="a2o-tiny-vjepa2-") as directory:
            save_tiny_checkpoint(directory, len(labels), num_frames, resolution, model_cfg)
            backbone = _load_backbone(directory, labels, num_frames, resolution)
    else:
        backbone = _load_backbone(model_cfg.checkpoint, labels, num_frames, resolution)
    patch = backbone.config.patch_size
    if resolution % patch:
        raise ConfigError(
            f"data.resolution={resolution} is not a multiple of the checkpoint's patch size {patch}"
        )
    model = A2ORecognizer(
        backbone,
        classes=classes,
        adapter_dim=model_cfg.adapter_dim,
        adapter_depth=model_cfg.adapter_depth,
        freeze_backbone=model_cfg.freeze_backbone,
    )
    logger.info(
        "recognizer: checkpoint=%s C=%d D=%d depth=%d labels=%d T=%d %dx%d frozen=%s",
        model_cfg.checkpoint,
        model.num_classes_in,
        model_cfg.adapter_dim,
        model_cfg.adapter_depth,
        len(labels),
        num_frames,
        resolution,
        resolution,
        model_cfg.freeze_backbone,
    )
    return model


def save_recognizer(
    model: A2ORecognizer,
    directory: str,
    *,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a trained recognizer to a local ``directory`` (created); returns it.

    Layout: ``vjepa2/`` (``save_pretrained``), ``fusion.safetensors`` (adapter + projection, only
    when C > 0) and ``recognizer.json`` (format version, the model's object ``classes`` in channel
    order, action ``labels``, adapter hyperparameters, T, resolution, ``extra``), written last so a
    partial save is detected. Pass the bare module (``ddp_model.module``), not a DDP wrapper.
    """
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    meta_path = os.path.join(directory, _META_FILE)
    if os.path.exists(meta_path):
        os.remove(meta_path)  # the directory is incomplete until the new metadata lands
    model.backbone.save_pretrained(os.path.join(directory, _BACKBONE_DIR))
    fusion_path = os.path.join(directory, _FUSION_FILE)
    if model.fusion is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.fusion.state_dict().items()}
        save_file(state, fusion_path)
    elif os.path.exists(fusion_path):
        os.remove(fusion_path)
    meta = {
        "format_version": _FORMAT_VERSION,
        "classes": list(model.classes),
        "labels": model.labels,
        "num_classes_in": model.num_classes_in,
        "adapter_dim": model.adapter_dim,
        "adapter_depth": model.adapter_depth,
        "freeze_backbone": model.freeze_backbone,
        "num_frames": model.num_frames,
        "resolution": model.resolution,
        "extra": dict(extra or {}),
    }
    tmp_path = meta_path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
    os.replace(tmp_path, meta_path)
    return directory


def load_recognizer(directory: str, *, classes: Sequence[str] | None = None) -> tuple[A2ORecognizer, dict[str, Any]]:
    """Load what :func:`save_recognizer` wrote: ``(model in eval mode, metadata dict)``.

    ``classes``: the class set whose maps the caller will feed, in channel order; when given, it
    must be the saved one in the same order (a swapped channel would be fused as the wrong object
    without any error), else :class:`~a2o.errors.A2OError`.
    """
    from safetensors.torch import load_file

    meta_path = os.path.join(directory, _META_FILE)
    if not os.path.exists(meta_path):
        raise A2OError(
            f"{directory} is not a complete saved recognizer ({_META_FILE} missing): "
            "point at a directory written by save_recognizer, or re-save it"
        )
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format_version") != _FORMAT_VERSION:
        raise A2OError(
            f"{meta_path}: format_version {meta.get('format_version')} is not {_FORMAT_VERSION}; "
            "re-save the recognizer with this version of a2o"
        )
    saved = [str(c) for c in meta.get("classes", [])]
    if len(saved) != meta.get("num_classes_in"):
        raise A2OError(f"{meta_path}: {len(saved)} classes listed for C={meta.get('num_classes_in')} map channels")
    if classes is not None and [str(c) for c in classes] != saved:
        raise A2OError(
            f"{directory}: the recognizer fuses maps of {saved} in that channel order, but the caller's "
            f"class set is {list(classes)}; compute the maps in the saved order"
        )
    backbone = _load_backbone(
        os.path.join(directory, _BACKBONE_DIR), meta["labels"], meta["num_frames"], meta["resolution"]
    )
    model = A2ORecognizer(
        backbone,
        classes=saved,
        adapter_dim=meta["adapter_dim"],
        adapter_depth=meta["adapter_depth"],
        freeze_backbone=meta["freeze_backbone"],
    )
    if model.fusion is not None:
        model.fusion.load_state_dict(load_file(os.path.join(directory, _FUSION_FILE)))
    model.eval()
    return model, meta
