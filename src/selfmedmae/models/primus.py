"""A Primus-style segmenter: a plain ViT with a light up-sampling decoder, no skip connections.

Primus (Wald et al., 2025, "Primus: Enforcing attention usage for 3D medical image segmentation") keeps the
work in the transformer: the encoder's final tokens (after its norm, class token dropped) are laid out on
the token grid [B, D, g0, g1, g2] and brought back to the input's resolution by log2(patch) stages, each a
transposed convolution (kernel 2, stride 2) followed by a norm and GELU, then a 1 x 1 x 1 convolution to
the classes. Widths halve stage by stage from the token width D, never below ``feature_size``. Primus's own
decoder (``PatchDecode``) spaces its widths geometrically down to twice the classes and lets its last
transposed convolution emit the classes; the halving and the separate 1 x 1 x 1 head here keep the
decoder's width choice the same knob as UNETR's (``model.feature_size``).

The norm is a LayerNorm over the channels of each voxel (Primus's ``LayerNormNd``): it normalises every
voxel on its own, like the ViT's own LayerNorms, so a window's output does not depend on the window's
other content or size (an InstanceNorm's statistics would span the window) and behaves the same for a
batch of one crop.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from selfmedmae.models.pointwise import use_matmul_convolutions
from selfmedmae.models.vit import ViT

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
UPSAMPLE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of [B, C, *S] (each voxel's channels), with a weight and bias per channel.
    Computed in float32 whatever the input's dtype (as autocast runs ``layer_norm``), returned in it."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, C, *S], any memory layout
        y = x.float()
        mean = y.mean(1, keepdim=True)  # [B, 1, *S]
        var = (y - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (y - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def stage_widths(embed_dim: int, stages: int, feature_size: int) -> list[int]:
    """Output channels of each up-sampling stage: D / 2, D / 4, ..., never below ``feature_size``."""
    return [max(feature_size, embed_dim // 2 ** (j + 1)) for j in range(stages)]


class PrimusDecoder(nn.Module):
    """Token map [B, D, *grid] -> logits [B, num_classes, *grid x 2^stages]."""

    def __init__(self, spatial_dims: int, embed_dim: int, stages: int, feature_size: int, num_classes: int):
        super().__init__()
        widths = stage_widths(embed_dim, stages, feature_size)
        blocks, width = [], embed_dim
        for out in widths:
            blocks.append(nn.Sequential(UPSAMPLE[spatial_dims](width, out, kernel_size=2, stride=2),
                                        ChannelLayerNorm(out), nn.GELU()))
            width = out
        self.stages = nn.Sequential(*blocks)
        self.out = CONV[spatial_dims](width, num_classes, kernel_size=1)
        use_matmul_convolutions(self)  # kernel = stride up-sampling and the 1 x 1 head as matmuls: same weights

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.stages(tokens))  # [B, num_classes, *S]


class PrimusSegmenter(nn.Module):
    """ViT encoder + :class:`PrimusDecoder`; exposes ``encoder`` like UNETR (initialisation, layer decay)."""

    def __init__(self, encoder: ViT, num_classes: int, feature_size: int = 16, channels_last: bool = False):
        super().__init__()
        p = encoder.patch_size
        if len(set(p)) != 1 or p[0] < 2 or 2 ** round(math.log2(p[0])) != p[0]:
            raise ValueError(f"the Primus decoder needs an isotropic power-of-two patch size, got {p}")
        self.encoder = encoder
        self.decoder = PrimusDecoder(encoder.spatial_dims, encoder.embed_dim, round(math.log2(p[0])),
                                     feature_size, num_classes)
        self.memory_format = torch.contiguous_format
        if channels_last:
            self.memory_format = torch.channels_last_3d if encoder.spatial_dims == 3 else torch.channels_last
            self.decoder.to(memory_format=self.memory_format)

    def token_map(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        # [B, 1 + L, D] -> [B, D, *grid]; tokens are in grid order with the last axis fastest
        x = tokens[:, 1:]  # [B, L, D]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, num_classes, *S]
        grid = [s // p for s, p in zip(x.shape[2:], self.encoder.patch_size)]
        tokens = self.encoder(x)  # [B, 1 + L, D], after the encoder's norm
        return self.decoder(self.token_map(tokens, grid).contiguous(memory_format=self.memory_format))
