"""ViT + linear head for (multi-label) classification, as the MAE fine-tuning code and the paper.

``global_pool=False`` classifies the normed class token; ``global_pool=True`` averages the patch tokens
and normalises them with ``fc_norm`` (the original MAE fine-tuning option; the encoder's final ``norm`` is
then not used, so the encoder is built without it: ``ViT(..., final_norm=False)``). The head returns logits: apply a
sigmoid per label for multi-label targets.
"""
from __future__ import annotations

import torch
from torch import nn

from selfmedmae.models.layers import layer_norm
from selfmedmae.models.vit import ViT


class ViTClassifier(nn.Module):
    def __init__(self, encoder: ViT, num_classes: int, global_pool: bool = False):
        super().__init__()
        self.encoder = encoder
        self.global_pool = global_pool
        if global_pool:
            if not isinstance(encoder.norm, nn.Identity):
                raise ValueError("global_pool=True pools unnormalised tokens into fc_norm: build the encoder with "
                                 "ViT(..., final_norm=False)")
            self.fc_norm = layer_norm(encoder.embed_dim)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE fine-tuning: a near-zero start
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, D]
        tokens = self.encoder(x)  # [B, 1 + L, D]
        if self.global_pool:
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return tokens[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, num_classes] logits
        return self.head(self.forward_features(x))
