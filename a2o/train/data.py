"""Clip datasets over the frame store and the map cache, with joint frame/map augmentation.

Frames and likelihood maps are read lazily per item, so a worker's memory does not grow with the
dataset. The same crop (and optional flip) is applied to frames and maps: a map must stay on top of
the pixels it describes, or the adapter learns nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class FrameSource(Protocol):
    def read(self, video_id: str): ...  # -> FrameRecord with .frames (T, H, W, 3) uint8


class MapSource(Protocol):
    def read(self, video_id: str) -> np.ndarray: ...  # (T, C, h, w) uint8


def joint_crop_flip(
    frames: torch.Tensor,
    maps: torch.Tensor | None,
    size: int,
    *,
    generator: torch.Generator | None,
    flip: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random (or centre, when ``generator`` is None) square crop + optional flip of both inputs.

    frames: (T, H, W, 3) uint8; maps: (T, C, H, W) uint8 on the same H, W grid.
    """
    _, height, width, _ = frames.shape
    if generator is None:
        top, left = (height - size) // 2, (width - size) // 2
        do_flip = False
    else:
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        do_flip = flip and bool(torch.rand((1,), generator=generator) < 0.5)
    frames = frames[:, top : top + size, left : left + size, :]
    if maps is not None:
        maps = maps[:, :, top : top + size, left : left + size]
    if do_flip:
        frames = frames.flip(2)
        if maps is not None:
            maps = maps.flip(3)
    return frames, maps


def align_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize cached maps (T, C, h, w) uint8 to the frame grid when they were stored smaller."""
    if maps.shape[-2:] == (height, width):
        return maps
    resized = F.interpolate(maps.float(), size=(height, width), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


class ClipDataset(torch.utils.data.Dataset):
    """(frames, maps, label) items for the given videos.

    Items: frames (T, S, S, 3) uint8, maps (T, C, S, S) uint8 (C may be 0), label int64.
    """

    def __init__(
        self,
        video_ids: Sequence[str],
        label_ids: Sequence[int],
        frames: FrameSource,
        maps: MapSource | None,
        *,
        size: int,
        train: bool,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        if len(video_ids) != len(label_ids):
            raise ValueError("video_ids and label_ids differ in length")
        self.video_ids = list(video_ids)
        self.label_ids = [int(x) for x in label_ids]
        self.frames = frames
        self.maps = maps
        self.size = size
        self.train = train
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws each epoch, reproducible for a seed."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int):
        video_id = self.video_ids[index]
        frames = torch.from_numpy(np.ascontiguousarray(self.frames.read(video_id).frames))
        _, height, width, _ = frames.shape  # (T, H, W, 3)
        if self.maps is not None:
            maps = torch.from_numpy(np.ascontiguousarray(self.maps.read(video_id)))
            maps = align_maps(maps, height, width)  # (T, C, H, W)
        else:
            maps = torch.zeros((frames.shape[0], 0, height, width), dtype=torch.uint8)
        generator = None
        if self.train:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % (2**31))
        if min(height, width) < self.size:
            raise ValueError(
                f"frame grid {height}x{width} is smaller than the model input {self.size}: "
                "set data.store_resolution >= data.resolution and prepare the frame store again"
            )
        frames, maps = joint_crop_flip(frames, maps, self.size, generator=generator, flip=self.flip)
        return frames.contiguous(), maps.contiguous(), torch.tensor(self.label_ids[index])
