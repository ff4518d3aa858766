"""The model family: one N-d ViT, the MAE, UNETR and the classifier, plus checkpoint import/transfer."""
from selfmedmae.models.classifier import ViTClassifier
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.models.mae import MAE
from selfmedmae.models.presets import PRESETS
from selfmedmae.models.unetr import UNETR
from selfmedmae.models.vit import ViT

__all__ = ["MAE", "PRESETS", "UNETR", "ViT", "ViTClassifier", "build_model", "model_args"]
