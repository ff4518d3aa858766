"""ViT sizes, in one place. ``vit_base`` (ViT-B/16) is the paper's encoder."""
from __future__ import annotations

PRESETS: dict[str, dict[str, int]] = {
    "vit_nano": dict(embed_dim=48, depth=2, num_heads=4),  # tests and smoke runs
    "vit_micro": dict(embed_dim=96, depth=4, num_heads=4),  # CPU demos
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16),
}


def preset(name: str) -> dict[str, int]:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])
