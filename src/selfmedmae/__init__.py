"""selfmedmae: self pre-training with masked autoencoders for medical image classification and segmentation.

After Zhou et al., "Self Pre-training with Masked Autoencoders for Medical Image Classification and
Segmentation", ISBI 2023.
"""
__version__ = "0.1.0"


def load_model(path, map_location="cpu"):
    """Rebuild a ready model (MAE, ViT, classifier or UNETR) from any native selfmedmae checkpoint."""
    from selfmedmae.models.checkpoint import load_model as _load

    return _load(path, map_location=map_location)


__all__ = ["load_model", "__version__"]
