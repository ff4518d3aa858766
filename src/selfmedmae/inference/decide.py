"""How a network's logits become probabilities and decisions: one rule for validation, ``evaluate`` and ``predict``.

Logits leave the autocast region as float32 (the sliding window and the classifier cast them), and every
decision is taken on the float32 probabilities that ``predict --probabilities`` writes, never on the logits
beside them: label maps are the argmax of the softmax, regions and findings are sigmoid > 0.5. Under bf16
two classes' logits are often exactly equal (8 bits of mantissa); the softmax then gives them equal
probabilities and the argmax takes the first, so the label map, the probability map, Dice and AUC agree with
each other under every precision.
"""
from __future__ import annotations

import torch

THRESHOLD = 0.5  # sigmoid outputs: a region or finding is present above it


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """float32 [B, K, ...]: one sigmoid per channel (overlapping regions, findings) or a softmax over the
    classes (label maps, background first)."""
    logits = logits.float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def decide(probs: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Probabilities [B, K, ...] -> bool masks [B, K, ...] (sigmoid > 0.5) or the label map [B, ...] (argmax)."""
    return probs > THRESHOLD if multilabel else probs.argmax(dim=1)


def fill_background(probs: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Softmax probabilities [K, ...] carried back to an input grid, where voxels outside the model's crop
    came back with no mass (and border voxels with part of it): the missing mass goes to the background.
    Voxels whose mass is whole (within ``tol``) are left exactly as they are, so their argmax is unchanged."""
    missing = 1.0 - probs.sum(0)
    probs[0] += torch.where(missing > tol, missing, torch.zeros_like(missing))
    return probs.clamp_(0, 1)
