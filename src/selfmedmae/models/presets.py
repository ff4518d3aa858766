"""The rule that lays a config's explicit model sizes over its preset: the ViT encoder's and the MAE decoder's.
The preset tables sit beside the schema (:mod:`selfmedmae.config.sections`); ``vit_base`` (ViT-B/16) is the
paper's encoder."""
from __future__ import annotations

from typing import Any

from selfmedmae.config.rules import err
from selfmedmae.config.sections import PRESET_DECODERS, PRESETS  # the tables, beside the schema's ModelConfig

SIZE_KEYS = ("embed_dim", "depth", "num_heads")
DECODER_KEYS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads")


def sizes(model_cfg: Any) -> dict[str, int]:
    """``embed_dim``, ``depth``, ``num_heads`` of a ``model`` config section: its preset's, each replaced by the
    section's own value where that is set. An unknown preset or a size <= 0 is a ConfigError naming the key."""
    return _laid_over(model_cfg, PRESETS, SIZE_KEYS)


def decoder_sizes(model_cfg: Any) -> dict[str, int]:
    """``decoder_embed_dim``, ``decoder_depth``, ``decoder_num_heads`` of the MAE decoder: the preset's
    (:data:`PRESET_DECODERS`), each replaced by the section's own value where that is set."""
    return _laid_over(model_cfg, PRESET_DECODERS, DECODER_KEYS)


def _laid_over(model_cfg: Any, table: dict, keys: tuple) -> dict[str, int]:
    name = model_cfg.preset
    if name not in table:
        raise err("model.preset", f"{name!r} is not one of {', '.join(table)}")
    out = dict(table[name])
    for key in keys:
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
