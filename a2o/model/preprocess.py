"""Plain-torch preprocessing of frames and likelihood maps for V-JEPA2 (no torchvision).

Layouts, explicitly:
- frames in:  (B, T, H, W, 3) channels-last, as the frame store decodes them. ``uint8`` in [0, 255],
  or a floating dtype already scaled to [0, 1].
- maps in:    (B, T, C, h, w), ``uint8`` in [0, 255] (the map cache's storage) or floating in [0, 1].
- pixel values out: (B, T, 3, H, W) float32, ImageNet-normalised: the layout V-JEPA2 takes as
  ``pixel_values_videos``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frames_to_pixel_values", "maps_to_float"]

# V-JEPA2 was pretrained with ImageNet statistics (its video processor uses IMAGENET_DEFAULT_*).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_pixel_values(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 [0, 255] or float [0, 1] -> (B, T, 3, H, W) float32, normalised."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (B, T, H, W, 3) channels-last; got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        scaled = frames.to(torch.float32) / 255.0
    elif frames.is_floating_point():
        scaled = frames.to(torch.float32)
    else:
        raise ValueError(f"frames must be uint8 or floating point; got {frames.dtype}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=frames.device)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=frames.device)
    normalised = (scaled - mean) / std  # (B, T, H, W, 3)
    return normalised.permute(0, 1, 4, 2, 3).contiguous()  # (B, T, 3, H, W)


def maps_to_float(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, C, h, w) uint8 or float [0, 1] -> (B, T, C, H, W) float32 in [0, 1] at ``size``.

    Maps cached at a lower resolution than the frames are bilinearly upsampled to the frame grid;
    the adapter is position-independent, so this is the only spatial alignment it needs.
    """
    if maps.ndim != 5:
        raise ValueError(f"maps must be (B, T, C, H, W); got shape {tuple(maps.shape)}")
    if maps.dtype == torch.uint8:
        maps = maps.to(torch.float32) / 255.0
    elif maps.is_floating_point():
        maps = maps.to(torch.float32)
    else:
        raise ValueError(f"maps must be uint8 or floating point; got {maps.dtype}")
    batch, frames, classes, height, width = maps.shape
    if (height, width) != tuple(size) and classes > 0:
        flat = maps.reshape(batch * frames, classes, height, width)
        flat = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
        maps = flat.reshape(batch, frames, classes, *size).clamp_(0.0, 1.0)
    return maps
