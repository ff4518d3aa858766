"""Model section of the run config. Defaults are the paper's ViT-B/16 MAE (3D decoder sizes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


@dataclass
class ModelConfig:
    preset: str = "vit_base"  # see selfmedmae.models.presets.PRESETS
    embed_dim: Optional[int] = None  # None: the preset's value
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0  # fine-tuning uses 0.1
    # masked autoencoder (pre-training)
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
    decoder_embed_dim: int = 384
    decoder_depth: int = 8
    decoder_num_heads: int = 12
    norm_pix_loss: bool = True
    norm_pix_unbiased: bool = False  # False: LayerNorm-style biased variance (official 3D); True: original MAE
    # fine-tuning heads
    global_pool: bool = False  # classifier: False = class token, True = mean of patch tokens + fc_norm
    feature_size: int = 16  # UNETR decoder width
    skip_blocks: Optional[List[int]] = None  # UNETR taps, 0-based block indices; None = evenly spaced
    channels_last: bool = False  # UNETR convolutions in channels-last memory (faster for small decoders on a CPU)
