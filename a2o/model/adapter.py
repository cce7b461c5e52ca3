"""The object-map adapter: likelihood maps -> a zero-initialised RGB residual.

Paper: per-pixel features from the C likelihood maps by a position-independent stack of 1x1
convolutions (Table 10: one linear 1x1, or k x (1x1 conv + ReLU) then a final 1x1), then a linear
projection to 3 channels that is *added* to the normalised RGB frame. The projection starts at zero
so that, at step 0, the fused input is exactly the RGB input and the model is exactly the
pretrained V-JEPA2.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MapAdapter", "MapFusion"]


class MapAdapter(nn.Module):
    """C likelihood channels -> D features per pixel, frame by frame.

    Args:
        num_classes: C, likelihood maps per frame (>= 1).
        dim: D, output features per pixel (also the width of the hidden layers).
        depth: hidden (1x1 conv + ReLU) layers before the final 1x1; 0 = one linear 1x1 conv.
    """

    def __init__(self, num_classes: int, dim: int, depth: int = 0) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1 or depth < 0:
            raise ValueError(
                f"MapAdapter needs num_classes >= 1, dim >= 1, depth >= 0; got {num_classes}, {dim}, {depth}"
            )
        self.num_classes = num_classes
        self.dim = dim
        self.depth = depth
        layers: list[nn.Module] = []
        in_channels = num_classes
        for _ in range(depth):
            layers += [nn.Conv2d(in_channels, dim, kernel_size=1), nn.ReLU(inplace=True)]
            in_channels = dim
        layers.append(nn.Conv2d(in_channels, dim, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) float in [0, 1] -> (B, T, D, H, W)."""
        batch, frames, classes, height, width = maps.shape
        if classes != self.num_classes:
            raise ValueError(f"adapter expects {self.num_classes} map channels, got {classes}")
        features = self.layers(maps.reshape(batch * frames, classes, height, width))  # (B*T, D, H, W)
        return features.reshape(batch, frames, self.dim, height, width)


class MapFusion(nn.Module):
    """Adapter + zero-initialised 1x1 projection D -> 3: the residual added to the RGB input.

    The residual is anchored at "nothing detected": ``P(A(maps)) - P(A(0))``, so a pixel whose
    maps are all zero keeps its RGB exactly, whatever the adapter's biases. Without the anchor the
    biases add one colour to every pixel of every clip; that carries no information, and with a
    large fusion lr it grew until, after V-JEPA2's per-token LayerNorm, every token looked the same
    and training sat at chance (measured in benchmarks/maps_matter.py). For the default linear
    adapter this is the same as bias-free 1x1 convolutions.
    """

    def __init__(self, num_classes: int, dim: int, depth: int = 0) -> None:
        super().__init__()
        self.adapter = MapAdapter(num_classes, dim, depth)
        # No bias: it would cancel in P(A(M)) - P(A(0)) (see the class docstring).
        self.projection = nn.Conv2d(dim, 3, kernel_size=1, bias=False)
        # Zero init: at step 0 the residual is exactly 0, so training starts from the pretrained
        # V-JEPA2 and the maps' influence is learned from there.
        nn.init.zeros_(self.projection.weight)

    def forward(self, pixel_values: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, T, 3, H, W) normalised RGB, maps (B, T, C, H, W) -> (B, T, 3, H, W)."""
        features = self.adapter(maps)  # (B, T, D, H, W)
        batch, frames, dim, height, width = features.shape
        # A(0): the adapter's response to an empty pixel, one (D,) vector (the adapter is per pixel).
        empty = self.adapter(maps.new_zeros((1, 1, self.adapter.num_classes, 1, 1)))  # (1, 1, D, 1, 1)
        residual = self.projection((features - empty).reshape(batch * frames, dim, height, width))
        return pixel_values + residual.reshape(batch, frames, 3, height, width)
