"""ViT sizes, in one place, and the rule that lays a config's explicit sizes over its preset. ``vit_base``
(ViT-B/16) is the paper's encoder."""
from __future__ import annotations

from typing import Any

from selfmedmae.config.rules import err

PRESETS: dict[str, dict[str, int]] = {
    "vit_nano": dict(embed_dim=48, depth=2, num_heads=4),  # tests and smoke runs
    "vit_micro": dict(embed_dim=96, depth=4, num_heads=4),  # CPU demos
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16),
}
SIZE_KEYS = ("embed_dim", "depth", "num_heads")


def sizes(model_cfg: Any) -> dict[str, int]:
    """``embed_dim``, ``depth``, ``num_heads`` of a ``model`` config section: its preset's, each replaced by the
    section's own value where that is set. An unknown preset or a size <= 0 is a ConfigError naming the key."""
    name = model_cfg.preset
    if name not in PRESETS:
        raise err("model.preset", f"{name!r} is not one of {', '.join(PRESETS)}")
    out = dict(PRESETS[name])
    for key in SIZE_KEYS:
        value = getattr(model_cfg, key)
        if value is not None:
            if int(value) <= 0:
                raise err(f"model.{key}", f"{value} must be > 0")
            out[key] = int(value)
    return out


def check_heads(embed_dim: int, num_heads: int, key: str = "num_heads") -> None:
    """Attention splits the width into equal heads."""
    if num_heads <= 0 or embed_dim % num_heads:
        raise err(key, f"{num_heads} heads do not divide the width {embed_dim} (embed_dim % num_heads must be 0)")
